//! What attempts cost, from `agent_runs`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CostLine {
    pub workflow: String,
    pub agent: String,
    pub attempts: i64,
    pub execution_seconds: f64,
    pub cost: f64,
}

/// Execution time and cost of the attempts that finished in `[from, to)`, by workflow and
/// agent, for a project (and optionally one workflow).
pub async fn by_agent(
    db: impl PgExecutor<'_>,
    project_id: i64,
    workflow_id: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<CostLine>> {
    Ok(sqlx::query_as::<_, CostLine>(
        "SELECT r.workflow_name AS workflow, coalesce(a.name, ar.agent_id::text) AS agent, count(*) AS attempts,
                coalesce(sum(ar.duration_ms), 0)::float8 / 1000.0 AS execution_seconds,
                coalesce(sum(ar.cost), 0)::float8 AS cost
         FROM agent_runs ar
         JOIN workflow_runs r ON r.id = ar.run_id
         LEFT JOIN agents a ON a.id = ar.agent_id
         WHERE r.project_id = $1 AND ($2::uuid IS NULL OR r.workflow_id = $2)
           AND ar.finished_at >= $3 AND ar.finished_at < $4
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(project_id)
    .bind(workflow_id)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?)
}
