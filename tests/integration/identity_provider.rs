//! Tokens from an identity provider (`JWT_JWKS_URL`), with a key set served by a small
//! hyper server inside the test (a fake of the third-party provider) and keys the test
//! generates; and the claim checks every token passes (time claims, `crit`, `sub`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use stampede::config::Secret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::harness::{Isolation, SECRET, TestApp, wait_until};

const ISSUER: &str = "https://idp.test/realms/stampede";
const AUDIENCE: &str = "stampede-api";

/// A signing key of the fake provider and its public JWK (with `kid`).
struct TestKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

/// The DER output of an openssl pipeline.
fn openssl_der(pipeline: &str) -> Vec<u8> {
    let output = std::process::Command::new("sh").args(["-c", pipeline]).output().expect("openssl runs");
    assert!(
        output.status.success() && !output.stdout.is_empty(),
        "{pipeline}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

impl TestKey {
    /// A new RSA key for RS256 (its JWK names `alg`).
    fn rsa(kid: &str) -> Self {
        let der = openssl_der(
            "openssl genrsa -traditional 2048 2>/dev/null | openssl rsa -traditional -outform DER 2>/dev/null",
        );
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(&der), true)
    }

    /// A new P-256 key for ES256 (its JWK names no `alg`: the type decides).
    fn ec(kid: &str) -> Self {
        let der = openssl_der(
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -outform DER",
        );
        Self::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(&der), false)
    }

    fn new(kid: &str, algorithm: Algorithm, encoding: EncodingKey, with_alg: bool) -> Self {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, algorithm).unwrap()).unwrap();
        let object = jwk.as_object_mut().unwrap();
        object.insert("kid".to_owned(), json!(kid));
        object.insert("use".to_owned(), json!("sig"));
        if !with_alg {
            object.remove("alg");
        }
        Self { kid: kid.to_owned(), algorithm, encoding, jwk }
    }

    /// A token signed with this key, its header naming `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Keycloak-shaped claims with the roles in `realm_access.roles`.
fn claims(subject: &str, roles: &[&str]) -> Value {
    json!({"sub": subject, "iss": ISSUER, "aud": [AUDIENCE, "account"], "exp": now() + 600, "iat": now(),
           "realm_access": {"roles": roles}})
}

/// The fake provider's key set endpoint: serves `keys` as a JWKS and counts the fetches.
struct KeyServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl KeyServer {
    async fn start(keys: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/realms/stampede/protocol/openid-connect/certs", listener.local_addr().unwrap());
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (served, counted) = (served.clone(), counted.clone());
                let service = service_fn(move |_request| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"keys": *served.lock().unwrap()}).to_string();
                    let response = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                connections.spawn(connection);
            }
        });
        Self { url, keys, fetches, task }
    }

    fn add(&self, key: &TestKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    /// Takes the server down: connections to it are refused from now on.
    fn stop(&self) {
        self.task.abort();
    }
}

/// An app that accepts only the provider's tokens (no `JWT_SECRET`).
async fn app_trusting(server: &KeyServer) -> TestApp {
    let isolation = Isolation::new().await;
    let mut config = isolation.api_config(&[
        "--jwt-jwks-url",
        &server.url,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-role-claim",
        "realm_access.roles",
    ]);
    config.jwt_secret = None;
    config.queue_pass_keys = Some(Secret::new("k1:queue-pass-key-of-the-test"));
    TestApp::spawn_config(isolation, config).await
}

/// The status of `GET /reservations` (any authenticated caller) with `token`.
async fn list_status(app: &TestApp, token: &str) -> u16 {
    app.get("/reservations", Some(token)).await.status().as_u16()
}

async fn create_event_status(app: &TestApp, token: &str) -> u16 {
    let body = json!({"name": "N", "venue": "V", "starts_at": "2030-01-01T00:00:00Z"});
    app.post("/events", Some(token), &body).await.status().as_u16()
}

#[tokio::test]
async fn provider_tokens_are_verified_by_kid_with_issuer_audience_and_role_claim() {
    // Goal: RS256 user and ES256 admin tokens of the key set are accepted, and every token that breaks a rule (aud, iss, exp, kid, role, algorithm confusion, an alg other than the key's) is 401.
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::ec("ec-1");
    let server = KeyServer::start(vec![rsa.jwk.clone(), ec.jwk.clone()]).await;
    let app = app_trusting(&server).await;

    assert_eq!(list_status(&app, &rsa.sign(&claims("alice", &["offline_access", "user"]))).await, 200);
    assert_eq!(create_event_status(&app, &ec.sign(&claims("ops", &["user", "admin"]))).await, 201);
    assert_eq!(create_event_status(&app, &rsa.sign(&claims("alice", &["user"]))).await, 403, "a user is not an admin");

    let mut refused: Vec<(&str, String)> = Vec::new();
    let with = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = claims("alice", &["user"]);
        change(claims.as_object_mut().unwrap());
        claims
    };
    refused.push(("wrong aud", rsa.sign(&with(&|c| drop(c.insert("aud".into(), json!("other-api")))))));
    refused.push(("missing aud", rsa.sign(&with(&|c| drop(c.remove("aud"))))));
    refused.push(("wrong iss", rsa.sign(&with(&|c| drop(c.insert("iss".into(), json!("https://evil.test")))))));
    refused.push(("missing iss", rsa.sign(&with(&|c| drop(c.remove("iss"))))));
    refused.push(("expired", rsa.sign(&with(&|c| drop(c.insert("exp".into(), json!(now() - 120)))))));
    refused.push(("a role the claim does not hold", rsa.sign(&claims("alice", &["viewer"]))));
    refused.push(("no role claim", rsa.sign(&with(&|c| drop(c.remove("realm_access"))))));
    refused.push(("unknown kid", rsa.sign_as("rsa-unknown", &claims("alice", &["user"]))));
    refused.push(("ES256 under an RS256 key's kid", ec.sign_as("rsa-1", &claims("alice", &["user"]))));
    refused.push(("RS256 under an ES256 key's kid", rsa.sign_as("ec-1", &claims("alice", &["user"]))));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".to_owned());
    for public in [rsa.jwk.to_string(), rsa.jwk["n"].as_str().unwrap().to_owned()] {
        let confused =
            jsonwebtoken::encode(&header, &claims("alice", &["admin"]), &EncodingKey::from_secret(public.as_bytes()));
        refused.push(("HS256 signed with the public key", confused.unwrap()));
    }
    let hs256_under_the_test_secret = EncodingKey::from_secret(SECRET.as_bytes());
    let plain = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice", &["admin"]),
        &hs256_under_the_test_secret,
    );
    refused.push(("HS256 with only a key set configured", plain.unwrap()));
    for (case, token) in refused {
        assert_eq!(list_status(&app, &token).await, 401, "{case}");
    }
    app.stop().await;
    server.stop();
}

