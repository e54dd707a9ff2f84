//! Starts the real API on port 0 with an isolated database and Redis key prefix, and
//! removes that database, those keys and the test's topic when the test ends.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use stampede::auth::{Jwt, Role};
use stampede::config::{ApiConfig, Secret};
use stampede::ids::{CategoryId, UserId};
use stampede::keyspace::Keyspace;
use stampede::stock::{Levels, Stock};
use tokio_util::sync::CancellationToken;

/// The secret every test app uses.
pub const SECRET: &str = "integration-test-secret-of-at-least-32-bytes";

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Postgres server URL without a database.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Redis URL of the tests.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether the tests run against a Redis Cluster (`TEST_REDIS_CLUSTER=true`, set by
/// `scripts/test` for its cluster pass): `TEST_REDIS_URL` then lists the cluster's nodes.
pub fn redis_cluster() -> bool {
    std::env::var("TEST_REDIS_CLUSTER").is_ok_and(|value| value == "true")
}

/// The value of `--redis-cluster` and `REDIS_CLUSTER` for the processes a test starts.
pub fn redis_cluster_flag() -> String {
    redis_cluster().to_string()
}

/// A connection to the tests' Redis (one node or the cluster).
pub async fn connect_redis() -> stampede::infrastructure::RedisConnection {
    stampede::infrastructure::connect_redis(&redis_url(), redis_cluster()).await.expect("redis is up")
}

/// Connections to every master of the tests' Redis: the one server, or each master of
/// the cluster that answers (a master killed by a failover test is skipped).
async fn redis_masters() -> Result<Vec<redis::aio::MultiplexedConnection>, redis::RedisError> {
    let mut masters = Vec::new();
    for url in redis_url().split(',').map(str::trim) {
        let client = redis::Client::open(url)?;
        let Ok(mut node) = client.get_multiplexed_async_connection().await else { continue };
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut node).await?;
        if matches!(role.first(), Some(redis::Value::BulkString(role)) if role.as_slice() == b"master") {
            masters.push(node);
        }
    }
    Ok(masters)
}

/// Every key matching `pattern` on every master (SCAN, so Redis never blocks on it).
pub async fn keys_matching(pattern: &str) -> Result<Vec<String>, redis::RedisError> {
    let mut found = Vec::new();
    for mut node in redis_masters().await? {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut node)
                .await?;
            found.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(found)
}

/// Unlinks every key matching `pattern`, one key per command so none crosses a slot.
pub async fn delete_keys(pattern: &str) -> Result<(), redis::RedisError> {
    let keys = keys_matching(pattern).await?;
    let mut redis = stampede::infrastructure::connect_redis(&redis_url(), redis_cluster()).await?;
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("UNLINK").arg(key).ignore();
        }
        let () = pipe.query_async(&mut redis).await?;
    }
    Ok(())
}

/// Kafka brokers of the tests (started by `scripts/test`).
pub fn kafka_brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A name unique to this process and call: `<label>_<pid>_<n>_<random>`.
pub fn unique_name(label: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{label}_{}_{n}_{:08x}", std::process::id(), fastrand::u32(..))
}

/// A fresh, empty database; returns its URL.
pub async fn create_database() -> String {
    let name = unique_name("stampede_test");
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", postgres_server_url())).await.expect("postgres is up");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    format!("{}/{name}", postgres_server_url())
}

/// Isolation of one test: its database, Redis key prefix and Kafka topic.
///
/// Clones share one [`Cleanup`]: when the last clone is dropped (at the end of the
/// test, also when it panics) the database, every key under the prefix and the topic
/// on the shared broker are removed.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// Postgres URL of the test's own database.
    pub database_url: String,
    /// The test's Redis key prefix.
    pub redis_key_prefix: String,
    /// The test's Kafka topic.
    pub kafka_topic: String,
    cleanup: Arc<Cleanup>,
}

