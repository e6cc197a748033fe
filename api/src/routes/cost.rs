use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Duration, Utc};
use orchestration_core::store::{cost, workflows};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, ProjectParam, ProjectScope, parse_id};
use crate::routes::alerts::storable;
use crate::wire::CostReport;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Window {
    /// Start of the window (RFC 3339, inclusive); default 30 days before `to`.
    from: Option<DateTime<Utc>>,
    /// End of the window (RFC 3339, exclusive); default now.
    to: Option<DateTime<Utc>>,
}

/// The window a cost query covers: `from`/`to` (RFC 3339), default the last 30 days.
fn window(w: &Window) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    for (name, t) in [("from", w.from), ("to", w.to)] {
        if t.is_some_and(|t| !storable(t)) {
            return Err(ApiError::BadRequest(format!(
                "{name} must be between years 1 and 9999"
            )));
        }
    }
    let to = w.to.unwrap_or_else(Utc::now);
    let from = match w.from {
        Some(from) => from,
        None => to
            .checked_sub_signed(Duration::days(30))
            .ok_or_else(|| ApiError::BadRequest("to is too early".into()))?,
    };
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
) -> ApiResult<Json<CostReport>> {
    let (from, to) = window(w)?;
    let lines = cost::by_agent(&state.pool, project, workflow, from, to).await?;
    let seconds: f64 = lines.iter().map(|l| l.execution_seconds).sum();
    let total: f64 = lines.iter().map(|l| l.cost).sum();
    Ok(Json(CostReport {
        project_id: project.to_string(),
        workflow_id: workflow,
        from,
        to,
        execution_seconds: seconds,
        execution_minutes: seconds / 60.0,
        cost: total,
        items: lines.into_iter().map(Into::into).collect(),
    }))
}

/// Execution time and cost of one workflow's attempts that finished in the window, by agent.
#[utoipa::path(
    get,
    path = "/api/workflows/{id}/cost",
    operation_id = "getWorkflowCost",
    tag = "cost",
    params(ProjectParam, ("id" = String, Path, description = "Workflow id"), Window),
    responses(
        (status = 200, description = "The workflow's cost", body = CostReport),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn workflow(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<CostReport>> {
    let id = parse_id(&id, "workflow")?;
    workflows::get(&state.pool, project, id).await?;
    report(&state, project, Some(id), &w).await
}

/// Execution time and cost of a project's attempts that finished in the window, by workflow
/// and agent.
#[utoipa::path(
    get,
    path = "/api/cost",
    operation_id = "getProjectCost",
    tag = "cost",
    params(ProjectParam, Window),
    responses(
        (status = 200, description = "The project's cost", body = CostReport),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn project(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<CostReport>> {
    report(&state, project, None, &w).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DateTime<Utc> {
        serde_json::from_value(serde_json::Value::String(s.into())).unwrap()
    }

    #[test]
    fn windows_at_the_ends_of_time_are_bad_requests_not_panics() {
        // Query strings reach chrono's parser, which takes years far outside PostgreSQL's.
        let earliest = parse("-262143-01-01T00:00:00Z");
        assert!(earliest.checked_sub_signed(Duration::days(30)).is_none());
        for w in [
            Window {
                from: None,
                to: Some(earliest),
            },
            Window {
                from: Some(parse("-5000-01-01T00:00:00Z")),
                to: None,
            },
            Window {
                from: None,
                to: Some(parse("+200000-01-01T00:00:00Z")),
            },
        ] {
            assert!(matches!(window(&w), Err(ApiError::BadRequest(_))));
        }
        let ok = Window {
            from: Some(parse("2026-01-01T00:00:00Z")),
            to: None,
        };
        assert!(window(&ok).is_ok());
    }
}
