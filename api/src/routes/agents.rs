use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orchestration_core::domain::{self, AgentType};
use orchestration_core::store::agents;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ProjectParam, ProjectScope, parse_id};
use crate::wire::{Agent, AgentInput, ItemList};

/// Entrypoints inside the agents directory, HTTP destinations on the allow-list: refused at
/// registration already, not only when a node runs.
fn check_policy(state: &AppState, body: &domain::AgentInput) -> Result<(), crate::error::ApiError> {
    let checked = match body.agent_type {
        AgentType::Script => state
            .agent_policy
            .entrypoint(body.entrypoint.as_deref().unwrap_or_default(), false)
            .map(|_| ()),
        AgentType::Http => state
            .agent_policy
            .http_destination(body.url.as_deref().unwrap_or_default()),
        AgentType::Builtin => Ok(()),
    };
    checked.map_err(crate::error::ApiError::Unprocessable)
}

/// The agent a body defines, checked.
fn checked(
    state: &AppState,
    body: AgentInput,
) -> Result<domain::AgentInput, crate::error::ApiError> {
    let input = body.into_domain();
    input.validate().map_err(orchestration_core::Error::from)?;
    check_policy(state, &input)?;
    Ok(input)
}

/// Registers an agent.
#[utoipa::path(
    post,
    path = "/api/agents",
    operation_id = "createAgent",
    tag = "agents",
    params(ProjectParam),
    request_body = AgentInput,
    responses(
        (status = 201, description = "The new agent", body = Agent),
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
    ApiJson(body): ApiJson<AgentInput>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    let input = checked(&state, body)?;
    let agent = agents::insert(&state.pool, project, &input).await?;
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// Lists the agents of a project.
#[utoipa::path(
    get,
    path = "/api/agents",
    operation_id = "listAgents",
    tag = "agents",
    params(ProjectParam),
    responses(
        (status = 200, description = "The project's agents", body = ItemList<Agent>),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
) -> ApiResult<Json<ItemList<Agent>>> {
    let items = agents::list(&state.pool, project).await?;
    Ok(Json(items.into()))
}

/// One agent.
#[utoipa::path(
    get,
    path = "/api/agents/{id}",
    operation_id = "getAgent",
    tag = "agents",
    params(ProjectParam, ("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<Json<Agent>> {
    let id = parse_id(&id, "agent")?;
    Ok(Json(agents::get(&state.pool, project, id).await?.into()))
}

/// Replaces an agent's definition; runs in flight keep the settings they started with.
#[utoipa::path(
    put,
    path = "/api/agents/{id}",
    operation_id = "updateAgent",
    tag = "agents",
    params(ProjectParam, ("id" = String, Path, description = "Agent id")),
    request_body = AgentInput,
    responses(
        (status = 200, description = "The updated agent", body = Agent),
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
    ApiJson(body): ApiJson<AgentInput>,
) -> ApiResult<Json<Agent>> {
    let id = parse_id(&id, "agent")?;
    let input = checked(&state, body)?;
    Ok(Json(
        agents::update(&state.pool, project, id, &input)
            .await?
            .into(),
    ))
}

/// Deletes an agent that no workflow uses.
#[utoipa::path(
    delete,
    path = "/api/agents/{id}",
    operation_id = "deleteAgent",
    tag = "agents",
    params(ProjectParam, ("id" = String, Path, description = "Agent id")),
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
    let id = parse_id(&id, "agent")?;
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(orchestration_core::Error::from)?;
    agents::delete(&mut tx, project, id).await?;
    tx.commit().await.map_err(orchestration_core::Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}
