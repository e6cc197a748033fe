use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::error::Result;

/// What a worker needs to run a node: the run's facts, the node's plan and the outputs its
/// templates read, as of the run's `generation` (a retry with a new context starts the next).
pub struct NodeToRun {
    pub generation: i32,
    pub project_id: i64,
    pub traceparent: Option<String>,
    pub workflow_name: String,
    pub workflow_id: Uuid,
    pub context: Value,
    pub node: crate::domain::PlannedNode,
    pub outputs: HashMap<String, Value>,
}

/// Reads what running `node_id` needs, without taking anything: the claim that follows checks
/// that the run's generation did not change meanwhile. `None`: no such run or node.
pub async fn node_to_run(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
) -> Result<Option<NodeToRun>> {
    let row = sqlx::query(
        "SELECT r.generation, r.project_id, r.traceparent, r.workflow_name, r.workflow_id, r.context,
                r.definition->'nodes'->$2 AS node,
                (SELECT jsonb_object_agg(o.node_id, o.output) FROM node_states o
                 WHERE o.run_id = $1 AND o.status = 'COMPLETED'
                   AND o.node_id IN (SELECT jsonb_array_elements_text(r.definition->'nodes'->$2->'reads'))
                ) AS outputs
         FROM workflow_runs r WHERE r.id = $1 AND r.definition->'nodes' ? $2",
    )
    .bind(run_id)
    .bind(node_id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(node_to_run_from_row).transpose()
}

/// Decodes the columns `generation`, `project_id`, `traceparent`, `workflow_name`,
/// `workflow_id`, `context`, `node` and `outputs`, as [`node_to_run`] and the queue's claim
/// select them.
pub(crate) fn node_to_run_from_row(r: &sqlx::postgres::PgRow) -> Result<NodeToRun> {
    let outputs: Option<Json<HashMap<String, Value>>> = r.try_get("outputs")?;
    Ok(NodeToRun {
        generation: r.try_get("generation")?,
        project_id: r.try_get("project_id")?,
        traceparent: r.try_get("traceparent")?,
        workflow_name: r.try_get("workflow_name")?,
        workflow_id: r.try_get("workflow_id")?,
        context: r.try_get::<Json<Value>, _>("context")?.0,
        node: r.try_get::<Json<crate::domain::PlannedNode>, _>("node")?.0,
        outputs: outputs.map(|j| j.0).unwrap_or_default(),
    })
}

pub struct NewAgentRun<'a> {
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

/// Moves a READY node to RUNNING for `r.attempt` and records the attempt's start with its
/// rendered input, in one statement (this runs once per node): if and only if the node is
/// still waiting for exactly that attempt, its run is still going, and the run is still in
/// `generation`, the one the input was rendered for. Its times are `clock_timestamp()`: this
/// may run inside a recording batch, whose transaction (and `now()`) began earlier.
pub async fn node_claim(
    db: impl PgExecutor<'_>,
    r: &NewAgentRun<'_>,
    generation: i32,
    lease_ms: i64,
) -> Result<Claim> {
    let row = sqlx::query(
        "WITH claimed AS (
             UPDATE node_states n
             SET status = 'RUNNING', attempts = $6, started_at = coalesce(n.started_at, clock_timestamp()),
                 locked_by = $8, lease_expires_at = clock_timestamp() + make_interval(secs => $10 / 1000.0)
             FROM workflow_runs r
             WHERE n.run_id = $2 AND n.node_id = $3 AND n.status = 'READY' AND n.attempts = $6 - 1
               AND r.id = n.run_id AND r.status IN ('PENDING', 'RUNNING', 'WAITING_APPROVAL')
               AND r.generation = $9
             RETURNING n.ready_at, n.attempt_base),
         attempt AS (
             INSERT INTO agent_runs (id, run_id, node_id, agent_id, action, attempt, status, input, worker, started_at)
             SELECT $1, $2, $3, $4, $5, $6, 'RUNNING', $7, $8, clock_timestamp() FROM claimed
             ON CONFLICT (run_id, node_id, attempt) DO NOTHING)
         -- The generation is looked up only when the claim failed, to tell why.
         SELECT c.ready_at, c.attempt_base,
                CASE WHEN c.attempt_base IS NULL THEN (SELECT generation FROM workflow_runs WHERE id = $2) END
                    AS generation
         FROM (SELECT 1) AS one LEFT JOIN claimed c ON true",
    )
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

pub struct AgentRunResult<'a> {
    pub run_id: Uuid,
    pub node_id: &'a str,
    pub attempt: i32,
    pub success: bool,
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
    pub exit_code: Option<i32>,
    /// The agent's rate, to price the attempt by its duration.
    pub cost_per_minute: Option<f64>,
}

