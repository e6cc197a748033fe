use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use orchestration_core::domain::{Approval, ApprovalStatus};
use orchestration_core::engine::{self, Decision};
use orchestration_core::store;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, ProjectScope, actor, parse_id};
use crate::routes::runs::optional_body;

#[derive(Deserialize)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Value>> {
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status must be one of PENDING, APPROVED, REJECTED, EXPIRED, CANCELLED; got {s:?}"
            ))
        })?),
    };
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let items = store::approvals::approval_list(&state.pool, project, status, limit).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    let id = parse_id(&id, "approval")?;
    Ok(Json(
        store::approvals::approval_get(&state.pool, project, id).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

async fn decide(
    state: AppState,
    project: i64,
    id: String,
    headers: HeaderMap,
    body: Bytes,
    decision: Decision,
) -> ApiResult<Json<Approval>> {
    let id = parse_id(&id, "approval")?;
    let body: DecisionBody = optional_body(&body)?;
    let actor = actor(&headers)?;
    for (field, value) in [("by", &body.by), ("comment", &body.comment)] {
        if value.as_ref().is_some_and(|v| v.len() > 2000) {
            return Err(ApiError::Unprocessable(format!(
                "{field} must be at most 2000 characters"
            )));
        }
    }
    let approval = engine::approval_decide(
        &state.pool,
        project,
        id,
        decision,
        body.by.as_deref(),
        actor.as_deref(),
        body.comment.as_deref(),
    )
    .await?;
    Ok(Json(approval))
}

pub async fn approve(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Approval>> {
    decide(state, project, id, headers, body, Decision::Approve).await
}

pub async fn reject(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Approval>> {
    decide(state, project, id, headers, body, Decision::Reject).await
}
