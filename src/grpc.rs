//! The gRPC front: tonic on `GRPC_LISTEN_ADDR`, inside the api process, serving
//! `stampede.v1.Stampede` and `stampede.v1.StampedeAdmin` over the same service layer as
//! HTTP, plus `grpc.health.v1` and server reflection (v1 and v1alpha).
//!
//! Bounds: `GRPC_MESSAGE_SIZE_MAX` per message, `GRPC_STREAMS_PER_CONNECTION_MAX` calls per
//! connection, `GRPC_CONNECTIONS_MAX` connections (its own bound: one HTTP/2 connection
//! carries many calls, so it is not `CONNECTIONS_MAX`), HTTP/2 pings that cut dead
//! connections, and `GRPC_CONNECTION_AGE_MAX` after which a connection, idle or not, is
//! told to go away. On shutdown the server stops accepting, tells every connection to go
//! away, and lets calls finish under the shutdown deadline; streams end at once.
//!
//! # Layout
//! - [`proto`]: the code generated from `proto/stampede/v1/stampede.proto` (see `build.rs`).
//! - [`stampede`], [`admin`]: the two services.
//! - [`convert`]: messages validated into domain values, and domain values as messages.
//! - [`status`]: the one mapping of service errors to gRPC statuses.
//! - [`observe`]: metrics by method and code, and the contract's codes for transport failures.
//! - [`health`]: `grpc.health.v1` following readiness.
//! - [`incoming`]: the connection bound.

pub mod admin;
pub mod convert;
pub mod health;
pub mod incoming;
pub mod observe;
pub mod stampede;
pub mod status;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::service::{Credentials, Service, ServiceError};
use observe::{KnownMethods, ObserveLayer};
use proto::stampede_admin_server::StampedeAdminServer;
use proto::stampede_server::StampedeServer;

/// The code generated from `proto/stampede/v1/stampede.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("stampede.v1");

    /// The encoded descriptor set of the proto, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("stampede_descriptor");
}

/// Server limits, passed explicitly by the caller.
#[derive(Debug, Clone, Copy)]
pub struct GrpcOptions {
    /// Largest message received or sent, in bytes.
    pub message_size_max: usize,
    /// Open connections at most; more wait in the listen backlog.
    pub connections_max: usize,
    /// Concurrent calls per connection.
    pub streams_per_connection_max: u32,
    /// HTTP/2 ping interval.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered.
    pub keep_alive_timeout: Duration,
    /// Age at which a connection is told to go away; zero: never.
    pub connection_age_max: Duration,
    /// Time in-flight calls get to finish on shutdown.
    pub shutdown_timeout: Duration,
}

/// What the service layer's gates check of a call: the `authorization` metadata and the
/// peer's address (gRPC clients connect directly: no forwarded address is read).
pub fn credentials<T>(request: &tonic::Request<T>) -> Credentials<'_> {
    let authorization = request.metadata().get("authorization").and_then(|value| value.to_str().ok());
    let client = request.remote_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |address| address.ip());
    Credentials { authorization, client }
}

/// A call's answer.
type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

/// A call's answer from the service layer's result: the message, or its error mapped in
/// the one place ([`status::status`]).
fn answer<T>(result: Result<T, ServiceError>) -> Answer<T> {
    result.map(tonic::Response::new).map_err(status::status)
}

/// Serves gRPC on `listener` until `shutdown` fires, then drains under
/// `options.shutdown_timeout`. Health follows `service`'s readiness, and turns
/// `NOT_SERVING` as soon as the service is stopping.
pub async fn serve(listener: TcpListener, service: Arc<Service>, options: GrpcOptions, shutdown: CancellationToken) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::start_not_serving(&reporter).await;
    let health = tokio::spawn(health::follow_readiness(reporter, service.clone(), shutdown.clone()));
    let descriptor_sets = [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (Ok(reflection_v1), Ok(reflection_v1alpha)) = (reflection().build_v1(), reflection().build_v1alpha()) else {
        tracing::error!("the gRPC descriptors do not build a reflection service; gRPC is off");
        return;
    };
    let size = options.message_size_max;
    let stampede = StampedeServer::new(stampede::StampedeRpc::new(service.clone()))
        .max_decoding_message_size(size)
        .max_encoding_message_size(size);
    let admin = StampedeAdminServer::new(admin::StampedeAdminRpc::new(service))
        .max_decoding_message_size(size)
        .max_encoding_message_size(size);
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(options.streams_per_connection_max)
        .http2_keepalive_interval(Some(options.keep_alive_interval))
        .http2_keepalive_timeout(Some(options.keep_alive_timeout))
        .tcp_nodelay(true);
    if !options.connection_age_max.is_zero() {
        server =
            server.max_connection_age(options.connection_age_max).max_connection_age_grace(options.shutdown_timeout);
    }
    let router = server
        .layer(ObserveLayer::new(KnownMethods::new(&descriptor_sets)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(stampede)
        .add_service(admin);
    let incoming = incoming::bounded(listener, options.connections_max);
    let drained = shutdown.clone();
    let serving = router.serve_with_incoming_shutdown(incoming, async move { drained.cancelled().await });
    tokio::pin!(serving);
    let finished = tokio::select! {
        result = &mut serving => Some(result),
        () = async { shutdown.cancelled().await; tokio::time::sleep(options.shutdown_timeout).await } => None,
    };
    match finished {
        Some(Ok(())) => tracing::info!("gRPC server stopped"),
        Some(Err(error)) => tracing::error!(%error, "gRPC server failed"),
        None => tracing::warn!("gRPC calls did not finish before the shutdown deadline"),
    }
    health.abort();
}
