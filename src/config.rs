//! Configuration of each binary: one clap struct per binary, every field also an
//! environment variable, every default explicit.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Parses a human duration such as `10m`, `90s`, `2s` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|error| error.to_string())?;
    if duration.is_zero() {
        return Err("duration must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// A secret string that never prints: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err("secret must not be empty".to_owned());
        }
        Ok(Self(text.to_owned()))
    }
}

/// Configuration of the `api` binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "api", about = "Stampede HTTP API: catalog, reservations, reaper and outbox relay")]
pub struct ApiConfig {
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://localhost/stampede")]
    pub database_url: String,

    /// Largest number of pooled Postgres connections.
    #[arg(long, env = "DATABASE_CONNECTIONS_MAX", default_value_t = 16)]
    pub database_connections_max: u32,

    /// Redis connection URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Prefix of every Redis key, so deployments and test runs can share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "stampede")]
    pub redis_key_prefix: String,

    /// Comma-separated Kafka bootstrap brokers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Kafka topic for reservation events.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "reservations")]
    pub kafka_topic: String,

    /// HS256 secret for JWTs; required unless `--dev` is given.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Development mode: run without `JWT_SECRET` (a fixed dev secret is used) and print tokens.
    #[arg(long, env = "DEV", default_value_t = false)]
    pub dev: bool,

    /// How long a hold lasts before it expires (`10m`, `90s`, `2s`).
    #[arg(long, env = "HOLD_TTL", default_value = "10m", value_parser = parse_duration)]
    pub hold_ttl: Duration,

    /// Largest number of open client connections; further connections wait in the backlog.
    #[arg(long, env = "CONNECTIONS_MAX", default_value_t = 10_000)]
    pub connections_max: usize,

    /// How long a client may take to send request headers.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// How long shutdown waits for in-flight requests and background tasks.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl ApiConfig {
    /// The JWT secret in force: the configured one, or the fixed development secret
    /// when `--dev` is given. `None` means the API must refuse to start.
    pub fn effective_jwt_secret(&self) -> Option<Secret> {
        match (&self.jwt_secret, self.dev) {
            (Some(secret), _) => Some(secret.clone()),
            (None, true) => Some(Secret::new(DEV_JWT_SECRET)),
            (None, false) => None,
        }
    }
}

/// The secret used by `--dev` when no `JWT_SECRET` is set. Never use it in production.
pub const DEV_JWT_SECRET: &str = "stampede-dev-secret-do-not-use-in-production";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_human_form() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
    }

    #[test]
    fn api_refuses_to_run_without_a_secret_unless_dev() {
        let config = ApiConfig::parse_from(["api"]);
        assert!(config.effective_jwt_secret().is_none());
        let config = ApiConfig::parse_from(["api", "--dev"]);
        assert_eq!(config.effective_jwt_secret().unwrap().expose(), DEV_JWT_SECRET);
    }
}