/// Closes attempt `$3` of node `$2` of run `$1` if it is still RUNNING, with the parameters
/// [`bind_attempt_result`] binds as `$4`..`$8`.
macro_rules! attempt_finish {
    () => {
        "UPDATE agent_runs
         SET status = $4, output = $5, error = $6, exit_code = $7, finished_at = clock_timestamp(),
             duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint,
             cost = extract(epoch FROM clock_timestamp() - started_at) / 60.0 * $8
         WHERE run_id = $1 AND node_id = $2 AND attempt = $3 AND status = 'RUNNING'"
    };
}

fn bind_attempt_result<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    r: &AgentRunResult<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(r.run_id)
        .bind(r.node_id)
        .bind(r.attempt)
        .bind(if r.success { "COMPLETED" } else { "FAILED" })
        .bind(r.output.map(Json))
        .bind(r.error)
        .bind(r.exit_code)
        .bind(r.cost_per_minute)
}

/// Closes a RUNNING attempt. Returns false when the attempt was already closed by someone
/// else (a rescuer, a cancel), in which case the caller's result is stale.
pub async fn agent_run_finish_if_running(
    db: impl PgExecutor<'_>,
    r: &AgentRunResult<'_>,
) -> Result<bool> {
    let done = bind_attempt_result(sqlx::query(attempt_finish!()), r)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What completing an attempt changed.
pub struct Completion {
    /// Dependents that became READY by it.
    pub released: Vec<String>,
    /// How the run ended, when this completion ended it.
    pub run_finished: Option<super::runs::RunEnded>,
}

/// Closes a RUNNING attempt as COMPLETED, completes its node, counts the completion against
/// the node's dependents and finishes the run when no node of it can move any more, in one
/// round trip (this runs once per node). `None` means someone else closed the attempt or the node first (a
/// rescuer, a cancel): the caller's result is stale, and nothing was written.
/// The caller holds the run lock, or the node is alone in its run (no other node can finish
/// meanwhile), so the open check cannot miss a concurrent change, and the
/// dependents' row locks serialize two parents finishing at once, so exactly one of them sees
/// a dependent's count reach zero. A dependent it releases keeps the run open, so nothing the
/// caller does after this (claiming that dependent, asking for its approval) can reopen a run
/// this finished.
pub async fn node_complete_attempt(
    db: impl PgExecutor<'_>,
    r: &AgentRunResult<'_>,
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
    let query = sqlx::query(concat!(
        "WITH run AS (
             SELECT 1 FROM workflow_runs WHERE id = $1 FOR NO KEY UPDATE),
         current AS (
             SELECT 1 FROM node_states
             WHERE run_id = $1 AND node_id = $2 AND status = 'RUNNING' AND attempts = $3
               AND EXISTS (SELECT 1 FROM run)),
         attempt AS (",
        attempt_finish!(),
        " AND EXISTS (SELECT 1 FROM current) RETURNING 1),
         node AS (
             UPDATE node_states SET status = 'COMPLETED', output = $5, error = NULL, finished_at = clock_timestamp(),
                    locked_by = NULL, lease_expires_at = NULL
             WHERE run_id = $1 AND node_id = $2 AND status = 'RUNNING' AND attempts = $3
               AND EXISTS (SELECT 1 FROM attempt)
             RETURNING 1),
         released AS (
             UPDATE node_states
             SET pending_deps = pending_deps - 1,
                 status = CASE WHEN pending_deps = 1 AND status = 'PENDING' THEN 'READY' ELSE status END,
                 ready_at = CASE WHEN pending_deps = 1 AND status = 'PENDING' THEN clock_timestamp() ELSE ready_at END
             WHERE run_id = $1 AND node_id = ANY($9) AND pending_deps > 0 AND EXISTS (SELECT 1 FROM node)
             RETURNING node_id, status, pending_deps),
         outcome AS (
             SELECT EXISTS (SELECT 1 FROM node) AS completed,
                    ARRAY(SELECT node_id FROM released WHERE status = 'READY' AND pending_deps = 0) AS released,
                    EXISTS (SELECT 1 FROM node_states
                            WHERE run_id = $1 AND node_id <> $2 AND status IN ",
        open_node_statuses!(),
        ") AS open),
         over AS (SELECT 1 FROM outcome WHERE completed AND NOT open),
         -- Looked up only when the run is over, to tell COMPLETED from FAILED.
         failure AS (SELECT f.error FROM (",
        run_failure!(),
        ") AS f WHERE EXISTS (SELECT 1 FROM over)),
         finished AS (
             UPDATE workflow_runs
             SET status = CASE WHEN EXISTS (SELECT 1 FROM failure) THEN 'FAILED' ELSE 'COMPLETED' END,
                 error = (SELECT error FROM failure), finished_at = clock_timestamp()
             WHERE id = $1 AND EXISTS (SELECT 1 FROM over) AND status NOT IN ",
        ended_run_statuses!(),
        " RETURNING ",
        run_ended_columns!(),
        ")
         SELECT o.completed, o.released, f.*
         FROM outcome o LEFT JOIN finished f ON true"
    ));
    let row = bind_attempt_result(query, r)
        .bind(dependents)
        .fetch_one(db)
        .await?;
    if !row.try_get::<bool, _>("completed")? {
        return Ok(None);
    }
    // The finished columns are NULL when this completion did not end the run.
    let run_finished = match row.try_get::<Option<String>, _>("status")? {
        Some(_) => Some(super::runs::RunEnded::from_row(&row)?),
        None => None,
    };
    Ok(Some(Completion {
        released: row.try_get("released")?,
        run_finished,
    }))
}

/// RUNNING → READY for a later attempt, due `delay` from now by the database's clock (the one
/// the queue compares with), keeping the last error visible meanwhile.
pub async fn node_retry_if_running(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
    attempt: i32,
    delay: std::time::Duration,
    error: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE node_states SET status = 'READY', ready_at = clock_timestamp() + make_interval(secs => $4),
                error = $5, locked_by = NULL, lease_expires_at = NULL
         WHERE run_id = $1 AND node_id = $2 AND status = 'RUNNING' AND attempts = $3",
    )
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
pub async fn node_fail_if_running(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
    attempt: i32,
    error: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE node_states SET status = 'FAILED', error = $4, finished_at = clock_timestamp(), locked_by = NULL, lease_expires_at = NULL
         WHERE run_id = $1 AND node_id = $2 AND status = 'RUNNING' AND attempts = $3",
    )
    .bind(run_id)
    .bind(node_id)
    .bind(attempt)
    .bind(error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// PENDING/READY → SKIPPED for nodes that can no longer run because `cause` failed.
pub async fn node_skip_many(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_ids: &[String],
    cause: &str,
) -> Result<u64> {
    if node_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE node_states SET status = 'SKIPPED', error = $3, finished_at = now()
         WHERE run_id = $1 AND node_id = ANY($2) AND status IN ('PENDING', 'READY')",
    )
    .bind(run_id)
    .bind(node_ids)
    .bind(cause)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// How a run stands: nodes that may still make progress, and the error of the first node
/// failure if any.
pub struct RunProgress {
    /// Whether some node may still make progress.
    pub open: bool,
    pub failure: Option<String>,
}

pub async fn node_progress(conn: &mut PgConnection, run_id: Uuid) -> Result<RunProgress> {
    // Runs after every attempt: one index probe while the run is open (node_states_open_idx),
    // the failure lookup only once it is not.
    let open: bool = sqlx::query_scalar(concat!(
        "SELECT EXISTS (SELECT 1 FROM node_states WHERE run_id = $1 AND status IN ",
        open_node_statuses!(),
        ")"
    ))
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    if open {
        return Ok(RunProgress {
            open: true,
            failure: None,
        });
    }
    let failure = sqlx::query_scalar(run_failure!())
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(RunProgress {
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

/// Extends the leases of `attempts` (run, node, attempt) where this worker still holds them;
/// returns the ones it holds. An attempt missing from the answer was taken away (cancelled or
/// rescued) and must stop. A node the worker holds but no longer runs (its result could not be
/// recorded) is not renewed, so the rescuer takes it back when its lease runs out.
pub async fn node_lease_renew(
    db: impl PgExecutor<'_>,
    worker: &str,
    lease_ms: i64,
    attempts: &[(Uuid, String, i32)],
) -> Result<Vec<(Uuid, String, i32)>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    // The rows are locked in (run, node) order, the order in which a batch of recordings
    // locks them (engine::attempt_record_many): taken in any other order, a renewal and a
    // batch holding some of the same worker's nodes wait for each other until Postgres
    // breaks the deadlock a second later. The arrays go in that order (node ids compared
    // byte by byte, as the batch compares them), and each row is found and locked by its
    // primary key in array order: a lateral subquery that locks is never flattened into a
    // join. (As a join the planner scanned every open node's index entry, dead ones
    // included, to hash them: 1.6 ms growing to 5.8 ms within 20 s of load.)
    let mut sorted: Vec<&(Uuid, String, i32)> = attempts.iter().collect();
    sorted.sort_by(|a, b| lock_order(a.0, &a.1).cmp(&lock_order(b.0, &b.1)));
    let runs: Vec<Uuid> = sorted.iter().map(|a| a.0).collect();
    let nodes: Vec<&str> = sorted.iter().map(|a| a.1.as_str()).collect();
    let numbers: Vec<i32> = sorted.iter().map(|a| a.2).collect();
    let rows = sqlx::query(
        "WITH held AS (
             SELECT h.run_id, h.node_id
             FROM unnest($3::uuid[], $4::text[], $5::int[]) AS a(run_id, node_id, attempt)
             CROSS JOIN LATERAL (
                 SELECT n.run_id, n.node_id FROM node_states n
                 WHERE n.run_id = a.run_id AND n.node_id = a.node_id AND n.attempts = a.attempt
                   AND n.status = 'RUNNING' AND n.locked_by = $1
                 FOR NO KEY UPDATE OF n) AS h)
         UPDATE node_states n SET lease_expires_at = now() + make_interval(secs => $2 / 1000.0)
         FROM held WHERE n.run_id = held.run_id AND n.node_id = held.node_id
         RETURNING n.run_id, n.node_id, n.attempts",
    )
    .bind(worker)
    .bind(lease_ms as f64)
    .bind(&runs)
    .bind(&nodes)
    .bind(&numbers)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get("run_id"), r.get("node_id"), r.get("attempts")))
        .collect())
}

/// A RUNNING node whose holder stopped renewing its lease.
#[derive(Debug, Clone)]
pub struct ExpiredLease {
    pub run_id: Uuid,
    pub node_id: String,
    pub attempt: i32,
    pub attempt_base: i32,
    pub locked_by: Option<String>,
}

pub async fn node_expired_leases(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<ExpiredLease>> {
    let rows = sqlx::query(
        "SELECT run_id, node_id, attempts, attempt_base, locked_by FROM node_states
         WHERE status = 'RUNNING' AND lease_expires_at < now()
         ORDER BY lease_expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(expired_from_row).collect())
}

fn expired_from_row(r: &sqlx::postgres::PgRow) -> ExpiredLease {
    ExpiredLease {
        run_id: r.get("run_id"),
        node_id: r.get("node_id"),
        attempt: r.get("attempts"),
        attempt_base: r.get("attempt_base"),
        locked_by: r.get("locked_by"),
    }
}

/// Re-reads an expired lease under lock; `None` when it was renewed or closed meanwhile.
pub async fn node_expired_lease_lock(
    conn: &mut PgConnection,
    run_id: Uuid,
    node_id: &str,
    attempt: i32,
) -> Result<Option<ExpiredLease>> {
    let row = sqlx::query(
        "SELECT run_id, node_id, attempts, attempt_base, locked_by FROM node_states
         WHERE run_id = $1 AND node_id = $2 AND attempts = $3 AND status = 'RUNNING' AND lease_expires_at < now()
         FOR UPDATE",
    )
    .bind(run_id)
    .bind(node_id)
    .bind(attempt)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(expired_from_row))
}

/// Node statuses of a run, locked, for repairs and run control.
pub async fn node_statuses_lock(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Vec<(String, String, i32)>> {
    let rows = sqlx::query("SELECT node_id, status, attempts FROM node_states WHERE run_id = $1 ORDER BY node_id FOR UPDATE")
        .bind(run_id)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get("node_id"), r.get("status"), r.get("attempts")))
        .collect())
}

/// Makes a PENDING node READY (its dependencies all completed); used by repairs and retries.
pub async fn node_set_ready(db: impl PgExecutor<'_>, run_id: Uuid, node_id: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE node_states SET status = 'READY', pending_deps = 0, ready_at = now()
         WHERE run_id = $1 AND node_id = $2 AND status = 'PENDING'",
    )
    .bind(run_id)
    .bind(node_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every node that has not finished becomes CANCELLED; their open attempts are closed.
pub async fn node_cancel_open(conn: &mut PgConnection, run_id: Uuid, reason: &str) -> Result<u64> {
    sqlx::query("UPDATE approvals SET status = 'CANCELLED', decided_at = now(), comment = $2 WHERE run_id = $1 AND status = 'PENDING'")
        .bind(run_id)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query(
    concat!(
        "UPDATE node_states SET status = 'CANCELLED', error = $2, finished_at = now(), locked_by = NULL, lease_expires_at = NULL
         WHERE run_id = $1 AND status IN ",
        open_node_statuses!()
    ))
    .bind(run_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    // After the nodes: their update waits for a claim in flight to commit, so this statement
    // sees the attempt row that claim wrote and closes it too.
    sqlx::query(
        "UPDATE agent_runs SET status = 'FAILED', error = $2, finished_at = now(),
                duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint
         WHERE run_id = $1 AND status = 'RUNNING'",
    )
    .bind(run_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Resets one unfinished node for a new generation of its run: its attempts so far become the
/// base its retry policy counts from.
pub async fn node_reset_for_retry(
    conn: &mut PgConnection,
    run_id: Uuid,
    node_id: &str,
    pending_deps: i32,
) -> Result<()> {
    sqlx::query(
        "UPDATE node_states
         SET status = CASE WHEN $3 = 0 THEN 'READY' ELSE 'PENDING' END, pending_deps = $3,
             ready_at = CASE WHEN $3 = 0 THEN now() END, attempt_base = attempts,
             output = NULL, error = NULL, finished_at = NULL, locked_by = NULL, lease_expires_at = NULL
         WHERE run_id = $1 AND node_id = $2 AND status <> 'COMPLETED'",
    )
    .bind(run_id)
    .bind(node_id)
    .bind(pending_deps)
    .execute(conn)
    .await?;
    Ok(())
}

/// READY → WAITING_APPROVAL (or a fresh node straight to it).
pub async fn node_wait_for_approval(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE node_states SET status = 'WAITING_APPROVAL', pending_deps = 0
         WHERE run_id = $1 AND node_id = $2 AND status IN ('PENDING', 'READY')",
    )
    .bind(run_id)
    .bind(node_id)
    .execute(db)
    .await?;
    Ok(())
}

/// WAITING_APPROVAL → READY once approved; returns the next attempt number.
pub async fn node_approve(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
) -> Result<Option<i32>> {
    Ok(sqlx::query_scalar(
        "UPDATE node_states SET status = 'READY', ready_at = now()
         WHERE run_id = $1 AND node_id = $2 AND status = 'WAITING_APPROVAL' RETURNING attempts + 1",
    )
    .bind(run_id)
    .bind(node_id)
    .fetch_optional(db)
    .await?)
}

/// WAITING_APPROVAL → FAILED (rejected or expired).
pub async fn node_fail_waiting(
    db: impl PgExecutor<'_>,
    run_id: Uuid,
    node_id: &str,
    error: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE node_states SET status = 'FAILED', error = $3, finished_at = now()
         WHERE run_id = $1 AND node_id = $2 AND status = 'WAITING_APPROVAL'",
    )
    .bind(run_id)
    .bind(node_id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
