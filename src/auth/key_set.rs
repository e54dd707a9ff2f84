//! An identity provider's JSON Web Key Set (`JWT_JWKS_URL`): fetched at start, then again
//! when a token names a `kid` not in the cached set, at most once per
//! [`REFETCH_INTERVAL_MIN`], so a provider's key rotation needs no restart.
//!
//! Tokens of known keys never wait for the network, and an unreachable set never lets a
//! token through: its cached keys keep working and an unknown `kid` is 401. A request
//! with an unknown `kid` waits for at most one fetch ([`FETCH_TIMEOUT`]); the others
//! meanwhile answer from the cache.
//!
//! Only RS256 (RSA) and ES256 (P-256) signing keys with a `kid` are kept; any other entry
//! (an encryption key, another curve or algorithm) is skipped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::infrastructure::tls::{self, TlsError};

/// Shortest pause between two fetches of the set after the one at start.
pub const REFETCH_INTERVAL_MIN: Duration = Duration::from_secs(10);
/// Longest one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest key set document accepted.
const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Most keys kept from one document.
const KEYS_MAX: usize = 100;

/// Why the key set could not be fetched or used.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// The URL is not usable.
    #[error("JWT_JWKS_URL {url:?}: {detail}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        detail: &'static str,
    },
    /// The TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The connection or the request failed.
    #[error("cannot fetch the key set: {0}")]
    Fetch(String),
    /// The server answered with an error status.
    #[error("the key set server answered {0}")]
    Status(hyper::StatusCode),
    /// No answer within [`FETCH_TIMEOUT`].
    #[error("the key set server did not answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    /// The document is not a key set.
    #[error("the key set is not a JSON Web Key Set: {0}")]
    Json(#[from] serde_json::Error),
    /// The set holds no RS256 or ES256 signing key with a `kid`.
    #[error("the key set holds no RS256 or ES256 signing key with a kid")]
    NoUsableKey,
}

/// A key of the set: the public key and the one algorithm it verifies.
pub struct VerifyingKey {
    /// RS256 or ES256.
    pub algorithm: Algorithm,
    /// The public key.
    pub key: DecodingKey,
}

type Keys = Arc<HashMap<String, Arc<VerifyingKey>>>;

/// Where the set is fetched from.
struct Source {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

struct Shared {
    source: Source,
    keys: RwLock<Keys>,
    /// When the last fetch started; held during a fetch, so only one runs at a time.
    last_fetch: tokio::sync::Mutex<Instant>,
}

/// The cached key set. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct KeySet {
    shared: Arc<Shared>,
}

impl KeySet {
    /// Fetches the set at `url` (`https://`, or `http://` to a loopback address only),
    /// trusting the system's roots. Fails when the set cannot be fetched or holds no usable key.
    pub async fn fetch(url: &str) -> Result<Self, KeySetError> {
        let source = Source::parse(url)?;
        let keys = source.fetch().await?;
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey);
        }
        tracing::info!(keys = keys.len(), "fetched the identity provider's key set");
        let shared =
            Shared { source, keys: RwLock::new(Arc::new(keys)), last_fetch: tokio::sync::Mutex::new(Instant::now()) };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// The key named `kid`: from the cache, else from a fresh fetch when the last one is
    /// at least [`REFETCH_INTERVAL_MIN`] old. `None` when the set does not have it (or
    /// cannot be reached).
    pub async fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        // One fetch at a time: a request that waits here waits for at most one fetch.
        let mut last_fetch = self.shared.last_fetch.lock().await;
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        if last_fetch.elapsed() < REFETCH_INTERVAL_MIN {
            return None;
        }
        *last_fetch = Instant::now();
        match self.shared.source.fetch().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), kid, "re-fetched the identity provider's key set");
                *self.shared.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
            }
            Err(error) => tracing::warn!(%error, "cannot re-fetch the key set; the cached keys stay in force"),
        }
        drop(last_fetch);
        self.cached(kid)
    }

    fn cached(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let keys = self.shared.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        keys.get(kid).cloned()
    }
}

