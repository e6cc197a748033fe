use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orchestration_core::domain::{Agent, AgentInput};
use orchestration_core::store::agents;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ProjectScope, parse_id};

pub async fn create(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiJson(body): ApiJson<AgentInput>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    body.validate().map_err(orchestration_core::Error::from)?;
    let agent = agents::agent_insert(&state.pool, project, &body).await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
) -> ApiResult<Json<Value>> {
    let items = agents::agent_list(&state.pool, project).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<Json<Agent>> {
    let id = parse_id(&id, "agent")?;
    Ok(Json(agents::agent_get(&state.pool, project, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AgentInput>,
) -> ApiResult<Json<Agent>> {
    let id = parse_id(&id, "agent")?;
    body.validate().map_err(orchestration_core::Error::from)?;
    Ok(Json(
        agents::agent_update(&state.pool, project, id, &body).await?,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "agent")?;
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(orchestration_core::Error::from)?;
    agents::agent_delete(&mut tx, project, id).await?;
    tx.commit().await.map_err(orchestration_core::Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}
