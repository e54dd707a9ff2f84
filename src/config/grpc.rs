//! The gRPC front's settings, part of the api's one clap struct ([`super::ApiConfig`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::{parse_duration, parse_duration_or_zero};

/// Settings of the gRPC server (`GRPC_*`); the fields carry the prefix too, as clap names
/// arguments after them and the api's own `listen_addr` and `connections_max` exist.
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcConfig {
    /// Address the gRPC server listens on (port 0 picks a free port); unset: no gRPC server.
    #[arg(long, env = "GRPC_LISTEN_ADDR")]
    pub grpc_listen_addr: Option<SocketAddr>,

    /// Largest gRPC message, received or sent, in bytes; a larger request is
    /// `RESOURCE_EXHAUSTED`.
    #[arg(long, env = "GRPC_MESSAGE_SIZE_MAX", default_value_t = 65_536,
        value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub grpc_message_size_max: u32,

    /// Largest number of open gRPC connections, apart from `CONNECTIONS_MAX`; further
    /// connections wait in the backlog.
    #[arg(long, env = "GRPC_CONNECTIONS_MAX", default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_connections_max: u32,

    /// Concurrent calls (HTTP/2 streams) one gRPC connection may have open.
    #[arg(long, env = "GRPC_STREAMS_PER_CONNECTION_MAX", default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_streams_per_connection_max: u32,

    /// How often an HTTP/2 ping checks a quiet gRPC connection.
    #[arg(long, env = "GRPC_KEEP_ALIVE_INTERVAL", default_value = "30s",
        value_parser = parse_duration)]
    pub grpc_keep_alive_interval: Duration,

    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "GRPC_KEEP_ALIVE_TIMEOUT", default_value = "10s",
        value_parser = parse_duration)]
    pub grpc_keep_alive_timeout: Duration,

    /// Age at which a gRPC connection is told to go away (GOAWAY; its calls finish, within
    /// `SHUTDOWN_TIMEOUT`), so an idle or long-lived connection frees its slot and clients
    /// rebalance across replicas (`0s`: never).
    #[arg(long, env = "GRPC_CONNECTION_AGE_MAX", default_value = "10m",
        value_parser = parse_duration_or_zero)]
    pub grpc_connection_age_max: Duration,
}
