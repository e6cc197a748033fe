use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use orchestration_core::domain::{RunDetail, RunStatus};
use orchestration_core::engine;
use orchestration_core::events::nats::lifecycle;
use orchestration_core::store::{runs, workflows};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, ProjectScope, parse_id};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    context: Option<Value>,
}

/// Parses an optional JSON body: empty means the default.
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::Unprocessable(format!("invalid request body: {e}"))
        } else {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
    })
}

/// The body is optional: an empty POST triggers with an empty context. An `Idempotency-Key`
/// header makes repeated triggers return the first run (200) instead of starting another.
pub async fn trigger(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = parse_id(&id, "workflow")?;
    let body: TriggerBody = optional_body(&body)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?
                .to_string(),
        ),
    };
    let context = body.context.unwrap_or_else(|| json!({}));
    let actor = crate::extract::actor(&headers)?;
    let triggered = engine::run_trigger(
        &state.pool,
        engine::TriggerRequest {
            project_id: project,
            workflow_id: id,
            context,
            trigger: "manual",
            idempotency_key: key.as_deref(),
            actor: actor.as_deref(),
        },
    )
    .await?;
    let run = triggered.run;
    if triggered.created {
        metrics::counter!(
            orchestration_core::telemetry::names::RUNS_STARTED,
            "workflow" => run.workflow_name.clone(),
            "trigger" => "manual"
        )
        .increment(1);
        let body = lifecycle(json!({"runId": run.id, "workflowId": run.workflow_id,
            "workflowName": run.workflow_name, "status": run.status, "trigger": "manual"}));
        state.publisher.run("running", body).await;
    }
    let status = if triggered.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"runId": run.id, "status": run.status, "workflowId": run.workflow_id})),
    ))
}

pub async fn cancel(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let run_id = parse_id(&run_id, "run")?;
    let run = engine::run_cancel(&state.pool, project, run_id, "cancelled by request").await?;
    let body = lifecycle(json!({"runId": run.id, "workflowId": run.workflow_id,
        "workflowName": run.workflow_name, "status": "CANCELLED"}));
    state.publisher.run("cancelled", body).await;
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(orchestration_core::Error::from)?;
    Ok(Json(runs::run_get(&mut conn, project, run_id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    context: Option<Value>,
}

pub async fn retry(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(run_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RunDetail>> {
    let run_id = parse_id(&run_id, "run")?;
    let body: RetryBody = optional_body(&body)?;
    engine::run_retry(&state.pool, project, run_id, body.context).await?;
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(orchestration_core::Error::from)?;
    Ok(Json(runs::run_get(&mut conn, project, run_id).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "workflow")?;
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status must be one of PENDING, RUNNING, WAITING_APPROVAL, COMPLETED, FAILED, CANCELLED; got {s:?}"
            ))
        })?),
    };
    let limit = params.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    // A workflow of another project is a 404, not an empty list.
    workflows::workflow_get(&state.pool, project, id).await?;
    let items = runs::run_list(&state.pool, project, id, status, limit).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let run_id = parse_id(&run_id, "run")?;
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(orchestration_core::Error::from)?;
    Ok(Json(runs::run_get(&mut conn, project, run_id).await?))
}

pub async fn get_in_workflow(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path((id, run_id)): Path<(String, String)>,
) -> ApiResult<Json<RunDetail>> {
    let id = parse_id(&id, "workflow")?;
    let run_id = parse_id(&run_id, "run")?;
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(orchestration_core::Error::from)?;
    let run = runs::run_get(&mut conn, project, run_id).await?;
    if run.run.workflow_id != id {
        return Err(orchestration_core::Error::NotFound("run").into());
    }
    Ok(Json(run))
}
