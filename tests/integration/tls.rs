//! TLS to the backends with real servers: Redis with `--tls-port` (one node and a cluster)
//! and Postgres (the machine's, whose certificate is the system's snakeoil, and a private
//! one whose certificate a CA of the test signed). Certificates come from the openssl CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stampede::config::ApiConfig;
use stampede::infrastructure::{RedisTarget, connect_redis_to};

use crate::support::harness::{Isolation, TestApp, unique_name, wait_until};
use crate::support::pipeline::free_port;
use crate::support::reservation::{confirm_as, hold, sale};

/// A CA made for one test, and a server certificate it signed for `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// Holds `ca.pem`, `server.pem`, `server.key`.
    pub directory: PathBuf,
}

impl TestCa {
    /// Makes the CA and the server certificate (P-256 keys).
    pub fn new(label: &str) -> Self {
        let directory = std::env::temp_dir().join(unique_name(label));
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(
            directory.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let script = "set -e
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
              -subj /CN=stampede-test-ca -keyout ca.key -out ca.pem
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
              -keyout server.key -out server.csr
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
              -extfile server.ext -out server.pem";
        let output = Command::new("sh").args(["-c", script]).current_dir(&directory).output().unwrap();
        assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
        Self { directory }
    }

    /// A file of the CA's directory.
    pub fn file(&self, name: &str) -> String {
        self.directory.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A process the test started, stopped with SIGTERM (then SIGKILL) when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-server` serving only TLS on a free port with the CA's server certificate.
fn start_tls_redis(ca: &TestCa, extra: &[&str]) -> (Server, u16) {
    let port = free_port();
    let (port_text, cert, key, ca_file) =
        (port.to_string(), ca.file("server.pem"), ca.file("server.key"), ca.file("ca.pem"));
    let mut args = vec!["--port", "0", "--tls-port", &port_text, "--bind", "127.0.0.1", "--tls-cert-file", &cert];
    args.extend(["--tls-key-file", &key, "--tls-ca-cert-file", &ca_file, "--tls-auth-clients", "no"]);
    args.extend(["--save", "", "--appendonly", "no", "--dir"]);
    let directory = ca.file("");
    args.push(&directory);
    args.extend(extra);
    let child = Command::new("redis-server").args(&args).stdout(Stdio::null()).spawn().expect("redis-server starts");
    (Server { child }, port)
}

/// `config` pointed at another Redis.
fn with_redis(mut config: ApiConfig, url: &str, cluster: bool, ca_file: Option<&str>) -> ApiConfig {
    config.shared.redis_url = url.to_owned();
    config.shared.redis_cluster = cluster;
    config.shared.redis_ca_cert = ca_file.map(PathBuf::from);
    config
}

async fn wait_for_port(port: u16) {
    wait_until(Duration::from_secs(20), "the server listens", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
}

/// Reserves two tickets and confirms them on `app`, then checks the stock adds up.
async fn sell(app: &TestApp) {
    let (_, category) = sale(app, 10, 4).await;
    let held = hold(app, "buyer", category, 2).await;
    let id = held["id"].as_str().unwrap().to_owned();
    let confirmed = confirm_as(app, "buyer", &id, "tok_ok", None).await;
    assert_eq!(confirmed.status(), 200, "{:?}", confirmed.text().await);
    let levels = app.assert_conserved(category).await;
    assert_eq!(levels.sold, 2);
}

#[tokio::test]
async fn a_sale_works_over_tls_to_redis_with_the_ca_file() {
    // Goal: with rediss:// and REDIS_CA_CERT the api sells end to end over TLS; without the CA it refuses to start naming the certificate problem; a CA file with redis:// is refused.
    let ca = TestCa::new("redis-tls");
    let (_redis, port) = start_tls_redis(&ca, &[]);
    wait_for_port(port).await;
    let url = format!("rediss://localhost:{port}");
    let ca_file = ca.file("ca.pem");

    let isolation = Isolation::new().await;
    let config = with_redis(isolation.api_config(&[]), &url, false, Some(&ca_file));
    let mut app = TestApp::spawn_config(isolation, config).await;
    app.redis = connect_redis_to(&RedisTarget::new(&url, false, Some(ca_file.clone().into())).unwrap()).await.unwrap();
    sell(&app).await;
    app.stop().await;

    let isolation = Isolation::new().await;
    let without_ca = with_redis(isolation.api_config(&[]), &url, false, None);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let error = stampede::api::start(without_ca, shutdown).await.err().expect("no start without the CA");
    let message = stampede::telemetry::error_chain(&error);
    assert!(message.contains("redis") && message.to_lowercase().contains("certificate"), "{message}");

    let plain = with_redis(isolation.api_config(&[]), "redis://127.0.0.1:6379", false, Some(&ca_file));
    let error = stampede::api::start(plain, tokio_util::sync::CancellationToken::new()).await.err().expect("refused");
    assert!(stampede::telemetry::error_chain(&error).contains("REDIS_CA_CERT"), "a CA with redis:// is refused");
}

#[tokio::test]
async fn a_sale_works_on_a_redis_cluster_whose_nodes_speak_tls() {
    // Goal: a Redis Cluster of three TLS-only masters, reached with a rediss:// seed list and REDIS_CA_CERT, serves a sale.
    let ca = TestCa::new("redis-tls-cluster");
    let cluster_flags = ["--cluster-enabled", "yes", "--tls-cluster", "yes", "--tls-replication", "yes"];
    let mut nodes = Vec::new();
    for index in 0..3 {
        let config_file = ca.file(&format!("nodes-{index}.conf"));
        // The bus port is named: the default (port + 10000) can pass 65535.
        let bus_port = free_port().to_string();
        let mut extra: Vec<&str> = cluster_flags.to_vec();
        extra.extend(["--cluster-config-file", &config_file, "--cluster-port", &bus_port]);
        let node = start_tls_redis(&ca, &extra);
        wait_for_port(node.1).await;
        nodes.push(node);
    }
    let addresses: Vec<String> = nodes.iter().map(|(_, port)| format!("127.0.0.1:{port}")).collect();
    let created = Command::new("timeout")
        .args(["60", "redis-cli", "--tls", "--cacert", &ca.file("ca.pem"), "--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    let url = nodes.iter().map(|(_, port)| format!("rediss://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
    let ca_file = ca.file("ca.pem");
    let target = RedisTarget::new(&url, true, Some(ca_file.clone().into())).unwrap();
    wait_until(Duration::from_secs(30), "the cluster serves every slot", || async {
        connect_redis_to(&target).await.is_ok()
    })
    .await;
    let isolation = Isolation::new().await;
    let config = with_redis(isolation.api_config(&[]), &url, true, Some(&ca_file));
    let mut app = TestApp::spawn_config(isolation, config).await;
    app.redis = connect_redis_to(&target).await.unwrap();
    sell(&app).await;
    app.stop().await;
}

/// The share of this database's connections that use TLS, as Postgres reports it.
async fn tls_connections(server_url: &str, database: &str) -> (i64, i64) {
    let admin = sqlx::PgPool::connect(&format!("{server_url}/postgres")).await.unwrap();
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1",
    )
    .bind(database)
    .fetch_one(&admin)
    .await
    .unwrap();
    admin.close().await;
    counts
}

fn database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

/// Runs `worker reconcile` against `database_url` and returns its exit code and stderr.
fn reconcile(isolation: &Isolation, database_url: &str) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("reconcile")
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", crate::support::harness::redis_url())
        .env("REDIS_CLUSTER", crate::support::harness::redis_cluster_flag())
        .env("REDIS_KEY_PREFIX", &isolation.redis_key_prefix)
        .env("KAFKA_BROKERS", crate::support::harness::kafka_brokers())
        .env("KAFKA_TOPIC", &isolation.kafka_topic)
        .env("RECONCILE_DRAIN_TIMEOUT", "2s")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn the_api_the_worker_and_reconcile_use_tls_with_sslmode_require() {
    // Goal: with sslmode=require the api, the worker and worker reconcile reach the machine's Postgres (snakeoil certificate) over TLS only; verify-full against a CA that did not sign that certificate stops them at start.
    let isolation = Isolation::new().await;
    let database = database_name(&isolation.database_url);
    let require = format!("{}?sslmode=require", isolation.database_url);
    let mut config = isolation.api_config(&[]);
    config.shared.database_url = require.clone();
    let app = TestApp::spawn_config(isolation, config).await;
    sell(&app).await;
    let server_url = crate::support::harness::postgres_server_url();
    let (encrypted, all) = tls_connections(&server_url, &database).await;
    assert!(all > 0 && encrypted == all, "{encrypted} of {all} api connections use TLS");

    let metrics = format!("127.0.0.1:{}", free_port());
    let worker_url = format!("{require}&application_name=worker-tls-test");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("DATABASE_URL", &worker_url)
        .env("KAFKA_BROKERS", crate::support::harness::kafka_brokers())
        .env("KAFKA_TOPIC", &app.isolation.kafka_topic)
        .env("METRICS_ADDR", &metrics)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the worker connects over TLS", || async {
        let admin = sqlx::PgPool::connect(&format!("{server_url}/postgres")).await.unwrap();
        let ssl: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'worker-tls-test'",
        )
        .bind(&database)
        .fetch_one(&admin)
        .await
        .unwrap();
        admin.close().await;
        assert_eq!(ssl.0, ssl.1, "every worker connection uses TLS");
        ssl.1 > 0
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();

    let (code, stderr) = reconcile(&app.isolation, &require);
    assert!(matches!(code, Some(0 | 1)), "reconcile over TLS: {code:?} {stderr}");
    let ca = TestCa::new("postgres-wrong-ca");
    let wrong_ca = format!("{}?sslmode=verify-full&sslrootcert={}", app.isolation.database_url, ca.file("ca.pem"));
    let (code, stderr) = reconcile(&app.isolation, &wrong_ca);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("postgres"), "{stderr}");
    app.stop().await;
}

/// A private Postgres on a free port with TLS on and a certificate of `ca`, for verify-full.
struct PrivatePostgres {
    _server: Server,
    port: u16,
}

/// Runs `program` as the `postgres` user when this test runs as root (Postgres refuses root).
fn as_postgres_user(program: &str) -> Command {
    let root = Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"));
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

fn give_to_postgres_user(path: &Path) {
    let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status();
}

impl PrivatePostgres {
    async fn start(ca: &TestCa) -> Self {
        let data = ca.directory.join("pgdata");
        let bin = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
        let bin = PathBuf::from(bin.unwrap_or_default());
        let tool = |name: &str| bin.join(name).to_string_lossy().into_owned();
        std::fs::set_permissions(&ca.directory, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(ca.directory.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        give_to_postgres_user(&ca.directory);
        let initdb = as_postgres_user(&tool("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        let port = free_port();
        let child = as_postgres_user(&tool("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1,127.0.0.2",
                "-c",
                "fsync=off",
                "-c",
                "ssl=on",
            ])
            .args(["-c", &format!("unix_socket_directories={}", ca.directory.display())])
            .args(["-c", &format!("ssl_cert_file={}", ca.file("server.pem"))])
            .args(["-c", &format!("ssl_key_file={}", ca.file("server.key"))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child };
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        wait_until(Duration::from_secs(30), "the private postgres accepts connections", || {
            let url = url.clone();
            async move { sqlx::PgPool::connect(&url).await.is_ok() }
        })
        .await;
        Self { _server: server, port }
    }
}

#[tokio::test]
async fn verify_full_accepts_a_postgres_certificate_signed_by_the_given_ca() {
    // Goal: with sslmode=verify-full and sslrootcert the api runs a sale on a Postgres whose certificate the test's CA signed for localhost, and refuses one reached under a name the certificate does not hold.
    let ca = TestCa::new("postgres-tls");
    let postgres = PrivatePostgres::start(&ca).await;
    let root = ca.file("ca.pem");
    let isolation = Isolation::new().await;
    let verified =
        format!("postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={root}", postgres.port);
    let mut config = isolation.api_config(&[]);
    config.shared.database_url = verified;
    let app = TestApp::spawn_config(isolation, config).await;
    sell(&app).await;
    let (encrypted, all) =
        tls_connections(&format!("postgres://postgres@127.0.0.1:{}", postgres.port), "postgres").await;
    assert!(all > 0 && encrypted == all, "{encrypted} of {all} connections use TLS");
    app.stop().await;

    // The certificate holds localhost and 127.0.0.1, not 127.0.0.2 (also loopback).
    let isolation = Isolation::new().await;
    let wrong_name =
        format!("postgres://postgres@127.0.0.2:{}/postgres?sslmode=verify-full&sslrootcert={root}", postgres.port);
    let mut config = isolation.api_config(&[]);
    config.shared.database_url = wrong_name;
    let started = stampede::api::start(config, tokio_util::sync::CancellationToken::new()).await;
    assert!(started.is_err(), "a certificate for another name must not verify");
}
