//! Configuration of each binary: one clap struct per binary, every field also an
//! environment variable, every default explicit.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub mod grpc;

pub use grpc::GrpcConfig;

use crate::client_address::TrustedProxies;

/// Parses a human duration such as `10m`, `90s`, `2s` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|error| error.to_string())?;
    if duration.is_zero() {
        return Err("duration must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// Longest `RELAY_PUBLISH_TIMEOUT`. No relay takes a produce's acknowledgement later than
/// its timeout after sending it (a later one counts as a failure, and the entries are sent
/// again), so a batch that is not readable this long after a later one was is never
/// acknowledged: see [`WORKER_GAP_WAIT_MIN`]. Both bounds are defined here, once, for both
/// binaries.
pub const RELAY_PUBLISH_TIMEOUT_MAX: Duration = Duration::from_secs(20);

/// Shortest `WORKER_GAP_WAIT`: [`RELAY_PUBLISH_TIMEOUT_MAX`] plus 5 s for the clocks of two
/// hosts running at slightly different rates and for the broker's own processing. A hole
/// in a partition's offsets that lasts this long after the worker first saw it holds no
/// record any relay will ever count as published: its produce was sent before the worker
/// saw the records after it, so every relay gave up on it before the worker reads past,
/// and gave its entries to a later produce (they are still in the outbox stream).
pub const WORKER_GAP_WAIT_MIN: Duration = Duration::from_secs(25);

/// `RELAY_PUBLISH_TIMEOUT`: at most [`RELAY_PUBLISH_TIMEOUT_MAX`].
fn parse_relay_publish_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout > RELAY_PUBLISH_TIMEOUT_MAX {
        return Err(format!("must be at most {RELAY_PUBLISH_TIMEOUT_MAX:?} (the worker's gap rule relies on it)"));
    }
    Ok(timeout)
}

/// `WORKER_GAP_WAIT`: at least [`WORKER_GAP_WAIT_MIN`].
fn parse_worker_gap_wait(text: &str) -> Result<Duration, String> {
    let wait = parse_duration(text)?;
    if wait < WORKER_GAP_WAIT_MIN {
        return Err(format!(
            "must be at least {WORKER_GAP_WAIT_MIN:?}: longer than any relay waits for an acknowledgement (RELAY_PUBLISH_TIMEOUT is at most {RELAY_PUBLISH_TIMEOUT_MAX:?})"
        ));
    }
    Ok(wait)
}

/// A keep-alive interval: the contract promises a comment at least every 15 s.
fn parse_keep_alive_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval > Duration::from_secs(15) {
        return Err("must be at most 15s".to_owned());
    }
    Ok(interval)
}

/// A poll interval short enough that a change reaches every stream within 500 ms.
fn parse_availability_poll_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if !(Duration::from_millis(10)..=Duration::from_millis(400)).contains(&interval) {
        return Err("must be from 10ms to 400ms".to_owned());
    }
    Ok(interval)
}

/// How long a sold-out verdict is trusted: zero (off) to 100 ms, the longest a return of
/// stock may go unseen.
fn parse_sold_out_verdict_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration_or_zero(text)?;
    if ttl > Duration::from_millis(100) {
        return Err("must be at most 100ms".to_owned());
    }
    Ok(ttl)
}

/// Parses a human duration that may be zero (`0ms`, `0s`, `250ms`).
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| error.to_string())
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

