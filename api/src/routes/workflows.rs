use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orchestration_core::definitions::workflow_save;
use orchestration_core::store::workflows;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ProjectParam, ProjectScope, parse_id};
use crate::wire::{ItemList, Workflow, WorkflowInput};

/// Creates a workflow after checking its DAG, agents, actions and input templates.
#[utoipa::path(
    post,
    path = "/api/workflows",
    operation_id = "createWorkflow",
    tag = "workflows",
    params(ProjectParam),
    request_body = WorkflowInput,
    responses(
        (status = 201, description = "The new workflow", body = Workflow),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 409, response = crate::error::Conflict),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 415, response = crate::error::UnsupportedMediaType),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiJson(body): ApiJson<WorkflowInput>,
) -> ApiResult<(StatusCode, Json<Workflow>)> {
    let workflow = workflow_save(&state.pool, project, None, body.into_domain()).await?;
    Ok((StatusCode::CREATED, Json(workflow.into())))
}

/// Lists the workflows of a project.
#[utoipa::path(
    get,
    path = "/api/workflows",
    operation_id = "listWorkflows",
    tag = "workflows",
    params(ProjectParam),
    responses(
        (status = 200, description = "The project's workflows", body = ItemList<Workflow>),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
) -> ApiResult<Json<ItemList<Workflow>>> {
    let items = workflows::list(&state.pool, project).await?;
    Ok(Json(items.into()))
}

/// One workflow.
#[utoipa::path(
    get,
    path = "/api/workflows/{id}",
    operation_id = "getWorkflow",
    tag = "workflows",
    params(ProjectParam, ("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow", body = Workflow),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    let id = parse_id(&id, "workflow")?;
    Ok(Json(workflows::get(&state.pool, project, id).await?.into()))
}

/// Replaces a workflow's definition as a new version; runs in flight keep theirs.
#[utoipa::path(
    put,
    path = "/api/workflows/{id}",
    operation_id = "updateWorkflow",
    tag = "workflows",
    params(ProjectParam, ("id" = String, Path, description = "Workflow id")),
    request_body = WorkflowInput,
    responses(
        (status = 200, description = "The workflow's new version", body = Workflow),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 409, response = crate::error::Conflict),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 415, response = crate::error::UnsupportedMediaType),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WorkflowInput>,
) -> ApiResult<Json<Workflow>> {
    let id = parse_id(&id, "workflow")?;
    Ok(Json(
        workflow_save(&state.pool, project, Some(id), body.into_domain())
            .await?
            .into(),
    ))
}

/// Deletes a workflow without active runs.
#[utoipa::path(
    delete,
    path = "/api/workflows/{id}",
    operation_id = "deleteWorkflow",
    tag = "workflows",
    params(ProjectParam, ("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 409, response = crate::error::Conflict),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "workflow")?;
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(orchestration_core::Error::from)?;
    workflows::delete(&mut tx, project, id).await?;
    tx.commit().await.map_err(orchestration_core::Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}
