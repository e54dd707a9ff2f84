//! How the clients reach the brokers: plain TCP, or TLS (`KAFKA_TLS`, trusting
//! `KAFKA_CA_CERT` or the system's roots, hostnames verified), with SASL over TLS
//! (`KAFKA_SASL_MECHANISM`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, all three
//! implemented by rskafka through rsasl).
//!
//! Settings that cannot be honoured are refused when the process starts, never dropped:
//! a CA file without TLS, SASL without TLS (the password would cross the network in the
//! clear, or in a form an eavesdropper can attack offline), a mechanism rskafka lacks, or
//! half a credential.

use std::path::PathBuf;
use std::sync::Arc;

use rskafka::client::{ClientBuilder, Credentials, SaslConfig};

use crate::config::{Secret, SharedConfig};
use crate::infrastructure::tls::{self, TlsError};

/// The SASL mechanisms accepted in `KAFKA_SASL_MECHANISM`.
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Why the Kafka security settings cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSecurityError {
    /// A setting needs TLS, which is off.
    #[error("{0} is set but KAFKA_TLS is false; set KAFKA_TLS=true (SASL and CA files work only over TLS here)")]
    NeedsTls(&'static str),
    /// The mechanism is not one of [`SASL_MECHANISMS`].
    #[error("KAFKA_SASL_MECHANISM {0:?} is not supported; use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")]
    UnsupportedMechanism(String),
    /// A credential is missing or has no mechanism.
    #[error("{0}")]
    Credentials(&'static str),
    /// The TLS set-up failed.
    #[error("KAFKA_CA_CERT: {0}")]
    Tls(#[from] TlsError),
}

/// The settings as configured (`KAFKA_TLS`, `KAFKA_CA_CERT`, `KAFKA_SASL_*`).
#[derive(Debug, Clone, Default)]
pub struct KafkaSecuritySettings {
    /// Connect over TLS.
    pub tls: bool,
    /// PEM file of the CA to trust instead of the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// SASL mechanism.
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// SASL password.
    pub sasl_password: Option<Secret>,
}

/// Validated transport settings, applied to every client the process builds.
#[derive(Clone, Default)]
pub struct KafkaSecurity {
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslConfig>,
}

impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        formatter
            .debug_struct("KafkaSecurity")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl.as_ref().map(mechanism_name))
            .finish()
    }
}

impl KafkaSecurity {
    /// Plain TCP, no SASL (a development broker).
    pub fn plain() -> Self {
        Self::default()
    }

    /// The process's settings, validated.
    pub fn from_config(config: &SharedConfig) -> Result<Self, KafkaSecurityError> {
        Self::from_settings(&KafkaSecuritySettings {
            tls: config.kafka_tls,
            ca_cert: config.kafka_ca_cert.clone(),
            sasl_mechanism: config.kafka_sasl_mechanism.clone(),
            sasl_username: config.kafka_sasl_username.clone(),
            sasl_password: config.kafka_sasl_password.clone(),
        })
    }

    /// Validates the settings and loads the CA file.
    pub fn from_settings(settings: &KafkaSecuritySettings) -> Result<Self, KafkaSecurityError> {
        let sasl = sasl_config(settings)?;
        if !settings.tls {
            if settings.ca_cert.is_some() {
                return Err(KafkaSecurityError::NeedsTls("KAFKA_CA_CERT"));
            }
            if sasl.is_some() {
                return Err(KafkaSecurityError::NeedsTls("KAFKA_SASL_MECHANISM"));
            }
            return Ok(Self::plain());
        }
        let tls = tls::client_config(settings.ca_cert.as_deref())?;
        Ok(Self { tls: Some(tls), sasl })
    }

    /// Whether the clients connect over TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The SASL mechanism in use, if any.
    pub fn sasl_mechanism(&self) -> Option<&'static str> {
        self.sasl.as_ref().map(mechanism_name)
    }

    /// `builder` with these settings.
    pub fn apply(&self, mut builder: ClientBuilder) -> ClientBuilder {
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = &self.sasl {
            builder = builder.sasl_config(sasl.clone());
        }
        builder
    }
}