#[tokio::test]
async fn a_key_added_to_the_set_works_without_a_restart() {
    // Goal: after the provider adds a key, a token signed with it is accepted by the running api (a re-fetch on the unknown kid, at most once per 10 s).
    let old = TestKey::rsa("old");
    let server = KeyServer::start(vec![old.jwk.clone()]).await;
    let app = app_trusting(&server).await;
    let new = TestKey::ec("new");
    server.add(&new);
    let token = new.sign(&claims("alice", &["user"]));
    wait_until(Duration::from_secs(30), "the new key is accepted", || async { list_status(&app, &token).await == 200 })
        .await;
    assert_eq!(list_status(&app, &old.sign(&claims("alice", &["user"]))).await, 200, "the old key still works");
    // Many requests with unknown kids cost at most one fetch per 10 s.
    let fetches = server.fetches.load(Ordering::SeqCst);
    for attempt in 0..20 {
        let unknown = new.sign_as(&format!("unknown-{attempt}"), &claims("alice", &["user"]));
        assert_eq!(list_status(&app, &unknown).await, 401);
    }
    assert!(server.fetches.load(Ordering::SeqCst) <= fetches + 1, "unknown kids must not hammer the provider");
    app.stop().await;
    server.stop();
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_key_set_is_down() {
    // Goal: with the provider unreachable, tokens of cached keys are accepted, and a token of an unknown kid is 401 (never let through).
    let key = TestKey::rsa("cached");
    let server = KeyServer::start(vec![key.jwk.clone()]).await;
    let app = app_trusting(&server).await;
    server.stop();
    let stranger = TestKey::rsa("stranger");
    for _ in 0..3 {
        assert_eq!(list_status(&app, &key.sign(&claims("alice", &["user"]))).await, 200);
        assert_eq!(list_status(&app, &stranger.sign(&claims("alice", &["admin"]))).await, 401);
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_key_set_at_start_is_an_error_naming_it() {
    // Goal: the api refuses to start when JWT_JWKS_URL cannot be fetched, rather than run with no keys.
    let server = KeyServer::start(Vec::new()).await;
    let url = server.url.clone();
    server.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let isolation = Isolation::new().await;
    let mut config = isolation.api_config(&["--jwt-jwks-url", &url]);
    config.jwt_secret = None;
    config.queue_pass_keys = Some(Secret::new("k1:queue-pass-key-of-the-test"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let error = stampede::api::start(config, shutdown).await.err().expect("the api refuses to start");
    let message = stampede::telemetry::error_chain(&error);
    assert!(message.contains("JWT_JWKS_URL"), "{message}");
}

/// HS256 claims for the test secret, changed by `change`.
fn hs256_token(header: Header, change: impl Fn(&mut serde_json::Map<String, Value>)) -> String {
    let mut claims = json!({"sub": "alice", "role": "user", "exp": now() + 600, "iat": now()});
    change(claims.as_object_mut().unwrap());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[tokio::test]
async fn future_time_claims_crit_headers_and_format_characters_are_401() {
    // Goal: a future nbf or iat beyond the 60 s leeway, a crit header, and a sub with a Unicode format character (category Cf) are each 401; within the leeway is fine.
    let app = TestApp::spawn().await;
    let accepted = hs256_token(Header::new(Algorithm::HS256), |claims| {
        claims.insert("nbf".into(), json!(now() + 30));
        claims.insert("iat".into(), json!(now() + 30));
    });
    assert_eq!(list_status(&app, &accepted).await, 200);
    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["x-unknown-extension".to_owned()]);
    let refused = [
        (
            "future nbf",
            hs256_token(Header::new(Algorithm::HS256), |c| drop(c.insert("nbf".into(), json!(now() + 300)))),
        ),
        (
            "future iat",
            hs256_token(Header::new(Algorithm::HS256), |c| drop(c.insert("iat".into(), json!(now() + 300)))),
        ),
        ("crit header", hs256_token(crit, |_| {})),
        (
            "right-to-left override",
            hs256_token(Header::new(Algorithm::HS256), |c| drop(c.insert("sub".into(), json!("admin\u{202E}nimda")))),
        ),
        (
            "zero-width space",
            hs256_token(Header::new(Algorithm::HS256), |c| drop(c.insert("sub".into(), json!("ali\u{200B}ce")))),
        ),
        (
            "byte order mark",
            hs256_token(Header::new(Algorithm::HS256), |c| drop(c.insert("sub".into(), json!("\u{FEFF}alice")))),
        ),
    ];
    for (case, token) in refused {
        assert_eq!(list_status(&app, &token).await, 401, "{case}");
    }
    app.stop().await;
}
