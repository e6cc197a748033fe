//! `node_states`: where each node of each run stands. A READY node whose `ready_at` has come
//! is a job (see `queue`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::domain::PlannedNode;
use crate::error::Result;
use crate::lifecycle::NodeStatus;

use super::runs::Ended;

/// A node of a run as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeState {
    pub node_id: String,
    pub status: NodeStatus,
    pub attempts: i32,
    #[sqlx(json(nullable))]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// When the node's current attempt became READY (its job was due).
    pub ready_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The nodes of a run, in the order they became ready.
pub async fn list_for_run(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Vec<NodeState>> {
    Ok(sqlx::query_as::<_, NodeState>(
        "SELECT node_id, status, attempts, output, error, ready_at, started_at, finished_at
         FROM node_states WHERE run_id = $1 ORDER BY ready_at NULLS LAST, node_id",
    )
    .bind(run_id)
    .fetch_all(db)
    .await?)
}

/// What a worker needs to run a node: the run's facts, the node's plan and the outputs its
/// templates read, as of the run's `generation` (a retry with a new context starts the next).
pub struct NodeToRun {
    pub generation: i32,
    pub project_id: i64,
    pub traceparent: Option<String>,
    pub workflow_name: String,
    pub workflow_id: Uuid,
    pub context: Value,
    pub node: PlannedNode,
    pub outputs: HashMap<String, Value>,
}

/// Reads the columns `generation`, `project_id`, `traceparent`, `workflow_name`,
/// `workflow_id`, `context`, `node` and `outputs`, as [`to_run`] and the queue's claim select
/// them.
impl<'r> sqlx::FromRow<'r, PgRow> for NodeToRun {
    fn from_row(r: &'r PgRow) -> sqlx::Result<Self> {
        let outputs: Option<Json<HashMap<String, Value>>> = r.try_get("outputs")?;
        Ok(NodeToRun {
            generation: r.try_get("generation")?,
            project_id: r.try_get("project_id")?,
            traceparent: r.try_get("traceparent")?,
            workflow_name: r.try_get("workflow_name")?,
            workflow_id: r.try_get("workflow_id")?,
            context: r.try_get::<Json<Value>, _>("context")?.0,
            node: r.try_get::<Json<PlannedNode>, _>("node")?.0,
            outputs: outputs.map(|j| j.0).unwrap_or_default(),
        })
    }
}

/// Reads what running `node_id` needs, without taking anything: the claim that follows checks
/// that the run's generation did not change meanwhile. `None`: no such run or node.
pub async fn to_run(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
) -> Result<Option<NodeToRun>> {
    Ok(sqlx::query_as::<_, NodeToRun>(spelled!(
        "SELECT r.generation, r.project_id, r.traceparent, r.workflow_name, r.workflow_id, r.context,
                r.definition->'nodes'->$2 AS node,
                (SELECT jsonb_object_agg(o.node_id, o.output) FROM node_states o
                 WHERE o.run_id = $1 AND o.status = {node.COMPLETED}
                   AND o.node_id IN (SELECT jsonb_array_elements_text(r.definition->'nodes'->$2->'reads'))
                ) AS outputs
         FROM workflow_runs r WHERE r.id = $1 AND r.definition->'nodes' ? $2"
    ))
    .bind(run_id)
    .bind(node_id)
    .fetch_optional(db)
    .await?)
}

pub struct NewAttempt<'a> {
    pub run_id: Uuid,
    pub node_id: &'a str,
    pub agent_id: Uuid,
    pub action: &'a str,
    pub attempt: i32,
    pub input: Option<&'a Value>,
    pub worker: &'a str,
}

/// How a claim went.
pub enum Claim {
    /// The node is RUNNING under the caller's lease and the attempt row exists.
    Taken {
        ready_at: DateTime<Utc>,
        attempt_base: i32,
    },
    /// The run moved to another generation since the read: read again and retry.
    NewGeneration,
    /// The job is stale (a redelivery, or the run was cancelled or finished): do nothing.
    Stale,
}

