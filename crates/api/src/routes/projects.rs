use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orchestration_core::domain::{Project, validate_name};
use orchestration_core::store::projects;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::ApiJson;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    name: String,
}

pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    validate_name("name", &body.name).map_err(orchestration_core::Error::from)?;
    let project = projects::project_insert(&state.pool, body.name.trim()).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let items = projects::project_list(&state.pool).await?;
    Ok(Json(json!({ "items": items })))
}
