//! Authentication at the edge: one middleware checks `Authorization: Bearer <token>` against
//! what the matched route needs (`orchestration_core::auth::required_role`) and leaves the
//! [`Caller`] in the request for handlers (project scope, who triggered, who decided).

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orchestration_core::auth::{self, Principal, Role};

use crate::AppState;
use crate::error::ApiError;

/// Whether requests must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    /// ORCH_AUTH_DISABLED=true: development only; everyone is an admin of every project.
    Disabled,
}

/// Who is calling: a token's principal, or nobody in particular when auth is disabled.
#[derive(Debug, Clone)]
pub enum Caller {
    Token(Principal),
    Anonymous,
}

impl Caller {
    /// The project a request acts in (see [`Principal::project`]).
    pub fn project(&self, asked: Option<i64>) -> Result<i64, ApiError> {
        match self {
            Caller::Token(p) => p
                .project(asked)
                .map_err(|m| ApiError::Core(orchestration_core::Error::Forbidden(m))),
            Caller::Anonymous => Ok(asked.unwrap_or(1)),
        }
    }

    /// A deployment-wide admin (or anyone, with auth disabled).
    pub fn is_global_admin(&self) -> bool {
        match self {
            Caller::Token(p) => p.project_id.is_none() && p.role == Role::Admin,
            Caller::Anonymous => true,
        }
    }

    /// How the caller is named in runs and approvals. Without auth, the `X-Actor` header
    /// names them (as before tokens existed); with auth, only the token does.
    pub fn identity(&self, headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
        match self {
            Caller::Token(p) => Ok(Some(p.identity())),
            Caller::Anonymous => crate::extract::actor(headers),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous))
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The principal behind the request's token: 401 without a valid one.
pub async fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Principal, ApiError> {
    let Some(secret) = bearer(headers) else {
        return Err(ApiError::Unauthorized(
            "this API needs Authorization: Bearer <token>".into(),
        ));
    };
    if secret.len() > 512 {
        return Err(ApiError::Unauthorized("unknown or revoked token".into()));
    }
    orchestration_core::store::tokens::token_authenticate(&state.pool, &auth::token_hash(secret))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.auth == AuthMode::Disabled {
        request.extensions_mut().insert(Caller::Anonymous);
        return next.run(request).await;
    }
    // Unmatched paths fall through to the router's 404/405.
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
    else {
        return next.run(request).await;
    };
    let Some(needed) = auth::required_role(request.method().as_str(), &route) else {
        return next.run(request).await;
    };
    let principal = match authenticate(&state, request.headers()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !principal.may(needed) {
        return ApiError::Core(orchestration_core::Error::Forbidden(format!(
            "this token's role is {}; {} {} needs {}",
            principal.role,
            request.method(),
            route,
            needed
        )))
        .into_response();
    }
    request.extensions_mut().insert(Caller::Token(principal));
    next.run(request).await
}
