//! Operability: request ids, JSON log lines, readiness during shutdown, and the `migrate` command.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::api_process::read_address;
use crate::support::harness::{Isolation, TestApp, admin_token, wait_until};

/// Starts the `api` binary on `isolation` with extra environment variables.
fn spawn_api_with_env(isolation: &Isolation, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command.env("RUST_LOG", "warn");
    for (name, value) in isolation.api_env() {
        command.env(name, value);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("api spawns")
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn request_ids_are_echoed_generated_and_unique() {
    // Goal: every response carries X-Request-Id: the client's own when valid (also on errors), else a new unique one.
    let app = TestApp::spawn().await;
    let echoed = app.client.get(app.url("/health")).header("x-request-id", "client id 7").send().await.unwrap();
    assert_eq!(request_id(&echoed), "client id 7");
    let longest = "x".repeat(128);
    let not_found = app.client.get(app.url("/no-such-route")).header("x-request-id", &longest).send().await.unwrap();
    assert_eq!(not_found.status(), 404);
    assert_eq!(request_id(&not_found), longest);
    let unauthorized = app.client.post(app.url("/events")).header("x-request-id", "e-401").send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(request_id(&unauthorized), "e-401");

    let too_long = "x".repeat(129);
    let replaced = app.client.get(app.url("/health")).header("x-request-id", &too_long).send().await.unwrap();
    assert_ne!(request_id(&replaced), too_long);
    let non_ascii = reqwest::header::HeaderValue::from_bytes("café".as_bytes()).unwrap();
    let replaced = app.client.get(app.url("/health")).header("x-request-id", non_ascii).send().await.unwrap();
    assert!(request_id(&replaced).is_ascii());

    let mut generated = HashSet::new();
    for _ in 0..50 {
        let response = app.get("/health", None).await;
        let id = request_id(&response);
        assert!(!id.is_empty() && id.len() <= 128, "{id}");
        generated.insert(id);
    }
    assert_eq!(generated.len(), 50, "generated ids are unique");
    app.stop().await;
}

#[tokio::test]
async fn json_log_lines_parse_and_request_lines_carry_the_request_id() {
    // Goal: with LOG_FORMAT=json every stderr line of the api is one JSON object with timestamp, level, target and message, and every line written while serving a request (the access log here) carries that request's id.
    let isolation = Isolation::new().await;
    let env = [("LOG_FORMAT", "json"), ("RUST_LOG", "info,stampede::access=debug")];
    let mut api = spawn_api_with_env(&isolation, &env);
    let (address, _) = read_address(&mut api, 0);
    let stderr = api.stderr.take().unwrap();
    let lines = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let client = reqwest::Client::new();
    let sent = ["json-health", "json-bad-event", "json-missing"];
    let paths = ["/health", "/events", "/no-such-route"];
    for (id, path) in sent.iter().zip(paths) {
        let request = if path == "/events" {
            client.post(format!("http://{address}{path}")).bearer_auth(admin_token()).body("{not json")
        } else {
            client.get(format!("http://{address}{path}"))
        };
        let response = request.header("x-request-id", *id).send().await.unwrap();
        assert_eq!(request_id(&response), *id);
    }
    terminate(&api);
    assert!(api.wait().unwrap().success());
    let lines = lines.join().unwrap();
    let mut served = HashSet::new();
    for line in &lines {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(object.get(key).is_some(), "{key} missing: {line}");
        }
        if object["target"] == "stampede::access" {
            let id = object["request_id"].as_str().unwrap_or_else(|| panic!("no request_id: {line}"));
            assert!(object["route"].is_string() && object["status"].is_u64(), "{line}");
            served.insert(id.to_owned());
        }
    }
    let expected: HashSet<String> = sent.iter().map(|id| (*id).to_owned()).collect();
    assert_eq!(served, expected, "one access line per request, with its id: {lines:#?}");
    assert!(lines.iter().any(|line| line.contains("api stopped")), "{lines:#?}");
}

#[tokio::test]
async fn ready_is_503_from_sigterm_while_the_readiness_delay_still_serves() {
    // Goal: after SIGTERM, GET /ready answers 503 at once while everything else is still served for SHUTDOWN_READINESS_DELAY; then the api stops accepting and exits 0.
    let isolation = Isolation::new().await;
    let mut api = spawn_api_with_env(&isolation, &[("SHUTDOWN_READINESS_DELAY", "8s")]);
    let (address, _) = read_address(&mut api, 0);
    let client = reqwest::Client::new();
    let ready = client.get(format!("http://{address}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    terminate(&api);
    wait_until(Duration::from_secs(5), "/ready answers 503", || async {
        client.get(format!("http://{address}/ready")).send().await.is_ok_and(|response| response.status() == 503)
    })
    .await;
    let health = client.get(format!("http://{address}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "still serving during the delay");
    let body = serde_json::json!({"name": "During the delay", "venue": "V", "starts_at": "2030-01-01T00:00:00Z"});
    let created =
        client.post(format!("http://{address}/events")).bearer_auth(admin_token()).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 201, "state changes are still served during the delay");
    let ready = client.get(format!("http://{address}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    wait_until(Duration::from_secs(30), "the api stops accepting after the delay", || async {
        tokio::net::TcpStream::connect(&address).await.is_err()
    })
    .await;
    assert!(api.wait().unwrap().success());
}

#[tokio::test]
async fn worker_migrate_applies_the_migrations_and_logs_json() {
    // Goal: `worker migrate` creates the schema on an empty database and exits 0 (twice: idempotent), logging JSON lines with LOG_FORMAT=json.
    let isolation = Isolation::new().await;
    for _ in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_worker"))
            .arg("migrate")
            .env("DATABASE_URL", &isolation.database_url)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let lines: Vec<Value> = stderr.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert!(lines.iter().any(|line| line["message"] == "database migrations applied"), "{stderr}");
    }
    let database = sqlx::PgPool::connect(&isolation.database_url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('events', 'consumer_offsets')",
    )
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(tables, 2);
    database.close().await;
}

#[tokio::test]
async fn every_series_has_help_text_and_the_build_info() {
    // Goal: /metrics prints a HELP line for every series it exports, stampede_build_info names the version, the process collector's series are there, and every metric the code records is described.
    let app = TestApp::spawn().await;
    let _ = app.get("/health", None).await;
    let page = app.get("/metrics", None).await.text().await.unwrap();
    let helped: HashSet<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("# HELP "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    for line in page.lines() {
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split(' ').next()) {
            assert!(helped.contains(name), "{name} has no HELP line");
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(page.contains(&format!("stampede_build_info{{version=\"{version}\",commit=\"")), "{page}");
    for series in ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"] {
        assert!(page.lines().any(|line| line.starts_with(series)), "{series} missing");
    }
    app.stop().await;

    let described: HashSet<&str> =
        stampede::telemetry::descriptions::METRICS.iter().map(|metric| metric.name).collect();
    for name in recorded_metric_names(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        assert!(described.contains(name.as_str()), "{name} is recorded but has no description");
    }
}

/// Every literal metric name passed to `counter!`, `gauge!` or `histogram!` under `dir`.
fn recorded_metric_names(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            names.extend(recorded_metric_names(&path));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (index, _) in text.match_indices(macro_name) {
                let rest = text[index + macro_name.len()..].trim_start();
                if let Some(literal) = rest.strip_prefix('"') {
                    names.push(literal.split('"').next().unwrap().to_owned());
                }
            }
        }
    }
    names
}
