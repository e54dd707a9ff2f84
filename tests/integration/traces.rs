//! Traces through the whole pipeline: a real `api` and `worker` (child processes) export
//! OTLP over HTTP/protobuf to a receiver inside the test (a fake of the third party's
//! collector, decoding `ExportTraceServiceRequest` with opentelemetry-proto), and a reserve
//! or confirm sent with a `traceparent` ends up as one trace from the request to the row
//! the worker applies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::harness::{Isolation, admin_token, unique_name, user_token};
use crate::support::pipeline::{TEST_PARTITIONS, shared_brokers, spawn_api, spawn_worker, wait_until};

/// How long the spans of a request may take to arrive (batch delay, relay, worker).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// One span as the receiver got it; ids in lowercase hex.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    links: Vec<(String, String)>,
    attributes: HashMap<String, String>,
}

/// Everything the receiver got so far.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ReceivedSpan>>>);

impl Receiver {
    /// Starts an OTLP/HTTP receiver on a free port; returns it and its base URL.
    async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Self::default();
        let spans = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let spans = spans.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| spans.clone().export(request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        (receiver, url)
    }

    async fn export(self, request: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        assert_eq!(request.uri().path(), "/v1/traces", "spans go to the signal's path");
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
        let mut received = Vec::new();
        for resource in export.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .map(|attribute| text(attribute.value.as_ref().and_then(|value| value.value.as_ref())))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span.links.iter().map(|link| (hex(&link.trace_id), hex(&link.span_id))).collect(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|attribute| {
                            (
                                attribute.key.clone(),
                                text(attribute.value.as_ref().and_then(|value| value.value.as_ref())),
                            )
                        })
                        .collect(),
                });
            }
        }
        self.0.lock().unwrap().extend(received);
        // An empty ExportTraceServiceResponse.
        Ok(Response::builder().header("content-type", "application/x-protobuf").body(Full::new(Bytes::new())).unwrap())
    }

    fn spans(&self) -> Vec<ReceivedSpan> {
        self.0.lock().unwrap().clone()
    }

    /// Waits for a span of `service` named `name` in trace `trace_id`; returns it.
    async fn wait_for(&self, service: &str, name: &str, trace_id: &str) -> ReceivedSpan {
        let started = std::time::Instant::now();
        loop {
            let spans = self.spans();
            let found =
                spans.iter().find(|span| span.service == service && span.name == name && span.trace_id == trace_id);
            if let Some(found) = found {
                return found.clone();
            }
            let received: Vec<(&str, &str, &str)> =
                spans.iter().map(|span| (span.service.as_str(), span.name.as_str(), span.trace_id.as_str())).collect();
            assert!(
                started.elapsed() < ARRIVAL_TIMEOUT,
                "{service} exported no `{name}` in trace {trace_id} within {ARRIVAL_TIMEOUT:?}; received: {received:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(number)) => number.to_string(),
        Some(AnyValue::BoolValue(flag)) => flag.to_string(),
        Some(AnyValue::DoubleValue(number)) => number.to_string(),
        _ => String::new(),
    }
}

/// A client's sampled `traceparent` in a new trace: (header value, trace id, span id).
fn client_traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// POSTs `body` to the api at `base` as `token`, with a `traceparent` when given.
async fn post(base: &str, path: &str, token: &str, body: &Value, traceparent: Option<&str>) -> Value {
    let mut request = reqwest::Client::new().post(format!("{base}{path}")).bearer_auth(token).json(body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent).header("tracestate", "client=test");
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

/// Asserts that the worker's apply span of an event is a child of the api's request span
/// of `trace_id` (the chain from the row in Postgres reaches the request).
fn assert_applied_under(spans: &[ReceivedSpan], apply: &ReceivedSpan, request: &ReceivedSpan) {
    assert_eq!(apply.trace_id, request.trace_id);
    let parent =
        spans.iter().find(|span| span.span_id == apply.parent_span_id).expect("the apply span's parent arrived");
    assert_eq!(parent.service, "stampede-api", "the parent is a span of the api: {parent:?}");
    assert_eq!(parent.span_id, request.span_id, "the apply span's parent is the request span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_reserve_and_confirm_reach_the_worker_in_their_own_traces() {
    // Goal: spans of the api and the worker share the client's trace id for a reserve and for a confirm sent
    // with a `traceparent`: the request span continues it, the relay's publish links to it, and the worker's
    // apply span of each event (parented by the Kafka record's `traceparent` header) is a child of the request.
    let (receiver, endpoint) = Receiver::start().await;
    let isolation = Isolation::new().await;
    let traces = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        // The SDK's batch delay: spans leave within 100 ms instead of 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut api_env = vec![
        ("RELAY_ENABLED", "true"),
        ("KAFKA_PARTITIONS", TEST_PARTITIONS),
        ("RELAY_LEASE_TTL", "3s"),
        ("RELAY_PUBLISH_TIMEOUT", "1s"),
        ("RELAY_BACKOFF_MAX", "500ms"),
    ];
    api_env.extend(traces);
    let api = spawn_api(&isolation, &api_env);
    let worker = spawn_worker(&isolation, &shared_brokers(), &traces);
    let base = api.listening_url().await;

    let event = post(
        &base,
        "/events",
        &admin_token(),
        &json!({"name": "Traced", "venue": "Hall", "starts_at": "2030-01-01T19:00:00Z"}),
        None,
    )
    .await;
    let category_body =
        json!({"name": unique_name("cat"), "price": 1000, "currency": "USD", "quota": 10, "max_per_user": 4});
    let category_path = format!("/events/{}/ticket-category", event["id"]);
    let category = post(&base, &category_path, &admin_token(), &category_body, None).await;

    let (reserve_header, reserve_trace, client_span) = client_traceparent();
    let reserve_body = json!({"category_id": category["id"], "quantity": 2});
    let held = post(&base, "/reserve", &user_token("tracy"), &reserve_body, Some(&reserve_header)).await;
    let (confirm_header, confirm_trace, _) = client_traceparent();
    let confirm_body = json!({"reservation_id": held["id"], "payment": {"token": "tok_ok"}});
    post(&base, "/confirm", &user_token("tracy"), &confirm_body, Some(&confirm_header)).await;

    let reserve = receiver.wait_for("stampede-api", "POST /reserve", &reserve_trace).await;
    assert_eq!(reserve.parent_span_id, client_span, "the request span continues the client's span");
    assert_eq!(reserve.attributes["http.route"], "/reserve");
    assert_eq!(reserve.attributes["http.response.status_code"], "201");
    let applied = receiver.wait_for("stampede-worker", "apply reserved", &reserve_trace).await;
    assert_applied_under(&receiver.spans(), &applied, &reserve);

    let confirm = receiver.wait_for("stampede-api", "POST /confirm", &confirm_trace).await;
    let confirmed = receiver.wait_for("stampede-worker", "apply confirmed", &confirm_trace).await;
    assert_applied_under(&receiver.spans(), &confirmed, &confirm);
    receiver.wait_for("stampede-api", "finish_payment", &confirm_trace).await;

    let publish_name = format!("publish {}", isolation.kafka_topic);
    wait_until(ARRIVAL_TIMEOUT, "the relay's publish links to the reserve", || {
        let linked = receiver
            .spans()
            .iter()
            .any(|span| span.name == publish_name && span.links.iter().any(|(trace, _)| *trace == reserve_trace));
        std::future::ready(linked)
    })
    .await;
    let spans = receiver.spans();
    let script = spans
        .iter()
        .find(|span| {
            span.name == "reserve"
                && (span.trace_id == reserve_trace || span.links.iter().any(|(trace, _)| *trace == reserve_trace))
        })
        .expect("the reserve script call is traced");
    assert_eq!(script.attributes["db.system.name"], "redis");
    assert!(spans.iter().any(|span| span.service == "stampede-worker" && span.name.starts_with("fetch ")));

    api.terminate().await;
    worker.terminate().await;
}
