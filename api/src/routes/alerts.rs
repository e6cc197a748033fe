use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Datelike, Utc};
use orchestration_core::alerts::{self, Webhook};
use orchestration_core::store;
use orchestration_core::store::alerts::Alert;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiBytes, ApiQuery, json_body, reject_nul};
use crate::wire::{AlertDoc, AlertStateDoc, ItemList, WebhookDoc, WebhookReceived};

/// AlertManager's webhook receiver. Any body that is not a valid version-4 payload gets a 4xx
/// that says what is wrong. Newly firing alerts start the workflows whose event trigger
/// matches `alert.<alertname>`.
#[utoipa::path(
    post,
    path = "/api/webhooks/alertmanager",
    operation_id = "alertmanagerWebhook",
    tag = "alerts",
    request_body = WebhookDoc,
    security((), ("alertmanagerToken" = [])),
    responses(
        (status = 200, description = "The delivery was stored", body = WebhookReceived),
        (status = 400, response = crate::error::BadRequest),
        (status = 401, response = crate::error::Unauthorized),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn webhook(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<WebhookReceived>> {
    if state.alertmanager_token.is_none() && state.auth == crate::auth::AuthMode::Required {
        // No dedicated token configured: the webhook is still never open; an operator
        // token will do.
        let principal = crate::auth::authenticate(&state, &headers).await?;
        if !principal.may(orchestration_core::auth::Role::Operator) {
            return Err(orchestration_core::Error::Forbidden(
                "the AlertManager webhook needs an operator token (or ORCH_ALERTMANAGER_TOKEN)"
                    .into(),
            )
            .into());
        }
    }
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
    let hook: Webhook = json_body(&body).map_err(|e| match e {
        ApiError::Unprocessable(m) => ApiError::Unprocessable(m.replacen(
            "invalid request body",
            "not an AlertManager webhook body",
            1,
        )),
        other => other,
    })?;
    reject_nul(&body)?;
    for (i, a) in hook.alerts.iter().enumerate() {
        for (field, t) in [("startsAt", Some(a.starts_at)), ("endsAt", a.ends_at)] {
            if let Some(t) = t
                && !storable(t)
            {
                return Err(ApiError::Unprocessable(format!(
                    "alerts[{i}].{field} must be between years 1 and 9999"
                )));
            }
        }
    }
    let received = alerts::webhook_ingest(&state.engine, &hook).await?;
    Ok(Json(WebhookReceived {
        received: received.received,
        triggered_runs: received.triggered_runs,
    }))
}

/// Whether PostgreSQL (and people) can make sense of the time: years 1 to 9999.
pub(crate) fn storable(t: DateTime<Utc>) -> bool {
    (1..=9999).contains(&t.year())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only alerts in this state.
    #[param(value_type = Option<AlertStateDoc>)]
    status: Option<String>,
    /// At most this many alerts, most recently received first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The alerts AlertManager delivered, most recently received first.
#[utoipa::path(
    get,
    path = "/api/alerts",
    operation_id = "listAlerts",
    tag = "alerts",
    params(ListParams),
    responses(
        (status = 200, description = "Alerts", body = ItemList<AlertDoc>),
        (status = 400, response = crate::error::BadRequest),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<ItemList<Alert>>> {
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
    let items = store::alerts::list(&state.pool, status, limit).await?;
    Ok(Json(items.into()))
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
