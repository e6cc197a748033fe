use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use orchestration_core::alerts::{self, Webhook};
use orchestration_core::store;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;

/// AlertManager's webhook receiver. Any body that is not a valid version-4 payload gets a 4xx
/// that says what is wrong.
pub async fn webhook(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    if let Some(expected) = &state.alertmanager_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(ApiError::Unauthorized(
                "the AlertManager webhook needs Authorization: Bearer <ORCH_ALERTMANAGER_TOKEN>"
                    .into(),
            ));
        }
    }
    let hook: Webhook = serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError::Unprocessable(format!("not an AlertManager webhook body: {e}"))
        } else {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
    })?;
    let received = alerts::webhook_ingest(&state.pool, &hook).await?;
    Ok(Json(
        json!({"received": received.received, "triggeredRuns": received.triggered_runs}),
    ))
}

#[derive(Deserialize)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Value>> {
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(s @ ("firing" | "resolved")) => Some(s),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status must be firing or resolved, got {other:?}"
            )));
        }
    };
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let items = store::alerts::alert_list(&state.pool, status, limit).await?;
    Ok(Json(json!({ "items": items })))
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
