use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::domain::{Approval, ApprovalStatus};
use crate::error::{Error, Result};

const COLUMNS: &str = "id, run_id, node_id, status, agent_name, action, input, requested_at, expires_at, decided_by, decided_at, comment";

fn from_row(r: &PgRow) -> Result<Approval> {
    let status: String = r.get("status");
    Ok(Approval {
        id: r.get("id"),
        run_id: r.get("run_id"),
        node_id: r.get("node_id"),
        status: super::decode(ApprovalStatus::parse(&status), "approval status", &status)?,
        agent_name: r.get("agent_name"),
        action: r.get("action"),
        input: r.get::<Option<Json<Value>>, _>("input").map(|j| j.0),
        requested_at: r.get("requested_at"),
        expires_at: r.get("expires_at"),
        decided_by: r.get("decided_by"),
        decided_at: r.get("decided_at"),
        comment: r.get("comment"),
    })
}

pub struct NewApproval<'a> {
    pub project_id: i64,
    pub run_id: Uuid,
    pub node_id: &'a str,
    pub agent_name: &'a str,
    pub action: &'a str,
    pub input: Option<&'a Value>,
    pub timeout_seconds: u32,
}

pub async fn approval_insert(db: impl PgExecutor<'_>, a: &NewApproval<'_>) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO approvals (id, project_id, run_id, node_id, status, agent_name, action, input, expires_at)
         VALUES ($1, $2, $3, $4, 'PENDING', $5, $6, $7, now() + make_interval(secs => $8))",
    )
    .bind(id)
    .bind(a.project_id)
    .bind(a.run_id)
    .bind(a.node_id)
    .bind(a.agent_name)
    .bind(a.action)
    .bind(a.input.map(Json))
    .bind(a.timeout_seconds as f64)
    .execute(db)
    .await?;
    Ok(id)
}

pub async fn approval_list_for_run(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Vec<Approval>> {
    let sql =
        format!("SELECT {COLUMNS} FROM approvals WHERE run_id = $1 ORDER BY requested_at, node_id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn approval_list(
    db: impl PgExecutor<'_>,
    project_id: i64,
    status: Option<ApprovalStatus>,
    limit: i64,
) -> Result<Vec<Approval>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM approvals WHERE project_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY requested_at DESC, id DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(status.map(|s| s.as_str()))
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn approval_get(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<Approval> {
    let sql = format!("SELECT {COLUMNS} FROM approvals WHERE project_id = $1 AND id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    match row {
        Some(r) => from_row(&r),
        None => Err(Error::NotFound("approval")),
    }
}

/// The run an approval belongs to and who triggered it, for deciding.
pub async fn approval_run(
    db: impl PgExecutor<'_>,
    project_id: i64,
    id: Uuid,
) -> Result<(Uuid, Option<String>)> {
    let row = sqlx::query(
        "SELECT a.run_id, r.triggered_by FROM approvals a JOIN workflow_runs r ON r.id = a.run_id
         WHERE a.project_id = $1 AND a.id = $2",
    )
    .bind(project_id)
    .bind(id)
    .fetch_optional(db)
    .await?;
    match row {
        Some(r) => Ok((r.get("run_id"), r.get("triggered_by"))),
        None => Err(Error::NotFound("approval")),
    }
}

/// PENDING → `status` with who, when and why; returns the decided approval, or `None` when it
/// was no longer pending.
pub async fn approval_decide(
    conn: &mut PgConnection,
    id: Uuid,
    status: ApprovalStatus,
    by: Option<&str>,
    comment: Option<&str>,
) -> Result<Option<Approval>> {
    let sql = format!(
        "UPDATE approvals SET status = $2, decided_by = $3, comment = $4, decided_at = now()
         WHERE id = $1 AND status = 'PENDING' RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(status.as_str())
        .bind(by)
        .bind(comment)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Pending approvals past their deadline: (approval id, run id, expiry).
pub async fn approval_expired(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, DateTime<Utc>)>> {
    let rows = sqlx::query(
        "SELECT id, run_id, expires_at FROM approvals WHERE status = 'PENDING' AND expires_at < now()
         ORDER BY expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get("id"), r.get("run_id"), r.get("expires_at")))
        .collect())
}
