use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "The process is alive")))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the event log answers.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "Ready to take commands"),
    (status = 503, description = "The event log does not answer")))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let log = state.engine.log();
    match log.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(
                json!({"status": "ready", "checks": {"event_log": {"status": "up", "backend": log.backend()}}}),
            ),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "not ready", "checks": {"event_log": {"status": "down", "backend": log.backend()}}}),
                ),
            )
        }
    }
}
