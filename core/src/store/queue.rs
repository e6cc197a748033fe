//! The queue's SQL. There is no job table: a READY node whose `ready_at` has come is a job, so
//! a job exists exactly when the state change that made its node READY commits, and cannot be
//! lost, duplicated or outlive its node.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use super::nodes::NodeToRun;
use crate::error::Result;

/// A node a worker just took: its attempt is RUNNING under the worker's lease and its attempt
/// row exists (input not yet recorded), with what running it needs.
pub struct ClaimedNode {
    pub run_id: Uuid,
    pub node_id: String,
    pub attempt: i32,
    pub attempt_id: Uuid,
    pub attempt_base: i32,
    pub ready_at: DateTime<Utc>,
    pub run: NodeToRun,
}

/// Takes up to `limit` due READY nodes, oldest first, in one statement: each becomes RUNNING
/// for its next attempt under `worker`'s lease and gets its attempt row, and the row comes
/// back with the run's facts and the outputs its templates read. Rows other workers are
/// taking are skipped, not waited for.
///
/// A READY node only exists in a run that is still going (cancelling a run cancels its READY
/// nodes under the same lock, a run finishes only when none is open, and only a finished run
/// can be retried with a new context), so the context read here is the one the attempt runs
/// with.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    worker: &str,
    limit: usize,
    lease_ms: i64,
) -> Result<Vec<ClaimedNode>> {
    let ids: Vec<Uuid> = (0..limit).map(|_| Uuid::now_v7()).collect();
    let rows = sqlx::query(spelled!(
        "WITH picked AS (
             SELECT run_id, node_id FROM node_states
             WHERE status IN {node.Claim.from} AND ready_at <= now()
             ORDER BY ready_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED),
         claimed AS (
             UPDATE node_states n
             SET status = {node.Claim.to}, attempts = n.attempts + 1, started_at = coalesce(n.started_at, now()),
                 locked_by = $1, lease_expires_at = now() + make_interval(secs => $3 / 1000.0)
             FROM picked p
             WHERE n.run_id = p.run_id AND n.node_id = p.node_id
             RETURNING n.run_id, n.node_id, n.attempts, n.attempt_base, n.ready_at),
         planned AS (
             SELECT c.*, ($4::uuid[])[(row_number() OVER ())::int] AS attempt_id,
                    r.generation, r.project_id, r.traceparent, r.workflow_name, r.workflow_id, r.context,
                    r.definition->'nodes'->c.node_id AS node
             FROM claimed c JOIN workflow_runs r ON r.id = c.run_id),
         attempt AS (
             INSERT INTO agent_runs (id, run_id, node_id, agent_id, action, attempt, status, worker, started_at)
             SELECT attempt_id, run_id, node_id, (node->'agent'->>'id')::uuid, node->>'action', attempts,
                    {attempt.RUNNING}, $1, clock_timestamp()
             FROM planned)
         SELECT p.*,
                (SELECT jsonb_object_agg(o.node_id, o.output) FROM node_states o
                 WHERE o.run_id = p.run_id AND o.status = {node.COMPLETED}
                   AND o.node_id IN (SELECT jsonb_array_elements_text(p.node->'reads'))
                ) AS outputs
         FROM planned p"
    ))
    .bind(worker)
    .bind(limit as i64)
    .bind(lease_ms as f64)
    .bind(&ids)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ClaimedNode {
                run_id: r.try_get("run_id")?,
                node_id: r.try_get("node_id")?,
                attempt: r.try_get("attempts")?,
                attempt_id: r.try_get("attempt_id")?,
                attempt_base: r.try_get("attempt_base")?,
                ready_at: r
                    .try_get::<Option<DateTime<Utc>>, _>("ready_at")?
                    .unwrap_or_else(Utc::now),
                run: <NodeToRun as sqlx::FromRow<_>>::from_row(r)?,
            })
        })
        .collect()
}

/// Records the rendered inputs of attempts claimed by [`queue_claim_due`], in the claim's
/// transaction. An attempt closed meanwhile (a cancel) keeps no input.
pub async fn attempt_inputs(conn: &mut PgConnection, inputs: &[(Uuid, &Value)]) -> Result<()> {
    // A few inputs (the common case under load) get a statement each: PostgreSQL plans the
    // array form afresh at every call (its generic plan looks dearer), which cost more than
    // running it (108 us of planning and 57 us of execution for one input; 150-460 us of
    // execution for a claim of two or three under load, against about 10 us a row here).
    if inputs.len() <= FEW_INPUTS {
        for (id, input) in inputs {
            sqlx::query(spelled!(
                "UPDATE agent_runs SET input = $2 WHERE id = $1 AND status = {attempt.RUNNING}"
            ))
            .bind(id)
            .bind(Json(*input))
            .execute(&mut *conn)
            .await?;
        }
        return Ok(());
    }
    let ids: Vec<Uuid> = inputs.iter().map(|(id, _)| *id).collect();
    let values: Vec<Json<&Value>> = inputs.iter().map(|(_, v)| Json(*v)).collect();
    // `id = ANY` so the rows are found through the primary key whatever the batch size (a
    // join with unnest() was planned as a scan of the whole table).
    sqlx::query(spelled!(
        "UPDATE agent_runs a SET input = ($2::jsonb[])[array_position($1::uuid[], a.id)]
         WHERE a.id = ANY($1) AND a.status = {attempt.RUNNING}"
    ))
    .bind(&ids)
    .bind(&values)
    .execute(conn)
    .await?;
    Ok(())
}

/// Up to this many claimed inputs are written a statement each.
const FEW_INPUTS: usize = 4;

/// Wakes idle workers when the caller's transaction commits (PostgreSQL delivers a
/// notification only then, and once per transaction however often it is sent).
pub async fn notify(db: impl PgExecutor<'_>) -> Result<()> {
    sqlx::query(concat!("SELECT pg_notify('", ready_channel!(), "', '')"))
        .execute(db)
        .await?;
    Ok(())
}

/// Jobs by state: `pending` (due, waiting for a worker), `scheduled` (a retry waiting out its
/// backoff), `running` (held by a worker).
pub async fn depth(db: impl PgExecutor<'_>) -> Result<Vec<(&'static str, i64)>> {
    let row: (i64, i64, i64) = sqlx::query_as(spelled!(
        "SELECT count(*) FILTER (WHERE status = {node.READY} AND ready_at <= now()),
                count(*) FILTER (WHERE status = {node.READY} AND ready_at > now()),
                count(*) FILTER (WHERE status = {node.RUNNING})
         FROM node_states WHERE status IN ({node.READY}, {node.RUNNING})"
    ))
    .fetch_one(db)
    .await?;
    Ok(vec![
        ("pending", row.0),
        ("scheduled", row.1),
        ("running", row.2),
    ])
}
