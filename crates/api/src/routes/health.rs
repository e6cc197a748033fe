use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::{AppState, HEALTH_DB_TIMEOUT};

/// 200 while the database answers; 503 when it does not, so load balancers stop routing here.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
        .map(orchestration_core::events::nats::is_connected);
    let healthy = database && nats.unwrap_or(true);
    let code = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": if healthy { "ok" } else { "degraded" },
            "service": "orchestration",
            "version": env!("CARGO_PKG_VERSION"),
            "database": database,
            "nats": nats,
            "uptimeSeconds": state.started.elapsed().as_secs(),
            "timestamp": chrono::Utc::now(),
        })),
    )
}
