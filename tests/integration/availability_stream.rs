//! `GET /events/{id}/availability/stream`: the first message, updates after changes,
//! coalescing, keep-alive comments, errors, the `STREAMS_MAX` bound, connections and
//! shutdown.

use std::time::Duration;

use futures::future::join_all;
use reqwest::Response;
use serde_json::{Value, json};

use crate::support::harness::{Isolation, TestApp, assert_problem};
use crate::support::reservation::{hold, reserve_as, sale};

/// Hang guard for reads that must come; never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// One server-sent event or comment.
#[derive(Debug, Clone, PartialEq)]
enum Sse {
    /// An `availability` message: its id and data.
    Message { id: u64, data: Value },
    /// A `: ...` comment line.
    Comment(String),
}

/// Reads server-sent events from a response body.
struct SseReader {
    response: Response,
    buffer: String,
}

impl SseReader {
    fn new(response: Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new() }
    }

    /// The next event, or `None` when the stream has ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_block(block.trim_end()));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk()).await.expect("the stream answers");
            match chunk.expect("the stream reads") {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// The next `availability` message, skipping comments.
    async fn next_message(&mut self) -> (u64, Value) {
        loop {
            match self.next().await.expect("the stream goes on") {
                Sse::Message { id, data } => return (id, data),
                Sse::Comment(_) => {}
            }
        }
    }
}

fn parse_block(block: &str) -> Sse {
    if let Some(comment) = block.strip_prefix(':') {
        return Sse::Comment(comment.trim().to_owned());
    }
    let (mut event, mut id, mut data) = (None, None, None);
    for line in block.lines() {
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.parse::<u64>().expect("integer ids")),
            "data" => data = Some(serde_json::from_str::<Value>(value).expect("data is JSON")),
            other => panic!("unexpected field {other} in {block:?}"),
        }
    }
    assert_eq!(event.as_deref(), Some("availability"), "{block:?}");
    Sse::Message { id: id.expect("an id"), data: data.expect("a data line") }
}

async fn open(app: &TestApp, event: i64) -> SseReader {
    SseReader::new(open_response(app, event, None).await)
}

async fn open_response(app: &TestApp, event: i64, last_event_id: Option<&str>) -> Response {
    let mut request = app.client.get(app.url(&format!("/events/{event}/availability/stream")));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    // The app's client has an overall timeout; streams outlive it.
    let request = request.timeout(Duration::from_secs(3600));
    request.send().await.expect("request sent")
}

fn available(data: &Value) -> i64 {
    data["categories"][0]["available"].as_i64().unwrap()
}

#[tokio::test]
async fn the_first_message_is_the_current_state_at_once() {
    // Goal: a new stream starts with id 1 and the same document as GET /availability, before anything changes.
    let app = TestApp::spawn().await;
    let (event, category) = sale(&app, 10, 4).await;
    hold(&app, "early", category, 2).await;
    let mut stream = open(&app, event).await;
    let (id, data) = stream.next_message().await;
    let document: Value = app.get(&format!("/events/{event}/availability"), None).await.json().await.unwrap();
    assert_eq!((id, &data), (1, &document));
    assert_eq!(available(&data), 8);
    app.assert_conserved(category).await;
    app.stop().await;
}

