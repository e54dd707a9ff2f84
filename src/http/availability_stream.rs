//! `GET /events/{id}/availability/stream`: live availability as server-sent events.
//!
//! Each stream subscribes to its event's watcher ([`crate::availability::watcher`]), so
//! an open stream costs no Redis work of its own. A stream's body is a small state
//! machine: the current state at once, then the latest state after each change (at most
//! one message per [`MESSAGE_INTERVAL_MIN`]; whatever changed in between is coalesced),
//! and a `: keep-alive` comment whenever nothing was written for the keep-alive interval.
//!
//! A stream leaves the connection bound (`CONNECTIONS_MAX`) as soon as it is admitted
//! and is bounded by `STREAMS_MAX` instead; its response carries `Connection: close`, so
//! the connection ends with the stream. Shutdown ends every stream at once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::{Body, Frame};
use hyper::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::catalog::event_id;
use super::error::ApiError;
use super::{RequestContext, ResponseBody};
use crate::availability::watcher::{Snapshot, Subscription, WatchError};
use crate::client_address::{ClientSlot, ClientSlots};
use crate::http::state::AppState;
use crate::server::connection::HangUp;

/// Shortest time between two messages of one stream.
pub const MESSAGE_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// Media type of the stream.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "text/event-stream";

/// Largest `Last-Event-ID` a stream continues after: 2^53 - 1, the largest integer a
/// JavaScript client holds exactly; larger values are ignored.
pub const LAST_EVENT_ID_MAX: u64 = (1 << 53) - 1;

/// Seconds a client refused for `STREAMS_MAX` or `STREAMS_PER_CLIENT_MAX` is asked to wait.
const STREAMS_FULL_RETRY_AFTER_SECONDS: u64 = 5;

/// Stream settings, passed explicitly by the caller.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Open streams at most; more are refused with 503.
    pub streams_max: usize,
    /// Open streams of one client address at most; more are refused with 429.
    pub streams_per_client_max: usize,
    /// Longest silence before a `: keep-alive` comment.
    pub keep_alive_interval: Duration,
}

/// The open streams of this process: their bound, their settings and their metrics.
pub struct Streams {
    slots: Arc<Semaphore>,
    per_client: ClientSlots,
    keep_alive_interval: Duration,
    shutdown: CancellationToken,
    metrics: StreamMetrics,
}

#[derive(Clone)]
struct StreamMetrics {
    open: Gauge,
    messages: Counter,
    keep_alives: Counter,
    delivery_delay: Histogram,
}

impl Streams {
    /// At most `options.streams_max` streams; all of them end when `shutdown` fires.
    pub fn new(options: StreamOptions, shutdown: CancellationToken) -> Self {
        let metrics = StreamMetrics {
            open: metrics::gauge!("availability_streams_open"),
            messages: metrics::counter!("availability_stream_messages_total", "kind" => "availability"),
            keep_alives: metrics::counter!("availability_stream_messages_total", "kind" => "keep_alive"),
            delivery_delay: metrics::histogram!("availability_stream_delivery_delay_seconds"),
        };
        Self {
            slots: Arc::new(Semaphore::new(options.streams_max)),
            per_client: ClientSlots::new(options.streams_per_client_max),
            keep_alive_interval: options.keep_alive_interval,
            shutdown,
            metrics,
        }
    }
}

/// One message of the stream as an SSE parser sees it (the wire form is `event:`, `id:`
/// and `data:` lines), for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"event": "availability", "id": "1", "data":
    "{\"event_id\":1,\"categories\":[{\"category_id\":1,\"name\":\"VIP\",\"quota\":5000,\"available\":4890,\"held\":60,\"sold\":50}]}"}))]
pub struct StreamMessage {
    /// Always `availability`.
    #[schema(example = "availability")]
    pub event: String,
    /// Increases with every message of the stream.
    pub id: String,
    /// The same JSON as `GET /events/{id}/availability`.
    pub data: String,
}

