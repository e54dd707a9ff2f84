//! Slow, idle and non-reading clients lose their connection after the request timeout,
//! so they can never starve new clients of connection slots.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::harness::{TestApp, admin_token};

const EVENT_BODY: &str = r#"{"name": "Slow", "venue": "V", "starts_at": "2030-01-01T00:00:00Z"}"#;
const BUNDLE_REQUEST: &str = "GET /swagger-ui/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n";
const HEALTH_REQUEST: &str = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

fn event_head(content_length: usize) -> String {
    format!(
        "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n",
        admin_token()
    )
}

fn address(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (EOF or reset) and returns what
/// arrived; `None` if it is still open at `deadline`.
async fn read_until_closed(stream: &mut TcpStream, deadline: Instant) -> Option<String> {
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&received).into_owned()),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Reads one response whose body ends with `}` (every body these tests read is JSON).
async fn read_json_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.ends_with(b"}") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(read > 0, "closed before the response: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

async fn metric_appears(app: &TestApp, needle: &str, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        let metrics = app.get("/metrics", None).await.text().await.unwrap();
        if metrics.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn stalled_clients_cannot_starve_new_ones() {
    // Goal: with CONNECTIONS_MAX=20 and 20 stalled sockets (a body that never comes, nothing sent at all, big responses never read) and the default 10 s timeout, /health answers within 15 s and every stalled socket loses its connection, the body stalls after a 408.
    let app = TestApp::spawn_with(&["--connections-max", "20"]).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    let mut body_stalls = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        stream.write_all(event_head(1000).as_bytes()).await.unwrap();
        body_stalls.push(stream);
    }
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(address(&app)).await.unwrap());
    }
    let mut non_readers = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        // Pipelined, so the answers are far larger than the socket buffers.
        stream.write_all(BUNDLE_REQUEST.repeat(8).as_bytes()).await.unwrap();
        non_readers.push(stream);
    }

    let health = tokio::time::timeout_at(deadline, app.client.get(app.url("/health")).send()).await;
    let health = health.expect("/health answers within 15 s of the stalls").expect("request sent");
    assert_eq!(health.status(), 200);
    for stream in &mut body_stalls {
        let received = read_until_closed(stream, deadline).await.expect("a body stall is closed within 15 s");
        assert!(received.starts_with("HTTP/1.1 408"), "{received}");
        assert!(received.contains("application/problem+json") && received.contains("request_timeout"), "{received}");
    }
    for stream in &mut silent {
        let received = read_until_closed(stream, deadline).await.expect("a silent client is closed within 15 s");
        assert!(received.is_empty(), "{received}");
    }
    for needle in [r#"reason="body""#, r#"reason="idle""#, r#"reason="write""#] {
        let metric = format!("http_connections_timed_out_total{{{needle}}}");
        assert!(metric_appears(&app, &metric, deadline).await, "{metric} within 15 s");
    }
    app.stop().await;
}

#[tokio::test]
async fn slow_bodies_within_the_timeout_pass_and_late_or_idle_clients_are_cut() {
    // Goal: with a 2 s request timeout, a body trickling in over 0.6 s is served, a body still missing after 2 s gets a 408 and the connection closes, the budget restarts after each response, and an idle keep-alive connection is closed.
    let app = TestApp::spawn_with(&["--request-timeout", "2s"]).await;
    let mut late = TcpStream::connect(address(&app)).await.unwrap();
    late.write_all(event_head(EVENT_BODY.len()).as_bytes()).await.unwrap();
    late.write_all(&EVENT_BODY.as_bytes()[..10]).await.unwrap();
    // Each client runs on its own clock (its connect, its last response), so a slow step of
    // one never eats into another's budget.
    let slow_body = async {
        let mut slow = TcpStream::connect(address(&app)).await.unwrap();
        slow.write_all(event_head(EVENT_BODY.len()).as_bytes()).await.unwrap();
        for piece in EVENT_BODY.as_bytes().chunks(EVENT_BODY.len().div_ceil(4)) {
            // Why: the trickle is the test's subject (pacing, not a wait).
            tokio::time::sleep(Duration::from_millis(150)).await;
            slow.write_all(piece).await.unwrap();
        }
        read_json_response(&mut slow).await
    };
    let keep_alive = async {
        let mut keep_alive = TcpStream::connect(address(&app)).await.unwrap();
        let connected = Instant::now();
        // Why: the budget restarting is a matter of elapsed time: the first request comes 1 s
        // into the accept's 2 s, the second 1.1 s after the first response, so more than 2 s
        // after the accept (1 s + the first answer + 1.1 s) but within its own budget.
        tokio::time::sleep_until(connected + Duration::from_millis(1000)).await;
        keep_alive.write_all(HEALTH_REQUEST.as_bytes()).await.unwrap();
        let first = read_json_response(&mut keep_alive).await;
        let answered = Instant::now();
        tokio::time::sleep_until(answered + Duration::from_millis(1100)).await;
        assert!(connected.elapsed() > Duration::from_secs(2), "the second request comes past the accept's budget");
        keep_alive.write_all(HEALTH_REQUEST.as_bytes()).await.unwrap();
        let second = read_json_response(&mut keep_alive).await;
        (keep_alive, first, second)
    };
    let (slow, (mut keep_alive, first, second)) = tokio::join!(slow_body, keep_alive);
    assert!(slow.starts_with("HTTP/1.1 201"), "{slow}");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");

    let deadline = Instant::now() + Duration::from_secs(15);
    let received = read_until_closed(&mut late, deadline).await.expect("the late body's connection closes");
    assert!(received.starts_with("HTTP/1.1 408") && received.contains("request_timeout"), "{received}");
    let received = read_until_closed(&mut keep_alive, deadline).await.expect("an idle keep-alive connection closes");
    assert!(received.is_empty(), "{received}");
    app.stop().await;
}
