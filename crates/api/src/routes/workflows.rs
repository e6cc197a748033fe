use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orchestration_core::definitions::workflow_save;
use orchestration_core::domain::{Workflow, WorkflowInput};
use orchestration_core::store::workflows;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ProjectScope, parse_id};

pub async fn create(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiJson(body): ApiJson<WorkflowInput>,
) -> ApiResult<(StatusCode, Json<Workflow>)> {
    let workflow = workflow_save(&state.pool, project, None, body).await?;
    Ok((StatusCode::CREATED, Json(workflow)))
}

pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
) -> ApiResult<Json<Value>> {
    let items = workflows::workflow_list(&state.pool, project).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    let id = parse_id(&id, "workflow")?;
    Ok(Json(
        workflows::workflow_get(&state.pool, project, id).await?,
    ))
}

pub async fn update(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WorkflowInput>,
) -> ApiResult<Json<Workflow>> {
    let id = parse_id(&id, "workflow")?;
    Ok(Json(
        workflow_save(&state.pool, project, Some(id), body).await?,
    ))
}

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
    workflows::workflow_delete(&mut tx, project, id).await?;
    tx.commit().await.map_err(orchestration_core::Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}
