//! Health and readiness.

use hyper::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::{HandlerResult, RequestContext, json};
use crate::http::state::AppState;

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
    state.service.readiness().await?;
    Ok(json::response(StatusCode::OK, &Status { status: "ready" }))
}