/// Settings both binaries take, under the same flags, variables and defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct SharedConfig {
    /// Postgres connection URL; TLS by libpq's `sslmode` (`require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert=PATH` parameters.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://localhost/stampede", hide_env_values = true)]
    pub database_url: String,

    /// Redis connection URL (the worker uses it for `reconcile`); `rediss://` for TLS.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,

    /// PEM file of the CA to trust for a `rediss://` Redis (default: the system's roots).
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

    /// `true`: `REDIS_URL` is a comma-separated list of seed nodes of a Redis Cluster,
    /// reached through the cluster client.
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,

    /// Prefix of every Redis key, so deployments and test runs can share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "stampede")]
    pub redis_key_prefix: String,

    /// Comma-separated Kafka bootstrap brokers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// `true`: connect to the brokers over TLS (hostnames verified).
    #[arg(long, env = "KAFKA_TLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub kafka_tls: bool,

    /// PEM file of the CA to trust for TLS Kafka (default: the system's roots).
    #[arg(long, env = "KAFKA_CA_CERT")]
    pub kafka_ca_cert: Option<PathBuf>,

    /// SASL mechanism for Kafka, over TLS only: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[arg(long, env = "KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,

    /// SASL user name for Kafka.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,

    /// SASL password for Kafka.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,

    /// Kafka topic of reservation events.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "reservations")]
    pub kafka_topic: String,

    /// Partitions of `KAFKA_TOPIC` when the relay or the worker has to create it (an existing
    /// topic keeps its count).
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_partitions: i32,

    /// How long shutdown waits for in-flight requests, background tasks and the current
    /// batches to commit.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log lines as human text (`text`) or one JSON object per line (`json`).
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_enum)]
    pub log_format: LogFormat,

    /// OpenTelemetry trace export (the standard `OTEL_*` variables).
    #[command(flatten)]
    pub traces: TracesConfig,
}

/// OpenTelemetry trace export, under the standard variable names and with the meanings
/// and defaults of the OpenTelemetry specification (exported by `telemetry::traces`).
#[derive(Debug, Clone, clap::Args)]
pub struct TracesConfig {
    /// Base URL of the OTLP receiver (a collector), e.g. `http://otel-collector:4318` for
    /// `http/protobuf` (spans go to `/v1/traces` under it) or `http://otel-collector:4317`
    /// for `grpc`. Unset: no export, and no tracing work at all.
    #[arg(long = "otel-exporter-otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub endpoint: Option<String>,

    /// OTLP transport: `http/protobuf` or `grpc`.
    #[arg(
        long = "otel-exporter-otlp-protocol",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf",
        value_enum
    )]
    pub protocol: OtlpProtocol,

    /// The `service.name` of the spans (default: the binary's, `stampede-api` or `stampede-worker`).
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,

    /// Which traces are recorded: `parentbased_traceidratio` with `OTEL_TRACES_SAMPLER_ARG=0.01`
    /// keeps 1 % of new traces and follows a client's `traceparent` decision.
    #[arg(
        long = "otel-traces-sampler",
        env = "OTEL_TRACES_SAMPLER",
        default_value = "parentbased_always_on",
        value_enum
    )]
    pub sampler: TracesSampler,

    /// The ratio of the `traceidratio` samplers, from 0 to 1.
    #[arg(long = "otel-traces-sampler-arg", env = "OTEL_TRACES_SAMPLER_ARG", default_value = "1.0", value_parser = parse_ratio)]
    pub sampler_arg: f64,
}

/// OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (port 4318 by convention).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (port 4317 by convention).
    Grpc,
}

/// The specification's samplers (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum TracesSampler {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// A ratio of traces, by trace id.
    Traceidratio,
    /// The parent's decision; every new trace.
    ParentbasedAlwaysOn,
    /// The parent's decision; no new trace.
    ParentbasedAlwaysOff,
    /// The parent's decision; a ratio of new traces.
    ParentbasedTraceidratio,
}

/// A ratio from 0 to 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text.trim().parse().map_err(|_| "must be a number from 0 to 1".to_owned())?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err("must be from 0 to 1".to_owned());
    }
    Ok(ratio)
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line, with the fields of the spans it was written in (`request_id`).
    Json,
}

/// Configuration of the `api` binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "api", about = "Stampede HTTP API: catalog, reservations, reaper and outbox relay")]
pub struct ApiConfig {
    /// Settings the worker shares.
    #[command(flatten)]
    pub shared: SharedConfig,

    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// The gRPC server's settings.
    #[command(flatten)]
    pub grpc: GrpcConfig,