/// Claims one READY node for `r.attempt` and opens the attempt with its rendered input, in one
/// statement (this runs once per node): if and only if the node is still waiting for exactly
/// that attempt, its run is still active, and the run is still in `generation`, the one the
/// input was rendered for. Its times are `clock_timestamp()`: this may run inside a recording
/// batch, whose transaction (and `now()`) began earlier.
pub async fn claim(
    db: impl PgExecutor<'_>,
    r: &NewAttempt<'_>,
    generation: i32,
    lease_ms: i64,
) -> Result<Claim> {
    let row = sqlx::query(spelled!(
        "WITH claimed AS (
             UPDATE node_states n
             SET status = {node.Claim.to}, attempts = $6, started_at = coalesce(n.started_at, clock_timestamp()),
                 locked_by = $8, lease_expires_at = clock_timestamp() + make_interval(secs => $10 / 1000.0)
             FROM workflow_runs r
             WHERE n.run_id = $2 AND n.node_id = $3 AND n.status IN {node.Claim.from} AND n.attempts = $6 - 1
               AND r.id = n.run_id AND r.status IN {run.active}
               AND r.generation = $9
             RETURNING n.ready_at, n.attempt_base),
         attempt AS (
             INSERT INTO agent_runs (id, run_id, node_id, agent_id, action, attempt, status, input, worker, started_at)
             SELECT $1, $2, $3, $4, $5, $6, {attempt.RUNNING}, $7, $8, clock_timestamp() FROM claimed
             ON CONFLICT (run_id, node_id, attempt) DO NOTHING)
         -- The generation is looked up only when the claim failed, to tell why.
         SELECT c.ready_at, c.attempt_base,
                CASE WHEN c.attempt_base IS NULL THEN (SELECT generation FROM workflow_runs WHERE id = $2) END
                    AS generation
         FROM (SELECT 1) AS one LEFT JOIN claimed c ON true"
    ))
    .bind(Uuid::now_v7())
    .bind(r.run_id)
    .bind(r.node_id)
    .bind(r.agent_id)
    .bind(r.action)
    .bind(r.attempt)
    .bind(r.input.map(Json))
    .bind(r.worker)
    .bind(generation)
    .bind(lease_ms as f64)
    .fetch_one(db)
    .await?;
    let attempt_base: Option<i32> = row.try_get("attempt_base")?;
    if let Some(attempt_base) = attempt_base {
        let ready_at: Option<DateTime<Utc>> = row.try_get("ready_at")?;
        return Ok(Claim::Taken {
            ready_at: ready_at.unwrap_or_else(Utc::now),
            attempt_base,
        });
    }
    let current: Option<i32> = row.try_get("generation")?;
    Ok(match current {
        Some(g) if g != generation => Claim::NewGeneration,
        _ => Claim::Stale,
    })
}

/// How an attempt of a node ended, for the statements that record it.
pub struct AttemptEnd<'a> {
    pub run_id: Uuid,
    pub node_id: &'a str,
    pub attempt: i32,
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
    pub exit_code: Option<i32>,
    /// The agent's rate, to price the attempt by its duration.
    pub cost_per_minute: Option<f64>,
}

/// Binds an [`AttemptEnd`] as `$1`..`$7`, the parameters `attempt_finish!` reads.
pub(crate) fn bind_attempt_end<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    r: &AttemptEnd<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(r.run_id)
        .bind(r.node_id)
        .bind(r.attempt)
        .bind(r.output.map(Json))
        .bind(r.error)
        .bind(r.exit_code)
        .bind(r.cost_per_minute)
}

/// What completing an attempt changed.
pub struct Completion {
    /// Dependents that became READY by it.
    pub released: Vec<String>,
    /// How the run ended, when this completion ended it.
    pub run_ended: Option<Ended>,
}

