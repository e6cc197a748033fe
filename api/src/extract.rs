//! Extractors that turn every malformed request into an [`ApiError`] with a JSON body.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// `axum::Json` whose rejections are our JSON errors, and which refuses strings with NUL
/// characters (PostgreSQL can store them neither in text nor in jsonb).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let ApiBytes(bytes) =
            ApiBytes::from_request(Request::from_parts(parts.clone(), body), state).await?;
        reject_deep(&bytes)?;
        // axum's own extractor on the same bytes: content type, syntax and shape errors keep
        // its wording (with the path of the offending field).
        let axum::Json(value) = axum::Json::<T>::from_request(
            Request::from_parts(parts, Body::from(bytes.clone())),
            state,
        )
        .await?;
        reject_nul(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// `axum::extract::Query` whose rejections are our JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The raw body, for handlers whose body is optional; a body over the limit is our 413.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiBytes(Bytes::from_request(req, state).await?))
    }
}

/// Parses an optional JSON body: empty (or `null`) means the default.
pub(crate) fn optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    let text = body.trim_ascii();
    if text.is_empty() || text == b"null" {
        return Ok(T::default());
    }
    let value = json_body(body)?;
    reject_nul(body)?;
    Ok(value)
}

/// Parses a JSON body read as bytes, with the same errors as [`ApiJson`].
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    reject_deep(body)?;
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::Unprocessable(format!("invalid request body: {e}"))
        } else {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
    })
}

/// Deepest nesting of arrays and objects a body may have.
pub const MAX_JSON_DEPTH: usize = 64;

/// 422 when a JSON body nests deeper than [`MAX_JSON_DEPTH`]: no workflow, context or event
/// needs more, and deep documents cost every later reader (templates, jsonb) stack and time.
pub(crate) fn reject_deep(body: &[u8]) -> Result<(), ApiError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ApiError::Unprocessable(format!(
                        "JSON nested deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// 422 when a JSON body has a string (or key) with a NUL character.
pub(crate) fn reject_nul(body: &[u8]) -> Result<(), ApiError> {
    // JSON can only carry NUL escaped; most bodies have no such escape at all.
    if !body.windows(6).any(|w| w == b"\\u0000") {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(&value) {
        return Err(ApiError::Unprocessable(
            "strings must not contain the NUL character (\\u0000)".into(),
        ));
    }
    Ok(())
}

/// The `projectId` query parameter of every project-scoped operation.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ProjectParam {
    /// The project the request acts in; default 1, the project every database starts with.
    #[serde(default)]
    #[param(example = "1", pattern = "^(-?[0-9]{1,18})?$")]
    project_id: Option<String>,
}

/// The project a request acts in (`?projectId=N`; default the token's project, else 1); 404
/// when it does not exist.
pub struct ProjectScope(pub i64);

/// Projects this process has seen to exist. Projects are never deleted, so a project found
/// once needs no lookup on later requests (every project-scoped request made one).
#[derive(Clone, Default)]
pub struct KnownProjects(Arc<RwLock<HashSet<i64>>>);

impl KnownProjects {
    /// Ok when project `id` exists; `NotFound("project")` when it does not.
    pub async fn require(&self, pool: &sqlx::PgPool, id: i64) -> Result<(), ApiError> {
        if self.0.read().expect("known projects lock").contains(&id) {
            return Ok(());
        }
        orchestration_core::store::projects::require(pool, id).await?;
        self.0.write().expect("known projects lock").insert(id);
        Ok(())
    }
}

impl FromRequestParts<AppState> for ProjectScope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Query(param) = Query::<ProjectParam>::from_request_parts(parts, state).await?;
        let asked = match param.project_id.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("projectId must be a project id, got {raw:?}"))
            })?),
        };
        // A project token works in its own project; naming another one is a 403.
        let caller = crate::auth::Caller::from_request_parts(parts, state).await?;
        let id = caller.project(asked)?;
        state.known_projects.require(&state.pool, id).await?;
        Ok(ProjectScope(id))
    }
}

/// Parses an opaque id from the path; anything that is not one of ours is simply not found.
pub fn parse_id(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::Core(orchestration_core::Error::NotFound(what)))
}