    /// On SIGTERM, how long the api keeps serving with `GET /ready` at 503 before it stops
    /// accepting, so load balancers take it out first (`0s`: stop accepting at once).
    #[arg(long, env = "SHUTDOWN_READINESS_DELAY", default_value = "0s", value_parser = parse_duration_or_zero)]
    pub shutdown_readiness_delay: Duration,

    /// Largest number of pooled Postgres connections.
    #[arg(long, env = "DATABASE_CONNECTIONS_MAX", default_value_t = 16)]
    pub database_connections_max: u32,

    /// HS256 secret for JWTs, at least 32 bytes; required unless `--dev` is given or
    /// `JWT_JWKS_URL` is set.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// URL of the identity provider's JSON Web Key Set (RS256 and ES256 tokens by `kid`).
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// When set, a token's `iss` must equal it.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, a token's `aud` must contain it.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Dot path of the claim that carries the role (`role`, `realm_access.roles`): a
    /// string or an array of strings.
    #[arg(long, env = "JWT_ROLE_CLAIM", default_value = "role")]
    pub jwt_role_claim: String,

    /// Development mode: run without `JWT_SECRET` (a fixed dev secret is used) and print tokens.
    /// Only the flag turns it on: whoever can set the environment must not get the public dev
    /// secret and mint admin tokens, so this is the one setting without an environment variable.
    #[arg(long, default_value_t = false)]
    pub dev: bool,

    /// How long a hold lasts before it expires (`10m`, `90s`, `2s`).
    #[arg(long, env = "HOLD_TTL", default_value = "10m", value_parser = parse_duration)]
    pub hold_ttl: Duration,

    /// Largest number of open client connections; further connections wait in the backlog.
    #[arg(long, env = "CONNECTIONS_MAX", default_value_t = 10_000)]
    pub connections_max: usize,

    /// How long a client may take to send a request's head and body (from the accept or the
    /// previous response; 408 or a closed connection after it), and the longest a response
    /// write may make no progress before the connection is closed.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Run the outbox relay in this process (`--relay-enabled false` for tests without a broker).
    #[arg(long, env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,

    /// Most outbox entries the relay reads per category in one round (a round publishes all its categories together).
    #[arg(long, env = "RELAY_BATCH_RECORDS_MAX", default_value_t = 500, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=50_000))]
    pub relay_batch_records_max: usize,

    /// How long the relay waits for more entries after a batch that was not full.
    #[arg(long, env = "RELAY_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub relay_linger: Duration,

    /// Longest pause between two reads of an empty outbox stream (the pause grows from `RELAY_LINGER`).
    #[arg(long, env = "RELAY_IDLE_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
    pub relay_idle_interval: Duration,

    /// How long a relay's lease on a category's outbox lasts without renewal (failover time
    /// after a crash); renewed every third of it.
    #[arg(long, env = "RELAY_LEASE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub relay_lease_ttl: Duration,

    /// Deadline of one publish to the broker (and of connecting to it), at most 20 s; an
    /// acknowledgement read later than this after the send counts as a failure.
    #[arg(long, env = "RELAY_PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_relay_publish_timeout)]
    pub relay_publish_timeout: Duration,

    /// Longest pause between retries while the broker fails (backoff doubles from 50 ms up to it).
    #[arg(long, env = "RELAY_BACKOFF_MAX", default_value = "3s", value_parser = parse_duration)]
    pub relay_backoff_max: Duration,

    /// Run the expiry reaper in this process (`--reaper-enabled false` to leave expiry to others).
    #[arg(long, env = "REAPER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub reaper_enabled: bool,

    /// Pause between two reaper sweeps of every category.
    #[arg(long, env = "REAPER_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub reaper_interval: Duration,

    /// Most holds the reaper releases in one script call.
    #[arg(long, env = "REAPER_BATCH_MAX", default_value_t = 500, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub reaper_batch_max: usize,

