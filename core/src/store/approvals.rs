//! `approvals`: requests for a person's decision before a node runs.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::lifecycle::{ApprovalEvent, ApprovalStatus};

/// An approval request as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Approval {
    pub id: Uuid,
    pub run_id: Uuid,
    pub node_id: String,
    pub status: ApprovalStatus,
    pub agent_name: String,
    pub action: String,
    #[sqlx(json(nullable))]
    pub input: Option<Value>,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
}

/// The columns [`Approval`] reads.
macro_rules! columns {
    () => {
        "id, run_id, node_id, status, agent_name, action, input, requested_at, expires_at, decided_by, decided_at, comment"
    };
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

/// Opens a PENDING request; returns it.
pub async fn insert(db: impl PgExecutor<'_>, a: &NewApproval<'_>) -> Result<Approval> {
    Ok(sqlx::query_as::<_, Approval>(spelled!(concat!(
        "INSERT INTO approvals (id, project_id, run_id, node_id, status, agent_name, action, input, expires_at)
         VALUES ($1, $2, $3, $4, {approval.PENDING}, $5, $6, $7, now() + make_interval(secs => $8))
         RETURNING ",
        columns!()
    )))
    .bind(Uuid::now_v7())
    .bind(a.project_id)
    .bind(a.run_id)
    .bind(a.node_id)
    .bind(a.agent_name)
    .bind(a.action)
    .bind(a.input.map(Json))
    .bind(a.timeout_seconds as f64)
    .fetch_one(db)
    .await?)
}

pub async fn list_for_run(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Vec<Approval>> {
    Ok(sqlx::query_as::<_, Approval>(spelled!(concat!(
        "SELECT ",
        columns!(),
        " FROM approvals WHERE run_id = $1 ORDER BY requested_at, node_id"
    )))
    .bind(run_id)
    .fetch_all(db)
    .await?)
}

/// The requests of a project, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    project_id: i64,
    status: Option<ApprovalStatus>,
    limit: i64,
) -> Result<Vec<Approval>> {
    Ok(sqlx::query_as::<_, Approval>(spelled!(concat!(
        "SELECT ",
        columns!(),
        " FROM approvals WHERE project_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY requested_at DESC, id DESC LIMIT $3"
    )))
    .bind(project_id)
    .bind(status)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<Approval> {
    sqlx::query_as::<_, Approval>(spelled!(concat!(
        "SELECT ",
        columns!(),
        " FROM approvals WHERE project_id = $1 AND id = $2"
    )))
    .bind(project_id)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("approval"))
}

/// The run an approval belongs to and who triggered it, for deciding.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunOf {
    pub run_id: Uuid,
    pub triggered_by: Option<String>,
}

pub async fn run_of(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<RunOf> {
    sqlx::query_as::<_, RunOf>(
        "SELECT a.run_id, r.triggered_by FROM approvals a JOIN workflow_runs r ON r.id = a.run_id
         WHERE a.project_id = $1 AND a.id = $2",
    )
    .bind(project_id)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("approval"))
}

/// PENDING → APPROVED, REJECTED or EXPIRED by `event`, with who, when and why; returns the
/// decided request, or `None` when it was no longer pending.
pub async fn decide(
    conn: &mut PgConnection,
    id: Uuid,
    event: ApprovalEvent,
    by: Option<&str>,
    comment: Option<&str>,
) -> Result<Option<Approval>> {
    let sql = match event {
        ApprovalEvent::Approve => spelled!(concat!(
            "UPDATE approvals SET status = {approval.Approve.to}, decided_by = $2, comment = $3, decided_at = now()
             WHERE id = $1 AND status IN {approval.Approve.from} RETURNING ",
            columns!()
        )),
        ApprovalEvent::Reject => spelled!(concat!(
            "UPDATE approvals SET status = {approval.Reject.to}, decided_by = $2, comment = $3, decided_at = now()
             WHERE id = $1 AND status IN {approval.Reject.from} RETURNING ",
            columns!()
        )),
        ApprovalEvent::Expire => spelled!(concat!(
            "UPDATE approvals SET status = {approval.Expire.to}, decided_by = $2, comment = $3, decided_at = now()
             WHERE id = $1 AND status IN {approval.Expire.from} RETURNING ",
            columns!()
        )),
        ApprovalEvent::Cancel => spelled!(concat!(
            "UPDATE approvals SET status = {approval.Cancel.to}, decided_by = $2, comment = $3, decided_at = now()
             WHERE id = $1 AND status IN {approval.Cancel.from} RETURNING ",
            columns!()
        )),
    };
    Ok(sqlx::query_as::<_, Approval>(sql)
        .bind(id)
        .bind(by)
        .bind(comment)
        .fetch_optional(conn)
        .await?)
}

/// Pending requests of a cancelled run are cancelled with it; returns them.
pub async fn cancel_pending(
    conn: &mut PgConnection,
    run_id: Uuid,
    reason: &str,
) -> Result<Vec<Approval>> {
    Ok(sqlx::query_as::<_, Approval>(spelled!(concat!(
        "UPDATE approvals SET status = {approval.Cancel.to}, decided_at = now(), comment = $2
         WHERE run_id = $1 AND status IN {approval.Cancel.from} RETURNING ",
        columns!()
    )))
    .bind(run_id)
    .bind(reason)
    .fetch_all(conn)
    .await?)
}

/// A pending request past its deadline.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Expired {
    pub id: Uuid,
    pub run_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

pub async fn expired(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Expired>> {
    Ok(sqlx::query_as::<_, Expired>(spelled!(
        "SELECT id, run_id, expires_at FROM approvals
         WHERE status = {approval.PENDING} AND expires_at < now()
         ORDER BY expires_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?)
}
