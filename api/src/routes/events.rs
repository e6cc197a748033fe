use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use orchestration_core::ingest::{self, IncomingEvent, Source};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ProjectParam, ProjectScope};
use crate::wire::EventAccepted;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// Dot-separated tokens without wildcards or spaces, e.g. `graph.file.updated`.
    #[schema(min_length = 1, max_length = 256, example = "graph.file.updated")]
    subject: String,
    /// Any JSON; workflows read it as `{{ context.event.payload.* }}`.
    #[serde(default)]
    payload: Value,
    /// The caller's id for the event: sending the same id again starts nothing new.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    id: Option<String>,
}

/// Ingests an event through the same path as NATS messages, for callers without a NATS
/// client: every active workflow whose event trigger matches the subject starts a run.
#[utoipa::path(
    post,
    path = "/api/events",
    operation_id = "ingestEvent",
    tag = "events",
    params(ProjectParam),
    request_body = EventBody,
    responses(
        (status = 202, description = "The event was recorded", body = EventAccepted),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 415, response = crate::error::UnsupportedMediaType),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiJson(body): ApiJson<EventBody>,
) -> ApiResult<(StatusCode, Json<EventAccepted>)> {
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
    let ingested = ingest::ingest(&state.engine, &event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EventAccepted {
            event_id: event.id,
            triggered_runs: ingested.runs,
            duplicate: ingested.duplicate,
        }),
    ))
}
