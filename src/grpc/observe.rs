//! A tower layer around every gRPC call: `grpc_server_handled_total` and
//! `grpc_server_handling_seconds` by service, method and code, and the contract's codes
//! for the transport's own failures (tonic answers a malformed message with `INTERNAL`
//! and one over the size limit with `OUT_OF_RANGE`; the contract says `INVALID_ARGUMENT`
//! and `RESOURCE_EXHAUSTED`, see [`super::status::transport_failure`]).
//!
//! Label values come only from the services' descriptors: a path that names no known
//! method counts as `unknown`, so no client can add series.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame};
use prost::Message;
use tonic::{Code, Status};

use super::status::{transport_failure, transport_status};

/// The `grpc_service` and `grpc_method` labels of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    service: &'static str,
    method: &'static str,
}

/// The methods that may appear in labels, from encoded descriptor sets.
#[derive(Debug, Default)]
pub struct KnownMethods {
    methods: BTreeSet<(&'static str, &'static str)>,
}

impl KnownMethods {
    /// Every method of every service in `descriptor_sets`. The names are leaked once per
    /// server start (a few dozen short strings), so a call's labels cost no allocation.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        let mut methods = BTreeSet::new();
        for encoded in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else { continue };
            for file in set.file {
                for service in &file.service {
                    let name = format!("{}.{}", file.package(), service.name());
                    let name: &'static str = Box::leak(name.into_boxed_str());
                    for method in &service.method {
                        methods.insert((name, &*Box::leak(method.name().to_owned().into_boxed_str())));
                    }
                }
            }
        }
        Self { methods }
    }

    /// The labels of a request path `/package.Service/Method`.
    pub fn labels(&self, path: &str) -> Labels {
        let unknown = Labels { service: "unknown", method: "unknown" };
        let Some((service, method)) = path.strip_prefix('/').and_then(|path| path.split_once('/')) else {
            return unknown;
        };
        self.methods
            .iter()
            .find(|(known_service, known_method)| *known_service == service && *known_method == method)
            .map_or(unknown, |&(service, method)| Labels { service, method })
    }
}

fn record(labels: Labels, code: Code, started: Instant) {
    let code = code_label(code);
    let handled = [("grpc_service", labels.service), ("grpc_method", labels.method), ("grpc_code", code)];
    metrics::counter!("grpc_server_handled_total", &handled).increment(1);
    let timed = [("grpc_service", labels.service), ("grpc_method", labels.method)];
    metrics::histogram!("grpc_server_handling_seconds", &timed).record(started.elapsed().as_secs_f64());
}

/// The conventional spelling of a code in labels (`OK`, `NOT_FOUND`, ...).
fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The layer: see the module documentation.
#[derive(Clone)]
pub struct ObserveLayer {
    methods: Arc<KnownMethods>,
}

impl ObserveLayer {
    /// Labels calls by `methods`.
    pub fn new(methods: KnownMethods) -> Self {
        Self { methods: Arc::new(methods) }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner, methods: self.methods.clone() }
    }
}

/// The service the layer wraps around the routes.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    methods: Arc<KnownMethods>,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let labels = self.methods.labels(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move { Ok(observed(future.await?, labels, started)) })
    }
}

/// A response whose status is in its headers (an error before any message) is counted
/// now, with a transport failure rewritten; any other is counted when its trailers pass.
fn observed(response: Response, labels: Labels, started: Instant) -> Response {
    if let Some(status) = Status::from_header_map(response.headers()) {
        if let Some(failure) = transport_failure(status.code(), status.message()) {
            let status = transport_status(failure);
            record(labels, status.code(), started);
            return status.into_http();
        }
        record(labels, status.code(), started);
        return response;
    }
    response.map(|body| tonic::body::Body::new(ObservedBody { inner: body, labels, started, counted: false }))
}

/// A response body that counts its call when the trailers pass, or as `CANCELLED` when
/// it is dropped before (the client left).
struct ObservedBody {
    inner: tonic::body::Body,
    labels: Labels,
    started: Instant,
    counted: bool,
}

impl ObservedBody {
    fn count(&mut self, code: Code) {
        if !self.counted {
            self.counted = true;
            record(self.labels, code, self.started);
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.count(Code::Cancelled);
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(context));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = Status::from_header_map(trailers).map_or(Code::Unknown, |status| status.code());
                    self.count(code);
                }
            }
            Some(Err(status)) => self.count(status.code()),
            None => self.count(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_become_labels() {
        let methods = KnownMethods::new(&[super::super::proto::FILE_DESCRIPTOR_SET]);
        assert_eq!(
            methods.labels("/stampede.v1.Stampede/Reserve"),
            Labels { service: "stampede.v1.Stampede", method: "Reserve" }
        );
        assert_eq!(methods.labels("/stampede.v1.Stampede/Nope").service, "unknown");
        assert_eq!(methods.labels("garbage").method, "unknown");
    }
}
