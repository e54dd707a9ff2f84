//! Starts the real API on port 0 with an isolated database and Redis key prefix.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
pub const SECRET: &str = "integration-test-secret";

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Postgres server URL without a database.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Redis URL of the tests.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
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
#[derive(Debug, Clone)]
pub struct Isolation {
    /// Postgres URL of the test's own database.
    pub database_url: String,
    /// The test's Redis key prefix.
    pub redis_key_prefix: String,
    /// The test's Kafka topic.
    pub kafka_topic: String,
}

impl Isolation {
    /// A new database, prefix and topic.
    pub async fn new() -> Self {
        let database_url = create_database().await;
        let redis_key_prefix = unique_name("test");
        let kafka_topic = unique_name("reservations");
        Self { database_url, redis_key_prefix, kafka_topic }
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
            ("REDIS_KEY_PREFIX", self.redis_key_prefix.clone()),
            ("KAFKA_BROKERS", kafka_brokers()),
            ("KAFKA_TOPIC", self.kafka_topic.clone()),
            ("JWT_SECRET", SECRET.to_owned()),
            ("RELAY_ENABLED", "false".to_owned()),
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
    pub redis: redis::aio::ConnectionManager,
    app: Option<stampede::api::RunningApi>,
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
        let redis = stampede::infrastructure::connect_redis(&redis_url()).await.expect("redis is up");
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
