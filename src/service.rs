//! The service layer: every rule a front (HTTP, gRPC) applies around the domain, written
//! once. A front validates its wire format into domain values, passes them with the
//! caller's [`Credentials`], and maps the one [`ServiceError`] to its own status in one
//! place (`http::error`, `grpc::status`).
//!
//! What lives here: admission (the per-address rate and the in-flight bound),
//! authentication and the per-user rate, the waiting room's pass check, idempotency keys,
//! the confirm task that a hang-up cannot cut, the Postgres fallback for reservations whose
//! Redis record is gone, outcome metrics, the open-stream bound, and readiness.
//!
//! # Layout
//! - [`error`]: [`ServiceError`], and the mapping of every domain error to it.
//! - [`gate`]: [`Gate`]: which checks run before an operation, in which order.
//! - [`reservations`]: reserve, confirm, cancel, read and list reservations.
//! - [`catalog`]: events, categories, availability and seat maps.
//! - [`waiting_room`]: rooms, queues and the pass check of reserve.
//! - [`watch`]: availability streams: their bounds and coalescing, shared by SSE and gRPC.

pub mod catalog;
pub mod error;
pub mod gate;
pub mod reservations;
pub mod waiting_room;
pub mod watch;

use std::net::IpAddr;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::availability::watcher::Watchers;
use crate::catalog::Catalog;
use crate::infrastructure::RedisConnection;
use crate::keyspace::Keyspace;
use crate::rate_limit::UserRateLimit;
use crate::reservation::ReservationEngine;
use crate::reservation::admission::Admission;
use crate::stock::Stock;
use crate::waiting_room::WaitingRooms;

pub use error::ServiceError;
pub use gate::{Admitted, Gate};
pub use watch::{StreamOptions, Streams, Watch};

/// How long readiness waits for each dependency.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a front knows of its caller before any check: the raw credentials and the
/// address per-address limits count under.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The `Authorization` value (`Bearer <JWT>`), header or metadata.
    pub authorization: Option<&'a str>,
    /// The client's address (behind trusted proxies, the one they forwarded for).
    pub client: IpAddr,
}

/// Everything the operations share, built once per process and shared by every front.
pub struct Service {
    /// Verifies bearer tokens.
    pub jwt: Authenticator,
    /// Postgres pool.
    pub database: PgPool,
    /// Multiplexed Redis connection.
    pub redis: RedisConnection,
    /// Redis key layout.
    pub keys: Keyspace,
    /// Events and categories.
    pub catalog: Catalog,
    /// Stock levels.
    pub stock: Stock,
    /// Reserve, confirm, cancel and read holds.
    pub reservations: ReservationEngine,
    /// Backpressure on reserve and confirm.
    pub admission: Admission,
    /// Per-user rate limits of state-changing requests.
    pub user_rate_limit: UserRateLimit,
    /// One availability watcher per watched event.
    pub availability: Watchers,
    /// The open availability streams of every front, and their bounds.
    pub streams: Streams,
    /// The events' waiting rooms.
    pub waiting_rooms: WaitingRooms,
    /// Cancelled when the process is told to stop (SIGTERM): from then on it is not ready.
    pub stopping: CancellationToken,
}

impl Service {
    /// Ready when not stopping and Redis and Postgres each answer within a second.
    pub async fn readiness(&self) -> Result<(), ServiceError> {
        if self.stopping.is_cancelled() {
            return Err(ServiceError::unavailable("shutting down"));
        }
        let mut redis = self.redis.clone();
        let ping = redis::cmd("PING");
        probe("redis", ping.query_async::<String>(&mut redis)).await?;
        probe("postgres", sqlx::query("SELECT 1").execute(&self.database)).await
    }
}

/// Waits at most [`READY_PROBE_TIMEOUT`] for one dependency's answer.
async fn probe<T, E: std::fmt::Display>(
    dependency: &str,
    check: impl std::future::Future<Output = Result<T, E>>,
) -> Result<(), ServiceError> {
    match tokio::time::timeout(READY_PROBE_TIMEOUT, check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(ServiceError::unavailable(format!("{dependency}: {error}"))),
        Err(_) => Err(ServiceError::unavailable(format!("{dependency} did not answer in time"))),
    }
}
