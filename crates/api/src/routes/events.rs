use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use orchestration_core::events::{self, IncomingEvent, Source};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ProjectScope};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    subject: String,
    #[serde(default)]
    payload: Value,
    /// The caller's id for the event: sending the same id again starts nothing new.
    #[serde(default)]
    id: Option<String>,
}

/// Ingests an event through the same path as NATS messages, for callers without a NATS client.
pub async fn ingest(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiJson(body): ApiJson<EventBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let subject = body.subject.trim();
    if subject.is_empty()
        || subject.len() > 256
        || subject
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
    {
        return Err(ApiError::Unprocessable(
            "subject must be dot-separated tokens without wildcards or spaces, e.g. graph.file.updated".into(),
        ));
    }
    if let Some(id) = &body.id
        && (id.is_empty() || id.len() > 255)
    {
        return Err(ApiError::Unprocessable(
            "id must be 1 to 255 characters".into(),
        ));
    }
    let id = body
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let event = IncomingEvent {
        key: format!("api:{project}:{id}"),
        id,
        source: Source::Api,
        subject: subject.to_string(),
        payload: body.payload,
        received_at: Utc::now(),
        project_id: Some(project),
    };
    let ingested = events::event_ingest(&state.pool, &event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"eventId": event.id, "triggeredRuns": ingested.runs, "duplicate": ingested.duplicate}),
        ),
    ))
}
