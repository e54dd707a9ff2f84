//! Health and readiness.

use std::time::Duration;

use hyper::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::{HandlerResult, RequestContext, json};
use crate::http::state::AppState;

/// How long readiness waits for each dependency.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The body of `/health` and `/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// `GET /health`: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Liveness",
    description = "200 while the process runs; it checks no dependency.",
    responses((status = 200, description = "The process runs.", body = Status, example = json!({"status": "ok"}))),
)]
pub async fn health(_state: &AppState, _request: RequestContext) -> HandlerResult {
    Ok(json::response(StatusCode::OK, &Status { status: "ok" }))
}

/// `GET /ready`: 200 when Redis and Postgres answer, else 503; 503 from the start of shutdown.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    summary = "Readiness",
    description = "200 when Redis and Postgres answer within a second each, else 503 `unavailable`; 503 from the moment the process is told to stop (SIGTERM), through `SHUTDOWN_READINESS_DELAY` and the drain.",
    responses((status = 200, description = "Ready to serve.", body = Status, example = json!({"status": "ready"}))),
)]
pub async fn ready(state: &AppState, _request: RequestContext) -> HandlerResult {
    if state.stopping.is_cancelled() {
        return Err(ApiError::unavailable("shutting down"));
    }
    let mut redis = state.redis.clone();
    let ping = redis::cmd("PING");
    probe("redis", ping.query_async::<String>(&mut redis)).await?;
    probe("postgres", sqlx::query("SELECT 1").execute(&state.database)).await?;
    Ok(json::response(StatusCode::OK, &Status { status: "ready" }))
}

/// Waits at most [`READY_PROBE_TIMEOUT`] for one dependency's answer; 503 otherwise.
async fn probe<T, E: std::fmt::Display>(
    dependency: &str,
    check: impl std::future::Future<Output = Result<T, E>>,
) -> Result<(), ApiError> {
    match tokio::time::timeout(READY_PROBE_TIMEOUT, check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(ApiError::unavailable(format!("{dependency}: {error}"))),
        Err(_) => Err(ApiError::unavailable(format!("{dependency} did not answer in time"))),
    }
}
