//! Extractors that turn every malformed request into an [`ApiError`] with a JSON body.

use axum::extract::{FromRequest, FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// `axum::Json` whose rejections are our JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` whose rejections are our JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectParam {
    #[serde(default)]
    project_id: Option<String>,
}

/// The project a request acts in (`?projectId=N`, default 1); 404 when it does not exist.
pub struct ProjectScope(pub i64);

impl FromRequestParts<AppState> for ProjectScope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Query(param) = Query::<ProjectParam>::from_request_parts(parts, state).await?;
        let id = match param.project_id.as_deref() {
            None | Some("") => 1,
            Some(raw) => raw.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("projectId must be a project id, got {raw:?}"))
            })?,
        };
        orchestration_core::store::projects::project_require(&state.pool, id).await?;
        Ok(ProjectScope(id))
    }
}

/// The `X-Actor` header: who is making the request, for the two-person rule of approvals.
pub fn actor(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("x-actor") {
        None => Ok(None),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::BadRequest("X-Actor must be visible ASCII".into()))?
                .trim();
            if v.is_empty() || v.len() > 200 {
                return Err(ApiError::BadRequest(
                    "X-Actor must be 1 to 200 characters".into(),
                ));
            }
            Ok(Some(v.to_string()))
        }
    }
}

/// Parses an opaque id from the path; anything that is not one of ours is simply not found.
pub fn parse_id(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::Core(orchestration_core::Error::NotFound(what)))
}
