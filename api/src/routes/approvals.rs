use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use orchestration_core::engine::approval::Decision;
use orchestration_core::lifecycle::ApprovalStatus;
use orchestration_core::store;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiBytes, ApiQuery, ProjectParam, ProjectScope, optional_body, parse_id};
use crate::wire::{Approval, ApprovalStatusDoc, ItemList};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only approvals in this status.
    #[param(value_type = Option<ApprovalStatusDoc>)]
    status: Option<String>,
    /// At most this many approvals, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The approval requests of a project, newest first.
#[utoipa::path(
    get,
    path = "/api/approvals",
    operation_id = "listApprovals",
    tag = "approvals",
    params(ProjectParam, ListParams),
    responses(
        (status = 200, description = "Approval requests", body = ItemList<Approval>),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<ItemList<Approval>>> {
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
    let items = store::approvals::list(&state.pool, project, status, limit).await?;
    Ok(Json(items.into()))
}

/// One approval request.
#[utoipa::path(
    get,
    path = "/api/approvals/{id}",
    operation_id = "getApproval",
    tag = "approvals",
    params(ProjectParam, ("id" = String, Path, description = "Approval id")),
    responses(
        (status = 200, description = "The approval request", body = Approval),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    let id = parse_id(&id, "approval")?;
    Ok(Json(
        store::approvals::get(&state.pool, project, id)
            .await?
            .into(),
    ))
}

/// The optional body of a decision.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Who decides, when the `X-Actor` header does not say.
    #[serde(default)]
    #[schema(max_length = 2000)]
    by: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2000)]
    comment: Option<String>,
}

async fn decide(
    state: AppState,
    project: i64,
    caller: crate::auth::Caller,
    id: String,
    headers: HeaderMap,
    body: axum::body::Bytes,
    decision: Decision,
) -> ApiResult<Json<Approval>> {
    let id = parse_id(&id, "approval")?;
    let body: DecisionBody = optional_body(&body)?;
    let actor = caller.identity(&headers)?;
    // With a token, the token says who decided; `by` names someone only without auth.
    let by = match caller {
        crate::auth::Caller::Token(_) => None,
        crate::auth::Caller::Anonymous => body.by.as_deref(),
    };
    for (field, value) in [("by", &body.by), ("comment", &body.comment)] {
        if value.as_ref().is_some_and(|v| v.len() > 2000) {
            return Err(ApiError::Unprocessable(format!(
                "{field} must be at most 2000 characters"
            )));
        }
    }
    let approval = state
        .engine
        .approval_decide(
            project,
            id,
            decision,
            by,
            actor.as_deref(),
            body.comment.as_deref(),
        )
        .await?;
    Ok(Json(approval.into()))
}

/// Approves a pending request: the node starts. Whoever triggered the run may not approve it.
#[utoipa::path(
    post,
    path = "/api/approvals/{id}/approve",
    operation_id = "approve",
    tag = "approvals",
    params(
        ProjectParam,
        ("id" = String, Path, description = "Approval id"),
        ("X-Actor" = Option<String>, Header, description = "Who decides (1 to 200 visible ASCII characters)", pattern = "^[!-~]([ -~]{0,198}[!-~])?$"),
    ),
    request_body(content = Option<DecisionBody>, description = "Optional"),
    responses(
        (status = 200, description = "The decided request", body = Approval),
        (status = 400, response = crate::error::BadRequest),
        (status = 403, response = crate::error::Forbidden),
        (status = 404, response = crate::error::NotFound),
        (status = 409, response = crate::error::Conflict),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn approve(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<Approval>> {
    decide(state, project, caller, id, headers, body, Decision::Approve).await
}

/// Rejects a pending request: the node fails.
#[utoipa::path(
    post,
    path = "/api/approvals/{id}/reject",
    operation_id = "reject",
    tag = "approvals",
    params(
        ProjectParam,
        ("id" = String, Path, description = "Approval id"),
        ("X-Actor" = Option<String>, Header, description = "Who decides (1 to 200 visible ASCII characters)", pattern = "^[!-~]([ -~]{0,198}[!-~])?$"),
    ),
    request_body(content = Option<DecisionBody>, description = "Optional"),
    responses(
        (status = 200, description = "The decided request", body = Approval),
        (status = 400, response = crate::error::BadRequest),
        (status = 403, response = crate::error::Forbidden),
        (status = 404, response = crate::error::NotFound),
        (status = 409, response = crate::error::Conflict),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn reject(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<Approval>> {
    decide(state, project, caller, id, headers, body, Decision::Reject).await
}