#[tokio::test]
async fn a_reserve_reaches_every_open_stream() {
    // Goal: after a reserve, each open stream of the event gets the new state with the next id.
    let app = TestApp::spawn().await;
    let (event, category) = sale(&app, 10, 4).await;
    let mut first = open(&app, event).await;
    let mut second = open(&app, event).await;
    assert_eq!(available(&first.next_message().await.1), 10);
    assert_eq!(available(&second.next_message().await.1), 10);
    hold(&app, "buyer", category, 3).await;
    for stream in [&mut first, &mut second] {
        let (id, data) = stream.next_message().await;
        assert_eq!((id, available(&data)), (2, 7));
        assert_eq!(data["categories"][0]["held"], 3);
    }
    let levels = app.assert_conserved(category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (7, 3, 0));
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_changes_is_coalesced_and_the_latest_state_is_sent() {
    // Goal: many changes in a short time give fewer messages than changes, ids increase by one, and the last
    // message is the final state.
    let app = TestApp::spawn().await;
    let (event, category) = sale(&app, 100, 1).await;
    let mut stream = open(&app, event).await;
    assert_eq!(available(&stream.next_message().await.1), 100);
    let buyers: Vec<String> = (0..60).map(|n| format!("burst-{n}")).collect();
    let body = json!({"category_id": category, "quantity": 1});
    let responses = join_all(buyers.iter().map(|buyer| reserve_as(&app, buyer, &body, None))).await;
    assert!(responses.iter().all(|response| response.status() == 201));
    let mut messages = 0;
    let mut expected_id = 2;
    loop {
        let (id, data) = stream.next_message().await;
        assert_eq!(id, expected_id, "ids increase by one");
        expected_id += 1;
        messages += 1;
        if available(&data) == 40 {
            break;
        }
    }
    assert!(messages < buyers.len(), "{messages} messages for {} changes", buyers.len());
    app.assert_conserved(category).await;
    app.stop().await;
}

#[tokio::test]
async fn keep_alive_comments_fill_the_silence() {
    // Goal: while nothing changes, the stream writes `: keep-alive` comments on the configured interval.
    let app = TestApp::spawn_with(&["--stream-keep-alive-interval", "200ms"]).await;
    let (event, _) = sale(&app, 10, 4).await;
    let mut stream = open(&app, event).await;
    stream.next_message().await;
    for _ in 0..2 {
        assert_eq!(stream.next().await, Some(Sse::Comment("keep-alive".to_owned())));
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_event_is_a_404_before_the_stream_starts() {
    // Goal: an unknown or malformed event id is a problem+json 404, not a stream.
    let app = TestApp::spawn().await;
    assert_problem(open_response(&app, 987_654, None).await, 404, "not_found").await;
    let response = app.get("/events/abc/availability/stream", None).await;
    assert_problem(response, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_the_current_state_at_once() {
    // Goal: with `Last-Event-ID: 41` the current state comes at once as id 42; a bad header is ignored.
    let app = TestApp::spawn().await;
    let (event, category) = sale(&app, 10, 4).await;
    hold(&app, "before", category, 1).await;
    let mut stream = SseReader::new(open_response(&app, event, Some("41")).await);
    let (id, data) = stream.next_message().await;
    assert_eq!((id, available(&data)), (42, 9));
    let mut stream = SseReader::new(open_response(&app, event, Some("not-a-number")).await);
    assert_eq!(stream.next_message().await.0, 1);
    app.stop().await;
}

#[tokio::test]
async fn streams_max_refuses_more_streams_with_503_and_frees_slots() {
    // Goal: beyond STREAMS_MAX a stream is 503 `unavailable` with Retry-After; a closed stream frees its slot.
    let app = TestApp::spawn_with(&["--streams-max", "2"]).await;
    let (event, _) = sale(&app, 10, 4).await;
    let mut first = open(&app, event).await;
    let mut second = open(&app, event).await;
    first.next_message().await;
    second.next_message().await;
    let refused = open_response(&app, event, None).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 503, "unavailable").await;
    drop(first);
    let mut third = loop {
        let response = open_response(&app, event, None).await;
        if response.status() == 200 {
            break SseReader::new(response);
        }
        assert_problem(response, 503, "unavailable").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(third.next_message().await.0, 1);
    app.stop().await;
}

#[tokio::test]
async fn streams_do_not_take_the_connection_slots_of_buyers() {
    // Goal: with CONNECTIONS_MAX 2, three open streams leave room for ordinary requests.
    let app = TestApp::spawn_with(&["--connections-max", "2"]).await;
    let (event, category) = sale(&app, 10, 4).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::time::timeout(PATIENCE, open(&app, event)).await.expect("a slot is free");
        stream.next_message().await;
        streams.push(stream);
    }
    let response = tokio::time::timeout(PATIENCE, app.get("/health", None)).await.expect("a slot is free");
    assert_eq!(response.status(), 200);
    hold(&app, "buyer", category, 1).await;
    for stream in &mut streams {
        assert_eq!(available(&stream.next_message().await.1), 9);
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_cleanly() {
    // Goal: on shutdown every open stream ends (a clean end of the body) and the app stops without waiting for
    // the drain deadline, even with a long SHUTDOWN_TIMEOUT.
    let isolation = Isolation::new().await;
    let mut config = isolation.api_config(&[]);
    config.shared.shutdown_timeout = Duration::from_secs(3600);
    let app = TestApp::spawn_config(isolation, config).await;
    let (event, _) = sale(&app, 10, 4).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut stream = open(&app, event).await;
        stream.next_message().await;
        streams.push(stream);
    }
    tokio::time::timeout(PATIENCE, app.stop()).await.expect("shutdown does not wait for streams");
    for stream in &mut streams {
        let rest = tokio::time::timeout(PATIENCE, stream.next()).await.expect("the stream ends");
        assert_eq!(rest, None, "the body ends cleanly after shutdown");
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_stream_as_text_event_stream() {
    // Goal: /openapi.json documents the stream's 200 as `text/event-stream`, with its 404 and 503 problems.
    let app = TestApp::spawn().await;
    let document: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let operation = &document["paths"]["/events/{id}/availability/stream"]["get"];
    assert!(operation["responses"]["200"]["content"]["text/event-stream"].is_object(), "{operation}");
    for status in ["404", "503"] {
        assert!(operation["responses"][status]["content"]["application/problem+json"].is_object(), "{operation}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_last_event_id_past_two_to_the_53_is_ignored() {
    // Goal: a `Last-Event-ID` the ids could overflow from (u64::MAX) or that a JavaScript client cannot hold
    // exactly is ignored like a bad header (the ids start at 1); the largest exact one is continued.
    let app = TestApp::spawn().await;
    let (event, _) = sale(&app, 10, 4).await;
    for (header, first) in [("18446744073709551615", 1), ("9007199254740992", 1), ("9007199254740991", 1 << 53)] {
        let mut stream = SseReader::new(open_response(&app, event, Some(header)).await);
        assert_eq!(stream.next_message().await.0, first, "Last-Event-ID {header}");
    }
    app.stop().await;
}

/// A stream opened on a raw socket, once a slot is free, after its first message.
async fn raw_stream(address: &str, event: i64) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!("GET /events/{event}/availability/stream HTTP/1.1\r\nHost: {address}\r\n\r\n");
        client.write_all(head.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&received);
            if text.contains("data: ") {
                return client;
            }
            if text.contains("\r\n\r\n") && !text.starts_with("HTTP/1.1 200") {
                break; // 503: every slot is taken for now
            }
            let mut buffer = [0u8; 4096];
            let read = tokio::time::timeout(PATIENCE, client.read(&mut buffer)).await.expect("the api answers");
            let read = read.unwrap();
            assert!(read > 0, "the connection ended early: {text}");
            received.extend_from_slice(&buffer[..read]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_frees_its_stream_slot_at_once() {
    // Goal: with STREAMS_MAX 1, a client that half-closes its connection (and one that closes it) while its
    // stream is idle gives the slot back without waiting for a write to fail, so the next stream is admitted.
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(&["--streams-max", "1"]).await;
    let (event, _) = sale(&app, 10, 4).await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut kept = Vec::new();
    for half_close in [true, false] {
        let mut client = tokio::time::timeout(PATIENCE, raw_stream(&address, event)).await.expect("a slot");
        if half_close {
            // Half-closed, and the socket stays open without reading: every later write would succeed.
            client.shutdown().await.unwrap();
            kept.push(client);
        } else {
            drop(client);
        }
        let admitted = tokio::time::timeout(PATIENCE, async {
            loop {
                let response = open_response(&app, event, None).await;
                if response.status() == 200 {
                    break SseReader::new(response);
                }
                assert_problem(response, 503, "unavailable").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut next = admitted.await.expect("the hung-up stream's slot comes back");
        assert_eq!(next.next_message().await.0, 1);
    }
    app.stop().await;
}