impl Isolation {
    /// A new database, prefix and topic.
    pub async fn new() -> Self {
        sweep_abandoned_once().await;
        let database_url = create_database().await;
        let redis_key_prefix = unique_name("test");
        let kafka_topic = unique_name("reservations");
        let database = database_url.rsplit('/').next().expect("a database name").to_owned();
        let cleanup = Arc::new(Cleanup {
            database,
            redis_key_prefix: redis_key_prefix.clone(),
            kafka_topic: kafka_topic.clone(),
        });
        Self { database_url, redis_key_prefix, kafka_topic, cleanup }
    }

    /// The API configuration of this isolation plus `extra` flags (`["--hold-ttl", "1s"]`).
    /// The outbox relay is off unless `extra` sets `--relay-enabled true`, so tests that
    /// do not need the broker do not depend on it.
    pub fn api_config(&self, extra: &[&str]) -> ApiConfig {
        let mut args: Vec<String> = [
            "api",
            "--listen-addr",
            "127.0.0.1:0",
            "--database-url",
            &self.database_url,
            "--database-connections-max",
            "4",
            "--redis-url",
            &redis_url(),
            "--redis-cluster",
            &redis_cluster_flag(),
            "--redis-key-prefix",
            &self.redis_key_prefix,
            "--kafka-brokers",
            &kafka_brokers(),
            "--kafka-topic",
            &self.kafka_topic,
            "--jwt-secret",
            SECRET,
            "--shutdown-timeout",
            "5s",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        if !extra.contains(&"--relay-enabled") {
            args.extend(["--relay-enabled".to_owned(), "false".to_owned()]);
        }
        // Tests drive many requests of one user; the tests of the per-user limits set them.
        for limit in ["--rate-limit-per-user-per-second", "--rate-limit-per-user-per-day"] {
            if !extra.contains(&limit) {
                args.extend([limit.to_owned(), "0".to_owned()]);
            }
        }
        args.extend(extra.iter().map(|arg| arg.to_string()));
        ApiConfig::parse_from(args)
    }

    /// The environment a child `api` process needs for this isolation.
    pub fn api_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", self.database_url.clone()),
            ("DATABASE_CONNECTIONS_MAX", "4".to_owned()),
            ("REDIS_URL", redis_url()),
            ("REDIS_CLUSTER", redis_cluster_flag()),
            ("REDIS_KEY_PREFIX", self.redis_key_prefix.clone()),
            ("KAFKA_BROKERS", kafka_brokers()),
            ("KAFKA_TOPIC", self.kafka_topic.clone()),
            ("JWT_SECRET", SECRET.to_owned()),
            ("RELAY_ENABLED", "false".to_owned()),
            ("RATE_LIMIT_PER_USER_PER_SECOND", "0".to_owned()),
            ("RATE_LIMIT_PER_USER_PER_DAY", "0".to_owned()),
        ]
    }
}

/// A running in-process API.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// HTTP client.
    pub client: Client,
    /// The test's isolation.
    pub isolation: Isolation,
    /// Cancels the app.
    pub shutdown: CancellationToken,
    /// Redis connection for assertions.
    pub redis: stampede::infrastructure::RedisConnection,
    app: Option<stampede::api::RunningApi>,
}

impl Drop for TestApp {
    // Why: a test that ends without `stop` must not leave the app writing keys while its
    // isolation is being cleaned up.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Starts an app with default test configuration.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Starts an app with extra API flags.
    pub async fn spawn_with(extra: &[&str]) -> Self {
        let isolation = Isolation::new().await;
        Self::spawn_in(isolation, extra).await
    }

    /// Starts another app on an existing isolation (a second process on the same stores).
    pub async fn spawn_in(isolation: Isolation, extra: &[&str]) -> Self {
        let config = isolation.api_config(extra);
        Self::spawn_config(isolation, config).await
    }