    /// Most reserve and confirm requests in flight in this process; past it they get 503 at once.
    #[arg(long, env = "RESERVE_IN_FLIGHT_MAX", default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub reserve_in_flight_max: usize,

    /// Replicas that must hold a state change (reserve, confirm, cancel, waiting-room admission)
    /// before it is acknowledged, and that must hold an outbox entry before the relay publishes
    /// it; each master waits for at most the replicas it has (so a Redis without replicas
    /// waits for none); 0 turns the wait off.
    #[arg(long, env = "REDIS_REPLICAS_ACK", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub redis_replicas_ack: u32,

    /// Longest wait for `REDIS_REPLICAS_ACK` replicas; past it the request answers 503 `unavailable`.
    #[arg(long, env = "REDIS_REPLICAS_ACK_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub redis_replicas_ack_timeout: Duration,

    /// Most reserves of one category sent to Redis in one script call: those that arrive while the
    /// category's call is in flight go together in the next one (none waits when idle); 1 turns batching off.
    #[arg(long, env = "RESERVE_BATCH_MAX", default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub reserve_batch_max: usize,

    /// Requests per second per client IP on the reservation endpoints (429 past it); 0 turns it off.
    #[arg(long, env = "RATE_LIMIT_PER_IP_PER_SECOND", default_value_t = 0)]
    pub rate_limit_per_ip_per_second: u32,

    /// Sustained state-changing requests (reserve, confirm, cancel, joining a queue) per second
    /// of one user, across every api process (429 past it); 0 turns it off.
    #[arg(long, env = "RATE_LIMIT_PER_USER_PER_SECOND", default_value_t = 5)]
    pub rate_limit_per_user_per_second: u32,

    /// Such requests of one user that may come at once on top of `RATE_LIMIT_PER_USER_PER_SECOND`.
    #[arg(long, env = "RATE_LIMIT_PER_USER_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_per_user_burst: u32,

    /// Such requests of one user in any 24 h (all at once at most, then one per 24 h / this),
    /// across every api process (429 past it); 0 turns it off. Bounds what one token can
    /// make Redis keep for a day.
    #[arg(long, env = "RATE_LIMIT_PER_USER_PER_DAY", default_value_t = 2000)]
    pub rate_limit_per_user_per_day: u32,

    /// Proxies whose `X-Forwarded-For` is believed, a comma-separated list of CIDR networks or
    /// addresses (`10.0.0.0/8,fd00::/8`): behind one, a request counts under the right-most
    /// forwarded address that is not a trusted proxy. Empty (the default): always the peer.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Availability streams one client address (an IPv6 /64) may hold at once; beyond it 429
    /// `rate_limited` with `Retry-After`.
    #[arg(long, env = "STREAMS_PER_CLIENT_MAX", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub streams_per_client_max: u32,

    /// How long this process answers `sold_out` for a category without Redis after a reserve
    /// found it sold out (`0ms` turns the fast path off; at most 100ms: the longest a returned
    /// ticket may go unseen).
    #[arg(long, env = "SOLD_OUT_VERDICT_TTL", default_value = "100ms", value_parser = parse_sold_out_verdict_ttl)]
    pub sold_out_verdict_ttl: Duration,

    /// Reserve answers 503 while a category's outbox stream holds this many unrelayed events.
    #[arg(long, env = "OUTBOX_BACKLOG_MAX", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub outbox_backlog_max: u64,

    /// Simulated payment gateway latency per charge (`0ms` for none).
    #[arg(long, env = "PAYMENT_LATENCY", default_value = "0ms", value_parser = parse_duration_or_zero)]
    pub payment_latency: Duration,

    /// Longest wait for the payment gateway's answer; a hold stays in payment for this plus 5 s at most, and never past its `expires_at`.
    #[arg(long, env = "PAYMENT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub payment_timeout: Duration,

