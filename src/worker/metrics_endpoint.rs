//! The worker's tiny HTTP server: `GET /metrics` (Prometheus text) and `GET /health`, on
//! the API's accept loop ([`crate::server::accept_loop`]) with its connection deadlines.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::connection::ClockedBody;
use crate::server::{ServerOptions, accept_loop};

/// Scrapers and probes served at once (more wait in the backlog), the time a client has
/// to send its request, and the time a scrape in flight gets on shutdown.
const OPTIONS: ServerOptions = ServerOptions {
    connections_max: 16,
    request_timeout: Duration::from_secs(5),
    shutdown_timeout: Duration::from_secs(1),
};

/// Binds `addr`; the returned listener is passed to [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves metrics until `shutdown` fires.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, shutdown: CancellationToken) {
    accept_loop(listener, OPTIONS, shutdown, move |_, clock, _slot| {
        let handle = handle.clone();
        service_fn(move |request| {
            // Nothing is read while the answer is built; the clock restarts when it is sent.
            clock.begin_request();
            let response = respond(&handle, &request).map(|body| ClockedBody::new(body, clock.clone()));
            async move { Ok::<_, Infallible>(response) }
        })
    })
    .await;
}

fn respond<B>(handle: &PrometheusHandle, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", crate::telemetry::render(handle)),
        (&Method::GET, "/health") => (StatusCode::OK, "application/json", "{\"status\":\"ok\"}".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn idle_scrapers_are_cut_like_api_clients() {
        // Goal: the metrics endpoint closes a kept-alive connection that sends nothing after its answer.
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, handle, shutdown.clone()));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0; 1024];
        // Bounded far above the request timeout: only that the connection ends is asserted.
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match client.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => received.extend_from_slice(&buffer[..read]),
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "an idle connection must be closed");
        assert!(String::from_utf8_lossy(&received).contains("{\"status\":\"ok\"}"));
        shutdown.cancel();
        server.await.unwrap();
    }
}