/// Closes a RUNNING attempt as COMPLETED, completes its node, counts the completion against
/// the node's dependents (releasing those it was the last dependency of) and ends the run when
/// no node of it can move any more, in one round trip (this runs once per node). `None` means
/// someone else closed the attempt or the node first (a rescuer, a cancel): the caller's
/// result is stale, and nothing was written.
///
/// The caller holds the run lock, or the node is alone in its run (no other node can finish
/// meanwhile), so the open check cannot miss a concurrent change, and the dependents' row
/// locks serialize two parents finishing at once, so exactly one of them sees a dependent's
/// count reach zero. A dependent it releases keeps the run open, so nothing the caller does
/// after this (claiming that dependent, asking for its approval) can reopen a run this ended.
pub async fn complete_attempt(
    db: impl PgExecutor<'_>,
    r: &AttemptEnd<'_>,
    dependents: &[String],
) -> Result<Option<Completion>> {
    // One snapshot for the whole statement: the open check sees the other nodes as they were
    // before it, which is right, as releasing only moves PENDING nodes to READY (both open).
    // The attempt is closed only if its node is still RUNNING for it, so a stale result
    // writes nothing and a batch of recordings can go on past it (the caller's run lock keeps
    // both rows from changing status meanwhile).
    //
    // The run's row is locked first, before any other row, as every transaction that may end
    // the run locks it: so this statement can run on its own for a node that is alone in its
    // run (see `PlannedNode::alone`), and keeps the lock order of the others. (Taken already
    // by the caller's transaction, it costs no more than the lookup.)
    let query = sqlx::query(spelled!(concat!(
        "WITH run AS (
             SELECT 1 FROM workflow_runs WHERE id = $1 FOR NO KEY UPDATE),
         current AS (
             SELECT 1 FROM node_states
             WHERE run_id = $1 AND node_id = $2 AND status IN {node.Complete.from} AND attempts = $3
               AND EXISTS (SELECT 1 FROM run)),
         attempt AS (",
        attempt_finish!("Succeed"),
        " AND EXISTS (SELECT 1 FROM current) RETURNING 1),
         node AS (
             UPDATE node_states SET status = {node.Complete.to}, output = $4, error = NULL,
                    finished_at = clock_timestamp(), locked_by = NULL, lease_expires_at = NULL
             WHERE run_id = $1 AND node_id = $2 AND status IN {node.Complete.from} AND attempts = $3
               AND EXISTS (SELECT 1 FROM attempt)
             RETURNING 1),
         released AS (
             UPDATE node_states
             SET pending_deps = pending_deps - 1,
                 status = CASE WHEN pending_deps = 1 AND status IN {node.Release.from}
                               THEN {node.Release.to} ELSE status END,
                 ready_at = CASE WHEN pending_deps = 1 AND status IN {node.Release.from}
                                 THEN clock_timestamp() ELSE ready_at END
             WHERE run_id = $1 AND node_id = ANY($8) AND pending_deps > 0 AND EXISTS (SELECT 1 FROM node)
             RETURNING node_id, status, pending_deps),
         outcome AS (
             SELECT EXISTS (SELECT 1 FROM node) AS completed,
                    ARRAY(SELECT node_id FROM released WHERE status = {node.Release.to} AND pending_deps = 0) AS released,
                    EXISTS (SELECT 1 FROM node_states
                            WHERE run_id = $1 AND node_id <> $2 AND status IN {node.open}) AS open),
         over AS (SELECT 1 FROM outcome WHERE completed AND NOT open),
         -- Looked up only when the run is over, to tell COMPLETED from FAILED.
         failure AS (SELECT f.error FROM (",
        run_failure!(),
        ") AS f WHERE EXISTS (SELECT 1 FROM over)),
         finished AS (
             UPDATE workflow_runs
             SET status = CASE WHEN EXISTS (SELECT 1 FROM failure) THEN {run.Fail.to} ELSE {run.Complete.to} END,
                 error = (SELECT error FROM failure), finished_at = clock_timestamp()
             WHERE id = $1 AND EXISTS (SELECT 1 FROM over) AND status IN {run.active}
             RETURNING ",
        run_ended_columns!(),
        ")
         SELECT o.completed, o.released, f.*
         FROM outcome o LEFT JOIN finished f ON true"
    )));
    let row = bind_attempt_end(query, r)
        .bind(dependents)
        .fetch_one(db)
        .await?;
    if !row.try_get::<bool, _>("completed")? {
        return Ok(None);
    }
    // The `finished` columns are NULL when this completion did not end the run.
    let run_ended = match row.try_get::<Option<crate::lifecycle::RunStatus>, _>("status")? {
        Some(status) => Some(Ended {
            status,
            error: row.try_get("error")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        }),
        None => None,
    };
    Ok(Some(Completion {
        released: row.try_get("released")?,
        run_ended,
    }))
}

/// RUNNING → READY for a later attempt, due `delay` from now by the database's clock (the one
/// the queue compares with), keeping the last error visible meanwhile.
pub async fn retry_if_running(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
    attempt: i32,
    delay: std::time::Duration,
    error: &str,
) -> Result<bool> {
    let done = sqlx::query(spelled!(
        "UPDATE node_states SET status = {node.Retry.to}, ready_at = clock_timestamp() + make_interval(secs => $4),
                error = $5, locked_by = NULL, lease_expires_at = NULL
         WHERE run_id = $1 AND node_id = $2 AND status IN {node.Retry.from} AND attempts = $3"
    ))
    .bind(run_id)
    .bind(node_id)
    .bind(attempt)
    .bind(delay.as_secs_f64())
    .bind(error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// RUNNING → FAILED for good.
pub async fn fail_if_running(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
    attempt: i32,
    error: &str,
) -> Result<bool> {
    let done = sqlx::query(spelled!(
        "UPDATE node_states SET status = {node.Fail.to}, error = $4, finished_at = clock_timestamp(),
                locked_by = NULL, lease_expires_at = NULL
         WHERE run_id = $1 AND node_id = $2 AND status IN {node.Fail.from} AND attempts = $3"
    ))
    .bind(run_id)
    .bind(node_id)
    .bind(attempt)
    .bind(error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// PENDING/READY → SKIPPED for nodes that can no longer run because of `cause`; returns the
/// nodes skipped.
pub async fn skip_many(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_ids: &[String],
    cause: &str,
) -> Result<Vec<String>> {
    if node_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(spelled!(
        "UPDATE node_states SET status = {node.Skip.to}, error = $3, finished_at = now()
         WHERE run_id = $1 AND node_id = ANY($2) AND status IN {node.Skip.from}
         RETURNING node_id"
    ))
    .bind(run_id)
    .bind(node_ids)
    .bind(cause)
    .fetch_all(db)
    .await?)
}

/// How a run stands: whether a node may still make progress, and the error of the first node
/// failure if any.
pub struct Progress {
    pub open: bool,
    pub failure: Option<String>,
}

pub async fn progress(conn: &mut PgConnection, run_id: Uuid) -> Result<Progress> {
    // Runs after every attempt: one index probe while the run is open (node_states_open_idx),
    // the failure lookup only once it is not.
    let open: bool = sqlx::query_scalar(spelled!(
        "SELECT EXISTS (SELECT 1 FROM node_states WHERE run_id = $1 AND status IN {node.open})"
    ))
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    if open {
        return Ok(Progress {
            open: true,
            failure: None,
        });
    }
    let failure = sqlx::query_scalar(spelled!(run_failure!()))
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(Progress {
        open: false,
        failure,
    })
}

/// The order in which statements lock several node rows (by run, then node id byte by byte):
/// the lease renewal and a batch of recordings both lock a worker's nodes, and only taking
/// them in the same order keeps the two from deadlocking.
pub fn lock_order(run_id: Uuid, node_id: &str) -> (Uuid, &[u8]) {
    (run_id, node_id.as_bytes())
}

/// An attempt a worker holds: run, node, attempt number.
pub type HeldAttempt = (Uuid, String, i32);

/// Extends the leases of `attempts` where this worker still holds them; returns the ones it
/// holds. An attempt missing from the answer was taken away (cancelled or rescued) and must
/// stop. A node the worker holds but no longer runs (its result could not be recorded) is not
/// renewed, so the rescuer takes it back when its lease runs out.
pub async fn lease_renew(
    db: impl PgExecutor<'_>,
    worker: &str,
    lease_ms: i64,
    attempts: &[HeldAttempt],
) -> Result<Vec<HeldAttempt>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    // The rows are locked in (run, node) order, the order in which a batch of recordings
    // locks them (engine::attempt): taken in any other order, a renewal and a batch holding
    // some of the same worker's nodes wait for each other until Postgres breaks the deadlock
    // a second later. The arrays go in that order (node ids compared byte by byte, as the
    // batch compares them), and each row is found and locked by its primary key in array
    // order: a lateral subquery that locks is never flattened into a join. (As a join the
    // planner scanned every open node's index entry, dead ones included, to hash them: 1.6 ms
    // growing to 5.8 ms within 20 s of load.)
    let mut sorted: Vec<&HeldAttempt> = attempts.iter().collect();
    sorted.sort_by(|a, b| lock_order(a.0, &a.1).cmp(&lock_order(b.0, &b.1)));
    let runs: Vec<Uuid> = sorted.iter().map(|a| a.0).collect();
    let nodes: Vec<&str> = sorted.iter().map(|a| a.1.as_str()).collect();
    let numbers: Vec<i32> = sorted.iter().map(|a| a.2).collect();
    Ok(sqlx::query_as::<_, HeldAttempt>(spelled!(
        "WITH held AS (
             SELECT h.run_id, h.node_id
             FROM unnest($3::uuid[], $4::text[], $5::int[]) AS a(run_id, node_id, attempt)
             CROSS JOIN LATERAL (
                 SELECT n.run_id, n.node_id FROM node_states n
                 WHERE n.run_id = a.run_id AND n.node_id = a.node_id AND n.attempts = a.attempt
                   AND n.status = {node.RUNNING} AND n.locked_by = $1
                 FOR NO KEY UPDATE OF n) AS h)
         UPDATE node_states n SET lease_expires_at = now() + make_interval(secs => $2 / 1000.0)
         FROM held WHERE n.run_id = held.run_id AND n.node_id = held.node_id
         RETURNING n.run_id, n.node_id, n.attempts"
    ))
    .bind(worker)
    .bind(lease_ms as f64)
    .bind(&runs)
    .bind(&nodes)
    .bind(&numbers)
    .fetch_all(db)
    .await?)
}

/// A RUNNING node whose holder stopped renewing its lease.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpiredLease {
    pub run_id: Uuid,
    pub node_id: String,
    #[sqlx(rename = "attempts")]
    pub attempt: i32,
    pub attempt_base: i32,
    pub locked_by: Option<String>,
}

pub async fn expired_leases(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<ExpiredLease>> {
    Ok(sqlx::query_as::<_, ExpiredLease>(spelled!(
        "SELECT run_id, node_id, attempts, attempt_base, locked_by FROM node_states
         WHERE status = {node.RUNNING} AND lease_expires_at < now()
         ORDER BY lease_expires_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Re-reads an expired lease under lock; `None` when it was renewed or closed meanwhile.
pub async fn expired_lease_lock(
    conn: &mut PgConnection,
    run_id: Uuid,
    node_id: &str,
    attempt: i32,
) -> Result<Option<ExpiredLease>> {
    Ok(sqlx::query_as::<_, ExpiredLease>(spelled!(
        "SELECT run_id, node_id, attempts, attempt_base, locked_by FROM node_states
         WHERE run_id = $1 AND node_id = $2 AND attempts = $3 AND status = {node.RUNNING}
           AND lease_expires_at < now()
         FOR UPDATE"
    ))
    .bind(run_id)
    .bind(node_id)
    .bind(attempt)
    .fetch_optional(conn)
    .await?)
}

/// Node statuses of a run, locked in node order, for repairs and run control.
pub async fn statuses_lock(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Vec<(String, NodeStatus)>> {
    Ok(sqlx::query_as::<_, (String, NodeStatus)>(
        "SELECT node_id, status FROM node_states WHERE run_id = $1 ORDER BY node_id FOR UPDATE",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await?)
}

/// PENDING → READY for a node whose dependencies all completed (the rescuer's repair; a
/// completion releases its dependents itself).
pub async fn release(db: impl PgExecutor<'_>, run_id: Uuid, node_id: &str) -> Result<bool> {
    let done = sqlx::query(spelled!(
        "UPDATE node_states SET status = {node.Release.to}, pending_deps = 0, ready_at = now()
         WHERE run_id = $1 AND node_id = $2 AND status IN {node.Release.from}"
    ))
    .bind(run_id)
    .bind(node_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every open node of the run becomes CANCELLED; returns them.
pub async fn cancel_open(
    conn: &mut PgConnection,
    run_id: Uuid,
    reason: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(spelled!(
        "UPDATE node_states SET status = {node.Cancel.to}, error = $2, finished_at = now(),
                locked_by = NULL, lease_expires_at = NULL
         WHERE run_id = $1 AND status IN {node.Cancel.from}
         RETURNING node_id"
    ))
    .bind(run_id)
    .bind(reason)
    .fetch_all(conn)
    .await?)
}

/// Resets a node that did not complete for a new generation of its run: READY when its
/// dependencies are all completed (`pending_deps` 0), else PENDING on them. Its attempts so
/// far become the base its retry policy counts from. Whether it moved.
pub async fn reset_for_retry(
    conn: &mut PgConnection,
    run_id: Uuid,
    node_id: &str,
    pending_deps: i32,
) -> Result<bool> {
    let sql = if pending_deps == 0 {
        spelled!(
            "UPDATE node_states
             SET status = {node.ResetReady.to}, pending_deps = 0, ready_at = now(),
                 attempt_base = attempts, output = NULL, error = NULL, finished_at = NULL,
                 locked_by = NULL, lease_expires_at = NULL
             WHERE run_id = $1 AND node_id = $2 AND status IN {node.ResetReady.from}"
        )
    } else {
        spelled!(
            "UPDATE node_states
             SET status = {node.ResetPending.to}, pending_deps = $3, ready_at = NULL,
                 attempt_base = attempts, output = NULL, error = NULL, finished_at = NULL,
                 locked_by = NULL, lease_expires_at = NULL
             WHERE run_id = $1 AND node_id = $2 AND status IN {node.ResetPending.from}"
        )
    };
    let mut query = sqlx::query(sql).bind(run_id).bind(node_id);
    if pending_deps != 0 {
        query = query.bind(pending_deps);
    }
    let done = query.execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// PENDING or READY → WAITING_APPROVAL; whether it moved.
pub async fn await_approval(db: impl PgExecutor<'_>, run_id: Uuid, node_id: &str) -> Result<bool> {
    let done = sqlx::query(spelled!(
        "UPDATE node_states SET status = {node.AwaitApproval.to}, pending_deps = 0
         WHERE run_id = $1 AND node_id = $2 AND status IN {node.AwaitApproval.from}"
    ))
    .bind(run_id)
    .bind(node_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// WAITING_APPROVAL → READY once approved; returns the attempt it will run, if it moved.
pub async fn approve(db: impl PgExecutor<'_>, run_id: Uuid, node_id: &str) -> Result<Option<i32>> {
    Ok(sqlx::query_scalar(spelled!(
        "UPDATE node_states SET status = {node.Approve.to}, ready_at = now()
         WHERE run_id = $1 AND node_id = $2 AND status IN {node.Approve.from}
         RETURNING attempts + 1"
    ))
    .bind(run_id)
    .bind(node_id)
    .fetch_optional(db)
    .await?)
}

/// Why a waiting node fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Reject,
    Expire,
}

/// WAITING_APPROVAL → FAILED (rejected or expired); whether it moved.
pub async fn deny(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
    denial: Denial,
    error: &str,
) -> Result<bool> {
    let sql = match denial {
        Denial::Reject => spelled!(
            "UPDATE node_states SET status = {node.Reject.to}, error = $3, finished_at = now()
             WHERE run_id = $1 AND node_id = $2 AND status IN {node.Reject.from}"
        ),
        Denial::Expire => spelled!(
            "UPDATE node_states SET status = {node.Expire.to}, error = $3, finished_at = now()
             WHERE run_id = $1 AND node_id = $2 AND status IN {node.Expire.from}"
        ),
    };
    let done = sqlx::query(sql)
        .bind(run_id)
        .bind(node_id)
        .bind(error)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