/// `GET /events/{id}/availability/stream` (public).
#[utoipa::path(
    get,
    path = "/events/{id}/availability/stream",
    tag = "catalog",
    summary = "Live availability stream (server-sent events)",
    description = "A `text/event-stream` of the event's availability. Every message is `event: availability`, \
        an `id:` that increases with every message of the stream, and one `data:` line holding the same JSON \
        as `GET /events/{id}/availability`. The first message is sent at once (also on a reconnect with \
        `Last-Event-ID`, whose ids then continue after the given one). After that a message follows every \
        change within 500 ms, at most one per 100 ms (changes in between are coalesced; the latest state is \
        always sent). While nothing changes, a `: keep-alive` comment at least every 15 s. An unknown event \
        is a 404 before the stream starts; when the process holds `STREAMS_MAX` streams, 503 with \
        `Retry-After`; when the client's address holds `STREAMS_PER_CLIENT_MAX`, 429 `rate_limited` with \
        `Retry-After`. Try it with `curl -N`.",
    params(
        ("id" = i64, Path, description = "Event id.", minimum = 1),
        ("Last-Event-ID" = Option<String>, Header, description = "The last `id:` a reconnecting client saw; \
            the new stream's ids continue after it. A value that is not a whole number from 0 to 2^53 - 1 \
            is ignored (the ids start at 1)."),
    ),
    responses((
        status = 200,
        description = "The stream; it ends when the server shuts down.",
        content_type = "text/event-stream",
        body = StreamMessage,
    )),
)]
pub async fn availability_stream(
    state: &AppState,
    request: RequestContext,
) -> Result<Response<ResponseBody>, ApiError> {
    let event = event_id(&request)?;
    let streams = &state.streams;
    let slot = streams
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Shed { retry_after_seconds: STREAMS_FULL_RETRY_AFTER_SECONDS, reason: "streams_max" })?;
    let client_slot = streams
        .per_client
        .try_acquire(request.client)
        .ok_or(ApiError::RateLimited { retry_after_seconds: STREAMS_FULL_RETRY_AFTER_SECONDS })?;
    let subscription = state.availability.subscribe(event).await.map_err(|error| match error {
        WatchError::EventNotFound => ApiError::NotFound("no such event"),
        error => ApiError::unavailable(error),
    })?;
    // From here the connection is bounded by STREAMS_MAX, not by CONNECTIONS_MAX.
    request.connection.release();
    let last_id = last_event_id(request.header("last-event-id"));
    streams.metrics.open.increment(1.0);
    let cursor = Cursor {
        subscription,
        message_id: last_id,
        sent_at: Instant::now(),
        first: true,
        keep_alive_interval: streams.keep_alive_interval,
        shutdown: streams.shutdown.clone(),
        hang_up: request.connection.hang_up(),
        metrics: streams.metrics.clone(),
        _slots: (slot, client_slot),
    };
    let mut response = Response::new(Either::Right(EventStream { next: Some(Box::pin(cursor.next_frame())) }));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM_CONTENT_TYPE));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    // Proxies such as nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

type NextFrame = Pin<Box<dyn Future<Output = Option<(Bytes, Cursor)>> + Send>>;