    /// Starts an app with a configuration built by the test (e.g. a private broker).
    pub async fn spawn_config(isolation: Isolation, config: ApiConfig) -> Self {
        let shutdown = CancellationToken::new();
        let app = stampede::api::start(config, shutdown.clone()).await.expect("api starts");
        let redis = connect_redis().await;
        Self {
            base_url: format!("http://{}", app.local_addr),
            client: Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            isolation,
            shutdown,
            redis,
            app: Some(app),
        }
    }

    /// Stops the app and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(app) = self.app.take() {
            app.wait().await;
        }
    }

    /// The app's key layout.
    pub fn keys(&self) -> Keyspace {
        Keyspace::new(self.isolation.redis_key_prefix.clone())
    }

    /// A URL on the app.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A JSON POST with an optional bearer token.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// A GET with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// Creates an event open for sale now; returns its id.
    pub async fn create_event(&self) -> i64 {
        let body = json!({"name": "Test Event", "venue": "Hall", "starts_at": "2030-01-01T19:00:00Z"});
        let response = self.post("/events", Some(&admin_token()), &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// Creates a category with `quota` and `max_per_user` on `event`; returns its id.
    pub async fn create_category(&self, event: i64, quota: i64, max_per_user: i64) -> i64 {
        let body = json!({"name": unique_name("cat"), "price": 1000, "currency": "USD",
            "quota": quota, "max_per_user": max_per_user});
        let response = self.post(&format!("/events/{event}/ticket-category"), Some(&admin_token()), &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
        response.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// The stock store of this app's keyspace.
    pub fn stock(&self) -> Stock {
        Stock::new(self.redis.clone(), self.keys())
    }

    /// Asserts `available + held + sold == quota` for a category and returns the levels.
    pub async fn assert_conserved(&self, category: i64) -> Levels {
        let id = CategoryId::new(category).unwrap();
        self.stock().check_conservation(id).await.expect("conservation holds")
    }
}

/// The seed of a randomised test: `variable`'s value when set (to replay a run), else a
/// fresh one. Printed as `variable=<seed>`, so a failing run's output says how to replay it.
pub fn seed(variable: &str) -> u64 {
    let seed = std::env::var(variable).ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    println!("{variable}={seed}");
    seed
}

/// Polls `check` every 50 ms until it is true; panics naming `what` after `timeout`.
/// Use it instead of a fixed sleep wherever a test waits for something to happen.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of an unlabelled counter or gauge `metric` on a Prometheus text page (0 if absent).
pub fn metric_value(page: &str, metric: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            line.strip_prefix(metric).filter(|rest| rest.starts_with(' ')).and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A token signed with the test secret.
pub fn token(role: Role, subject: &str) -> String {
    let jwt = Jwt::new(&Secret::new(SECRET));
    jwt.mint(&UserId::parse(subject).unwrap(), role, Duration::from_secs(3600))
}

/// An admin token.
pub fn admin_token() -> String {
    token(Role::Admin, "admin")
}

/// A user token for `subject`.
pub fn user_token(subject: &str) -> String {
    token(Role::User, subject)
}

/// Reads a problem+json response and checks its status, content type and code.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    body
}

/// What one test created; dropping it removes all of it.
#[derive(Debug)]
struct Cleanup {
    database: String,
    redis_key_prefix: String,
    kafka_topic: String,
}

impl Drop for Cleanup {
    // Why: a thread, since `Drop` cannot await and runs on the test's runtime, where a second
    // runtime cannot block; the thread has its own and is joined, so the cleanup is done
    // before the test (and the process) ends. Failures are printed, never panic (this
    // may run while a failed test unwinds).
    fn drop(&mut self) {
        let (database, prefix, topic) =
            (self.database.clone(), self.redis_key_prefix.clone(), self.kafka_topic.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                report("drop database", &database, drop_database(&database).await);
                report("delete keys", &prefix, delete_keys(&format!("{prefix}:*")).await.map_err(Into::into));
                report("delete topic", &topic, delete_topic(&topic).await);
            });
        });
        let _ = cleanup.join();
    }
}

type CleanupResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn report(what: &str, name: &str, result: CleanupResult) {
    if let Err(error) = result {
        eprintln!("test cleanup: cannot {what} {name}: {error}");
    }
}

/// Drops a test database, closing the connections still open on it.
async fn drop_database(name: &str) -> CleanupResult {
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", postgres_server_url())).await?;
    let result =
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&admin).await;
    admin.close().await;
    result.map(drop).map_err(Into::into)
}

/// Deletes the test's topic on the shared broker, if the broker is up and has it
/// (a private broker keeps its topics in memory and dies with its test).
async fn delete_topic(topic: &str) -> CleanupResult {
    let brokers = kafka_brokers();
    let connect = tokio::net::TcpStream::connect(brokers.as_str());
    if !matches!(tokio::time::timeout(Duration::from_millis(500), connect).await, Ok(Ok(_))) {
        return Ok(());
    }
    let delete = async {
        let client = rskafka::client::ClientBuilder::new(vec![brokers.clone()]).build().await?;
        let topics = client.list_topics().await?;
        if topics.iter().any(|known| known.name == topic) {
            client.controller_client()?.delete_topic(topic, 5_000).await?;
        }
        Ok::<(), rskafka::client::error::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(10), delete).await??;
    Ok(())
}

/// Older than this, what a test process that is gone left behind is swept.
const ABANDONED_AGE: Duration = Duration::from_secs(3600);

/// Once per test process: removes databases and keys that earlier, crashed runs left
/// behind. Only what is clearly abandoned goes: its name carries the pid of a process
/// that no longer runs and it is older than [`ABANDONED_AGE`], so concurrent runs are
/// never touched.
async fn sweep_abandoned_once() {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            if std::path::Path::new("/proc/self").exists() {
                report("sweep databases of", "crashed runs", sweep_databases().await);
                report("sweep keys of", "crashed runs", sweep_keys().await);
            }
        })
        .await;
}

/// Whether a test name `<label>_<pid>_...` belongs to a process that is gone.
fn abandoned(name: &str, label: &str) -> bool {
    let pid = name.strip_prefix(label).and_then(|rest| rest.strip_prefix('_')).and_then(|rest| rest.split('_').next());
    match pid.and_then(|pid| pid.parse::<u32>().ok()) {
        Some(pid) => pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

async fn sweep_databases() -> CleanupResult {
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", postgres_server_url())).await?;
    // The creation time of a database is that of its PG_VERSION file.
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'stampede\\_test\\_%' \
         AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification < now() - make_interval(secs => $1)",
    )
    .bind(ABANDONED_AGE.as_secs_f64())
    .fetch_all(&admin)
    .await?;
    admin.close().await;
    for name in old.iter().filter(|name| abandoned(name, "stampede_test")) {
        report("drop database", name, drop_database(name).await);
    }
    Ok(())
}

async fn sweep_keys() -> CleanupResult {
    let mut redis = stampede::infrastructure::connect_redis(&redis_url(), redis_cluster()).await?;
    // Each prefix is judged once, by the first of its keys the scan meets.
    let mut judged = std::collections::BTreeMap::<String, bool>::new();
    for key in keys_matching("test_*").await? {
        let prefix = key.split(':').next().unwrap_or_default();
        if judged.contains_key(prefix) {
            continue;
        }
        let old = abandoned(prefix, "test") && {
            // Idle that long: nothing has touched this key for an hour.
            let idle: Option<u64> = redis::cmd("OBJECT").arg("IDLETIME").arg(&key).query_async(&mut redis).await?;
            idle.is_some_and(|idle| idle >= ABANDONED_AGE.as_secs())
        };
        judged.insert(prefix.to_owned(), old);
    }
    let prefixes = judged.into_iter().filter_map(|(prefix, old)| old.then_some(prefix));
    for prefix in prefixes {
        report("delete keys", &prefix, delete_keys(&format!("{prefix}:*")).await.map_err(Into::into));
    }
    Ok(())
}
