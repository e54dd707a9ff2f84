//! Health, readiness, the token CLI, start-up rules and graceful shutdown of the real binaries.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::api_process::{read_address, spawn_api};
use crate::support::harness::{Isolation, SECRET, TestApp, admin_token, wait_until};
use crate::support::pipeline::free_port;

#[tokio::test]
async fn health_and_ready_answer_200() {
    // Goal: /health is 200 while running and /ready is 200 when Redis and Postgres answer.
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/health", None).await.status(), 200);
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"ready"}"#);
    app.stop().await;
}

#[tokio::test]
async fn ready_is_503_when_postgres_is_gone() {
    // Goal: readiness reports 503 unavailable when a dependency stops answering.
    let app = TestApp::spawn_with(&[]).await;
    let database = app.isolation.database_url.rsplit('/').next().unwrap().to_owned();
    let admin =
        sqlx::PgPool::connect(&format!("{}/postgres", crate::support::harness::postgres_server_url())).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {database} WITH (FORCE)"))).execute(&admin).await.unwrap();
    let response = app.get("/ready", None).await;
    crate::support::harness::assert_problem(response, 503, "unavailable").await;
    app.stop().await;
}

fn token_cli(args: &[&str], secret: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_token"));
    command.args(args).env_remove("JWT_SECRET");
    if let Some(secret) = secret {
        command.env("JWT_SECRET", secret);
    }
    command.output().expect("token runs")
}

#[tokio::test]
async fn token_cli_mints_tokens_the_api_accepts() {
    // Goal: `token` prints one JWT the API accepts, and refuses a bad role or a missing secret.
    let output = token_cli(&["--role", "admin", "--sub", "ops", "--ttl", "15m"], Some(SECRET));
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 1);
    let app = TestApp::spawn().await;
    let body = serde_json::json!({"name": "N", "venue": "V", "starts_at": "2030-01-01T00:00:00Z"});
    assert_eq!(app.post("/events", Some(text.trim()), &body).await.status(), 201);
    app.stop().await;

    let bad_role = token_cli(&["--role", "root", "--sub", "ops"], Some(SECRET));
    assert!(!bad_role.status.success());
    assert!(!bad_role.stderr.is_empty());
    let no_secret = token_cli(&["--role", "user", "--sub", "ops"], None);
    assert!(!no_secret.status.success());
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("secret"));
}

