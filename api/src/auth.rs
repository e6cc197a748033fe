//! Authentication at the edge: one middleware checks `Authorization: Bearer <token>` against
//! what the matched route needs ([`required_role`], the route-to-role table) and leaves the
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
            Caller::Anonymous => actor(headers),
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

/// The `X-Actor` header: who is making the request when auth is disabled, for the two-person
/// rule of approvals.
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

/// What a route needs, from its method and path (paths as the router declares them, so ids
/// don't matter). `None`: open to anyone (health, metrics, the API description, and the
/// AlertManager webhook, which checks its own token).
pub fn required_role(method: &str, path: &str) -> Option<Role> {
    if matches!(
        path,
        "/api/health" | "/metrics" | "/api/openapi.json" | "/api/webhooks/alertmanager"
    ) {
        return None;
    }
    let operator_actions = ["/trigger", "/cancel", "/retry", "/approve", "/reject"];
    match method {
        "GET" | "HEAD" if path.starts_with("/api/tokens") => Some(Role::Admin),
        "GET" | "HEAD" => Some(Role::Viewer),
        "POST" if path == "/api/events" => Some(Role::Operator),
        "POST" if operator_actions.iter().any(|a| path.ends_with(a)) => Some(Role::Operator),
        _ => Some(Role::Admin),
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
    orchestration_core::store::tokens::authenticate(&state.pool, &auth::token_hash(secret))
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
    let Some(needed) = required_role(request.method().as_str(), &route) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_role_their_action_implies() {
        assert_eq!(required_role("GET", "/api/health"), None);
        assert_eq!(required_role("GET", "/metrics"), None);
        assert_eq!(
            required_role("GET", "/api/runs/{run_id}"),
            Some(Role::Viewer)
        );
        assert_eq!(
            required_role("POST", "/api/workflows/{id}/trigger"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role("POST", "/api/approvals/{id}/approve"),
            Some(Role::Operator)
        );
        assert_eq!(required_role("POST", "/api/events"), Some(Role::Operator));
        assert_eq!(required_role("POST", "/api/agents"), Some(Role::Admin));
        assert_eq!(
            required_role("DELETE", "/api/workflows/{id}"),
            Some(Role::Admin)
        );
        assert_eq!(required_role("GET", "/api/tokens"), Some(Role::Admin));
        assert_eq!(required_role("POST", "/api/projects"), Some(Role::Admin));
        assert_eq!(
            required_role("POST", "/api/subscriptions"),
            Some(Role::Admin)
        );
        assert_eq!(
            required_role("GET", "/api/subscriptions/{id}/deliveries"),
            Some(Role::Viewer)
        );
    }
}