    /// Test only: how long a finished (confirmed, cancelled, expired) hold record stays in Redis; later
    /// reads and repeats answer from Postgres. Shortened by tests that stand in for a day passing.
    #[arg(long, env = "RECORD_TTL", default_value = "24h", value_parser = parse_duration, hide = true)]
    pub record_ttl: Duration,
    /// Most bytes of records in one produce request of the relay (uncompressed estimate); larger
    /// rounds are split. Keep it well under the broker's `message.max.bytes` (Kafka: about 1 MiB).
    #[arg(long, env = "RELAY_PRODUCE_BYTES_MAX", default_value_t = 524_288, value_parser = clap::value_parser!(u32).range(1_024..=16_000_000))]
    pub relay_produce_bytes_max: u32,

    /// Open availability streams at most; more are refused with 503. Stream connections
    /// do not count against CONNECTIONS_MAX, so the file limit must cover both.
    #[arg(long, env = "STREAMS_MAX", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub streams_max: u32,

    /// Longest silence on an availability stream before a `: keep-alive` comment (at most 15 s).
    #[arg(long, env = "STREAM_KEEP_ALIVE_INTERVAL", default_value = "15s", value_parser = parse_keep_alive_interval)]
    pub stream_keep_alive_interval: Duration,

    /// How often a watched event's stock is read for its availability streams (10 ms to 400 ms).
    #[arg(long, env = "AVAILABILITY_POLL_INTERVAL", default_value = "100ms", value_parser = parse_availability_poll_interval)]
    pub availability_poll_interval: Duration,
    /// Waiting-room queue pass keys, `id:secret,id:secret` (secrets of at least 16 bytes): new
    /// passes are signed with the first, a pass verifies under any listed key, so a key can be
    /// rotated in front and retired once its passes have expired. Unset: one key derived from
    /// the JWT secret.
    #[arg(long, env = "QUEUE_PASS_KEYS", hide_env_values = true)]
    pub queue_pass_keys: Option<Secret>,

    /// How often each API process reloads which events have their waiting room on (and
    /// which are sold out); another process turning a room on takes effect here within
    /// this (turning one off takes effect at once).
    #[arg(long, env = "WAITING_ROOM_REFRESH_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub waiting_room_refresh_interval: Duration,
}

impl ApiConfig {
    /// The JWT secret in force: the configured one, or the fixed development secret when
    /// `--dev` is given without one; `Ok(None)` when only a key set verifies tokens.
    /// Without `--dev`, a secret shorter than [`JWT_SECRET_BYTES_MIN`] or equal to the
    /// development secret is refused.
    pub fn effective_jwt_secret(&self) -> Result<Option<Secret>, JwtSecretError> {
        match (&self.jwt_secret, self.dev) {
            (Some(secret), false) if secret.expose() == DEV_JWT_SECRET => Err(JwtSecretError::Development),
            (Some(secret), false) if secret.expose().len() < JWT_SECRET_BYTES_MIN => {
                Err(JwtSecretError::TooShort(secret.expose().len()))
            }
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, true) => Ok(Some(Secret::new(DEV_JWT_SECRET))),
            (None, false) if self.jwt_jwks_url.is_some() => Ok(None),
            (None, false) => Err(JwtSecretError::Missing),
        }
    }

    /// Whether `--dev` prints tokens: only when they are signed with the public development
    /// secret, never with a secret the operator gave.
    pub fn prints_dev_tokens(&self) -> bool {
        self.dev && self.jwt_secret.is_none()
    }
}

/// The secret used by `--dev` when no `JWT_SECRET` is set. Never use it in production.
pub const DEV_JWT_SECRET: &str = "stampede-dev-secret-do-not-use-in-production";

/// The shortest `JWT_SECRET` accepted without `--dev`, in bytes (HS256's key size).
pub const JWT_SECRET_BYTES_MIN: usize = 32;