fn sasl_config(settings: &KafkaSecuritySettings) -> Result<Option<SaslConfig>, KafkaSecurityError> {
    let username = settings.sasl_username.clone().filter(|name| !name.is_empty());
    let password = settings.sasl_password.clone();
    let Some(mechanism) = settings.sasl_mechanism.as_deref().filter(|mechanism| !mechanism.is_empty()) else {
        if username.is_some() || password.is_some() {
            return Err(KafkaSecurityError::Credentials(
                "KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is set without KAFKA_SASL_MECHANISM",
            ));
        }
        return Ok(None);
    };
    let (Some(username), Some(password)) = (username, password) else {
        return Err(KafkaSecurityError::Credentials(
            "KAFKA_SASL_MECHANISM needs both KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ));
    };
    let credentials = Credentials::new(username, password.expose().to_owned());
    match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => Ok(Some(SaslConfig::Plain(credentials))),
        "SCRAM-SHA-256" => Ok(Some(SaslConfig::ScramSha256(credentials))),
        "SCRAM-SHA-512" => Ok(Some(SaslConfig::ScramSha512(credentials))),
        _ => Err(KafkaSecurityError::UnsupportedMechanism(mechanism.to_owned())),
    }
}

fn mechanism_name(sasl: &SaslConfig) -> &'static str {
    match sasl {
        SaslConfig::Plain(_) => "PLAIN",
        SaslConfig::ScramSha256(_) => "SCRAM-SHA-256",
        SaslConfig::ScramSha512(_) => "SCRAM-SHA-512",
        SaslConfig::Oauthbearer(_) => "OAUTHBEARER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(mechanism: &str) -> KafkaSecuritySettings {
        KafkaSecuritySettings {
            tls: true,
            ca_cert: None,
            sasl_mechanism: Some(mechanism.to_owned()),
            sasl_username: Some("stampede".to_owned()),
            sasl_password: Some(Secret::new("pw")),
        }
    }

    #[test]
    fn each_mechanism_maps_to_its_sasl_config() {
        for mechanism in SASL_MECHANISMS {
            let config = sasl_config(&sasl(mechanism)).unwrap().unwrap();
            assert_eq!(mechanism_name(&config), mechanism);
        }
        assert_eq!(mechanism_name(&sasl_config(&sasl("scram-sha-512")).unwrap().unwrap()), "SCRAM-SHA-512");
    }

    #[test]
    fn settings_that_cannot_be_honoured_are_refused() {
        let refused =
            |settings: KafkaSecuritySettings| KafkaSecurity::from_settings(&settings).unwrap_err().to_string();
        assert!(refused(sasl("GSSAPI")).contains("not supported"));
        assert!(refused(sasl("OAUTHBEARER")).contains("not supported"));
        assert!(refused(KafkaSecuritySettings { tls: false, ..sasl("PLAIN") }).contains("KAFKA_TLS"));
        let without_tls = KafkaSecuritySettings { ca_cert: Some("/ca.pem".into()), ..Default::default() };
        assert!(refused(without_tls).contains("KAFKA_CA_CERT"));
        assert!(refused(KafkaSecuritySettings { sasl_password: None, ..sasl("PLAIN") }).contains("PASSWORD"));
        let orphan = KafkaSecuritySettings { sasl_username: Some("u".to_owned()), ..Default::default() };
        assert!(refused(orphan).contains("without KAFKA_SASL_MECHANISM"));
        let missing_ca =
            KafkaSecuritySettings { tls: true, ca_cert: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(refused(missing_ca).contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn plain_settings_give_a_plain_client() {
        let security = KafkaSecurity::from_settings(&KafkaSecuritySettings::default()).unwrap();
        assert!(!security.uses_tls());
        assert_eq!(security.sasl_mechanism(), None);
    }
}
