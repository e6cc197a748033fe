use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orchestration_core::domain::validate_name;
use orchestration_core::store::projects;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::wire::{ItemList, Project};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Unique; surrounding whitespace is trimmed.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

/// Creates a project.
#[utoipa::path(
    post,
    path = "/api/projects",
    operation_id = "createProject",
    tag = "projects",
    request_body = CreateProject,
    responses(
        (status = 201, description = "The new project", body = Project),
        (status = 400, response = crate::error::BadRequest),
        (status = 409, response = crate::error::Conflict),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 415, response = crate::error::UnsupportedMediaType),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    ApiJson(body): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    if !caller.is_global_admin() {
        return Err(orchestration_core::Error::Forbidden(
            "only a deployment-wide admin token creates projects".into(),
        )
        .into());
    }
    validate_name("name", &body.name).map_err(orchestration_core::Error::from)?;
    let project = projects::insert(&state.pool, body.name.trim()).await?;
    Ok((StatusCode::CREATED, Json(project.into())))
}

/// Lists all projects.
#[utoipa::path(
    get,
    path = "/api/projects",
    operation_id = "listProjects",
    tag = "projects",
    responses(
        (status = 200, description = "Every project", body = ItemList<Project>),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
) -> ApiResult<Json<ItemList<Project>>> {
    let mut items = projects::list(&state.pool).await?;
    // A project token sees its own project only.
    if let crate::auth::Caller::Token(p) = &caller
        && let Some(own) = p.project_id
    {
        items.retain(|project| project.id == own);
    }
    Ok(Json(items.into()))
}
