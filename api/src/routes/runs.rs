use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use orchestration_core::engine::trigger::TriggerRequest;
use orchestration_core::lifecycle::RunStatus;
use orchestration_core::store::{details, runs, workflows};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiBytes, ApiQuery, ProjectParam, ProjectScope, optional_body, parse_id};
use crate::wire::{ItemList, RunDetail, RunStatusDoc, RunSummary, Triggered};

/// The optional body of a trigger.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// The run's context, read by input templates as `{{ context.* }}`; default `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
}

/// Starts a run of the workflow. The body is optional: an empty POST triggers with an empty
/// context. An `Idempotency-Key` header makes repeated triggers return the first run (200)
/// instead of starting another.
#[utoipa::path(
    post,
    path = "/api/workflows/{id}/trigger",
    operation_id = "triggerWorkflow",
    tag = "runs",
    params(
        ProjectParam,
        ("id" = String, Path, description = "Workflow id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a repeated key returns the run of the first trigger"),
        ("X-Actor" = Option<String>, Header, description = "Who triggers, for the two-person rule of approvals (1 to 200 visible ASCII characters)", pattern = "^[!-~]([ -~]{0,198}[!-~])?$"),
    ),
    request_body(content = Option<TriggerBody>, description = "Optional"),
    responses(
        (status = 202, description = "A run was started", body = Triggered),
        (status = 200, description = "The run an earlier trigger with this Idempotency-Key started", body = Triggered),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 409, response = crate::error::Conflict),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn trigger(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<Triggered>)> {
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
    let actor = caller.identity(&headers)?;
    let triggered = state
        .engine
        .trigger(TriggerRequest {
            project_id: project,
            workflow_id: id,
            context,
            trigger: "manual",
            idempotency_key: key.as_deref(),
            actor: actor.as_deref(),
        })
        .await?;
    let run = triggered.run;
    let status = if triggered.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Triggered {
            run_id: run.id,
            status: run.status,
            workflow_id: run.workflow_id,
        }),
    ))
}

/// Cancels a run that has not finished: running nodes are stopped, the rest cancelled.
#[utoipa::path(
    post,
    path = "/api/runs/{run_id}/cancel",
    operation_id = "cancelRun",
    tag = "runs",
    params(ProjectParam, ("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The cancelled run", body = RunDetail),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 409, response = crate::error::Conflict),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let run_id = parse_id(&run_id, "run")?;
    state
        .engine
        .run_cancel(project, run_id, "cancelled by request")
        .await?;
    detail(&state, project, run_id).await
}

/// The optional body of a retry.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Keys merged into the run's context before the retry; default: keep it as it is.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
}

/// Retries the failed and cancelled nodes of a finished run, in the same run.
#[utoipa::path(
    post,
    path = "/api/runs/{run_id}/retry",
    operation_id = "retryRun",
    tag = "runs",
    params(ProjectParam, ("run_id" = String, Path, description = "Run id")),
    request_body(content = Option<RetryBody>, description = "Optional"),
    responses(
        (status = 200, description = "The run, running again", body = RunDetail),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 409, response = crate::error::Conflict),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(run_id): Path<String>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<RunDetail>> {
    let run_id = parse_id(&run_id, "run")?;
    let body: RetryBody = optional_body(&body)?;
    state
        .engine
        .run_retry(project, run_id, body.context)
        .await?;
    detail(&state, project, run_id).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// Only runs in this status.
    #[param(value_type = Option<RunStatusDoc>)]
    status: Option<String>,
    /// At most this many runs, newest first (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The runs of a workflow, newest first.
#[utoipa::path(
    get,
    path = "/api/workflows/{id}/runs",
    operation_id = "listRuns",
    tag = "runs",
    params(ProjectParam, ("id" = String, Path, description = "Workflow id"), ListParams),
    responses(
        (status = 200, description = "The workflow's runs", body = ItemList<RunSummary>),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<ItemList<RunSummary>>> {
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
    workflows::get(&state.pool, project, id).await?;
    let items = runs::list(&state.pool, project, id, status, limit).await?;
    Ok(Json(items.into()))
}

/// One run with its nodes, attempts and approvals.
#[utoipa::path(
    get,
    path = "/api/runs/{run_id}",
    operation_id = "getRun",
    tag = "runs",
    params(ProjectParam, ("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let run_id = parse_id(&run_id, "run")?;
    detail(&state, project, run_id).await
}

/// One run, as a run of this workflow (404 when it is another workflow's).
#[utoipa::path(
    get,
    path = "/api/workflows/{id}/runs/{run_id}",
    operation_id = "getWorkflowRun",
    tag = "runs",
    params(
        ProjectParam,
        ("id" = String, Path, description = "Workflow id"),
        ("run_id" = String, Path, description = "Run id"),
    ),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn get_in_workflow(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path((id, run_id)): Path<(String, String)>,
) -> ApiResult<Json<RunDetail>> {
    let id = parse_id(&id, "workflow")?;
    let run_id = parse_id(&run_id, "run")?;
    let run = detail(&state, project, run_id).await?;
    if run.run.workflow_id != id {
        return Err(orchestration_core::Error::NotFound("run").into());
    }
    Ok(run)
}

/// Run `run_id` with its nodes, attempts and approvals.
async fn detail(state: &AppState, project: i64, run_id: Uuid) -> ApiResult<Json<RunDetail>> {
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(orchestration_core::Error::from)?;
    Ok(Json(details::run(&mut conn, project, run_id).await?.into()))
}
