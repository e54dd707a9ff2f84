//! `GET /events/{id}/availability/stream`: live availability as server-sent events.
//!
//! The stream's messages come from a [`Watch`] of the service layer (shared with gRPC's
//! `WatchAvailability`): the current state at once, then the latest state after each
//! change (at most one message per [`crate::service::watch::MESSAGE_INTERVAL_MIN`];
//! whatever changed in between is coalesced), and a `: keep-alive` comment whenever
//! nothing was written for the keep-alive interval.
//!
//! A stream leaves the connection bound (`CONNECTIONS_MAX`) as soon as it is admitted
//! and is bounded by `STREAMS_MAX` instead; its response carries `Connection: close`, so
//! the connection ends with the stream. Shutdown ends every stream at once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::{Body, Frame};
use hyper::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::catalog::event_id;
use super::error::ApiError;
use super::{RequestContext, ResponseBody};
use crate::http::state::AppState;
use crate::server::connection::HangUp;
use crate::service::watch::{Next, Watch};

/// Media type of the stream.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "text/event-stream";

/// Largest `Last-Event-ID` a stream continues after: 2^53 - 1, the largest integer a
/// JavaScript client holds exactly; larger values are ignored.
pub const LAST_EVENT_ID_MAX: u64 = (1 << 53) - 1;

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
    let watch = state.service.watch(event, request.client).await?;
    // From here the connection is bounded by STREAMS_MAX, not by CONNECTIONS_MAX.
    request.connection.release();
    let cursor = Cursor {
        watch,
        message_id: last_event_id(request.header("last-event-id")),
        hang_up: request.connection.hang_up(),
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

/// Where one stream stands; dropping it (client gone, shutdown) frees its slots.
struct Cursor {
    watch: Watch,
    message_id: u64,
    /// The client closing (or half-closing) its connection ends the stream at once, and
    /// with it the stream's `STREAMS_MAX` slot.
    hang_up: HangUp,
}

impl Cursor {
    /// The next bytes to write, or `None` when the stream ends.
    async fn next_frame(mut self) -> Option<(Bytes, Self)> {
        match self.watch.next(self.hang_up.wait()).await {
            Next::End => None,
            Next::KeepAlive => Some((Bytes::from_static(b": keep-alive\n\n"), self)),
            Next::Snapshot(snapshot) => {
                self.message_id += 1;
                Some((message(self.message_id, &snapshot.json), self))
            }
        }
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
