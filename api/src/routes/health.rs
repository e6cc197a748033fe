use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::wire::{Health, HealthStatus};
use crate::{AppState, HEALTH_DB_TIMEOUT};

/// Whether the service can serve: 200 while the database answers, 503 when it does not, so
/// that load balancers stop routing here. A NATS outage only makes it `degraded`.
#[utoipa::path(
    get,
    path = "/api/health",
    operation_id = "getHealth",
    tag = "health",
    responses(
        (status = 200, description = "The database answers", body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let database = matches!(
        tokio::time::timeout(
            HEALTH_DB_TIMEOUT,
            sqlx::query("SELECT 1").execute(&state.pool)
        )
        .await,
        Ok(Ok(_))
    );
    // `null` when NATS is not configured; REST keeps working without it either way.
    let nats: Option<bool> = state
        .nats
        .as_ref()
        .map(orchestration_worker::nats::is_connected);
    let healthy = database && nats.unwrap_or(true);
    let code = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            status: if healthy {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            service: "orchestration",
            version: env!("CARGO_PKG_VERSION"),
            database,
            nats,
            uptime_seconds: state.started.elapsed().as_secs(),
            timestamp: chrono::Utc::now(),
        }),
    )
}

/// Prometheus metrics of this API process, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")
    )
)]
pub async fn metrics(State(state): State<AppState>) -> String {
    crate::metrics_text(State(state)).await
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "getOpenApi",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3 document of this API", body = Object))
)]
pub async fn document(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi.to_string(),
    )
}
