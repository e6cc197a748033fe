//! `agent_runs`: one row per attempt of a node, opened by its claim (see `nodes::claim` and
//! `queue::claim_due`) and closed by how it ended.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::Result;
use crate::lifecycle::AttemptStatus;

use super::nodes::{AttemptEnd, bind_attempt_end};

/// An attempt as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub id: Uuid,
    pub node_id: String,
    pub agent_id: Uuid,
    pub action: String,
    pub attempt: i32,
    pub status: AttemptStatus,
    #[sqlx(json(nullable))]
    pub input: Option<Value>,
    #[sqlx(json(nullable))]
    pub output: Option<Value>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub worker: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

pub async fn list_for_run(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Vec<Attempt>> {
    Ok(sqlx::query_as::<_, Attempt>(
        "SELECT id, node_id, agent_id, action, attempt, status, input, output, error, exit_code, worker,
                started_at, finished_at, duration_ms
         FROM agent_runs WHERE run_id = $1 ORDER BY started_at, node_id, attempt",
    )
    .bind(run_id)
    .fetch_all(db)
    .await?)
}

/// Closes a RUNNING attempt as FAILED. Returns false when the attempt was already closed by
/// someone else (a rescuer, a cancel), in which case the caller's result is stale. (A success
/// is closed by `nodes::complete_attempt`, together with its node.)
pub async fn fail_if_running(db: impl PgExecutor<'_>, r: &AttemptEnd<'_>) -> Result<bool> {
    let done = bind_attempt_end(sqlx::query(spelled!(attempt_finish!("Fail"))), r)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Closes the open attempts of a cancelled run. Runs after its nodes are cancelled: their
/// update waits for a claim in flight to commit, so this statement sees the attempt row that
/// claim wrote and closes it too.
pub async fn abandon_open(conn: &mut PgConnection, run_id: Uuid, reason: &str) -> Result<u64> {
    let done = sqlx::query(spelled!(
        "UPDATE agent_runs SET status = {attempt.Abandon.to}, error = $2, finished_at = now(),
                duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint
         WHERE run_id = $1 AND status IN {attempt.Abandon.from}"
    ))
    .bind(run_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
