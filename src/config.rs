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
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://localhost/stampede")]
    pub database_url: String,

    /// Redis connection URL (the worker uses it for `reconcile`).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

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

    /// Largest number of pooled Postgres connections.
    #[arg(long, env = "DATABASE_CONNECTIONS_MAX", default_value_t = 16)]
    pub database_connections_max: u32,

    /// HS256 secret for JWTs; required unless `--dev` is given.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

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

    /// Deadline of one publish to the broker (and of connecting to it).
    #[arg(long, env = "RELAY_PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
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

/// Which partitions of the topic a worker consumes: `all`, or a list such as `0,2,4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSelection {
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
        let mut partitions = Vec::new();
        for part in text.split(',') {
            let partition: i32 =
                part.trim().parse().ok().filter(|partition| *partition >= 0).ok_or_else(|| {
                    format!("`{part}` is not a partition number; use `all` or a list such as `0,2,4`")
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

    /// Partitions this worker owns: `all` or a list such as `0,2,4`. Each partition must be
    /// owned by exactly one running worker (see the `worker` module docs).
    #[arg(long, env = "WORKER_PARTITIONS", default_value = "all")]
    pub worker_partitions: PartitionSelection,

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
    /// reads on past them. tansu counts a produce's offsets before its records can be read,
    /// so a fetch can briefly skip a batch; a hole that lasts is a produce that failed (and was sent again).
    #[arg(long, env = "WORKER_GAP_WAIT", default_value = "30s", value_parser = parse_duration)]
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
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
    }

    #[test]
    fn partition_selections_parse() {
        assert_eq!("all".parse(), Ok(PartitionSelection::All));
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
        assert!(config.effective_jwt_secret().is_none());
        let config = ApiConfig::parse_from(["api", "--dev"]);
        assert_eq!(config.effective_jwt_secret().unwrap().expose(), DEV_JWT_SECRET);
    }
}
