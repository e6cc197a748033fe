use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Duration, Utc};
use orchestration_core::store::{cost, workflows};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, ProjectScope, parse_id};

#[derive(Deserialize)]
pub struct Window {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

/// The window a cost query covers: `from`/`to` (RFC 3339), default the last 30 days.
fn window(w: &Window) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = w.to.unwrap_or_else(Utc::now);
    let from = w.from.unwrap_or(to - Duration::days(30));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    Ok((from, to))
}

async fn report(
    state: &AppState,
    project: i64,
    workflow: Option<Uuid>,
    w: &Window,
) -> ApiResult<Json<Value>> {
    let (from, to) = window(w)?;
    let lines = cost::cost_by_agent(&state.pool, project, workflow, from, to).await?;
    let seconds: f64 = lines.iter().map(|l| l.execution_seconds).sum();
    let total: f64 = lines.iter().map(|l| l.cost).sum();
    Ok(Json(json!({
        "projectId": project.to_string(),
        "workflowId": workflow,
        "from": from,
        "to": to,
        "executionSeconds": seconds,
        "executionMinutes": seconds / 60.0,
        "cost": total,
        "items": lines,
    })))
}

/// `GET /api/workflows/:id/cost`
pub async fn workflow(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "workflow")?;
    workflows::workflow_get(&state.pool, project, id).await?;
    report(&state, project, Some(id), &w).await
}

/// `GET /api/cost?projectId=N`
pub async fn project(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<Value>> {
    report(&state, project, None, &w).await
}