/// Why the JWT secret is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtSecretError {
    /// No secret, no key set, no `--dev`.
    #[error(
        "JWT_SECRET is required unless JWT_JWKS_URL is set (or pass the --dev flag to use a development secret; no environment variable turns on dev mode)"
    )]
    Missing,
    /// The secret is too short to resist guessing.
    #[error("JWT_SECRET is {0} bytes; at least 32 random bytes are required (e.g. `openssl rand -hex 32`)")]
    TooShort(usize),
    /// The secret is the public development secret.
    #[error("JWT_SECRET is the public development secret; set a random one (e.g. `openssl rand -hex 32`)")]
    Development,
}

/// Which partitions of the topic a worker consumes: `shared` (split with the other
/// workers through Postgres leases), `all`, or a list such as `0,2,4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSelection {
    /// The live workers split the partitions among themselves (see `worker::lease`).
    Shared,
    /// Every partition the topic has when the worker starts.
    All,
    /// Exactly these partitions (distinct, ascending).
    Only(Vec<i32>),
}

impl std::str::FromStr for PartitionSelection {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        if text.eq_ignore_ascii_case("shared") {
            return Ok(Self::Shared);
        }
        let mut partitions = Vec::new();
        for part in text.split(',') {
            let partition: i32 = part.trim().parse().ok().filter(|partition| *partition >= 0).ok_or_else(|| {
                format!("`{part}` is not a partition number; use `shared`, `all` or a list such as `0,2,4`")
            })?;
            partitions.push(partition);
        }
        partitions.sort_unstable();
        if partitions.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("partitions must be distinct".to_owned());
        }
        Ok(Self::Only(partitions))
    }
}

/// Configuration of the `worker` binary (the Kafka-to-Postgres consumer and `reconcile`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "worker",
    about = "Stampede worker: applies reservation events from Kafka to Postgres; `reconcile` compares Redis with Postgres"
)]
pub struct WorkerConfig {
    /// Settings the API shares.
    #[command(flatten)]
    pub shared: SharedConfig,

    /// Largest number of pooled Postgres connections (one per owned partition is enough).
    #[arg(long, env = "DATABASE_CONNECTIONS_MAX", default_value_t = 8)]
    pub database_connections_max: u32,

    /// Partitions this worker consumes: `shared` (the running workers split them among
    /// themselves through leases in Postgres), or by hand `all` or a list such as `0,2,4`
    /// (each partition must then be owned by exactly one running worker).
    #[arg(long, env = "WORKER_PARTITIONS", default_value = "shared")]
    pub worker_partitions: PartitionSelection,

    /// With `WORKER_PARTITIONS=shared`: how long a worker's partition leases and heartbeat
    /// last without renewal (renewed every third of it); a dead worker's partitions move
    /// within about this plus a third.
    #[arg(long, env = "WORKER_LEASE_TTL", default_value = "6s", value_parser = parse_duration)]
    pub worker_lease_ttl: Duration,

    /// Address of the worker's `GET /metrics` endpoint (port 0 picks a free port).
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// Most bytes fetched from one partition in one request; one fetch is applied in one
    /// Postgres transaction (at least one whole record batch, whatever this says).
    #[arg(long, env = "WORKER_FETCH_BYTES_MAX", default_value_t = 1_048_576, value_parser = clap::value_parser!(i32).range(1_024..=16_000_000))]
    pub worker_fetch_bytes_max: i32,

    /// How long the broker may hold a fetch open while the partition has nothing new. Kafka
    /// answers as soon as records arrive; tansu was seen to wait it out, so it bounds the lag there.
    #[arg(long, env = "WORKER_FETCH_WAIT", default_value = "50ms", value_parser = parse_duration)]
    pub worker_fetch_wait: Duration,

    /// Deadline of one call to the broker (connect, fetch, metadata).
    #[arg(long, env = "KAFKA_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub kafka_timeout: Duration,

