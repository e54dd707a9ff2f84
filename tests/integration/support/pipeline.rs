//! Helpers of the pipeline tests: worker and API child processes, a private broker,
//! synthetic outbox entries, and Postgres probes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rskafka::client::partition::Compression;
use rskafka::record::Record;
use sqlx::PgPool;
use stampede::contract::{Reservation, ReservationStatus};
use stampede::ids::{CategoryId, ReservationId};
use stampede::infrastructure::RedisConnection;
use stampede::keyspace::Keyspace;
use stampede::milliseconds;
use stampede::outbox::{EventType, ReservationEvent, entry_fields, event_id};
use tokio::process::{Child, Command};
use uuid::Uuid;

pub use crate::support::harness::wait_until;
use crate::support::harness::{Isolation, TestApp, kafka_brokers, redis_cluster_flag, redis_url, unique_name};

/// Partitions of every topic the pipeline tests create.
pub const TEST_PARTITIONS: &str = "4";

/// API flags that turn the relay on with short leases and timeouts (the broker is
/// the isolation's, see [`crate::support::harness::kafka_brokers`]).
pub fn relay_flags() -> Vec<&'static str> {
    relay_flags_with_partitions(TEST_PARTITIONS)
}

/// [`relay_flags`] for a topic of `partitions` partitions.
pub fn relay_flags_with_partitions(partitions: &'static str) -> Vec<&'static str> {
    [
        "--relay-enabled",
        "true",
        "--kafka-partitions",
        partitions,
        "--relay-lease-ttl",
        "3s",
        "--relay-publish-timeout",
        "1s",
        "--relay-backoff-max",
        "500ms",
    ]
    .to_vec()
}

/// The set-up of most pipeline tests: an isolation, the in-process api on it with the
/// relay on, and a worker reading the shared broker.
pub struct Pipeline {
    /// The test's database, key prefix and topic.
    pub isolation: Isolation,
    /// The api, with [`relay_flags`].
    pub app: TestApp,
    /// The `worker` child process.
    pub worker: ChildProcess,
}

impl Pipeline {
    /// Starts the api with [`relay_flags`] plus `api_flags`, and a worker on
    /// [`shared_brokers`] with `worker_env` added to its environment.
    pub async fn start(api_flags: &[&str], worker_env: &[(&str, &str)]) -> Self {
        let isolation = Isolation::new().await;
        let mut flags = relay_flags();
        flags.extend_from_slice(api_flags);
        let app = TestApp::spawn_in(isolation.clone(), &flags).await;
        let worker = spawn_worker(&isolation, &shared_brokers(), worker_env);
        Self { isolation, app, worker }
    }
}

/// A child process that is killed when dropped; its output goes to a log file.
pub struct ChildProcess {
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl ChildProcess {
    fn spawn(program: &str, args: &[&str], env: &[(String, String)], label: &str) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name(label)));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
        Self { child, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process runs")
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL, then reap.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(mut self) {
        self.signal("TERM");
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the process exits after SIGTERM")
            .expect("wait");
        assert!(status.success(), "exit status {status}; log {}", self.log.display());
    }

    /// The `http://host:port` the process printed as `listening on …`, once it did.
    pub async fn listening_url(&self) -> String {
        let mut url = None;
        wait_until(Duration::from_secs(15), "the process listens", || {
            url = self.log_text().lines().find_map(|line| line.strip_prefix("listening on ").map(str::to_owned));
            std::future::ready(url.is_some())
        })
        .await;
        url.unwrap()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The worker's environment for `isolation` against `brokers`.
pub fn worker_env(isolation: &Isolation, brokers: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", isolation.database_url.clone()),
        ("DATABASE_CONNECTIONS_MAX", "4".to_owned()),
        ("KAFKA_BROKERS", brokers.to_owned()),
        ("KAFKA_TOPIC", isolation.kafka_topic.clone()),
        ("KAFKA_PARTITIONS", TEST_PARTITIONS.to_owned()),
        ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("WORKER_FETCH_WAIT", "100ms".to_owned()),
        ("WORKER_BACKOFF_MAX", "500ms".to_owned()),
        ("KAFKA_TIMEOUT", "3s".to_owned()),
        ("REDIS_URL", redis_url()),
        ("REDIS_CLUSTER", redis_cluster_flag()),
        ("REDIS_KEY_PREFIX", isolation.redis_key_prefix.clone()),
        ("SHUTDOWN_TIMEOUT", "5s".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// Starts a `worker` process; `extra` env entries override the defaults.
pub fn spawn_worker(isolation: &Isolation, brokers: &str, extra: &[(&str, &str)]) -> ChildProcess {
    let mut env = worker_env(isolation, brokers);
    env.extend(extra.iter().map(|(key, value)| (key.to_string(), value.to_string())));
    ChildProcess::spawn(&binary("WORKER_BIN", env!("CARGO_BIN_EXE_worker")), &[], &env, "worker")
}

/// Starts an `api` process with the relay on.
pub fn spawn_api(isolation: &Isolation, extra: &[(&str, &str)]) -> ChildProcess {
    let mut env: Vec<(String, String)> =
        isolation.api_env().into_iter().map(|(key, value)| (key.to_owned(), value)).collect();
    env.extend(extra.iter().map(|(key, value)| (key.to_string(), value.to_string())));
    ChildProcess::spawn(&binary("API_BIN", env!("CARGO_BIN_EXE_api")), &[], &env, "api")
}

/// A binary: the path in `variable` (benchmarks point it at a release build), or `built`.
fn binary(variable: &str, built: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| built.to_owned())
}

/// Runs `worker reconcile [--repair]`; returns the exit code and what it printed.
pub async fn reconcile(isolation: &Isolation, brokers: &str, repair: bool) -> (i32, String) {
    let mut command = Command::new(binary("WORKER_BIN", env!("CARGO_BIN_EXE_worker")));
    command.envs(worker_env(isolation, brokers)).env("RUST_LOG", "warn").arg("reconcile");
    if repair {
        command.arg("--repair");
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("reconcile finishes")
        .expect("reconcile runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// The tansu binary: `TANSU_BIN`, the project's tools folder, or `tansu` on PATH.
fn tansu_binary() -> String {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return path;
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/tansu");
    if tools.exists() { tools.to_string_lossy().into_owned() } else { "tansu".to_owned() }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tansu broker of one test (memory storage), which the test may pause or kill.
pub struct PrivateBroker {
    /// The broker process.
    pub process: ChildProcess,
    /// Its port.
    pub port: u16,
}

impl PrivateBroker {
    /// Starts a broker on a free port.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts a broker on `port` and waits until it accepts connections.
    pub async fn start_on(port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let args = [
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ];
        let process = ChildProcess::spawn(&tansu_binary(), &args, &[], "tansu");
        wait_until(Duration::from_secs(10), "the private broker listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Self { process, port }
    }

    /// `host:port` for `KAFKA_BROKERS`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// An in-process API of `isolation` whose relay publishes to this broker.
    pub async fn relaying_app(&self, isolation: &Isolation) -> TestApp {
        let mut config = isolation.api_config(&relay_flags());
        config.shared.kafka_brokers = self.brokers();
        TestApp::spawn_config(isolation.clone(), config).await
    }
}

/// The shared broker of the suite.
pub fn shared_brokers() -> String {
    kafka_brokers()
}

/// A reservation made up by a test, with the final event it gets (if any).
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// Its id.
    pub id: Uuid,
    /// Its category.
    pub category: i64,
    /// Its owner.
    pub user: String,
    /// Tickets.
    pub quantity: i64,
    /// Creation time (ms).
    pub created_at_ms: i64,
    /// Its final event, or `None` while held.
    pub outcome: Option<EventType>,
}

impl Synthetic {
    /// `count` reservations in `category`, cycling through held, confirmed, cancelled, expired.
    pub fn batch(category: i64, count: usize) -> Vec<Self> {
        let outcomes = [None, Some(EventType::Confirmed), Some(EventType::Cancelled), Some(EventType::Expired)];
        let base = chrono::Utc::now().timestamp_millis();
        (0..count)
            .map(|index| Self {
                id: ReservationId::generate(CategoryId::new(category).unwrap()).uuid(),
                category,
                user: format!("user-{}", index % 7),
                quantity: 1 + (index % 3) as i64,
                created_at_ms: base + index as i64,
                outcome: outcomes[index % outcomes.len()],
            })
            .collect()
    }

    /// The status Postgres must end with.
    pub fn final_status(&self) -> &'static str {
        match self.outcome {
            None => "held",
            Some(EventType::Confirmed) => "confirmed",
            Some(EventType::Cancelled) => "cancelled",
            Some(EventType::Expired) => "expired",
            Some(EventType::Reserved) => unreachable!(),
        }
    }

    /// How many distinct events it has.
    pub fn event_count(&self) -> usize {
        1 + usize::from(self.outcome.is_some())
    }

    /// Its event of `event_type`, as the reservation scripts make it.
    pub fn event(&self, event_type: EventType) -> ReservationEvent {
        let occurred = self.created_at_ms + if event_type == EventType::Reserved { 0 } else { 1_000 };
        let status = if event_type == EventType::Reserved { "held" } else { self.final_status() };
        let confirmed = event_type == EventType::Confirmed;
        ReservationEvent {
            id: event_id(self.id, event_type),
            event_type,
            occurred_at: milliseconds::to_time(occurred),
            reservation: Reservation {
                id: self.id,
                status: ReservationStatus::parse(status).unwrap(),
                event_id: 1,
                category_id: self.category,
                user_id: self.user.clone(),
                quantity: self.quantity,
                amount: self.quantity * 1000,
                currency: "USD".to_owned(),
                created_at: milliseconds::to_time(self.created_at_ms),
                expires_at: milliseconds::to_time(self.created_at_ms + 600_000),
                confirmed_at: confirmed.then(|| milliseconds::to_time(occurred)),
                payment_id: confirmed.then(|| format!("pay_{}", self.id.simple())),
                seats: None,
            },
        }
    }

    /// The outbox fields of its event of `event_type`, as the reservation scripts write them.
    pub fn fields(&self, event_type: EventType) -> Vec<(&'static str, String)> {
        entry_fields(&self.event(event_type))
    }

    /// Its event of `event_type` as the relay publishes it (keyed by reservation id).
    pub fn record(&self, event_type: EventType) -> Record {
        let event = self.event(event_type);
        Record {
            key: Some(self.id.to_string().into_bytes()),
            value: Some(serde_json::to_vec(&event).unwrap()),
            headers: Default::default(),
            timestamp: event.occurred_at,
        }
    }
}

/// Lists `category` for the relay (as provisioning does).
pub async fn register_category(redis: &RedisConnection, keys: &Keyspace, category: i64) {
    let _: i64 = redis::cmd("SADD").arg(keys.categories()).arg(category).query_async(&mut redis.clone()).await.unwrap();
}

/// Appends events to their categories' outboxes, like the reservation scripts do.
pub async fn append_events(redis: &RedisConnection, keys: &Keyspace, events: &[(&Synthetic, EventType)]) {
    let mut pipe = redis::pipe();
    for (reservation, event_type) in events {
        let stream = keys.outbox(CategoryId::new(reservation.category).unwrap());
        let command = pipe.cmd("XADD").arg(stream).arg("*");
        for (field, value) in reservation.fields(*event_type) {
            command.arg(field).arg(value);
        }
        command.ignore();
    }
    let () = pipe.query_async(&mut redis.clone()).await.unwrap();
}

/// The reserved events of `reservations`, then their final events.
pub async fn append_lifecycles(redis: &RedisConnection, keys: &Keyspace, reservations: &[Synthetic]) {
    let reserved: Vec<_> = reservations.iter().map(|reservation| (reservation, EventType::Reserved)).collect();
    append_events(redis, keys, &reserved).await;
    let finals: Vec<_> = reservations
        .iter()
        .filter_map(|reservation| reservation.outcome.map(|outcome| (reservation, outcome)))
        .collect();
    append_events(redis, keys, &finals).await;
}

/// Entries waiting in a category's outbox.
pub async fn outbox_length(redis: &RedisConnection, keys: &Keyspace, category: i64) -> i64 {
    redis::cmd("XLEN")
        .arg(keys.outbox(CategoryId::new(category).unwrap()))
        .query_async(&mut redis.clone())
        .await
        .unwrap()
}

/// A pool on the test's database.
pub async fn database(isolation: &Isolation) -> PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&isolation.database_url).await.expect("database")
}

/// Rows in `reservation_events` (0 while the worker has not created the table).
pub async fn event_rows(database: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM reservation_events").fetch_one(database).await.unwrap_or(0)
}

/// Waits until `reservation_events` has `expected` rows.
pub async fn wait_for_event_rows(database: &PgPool, expected: i64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let rows = event_rows(database).await;
        assert!(rows <= expected, "more event rows ({rows}) than events ({expected})");
        if rows == expected {
            return;
        }
        assert!(started.elapsed() < timeout, "only {rows} of {expected} events reached postgres within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every reservation row: id to (status, quantity).
pub async fn reservation_rows(database: &PgPool) -> HashMap<Uuid, (String, i64)> {
    let rows: Vec<(Uuid, String, i64)> =
        sqlx::query_as("SELECT id, status, quantity FROM reservations").fetch_all(database).await.unwrap();
    rows.into_iter().map(|(id, status, quantity)| (id, (status, quantity))).collect()
}

/// Asserts that Postgres holds exactly `reservations`, each with its final status
/// and quantity, and every one of their events once.
pub async fn assert_rows_match(database: &PgPool, reservations: &[Synthetic]) {
    let rows = reservation_rows(database).await;
    assert_eq!(rows.len(), reservations.len(), "one row per reservation");
    for reservation in reservations {
        let row = rows.get(&reservation.id).unwrap_or_else(|| panic!("reservation {} missing", reservation.id));
        assert_eq!((row.0.as_str(), row.1), (reservation.final_status(), reservation.quantity), "{}", reservation.id);
    }
    let expected: i64 = reservations.iter().map(|reservation| reservation.event_count() as i64).sum();
    assert_eq!(event_rows(database).await, expected, "each event exactly once");
}

/// Produces `records` to `partition` of `topic` in one request (one record batch),
/// bypassing the relay; creates the topic with [`TEST_PARTITIONS`] partitions if needed.
pub async fn produce_directly(brokers: &str, topic: &str, partition: i32, records: Vec<Record>) {
    let deadline = Duration::from_secs(10);
    let client = stampede::kafka::connect(brokers, "pipeline-test", deadline).await.unwrap();
    stampede::kafka::ensure_topic(&client, topic, TEST_PARTITIONS.parse().unwrap(), deadline).await.unwrap();
    let partition = stampede::kafka::partition_client(&client, topic, partition, deadline).await.unwrap();
    partition.produce(records, Compression::NoCompression).await.unwrap();
}

/// Rows of `dead_letters`, oldest first: (partition, offset, error).
pub async fn dead_letter_rows(database: &PgPool) -> Vec<(i32, i64, String)> {
    sqlx::query_as("SELECT kafka_partition, kafka_offset, error FROM dead_letters ORDER BY id")
        .fetch_all(database)
        .await
        .unwrap_or_default()
}

/// Deletes every Redis key of a category (stock, holds, deadlines, holders, outbox...).
pub async fn flush_category(app: &TestApp, category: i64) {
    let pattern = format!("{}:{{c:{category}}}:*", app.isolation.redis_key_prefix);
    crate::support::harness::delete_keys(&pattern).await.unwrap();
}
