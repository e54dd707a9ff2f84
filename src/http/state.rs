//! The state shared by every handler.

use std::time::Duration;

use crate::infrastructure::RedisConnection;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::Jwt;
use crate::availability::watcher::Watchers;
use crate::catalog::Catalog;
use crate::http::availability_stream::Streams;
use crate::keyspace::Keyspace;
use crate::reservation::ReservationEngine;
use crate::reservation::admission::Admission;
use crate::stock::Stock;
use crate::waiting_room::WaitingRooms;

/// Everything a handler needs, shared by all requests.
pub struct AppState {
    /// Verifies bearer tokens.
    pub jwt: Jwt,
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
    /// How long a hold lasts.
    pub hold_ttl: Duration,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// Reserve, confirm, cancel and read holds.
    pub reservations: ReservationEngine,
    /// Backpressure on the reservation endpoints.
    pub admission: Admission,
    /// One availability watcher per watched event.
    pub availability: Watchers,
    /// The open availability streams and their bound.
    pub streams: Streams,
    /// The events' waiting rooms.
    pub waiting_rooms: WaitingRooms,
    /// Cancelled when the process is told to stop (SIGTERM): from then on `GET /ready`
    /// answers 503, through `SHUTDOWN_READINESS_DELAY` and the drain.
    pub stopping: CancellationToken,
}