    /// Longest pause between retries while Postgres or the broker fails (backoff doubles from 50 ms).
    #[arg(long, env = "WORKER_BACKOFF_MAX", default_value = "5s", value_parser = parse_duration)]
    pub worker_backoff_max: Duration,

    /// How long a partition waits for missing offsets right after its next offset before it
    /// reads on past them, at least 25 s. tansu counts a produce's offsets before its records
    /// can be read, so a fetch can briefly skip a batch; a hole that lasts longer than any
    /// relay waits for an acknowledgement is a produce that failed (and was sent again).
    #[arg(long, env = "WORKER_GAP_WAIT", default_value = "30s", value_parser = parse_worker_gap_wait)]
    pub worker_gap_wait: Duration,

    /// What to run; without a command the worker consumes until SIGTERM.
    #[command(subcommand)]
    pub command: Option<WorkerCommand>,
}

/// Commands of the `worker` binary besides consuming.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WorkerCommand {
    /// Compares Redis stock with Postgres reservations per category and prints the drift;
    /// exits 0 when there is none, 1 when there is drift (or the pipeline did not drain), 2 when it cannot run.
    Reconcile(ReconcileArgs),
    /// Applies the database migrations and exits (0: the schema is current). The api and the
    /// worker still migrate on start; running this first (a deploy's migration job) makes that a no-op.
    Migrate,
}

