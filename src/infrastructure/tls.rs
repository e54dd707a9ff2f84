//! TLS client settings (rustls with the ring provider, no OpenSSL) for Redis, Kafka and
//! the identity provider's key set: the system's roots by default, or the CAs of one PEM
//! file. Certificates are always verified and hostnames always checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Why a TLS setting cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot read the CA certificates in {path}: {detail}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The system has no usable root certificate.
    #[error("no system root certificates found ({0}); set a CA file")]
    NoSystemRoots(String),
    /// rustls refused the settings.
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// The host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// The roots to trust: the certificates of `ca_file`, or else the system's.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for certificate in ca_certificates(path)? {
                roots.add(certificate).map_err(|error| ca_error(path, error))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(TlsError::NoSystemRoots(errors.join("; ")));
            }
        }
    }
    Ok(roots)
}

/// The certificates of a PEM file (at least one).
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|error| ca_error(path, error))?
        .collect::<Result<_, _>>()
        .map_err(|error| ca_error(path, error))?;
    if certificates.is_empty() {
        return Err(ca_error(path, "no PEM certificate in it"));
    }
    Ok(certificates)
}

/// A client configuration trusting `ca_file` (or the system's roots).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(ring_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `host` as a TLS server name (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// Installs ring as the process's rustls provider, for libraries (redis, sqlx) that build
/// their configuration from the default. Idempotent.
pub fn install_default_provider() {
    // Err means a provider is installed already, which is as good.
    let _ = ring_provider().install_default();
}

/// rustls's ring provider.
// Why the allow: rustls 0.23.48 deprecates it for lacking post-quantum key exchange, which
// only aws-lc-rs offers; aws-lc-rs needs a C and CMake build of its own, and every
// dependency here (rskafka, sqlx, redis) is built on ring.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn ca_error(path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::CaFile { path: path.to_owned(), detail: error.to_string() }
}