/// The body of one stream: frames produced by `Cursor::next_frame` until shutdown
/// or until the event's watcher stops.
pub struct EventStream {
    next: Option<NextFrame>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some(next) = self.next.as_mut() else { return Poll::Ready(None) };
        match ready!(next.as_mut().poll(context)) {
            Some((bytes, cursor)) => {
                self.next = Some(Box::pin(cursor.next_frame()));
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            None => {
                self.next = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.next.is_none()
    }
}

/// Where one stream stands; dropping it (client gone, shutdown) frees its slot.
struct Cursor {
    subscription: Subscription,
    message_id: u64,
    sent_at: Instant,
    first: bool,
    keep_alive_interval: Duration,
    shutdown: CancellationToken,
    /// The client closing (or half-closing) its connection ends the stream at once, and
    /// with it the stream's `STREAMS_MAX` slot.
    hang_up: HangUp,
    metrics: StreamMetrics,
    _slots: (OwnedSemaphorePermit, ClientSlot),
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.metrics.open.decrement(1.0);
    }
}

/// What woke an idle stream.
enum Wake {
    Shutdown,
    HungUp,
    Changed,
    WatcherStopped,
    Silence,
}

impl Cursor {
    /// The next bytes to write, or `None` when the stream ends.
    async fn next_frame(mut self) -> Option<(Bytes, Self)> {
        if self.first {
            self.first = false;
            let snapshot = self.subscription.current();
            return Some((self.message(&snapshot), self));
        }
        let wake = tokio::select! {
            _ = self.shutdown.cancelled() => Wake::Shutdown,
            () = self.hang_up.wait() => Wake::HungUp,
            changed = self.subscription.changed() => if changed.is_some() { Wake::Changed } else { Wake::WatcherStopped },
            _ = tokio::time::sleep(self.keep_alive_interval) => Wake::Silence,
        };
        match wake {
            Wake::Shutdown | Wake::HungUp | Wake::WatcherStopped => None,
            Wake::Silence => {
                self.metrics.keep_alives.increment(1);
                Some((Bytes::from_static(b": keep-alive\n\n"), self))
            }
            Wake::Changed => {
                // Changes that arrive while this waits are coalesced: `current` is the latest.
                let earliest = self.sent_at + MESSAGE_INTERVAL_MIN;
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    () = self.hang_up.wait() => return None,
                    _ = tokio::time::sleep_until(earliest.into()) => {}
                }
                let snapshot = self.subscription.current();
                self.metrics.delivery_delay.record(snapshot.published_at.elapsed().as_secs_f64());
                Some((self.message(&snapshot), self))
            }
        }
    }

    /// One `availability` message with the next id.
    fn message(&mut self, snapshot: &Snapshot) -> Bytes {
        self.message_id += 1;
        self.sent_at = Instant::now();
        self.metrics.messages.increment(1);
        message(self.message_id, &snapshot.json)
    }
}

/// The id a reconnecting stream continues after: `Last-Event-ID` when it is a whole number
/// up to [`LAST_EVENT_ID_MAX`], else 0 (ignored, as a value that is not a number), so the
/// ids that follow stay exact in every client and can never overflow.
fn last_event_id(header: Option<&str>) -> u64 {
    header.and_then(|id| id.trim().parse::<u64>().ok()).filter(|&id| id <= LAST_EVENT_ID_MAX).unwrap_or(0)
}

/// An `availability` message: event name, id and one data line (the JSON has no newline).
fn message(id: u64, json: &[u8]) -> Bytes {
    let mut id_text = itoa::Buffer::new();
    let id = id_text.format(id).as_bytes();
    let mut message = Vec::with_capacity(json.len() + id.len() + 32);
    message.extend_from_slice(b"event: availability\nid: ");
    message.extend_from_slice(id);
    message.extend_from_slice(b"\ndata: ");
    message.extend_from_slice(json);
    message.extend_from_slice(b"\n\n");
    Bytes::from(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_event_id_past_the_exact_range_is_ignored() {
        assert_eq!(last_event_id(Some(" 41 ")), 41);
        assert_eq!(last_event_id(Some("9007199254740991")), LAST_EVENT_ID_MAX);
        for ignored in [None, Some("x"), Some("-1"), Some("9007199254740992"), Some("18446744073709551615")] {
            assert_eq!(last_event_id(ignored), 0, "{ignored:?}");
        }
    }

    #[test]
    fn a_message_is_event_id_and_one_data_line() {
        let json = br#"{"event_id":1,"categories":[]}"#;
        assert_eq!(
            &message(42, json)[..],
            b"event: availability\nid: 42\ndata: {\"event_id\":1,\"categories\":[]}\n\n".as_slice()
        );
    }
}
