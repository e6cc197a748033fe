//! API tokens: created by an admin (the secret shown once), listed without secrets, revoked
//! at once. A project admin manages its own project's tokens; the deployment-wide admin any.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use orchestration_core::auth::{self, Role};
use orchestration_core::domain::validate_name;
use orchestration_core::store::tokens::{self, NewToken};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, parse_id};
use crate::wire::{ItemList, TokenView};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateToken {
    /// The project the token acts in (default: the caller's project, else 1).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "1")]
    project_id: Option<serde_json::Value>,
    /// `admin`, `operator` or `viewer`.
    #[schema(value_type = String, example = "operator")]
    role: String,
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

/// A new token, with its secret: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    id: Uuid,
    #[schema(value_type = String)]
    project_id: String,
    #[schema(value_type = String)]
    role: Role,
    name: String,
    created_at: DateTime<Utc>,
    /// `Authorization: Bearer <token>`. Not retrievable later.
    token: String,
}

fn project_of(raw: &Option<serde_json::Value>) -> Result<Option<i64>, ApiError> {
    let parsed = match raw {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse::<i64>().ok(),
        Some(_) => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| ApiError::Unprocessable("projectId must be a project id".into()))
}

/// Creates a token.
#[utoipa::path(
    post,
    path = "/api/tokens",
    operation_id = "createToken",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The new token and its secret (shown once)", body = CreatedToken),
        (status = 400, response = crate::error::BadRequest),
        (status = 403, response = crate::error::Forbidden),
        (status = 404, response = crate::error::NotFound),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 415, response = crate::error::UnsupportedMediaType),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let project = caller.project(project_of(&body.project_id)?)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "role must be admin, operator or viewer; got {:?}",
            body.role
        ))
    })?;
    validate_name("name", &body.name).map_err(orchestration_core::Error::from)?;
    orchestration_core::store::projects::require(&state.pool, project).await?;
    let secret = auth::token_generate();
    let created_by = match &caller {
        Caller::Token(p) => Some(p.identity()),
        Caller::Anonymous => None,
    };
    let token = tokens::insert(
        &state.pool,
        &NewToken {
            project_id: Some(project),
            role,
            name: body.name.trim(),
            secret_hash: &auth::token_hash(&secret),
            created_by: created_by.as_deref(),
        },
    )
    .await?;
    tracing::info!(token_id = %token.id, project, role = %role, created_by, "token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: token.id,
            project_id: project.to_string(),
            role,
            name: token.name,
            created_at: token.created_at,
            token: secret,
        }),
    ))
}

/// The caller's project for a project token; every project for the deployment-wide admin.
fn visible_project(caller: &Caller) -> Option<i64> {
    match caller {
        Caller::Token(p) => p.project_id,
        Caller::Anonymous => None,
    }
}

/// Lists tokens (never their secrets).
#[utoipa::path(
    get,
    path = "/api/tokens",
    operation_id = "listTokens",
    tag = "tokens",
    responses(
        (status = 200, description = "Tokens, newest first", body = ItemList<TokenView>),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ItemList<TokenView>>> {
    let items = tokens::list(&state.pool, visible_project(&caller)).await?;
    Ok(Json(items.into()))
}

/// Revokes a token: requests with it fail from now on.
#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    operation_id = "revokeToken",
    tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "token")?;
    let token = tokens::revoke(&state.pool, visible_project(&caller), id).await?;
    tracing::info!(token_id = %token.id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