#[tokio::test]
async fn api_refuses_to_start_without_a_secret_unless_dev() {
    // Goal: no JWT_SECRET means exit non-zero; --dev starts and prints an admin and a user token.
    let isolation = Isolation::new().await;
    let refused = spawn_api(&isolation, false, &[]).wait_with_output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("JWT_SECRET"));

    let mut dev = spawn_api(&isolation, false, &["--dev"]);
    let (address, lines) = read_address(&mut dev, 3);
    let admin = lines.iter().find_map(|line| line.strip_prefix("ADMIN_TOKEN=")).expect("admin token").to_owned();
    assert!(lines.iter().any(|line| line.starts_with("USER_TOKEN=")));
    let body = serde_json::json!({"name": "N", "venue": "V", "starts_at": "2030-01-01T00:00:00Z"});
    let response = reqwest::Client::new()
        .post(format!("http://{address}/events"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    dev.kill().unwrap();
    dev.wait().unwrap();
}

#[tokio::test]
async fn the_dev_environment_variable_does_not_turn_on_dev_mode() {
    // Goal: DEV=true without JWT_SECRET refuses to start with a clear error, since only the --dev flag may use the public dev secret.
    let isolation = Isolation::new().await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command.env_remove("JWT_SECRET").env("RUST_LOG", "warn").env("DEV", "true");
    for (name, value) in isolation.api_env().into_iter().filter(|(name, _)| *name != "JWT_SECRET") {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("api spawns");
    let exited = tokio::time::timeout(Duration::from_secs(10), async {
        while child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    if exited.await.is_err() {
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        panic!("DEV=true started the api in dev mode: {}", String::from_utf8_lossy(&output.stdout));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET") && stderr.contains("--dev"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ADMIN_TOKEN"));
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    // Goal: a request whose body is still arriving when SIGTERM lands gets its full response; then the process exits 0.
    let isolation = Isolation::new().await;
    let mut api = spawn_api(&isolation, true, &[]);
    let (address, _) = read_address(&mut api, 0);
    let body = r#"{"name": "Late", "venue": "V", "starts_at": "2030-01-01T00:00:00Z"}"#;
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        admin_token(),
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..10]).unwrap();
    // Why: a fixed pause, since the api must have accepted the connection and begun reading the
    // request before SIGTERM lands, and nothing outside the process shows that moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = Command::new("kill").args(["-TERM", &api.id().to_string()]).status().unwrap();
    assert!(status.success());
    // The api drops its listener once SIGTERM is handled: then the body's rest arrives
    // during the drain.
    wait_until(Duration::from_secs(10), "the api stops accepting after SIGTERM", || async {
        tokio::net::TcpStream::connect(&address).await.is_err()
    })
    .await;
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    let mut buffer = [0u8; 4096];
    while !response.contains("\"Late\"") {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "connection closed before the response: {response}");
        response.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let exit = api.wait().unwrap();
    assert!(exit.success(), "api exits cleanly after draining");
}

/// A private redis-server restarted from an RDB of `keys` keys that it loads at 1 ms a
/// key, answering `LOADING` meanwhile (as after a restart from a large AOF or RDB).
struct LoadingRedis {
    process: Child,
    port: u16,
    directory: std::path::PathBuf,
}

impl LoadingRedis {
    async fn start(keys: u32) -> Self {
        let port = free_port();
        let directory = std::env::temp_dir().join(format!("stampede-loading-redis-{port}"));
        std::fs::create_dir_all(&directory).unwrap();
        let mut filler = Self::spawn(port, &directory, &["--enable-debug-command", "yes"]);
        let mut redis = Self::connect(port).await;
        let _: () = redis::cmd("DEBUG").arg("POPULATE").arg(keys).query_async(&mut redis).await.unwrap();
        let _: () = redis::cmd("SAVE").query_async(&mut redis).await.unwrap();
        filler.kill().unwrap();
        filler.wait().unwrap();
        let delay = ["--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024"];
        let process = Self::spawn(port, &directory, &delay);
        Self { process, port, directory }
    }

    fn spawn(port: u16, directory: &std::path::Path, extra: &[&str]) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(directory)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts")
    }

    async fn connect(port: u16) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        for _ in 0..100 {
            if let Ok(connection) = client.get_multiplexed_async_connection().await {
                return connection;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} never accepted a connection");
    }

    /// Whether the server still answers `LOADING`.
    async fn loading(&self) -> bool {
        let mut redis = Self::connect(self.port).await;
        let probe: Result<i64, redis::RedisError> = redis::cmd("EXISTS").arg("x").query_async(&mut redis).await;
        probe.is_err_and(|error| error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading))
    }
}

impl Drop for LoadingRedis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

#[tokio::test]
async fn an_api_started_while_redis_loads_its_data_waits_for_it() {
    // Goal: an api started while Redis is still loading its data set after a restart waits until Redis has loaded it and then serves, instead of exiting (the chaos soak found it exiting with BusyLoading).
    let isolation = Isolation::new().await;
    let redis = LoadingRedis::start(3_000).await;
    assert!(redis.loading().await, "the private Redis is loading when the api starts");
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut api = spawn_api(&isolation, true, &["--redis-url", &url]);
    let (address, _) = read_address(&mut api, 0);
    assert!(!redis.loading().await, "the api listens only once Redis has loaded its data");
    let ready = reqwest::get(format!("http://{address}/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    api.kill().unwrap();
    api.wait().unwrap();
}