/// Options of `worker reconcile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// Rebuild the Redis stock of categories whose stock is missing, from Postgres.
    #[arg(long, env = "RECONCILE_REPAIR", default_value_t = false)]
    pub repair: bool,

    /// How long to wait for the pipeline to drain: the outbox entries present at the start
    /// relayed, then the topic's records at that point consumed.
    #[arg(long, env = "RECONCILE_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

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
    fn reservation_settings_have_defaults_and_allow_zero_latency() {
        let config = ApiConfig::parse_from(["api"]);
        assert!(config.reaper_enabled);
        assert_eq!(config.reaper_interval, Duration::from_millis(100));
        assert_eq!(config.payment_latency, Duration::ZERO);
        assert_eq!(config.rate_limit_per_ip_per_second, 0);
        let config = ApiConfig::parse_from(["api", "--reaper-enabled", "false", "--payment-latency", "1500ms"]);
        assert!(!config.reaper_enabled);
        assert_eq!(config.payment_latency, Duration::from_millis(1500));
        assert!(parse_duration_or_zero("0s").unwrap().is_zero());
    }

    #[test]
    fn client_limits_have_defaults() {
        let config = ApiConfig::parse_from(["api"]);
        assert_eq!(config.trusted_proxies, TrustedProxies::default(), "no proxy is trusted by default");
        assert_eq!(config.streams_per_client_max, 1000);
        assert_eq!(
            (
                config.rate_limit_per_user_per_second,
                config.rate_limit_per_user_burst,
                config.rate_limit_per_user_per_day
            ),
            (5, 20, 2000)
        );
        let config = ApiConfig::parse_from(["api", "--trusted-proxies", "10.0.0.0/8, 127.0.0.1"]);
        assert_ne!(config.trusted_proxies, TrustedProxies::default());
        assert!(ApiConfig::try_parse_from(["api", "--trusted-proxies", "nginx"]).is_err());
        assert!(ApiConfig::try_parse_from(["api", "--streams-per-client-max", "0"]).is_err());
    }

    #[test]
    fn stream_settings_have_defaults_and_bounds() {
        let config = ApiConfig::parse_from(["api"]);
        assert_eq!(config.streams_max, 10_000);
        assert_eq!(config.stream_keep_alive_interval, Duration::from_secs(15));
        assert_eq!(config.availability_poll_interval, Duration::from_millis(100));
        assert!(ApiConfig::try_parse_from(["api", "--stream-keep-alive-interval", "16s"]).is_err());
        assert!(ApiConfig::try_parse_from(["api", "--availability-poll-interval", "1s"]).is_err());
        assert!(ApiConfig::try_parse_from(["api", "--streams-max", "0"]).is_err());
    }

    #[test]
    fn the_gap_wait_outlasts_every_publish_timeout() {
        // Goal: no relay can take an acknowledgement as late as a worker reads past a hole,
        // whatever the two binaries are given: each bound is refused past the shared limit.
        assert!(WORKER_GAP_WAIT_MIN > RELAY_PUBLISH_TIMEOUT_MAX);
        assert!(ApiConfig::try_parse_from(["api", "--relay-publish-timeout", "20s"]).is_ok());
        assert!(ApiConfig::try_parse_from(["api", "--relay-publish-timeout", "21s"]).is_err());
        assert!(WorkerConfig::try_parse_from(["worker", "--worker-gap-wait", "25s"]).is_ok());
        assert!(WorkerConfig::try_parse_from(["worker", "--worker-gap-wait", "24s"]).is_err());
        assert_eq!(WorkerConfig::parse_from(["worker"]).worker_gap_wait, Duration::from_secs(30));
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
    }

    #[test]
    fn partition_selections_parse() {
        assert_eq!("all".parse(), Ok(PartitionSelection::All));
        assert_eq!("shared".parse(), Ok(PartitionSelection::Shared));
        assert_eq!("4, 0,2".parse(), Ok(PartitionSelection::Only(vec![0, 2, 4])));
        assert!("1,1".parse::<PartitionSelection>().is_err());
        assert!("-1".parse::<PartitionSelection>().is_err());
        assert!("".parse::<PartitionSelection>().is_err());
    }

    #[test]
    fn the_relay_can_be_switched_off() {
        assert!(ApiConfig::parse_from(["api"]).relay_enabled);
        assert!(!ApiConfig::parse_from(["api", "--relay-enabled", "false"]).relay_enabled);
        let config = WorkerConfig::parse_from(["worker", "reconcile", "--repair"]);
        assert!(matches!(config.command, Some(WorkerCommand::Reconcile(ReconcileArgs { repair: true, .. }))));
    }

    #[test]
    fn only_the_dev_flag_turns_on_dev_mode() {
        use clap::CommandFactory;
        let command = ApiConfig::command();
        let dev = command.get_arguments().find(|argument| argument.get_id() == "dev").expect("a --dev flag");
        assert_eq!(dev.get_env(), None, "no environment variable may turn on dev mode");
        assert!(dev.get_long() == Some("dev"));
    }

    #[test]
    fn api_refuses_to_run_without_a_secret_unless_dev() {
        let config = ApiConfig::parse_from(["api"]);
        assert_eq!(config.effective_jwt_secret(), Err(JwtSecretError::Missing));
        let config = ApiConfig::parse_from(["api", "--dev"]);
        assert_eq!(config.effective_jwt_secret().unwrap().unwrap().expose(), DEV_JWT_SECRET);
        assert!(config.prints_dev_tokens());
        let config = ApiConfig::parse_from(["api", "--jwt-jwks-url", "https://idp.example.com/jwks"]);
        assert_eq!(config.effective_jwt_secret(), Ok(None));
    }

    #[test]
    fn weak_or_public_secrets_are_refused_without_dev() {
        let with = |secret: &str, dev: bool| {
            let mut arguments = vec!["api", "--jwt-secret", secret];
            if dev {
                arguments.push("--dev");
            }
            ApiConfig::parse_from(arguments)
        };
        assert_eq!(with("short", false).effective_jwt_secret(), Err(JwtSecretError::TooShort(5)));
        assert_eq!(with(DEV_JWT_SECRET, false).effective_jwt_secret(), Err(JwtSecretError::Development));
        assert!(with(&"x".repeat(32), false).effective_jwt_secret().is_ok());
        let dev_with_secret = with("short", true);
        assert!(dev_with_secret.effective_jwt_secret().is_ok());
        assert!(!dev_with_secret.prints_dev_tokens(), "no token signed with a given secret is printed");
    }
}