impl Source {
    fn parse(url: &str) -> Result<Self, KeySetError> {
        let bad = |detail| KeySetError::Url { url: url.to_owned(), detail };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let host = uri.host().ok_or_else(|| bad("no host"))?.trim_matches(['[', ']']).to_owned();
        let tls = match uri.scheme_str() {
            Some("https") => Some(tokio_rustls::TlsConnector::from(tls::client_config(None)?)),
            Some("http") if is_loopback(&host) => None,
            Some("http") => return Err(bad("must be https:// (plain http:// only to a loopback address)")),
            _ => return Err(bad("must be an https:// URL")),
        };
        let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
        Ok(Self { uri, host, port, tls })
    }

    /// Fetches and parses the set, within [`FETCH_TIMEOUT`].
    async fn fetch(&self) -> Result<HashMap<String, Arc<VerifyingKey>>, KeySetError> {
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.get()).await.map_err(|_| KeySetError::Timeout)??;
        parse_key_set(&body)
    }

    async fn get(&self) -> Result<Bytes, KeySetError> {
        let fetch_error = |error: &dyn std::fmt::Display| KeySetError::Fetch(error.to_string());
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|error| fetch_error(&error))?;
        match &self.tls {
            Some(connector) => {
                let name = tls::server_name(&self.host)?;
                let stream = connector.connect(name, tcp).await.map_err(|error| fetch_error(&error))?;
                self.request(TokioIo::new(stream)).await
            }
            None => self.request(TokioIo::new(tcp)).await,
        }
    }

    async fn request<Io>(&self, io: Io) -> Result<Bytes, KeySetError>
    where
        Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let fetch_error = |error: &dyn std::fmt::Display| KeySetError::Fetch(error.to_string());
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|error| fetch_error(&error))?;
        let driver = tokio::spawn(connection);
        let path = self.uri.path_and_query().map_or("/", |path| path.as_str());
        let authority = self.uri.authority().map_or(self.host.as_str(), |authority| authority.as_str());
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|error| fetch_error(&error))?;
        let result = async {
            let response = sender.send_request(request).await.map_err(|error| fetch_error(&error))?;
            if !response.status().is_success() {
                return Err(KeySetError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), BODY_BYTES_MAX).collect().await;
            Ok(body.map_err(|error| fetch_error(&error))?.to_bytes())
        }
        .await;
        driver.abort();
        result
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// The usable keys of a key set document, by `kid`.
fn parse_key_set(body: &[u8]) -> Result<HashMap<String, Arc<VerifyingKey>>, KeySetError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body)?;
    let mut keys = HashMap::new();
    for entry in document.keys.into_iter().take(KEYS_MAX) {
        // An entry this crate cannot read (another key type) is skipped, not fatal.
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry) else { continue };
        if let Some((kid, key)) = verifying_key(&jwk) {
            keys.insert(kid, Arc::new(key));
        }
    }
    Ok(keys)
}

/// A signing key's `kid` and verifier, when it is RS256 or ES256 (the algorithm follows
/// the key type when the entry names none).
fn verifying_key(jwk: &Jwk) -> Option<(String, VerifyingKey)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, VerifyingKey { algorithm, key }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_rs256_and_es256_signing_keys_with_a_kid_are_kept() {
        let rsa = json!({"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"});
        let rsa_for_encryption = json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"});
        let rsa_without_kid = json!({"kty": "RSA", "n": "sXch", "e": "AQAB"});
        let ps256 = json!({"kty": "RSA", "kid": "p", "alg": "PS256", "n": "sXch", "e": "AQAB"});
        let p384 = json!({"kty": "EC", "kid": "e384", "crv": "P-384", "x": "AA", "y": "AA"});
        let symmetric = json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"});
        let unknown = json!({"kty": "OKP-future", "kid": "x"});
        let document = json!({"keys": [rsa, rsa_for_encryption, rsa_without_kid, ps256, p384, symmetric, unknown]});
        let keys = parse_key_set(document.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["r"]);
        assert_eq!(keys["r"].algorithm, Algorithm::RS256);
    }

    #[test]
    fn urls_must_be_https_except_to_loopback() {
        assert!(Source::parse("http://127.0.0.1:8080/jwks").is_ok());
        assert!(Source::parse("http://localhost/jwks").is_ok());
        assert!(Source::parse("http://[::1]:9/jwks").is_ok());
        assert!(Source::parse("http://idp.example.com/jwks").is_err());
        assert!(Source::parse("ftp://idp.example.com/jwks").is_err());
        assert!(Source::parse("not a url").is_err());
    }
}
