//! Secrets at start-up and on command lines: weak or public `JWT_SECRET`s are refused,
//! `--dev` never prints a token signed with a given secret, the token CLI reads its
//! secret from a file or standard input, and `--help` never prints a secret's value.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use stampede::config::DEV_JWT_SECRET;

use crate::support::api_process::spawn_api;
use crate::support::harness::{Isolation, SECRET, TestApp};

/// Runs the `api` binary on `isolation` with `JWT_SECRET=secret` and `extra` flags until it
/// exits (within 30 s) and returns its output.
fn api_exit(isolation: &Isolation, secret: &str, extra: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command.args(extra).env("RUST_LOG", "warn");
    for (name, value) in isolation.api_env() {
        command.env(name, if name == "JWT_SECRET" { secret.to_owned() } else { value });
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("api spawns");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!("the api started with JWT_SECRET={secret:?}: {}", String::from_utf8_lossy(&output.stdout));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn weak_or_public_jwt_secrets_are_refused_at_start() {
    // Goal: without --dev, a JWT_SECRET under 32 bytes or equal to the development secret stops the api at start with a message naming the problem.
    let isolation = Isolation::new().await;
    let short = api_exit(&isolation, "only-31-bytes-long-secret-value", &[]);
    assert!(!short.status.success());
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("JWT_SECRET is 31 bytes") && stderr.contains("32"), "{stderr}");
    let public = api_exit(&isolation, DEV_JWT_SECRET, &[]);
    assert!(!public.status.success());
    let stderr = String::from_utf8_lossy(&public.stderr);
    assert!(stderr.contains("public development secret"), "{stderr}");
}

#[tokio::test]
async fn dev_mode_prints_no_token_signed_with_a_given_secret() {
    // Goal: --dev with JWT_SECRET set starts (the secret is in force) and prints no token at all.
    let isolation = Isolation::new().await;
    let mut dev = spawn_api(&isolation, true, &["--dev"]);
    let mut stdout = BufReader::new(dev.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let address = first.trim().strip_prefix("listening on http://").expect("address line").to_owned();
    let health = reqwest::get(format!("http://{address}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let admin = crate::support::harness::admin_token();
    let body = serde_json::json!({"name": "N", "venue": "V", "starts_at": "2030-01-01T00:00:00Z"});
    let created =
        reqwest::Client::new().post(format!("http://{address}/events")).bearer_auth(admin).json(&body).send().await;
    assert_eq!(created.unwrap().status(), 201, "the given secret verifies tokens");
    dev.kill().unwrap();
    dev.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("TOKEN="), "printed a token: {rest}");
}

fn token_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_token"));
    command.env_remove("JWT_SECRET").env_remove("TOKEN_SECRET_FILE");
    command
}

#[tokio::test]
async fn the_token_cli_reads_its_secret_from_a_file_or_standard_input() {
    // Goal: `token --secret-file PATH` and `--secret-file -` mint tokens the api accepts, with no secret on the command line.
    let directory = std::env::temp_dir().join(crate::support::harness::unique_name("token-secret"));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("jwt-secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let from_file =
        token_command().args(["--role", "admin", "--sub", "ops", "--secret-file"]).arg(&path).output().unwrap();
    assert!(from_file.status.success(), "{}", String::from_utf8_lossy(&from_file.stderr));
    let mut child = token_command()
        .args(["--role", "admin", "--sub", "ops", "--secret-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(SECRET.as_bytes()).unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert!(from_stdin.status.success());
    let missing = token_command()
        .args(["--role", "admin", "--sub", "ops", "--secret-file"])
        .arg(directory.join("none"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the secret"));
    std::fs::remove_dir_all(&directory).unwrap();

    let app = TestApp::spawn().await;
    let body = serde_json::json!({"name": "N", "venue": "V", "starts_at": "2030-01-01T00:00:00Z"});
    for output in [from_file, from_stdin] {
        let token = String::from_utf8(output.stdout).unwrap();
        assert_eq!(app.post("/events", Some(token.trim()), &body).await.status(), 201);
    }
    app.stop().await;
}

#[test]
fn help_never_prints_the_values_of_secret_settings() {
    // Goal: `--help` of every binary shows no value of an environment variable that can hold a secret (URLs with passwords, JWT secret, SASL password, pass keys).
    // (variable, value, the secret part of the value)
    let secrets = [
        ("DATABASE_URL", "postgres://app:pg-password-1@db/stampede", "pg-password-1"),
        ("REDIS_URL", "redis://:redis-password-2@cache:6379", "redis-password-2"),
        ("JWT_SECRET", "jwt-secret-value-3-jwt-secret-value-3", "jwt-secret-value-3"),
        ("KAFKA_SASL_PASSWORD", "sasl-password-4", "sasl-password-4"),
        ("QUEUE_PASS_KEYS", "k1:queue-pass-key-5-long", "queue-pass-key-5"),
    ];
    let binaries = [
        (env!("CARGO_BIN_EXE_api"), vec!["--help"]),
        (env!("CARGO_BIN_EXE_worker"), vec!["--help"]),
        (env!("CARGO_BIN_EXE_worker"), vec!["reconcile", "--help"]),
        (env!("CARGO_BIN_EXE_token"), vec!["--help"]),
    ];
    for (binary, arguments) in binaries {
        let environment = secrets.iter().map(|(name, value, _)| (name, value));
        let output = Command::new(binary).args(&arguments).envs(environment).output().unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("Usage"), "{binary} {arguments:?}: {help}");
        for (name, _, secret) in secrets {
            assert!(!help.contains(secret), "{binary} {arguments:?} prints {name}'s value");
        }
    }
}
