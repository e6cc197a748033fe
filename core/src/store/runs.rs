//! `workflow_runs`: a run's row, its plan and its status.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::RunPlan;
use crate::error::{Error, Result};
use crate::lifecycle::{RunEvent, RunStatus};

/// A run as listed: everything but its nodes and attempts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub id: Uuid,
    pub project_id: i64,
    pub triggered_by: Option<String>,
    pub workflow_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: i32,
    /// `manual`, `event` or `alert`.
    pub trigger: String,
    pub status: RunStatus,
    #[sqlx(json)]
    pub context: Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The columns [`Run`] reads.
macro_rules! columns {
    () => {
        "id, project_id, triggered_by, workflow_id, workflow_name, workflow_version, trigger, status, context, error, created_at, started_at, finished_at"
    };
}

/// What identifies a run to the world: its events carry this.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunRef {
    #[sqlx(rename = "id")]
    pub run_id: Uuid,
    pub project_id: i64,
    pub workflow_id: Uuid,
    pub workflow_name: String,
}

impl Run {
    pub fn reference(&self) -> RunRef {
        RunRef {
            run_id: self.id,
            project_id: self.project_id,
            workflow_id: self.workflow_id,
            workflow_name: self.workflow_name.clone(),
        }
    }
}

/// A run locked for a state change: who it is and where it stands.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Locked {
    #[sqlx(flatten)]
    pub run: RunRef,
    pub status: RunStatus,
}

pub struct NewRun<'a> {
    pub id: Uuid,
    pub project_id: i64,
    pub workflow_id: Uuid,
    pub workflow_version: i32,
    pub workflow_name: &'a str,
    pub plan: &'a RunPlan,
    pub trigger: &'a str,
    pub context: &'a Value,
    pub idempotency_key: Option<&'a str>,
    pub triggered_by: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

/// What a run was planned from: a version of its workflow and the agents it uses, each as of
/// its `updated_at`.
pub struct PlannedFrom<'a> {
    pub agents: &'a [(Uuid, DateTime<Utc>)],
}

/// The run and node inserts of [`insert`], for runs that pass `$condition`. Node states are
/// inserted by the statement's second part: foreign keys are checked at its end, when the run
/// rows exist.
macro_rules! insert_runs {
    ($condition:literal) => {
        concat!(
            "given AS (
                 SELECT * FROM unnest($1::uuid[], $7::text[], $8::jsonb[], $9::text[], $10::text[], $11::text[])
                     AS g(id, trigger, context, idempotency_key, triggered_by, traceparent)),
             run AS (
                 INSERT INTO workflow_runs (id, project_id, workflow_id, workflow_version, workflow_name, definition, trigger, status, context, started_at, idempotency_key, triggered_by, traceparent)
                 SELECT g.id, $2, $3, $4, $5, $6, g.trigger, {run.RUNNING}, g.context, now(), g.idempotency_key, g.triggered_by, g.traceparent
                 FROM given g
                 WHERE ", $condition, "
                 RETURNING id, project_id, triggered_by, workflow_id, workflow_name, workflow_version, trigger, status, context, error, created_at, started_at, finished_at),
             states AS (
                 INSERT INTO node_states (run_id, node_id, status, pending_deps, ready_at)
                 SELECT run.id, t.id, CASE WHEN deps = 0 THEN {node.READY} ELSE {node.PENDING} END, deps,
                        CASE WHEN deps = 0 THEN now() END
                 FROM run, unnest($12::text[], $13::int[]) AS t(id, deps))
             SELECT run.*, (SELECT pg_notify('", ready_channel!(), "', '')) AS notified FROM run"
        )
    };
}

/// Inserts runs of one workflow version, planned alike, in one statement: each run RUNNING
/// with a node state per planned node, roots READY (they are the jobs, and the statement wakes
/// the workers at commit) and the rest PENDING on their dependencies.
///
/// With `guard`, they are inserted if and only if their workflow is ACTIVE at that version and
/// the agents they were planned with are unchanged in the statement's snapshot: all of them,
/// in the order given, or none (`None`: something changed since the plan was made; plan
/// again). Nothing is locked: an edit committed after the snapshot was taken comes after these
/// triggers, which ran the workflow as it was when they began. (Share locks on the workflow
/// and agent rows cost a multixact per concurrent trigger and 3 % of the throughput.) A
/// workflow deleted meanwhile fails the runs' foreign key: "workflow not found". Any
/// conflict (an idempotency key taken, a deleted workflow) fails them all.
pub async fn insert(
    db: impl PgExecutor<'_>,
    runs: &[NewRun<'_>],
    guard: Option<&PlannedFrom<'_>>,
) -> Result<Option<Vec<Run>>> {
    let Some(first) = runs.first() else {
        return Ok(Some(Vec::new()));
    };
    debug_assert!(runs.iter().all(|r| r.workflow_id == first.workflow_id
        && r.workflow_version == first.workflow_version
        && std::ptr::eq(r.plan, first.plan)));
    let (nodes, pending) = planned_nodes(first.plan);
    let sql = match guard {
        None => spelled!(concat!("WITH ", insert_runs!("true"))),
        Some(_) => spelled!(concat!(
            "WITH fresh AS (
                 SELECT 1 FROM workflows
                 WHERE id = $3 AND project_id = $2 AND version = $4 AND status = 'ACTIVE'),
             unchanged AS (
                 SELECT 1 FROM agents a
                 JOIN unnest($14::uuid[], $15::timestamptz[]) AS p(id, updated_at)
                   ON a.id = p.id AND a.updated_at = p.updated_at
                 WHERE a.project_id = $2),",
            insert_runs!(
                "EXISTS (SELECT 1 FROM fresh)
                 AND (SELECT count(*) FROM unchanged) = cardinality($14::uuid[])"
            )
        )),
    };
    let mut query = sqlx::query_as::<_, Run>(sql)
        .bind(runs.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(first.project_id)
        .bind(first.workflow_id)
        .bind(first.workflow_version)
        .bind(first.workflow_name)
        .bind(Json(first.plan))
        .bind(runs.iter().map(|r| r.trigger).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| Json(r.context)).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.idempotency_key).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.triggered_by).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.traceparent).collect::<Vec<_>>())
        .bind(nodes)
        .bind(pending);
    if let Some(from) = guard {
        let (agents, updated): (Vec<Uuid>, Vec<DateTime<Utc>>) =
            from.agents.iter().copied().unzip();
        query = query.bind(agents).bind(updated);
    }
    let mut inserted = query.fetch_all(db).await.map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("workflow_runs_idempotency_key") => {
            Error::IdempotencyKeyTaken
        }
        sqlx::Error::Database(db) if db.constraint() == Some("workflow_runs_workflow_id_fkey") => {
            Error::NotFound("workflow")
        }
        _ => Error::Database(e),
    })?;
    if inserted.is_empty() {
        return Ok(None);
    }
    // In the order asked for: each trigger waits for its own run.
    if inserted.len() > 1 {
        let position = |id: &Uuid| runs.iter().position(|r| r.id == *id);
        inserted.sort_by_key(|r| position(&r.id));
    }
    Ok(Some(inserted))
}

fn planned_nodes(plan: &RunPlan) -> (Vec<&str>, Vec<i32>) {
    plan.nodes
        .values()
        .map(|node| (node.id.as_str(), node.depends_on.len() as i32))
        .unzip()
}

pub async fn get(db: impl PgExecutor<'_>, project_id: i64, run_id: Uuid) -> Result<Run> {
    sqlx::query_as::<_, Run>(spelled!(concat!(
        "SELECT ",
        columns!(),
        " FROM workflow_runs WHERE project_id = $1 AND id = $2"
    )))
    .bind(project_id)
    .bind(run_id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("run"))
}

/// A run by id, whatever its project.
pub async fn find(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Run> {
    sqlx::query_as::<_, Run>(spelled!(concat!(
        "SELECT ",
        columns!(),
        " FROM workflow_runs WHERE id = $1"
    )))
    .bind(run_id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("run"))
}

/// The runs of a workflow, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    project_id: i64,
    workflow_id: Uuid,
    status: Option<RunStatus>,
    limit: i64,
) -> Result<Vec<Run>> {
    // An active status is asked for with the active statuses spelled out, so that the
    // planner can use the index holding only active runs (a generic plan cannot prove `$3`
    // is one of them): through the workflow's index a poll of its running runs read every
    // run it ever had (0.7 ms with 1,000 finished runs, growing with each).
    let sql = match status {
        None => spelled!(concat!(
            "SELECT ",
            columns!(),
            " FROM workflow_runs
             WHERE project_id = $1 AND workflow_id = $2 AND $3::text IS NULL
             ORDER BY created_at DESC, id DESC LIMIT $4"
        )),
        Some(s) if s.is_terminal() => spelled!(concat!(
            "SELECT ",
            columns!(),
            " FROM workflow_runs
             WHERE project_id = $1 AND workflow_id = $2 AND status = $3
             ORDER BY created_at DESC, id DESC LIMIT $4"
        )),
        Some(_) => spelled!(concat!(
            "SELECT ",
            columns!(),
            " FROM workflow_runs
             WHERE project_id = $1 AND workflow_id = $2 AND status = $3 AND status IN {run.active}
             ORDER BY created_at DESC, id DESC LIMIT $4"
        )),
    };
    Ok(sqlx::query_as::<_, Run>(sql)
        .bind(project_id)
        .bind(workflow_id)
        .bind(status)
        .bind(limit)
        .fetch_all(db)
        .await?)
}

/// Locks a run for a state change. Every transaction that may finish a run takes this lock
/// first, so two nodes finishing at once cannot both miss that the run is done. NO KEY UPDATE,
/// because the run's key never changes: the foreign-key checks of a sibling node's claim (its
/// attempt row) need not wait for this lock. `None`: no such run.
pub async fn lock(conn: &mut PgConnection, run_id: Uuid) -> Result<Option<Locked>> {
    Ok(sqlx::query_as::<_, Locked>(
        "SELECT id, project_id, workflow_id, workflow_name, status FROM workflow_runs
         WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(run_id)
    .fetch_optional(conn)
    .await?)
}

/// [`lock`], for run control: NotFound when the run is not one of `project_id`'s.
pub async fn lock_in_project(
    conn: &mut PgConnection,
    project_id: i64,
    run_id: Uuid,
) -> Result<Locked> {
    sqlx::query_as::<_, Locked>(
        "SELECT id, project_id, workflow_id, workflow_name, status FROM workflow_runs
         WHERE id = $1 AND project_id = $2 FOR NO KEY UPDATE",
    )
    .bind(run_id)
    .bind(project_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("run"))
}

/// Locks several runs as [`lock`] does, in id order, so two transactions locking
/// overlapping sets wait for each other instead of deadlocking.
pub async fn lock_many(conn: &mut PgConnection, run_ids: &[Uuid]) -> Result<()> {
    sqlx::query("SELECT id FROM workflow_runs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(run_ids)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn plan(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<RunPlan> {
    let plan: Option<Json<RunPlan>> =
        sqlx::query_scalar("SELECT definition FROM workflow_runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(db)
            .await?;
    Ok(plan.ok_or(Error::NotFound("run"))?.0)
}

/// A run a statement ended: how, and how long it took.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Ended {
    pub status: RunStatus,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl Ended {
    pub fn duration(&self) -> std::time::Duration {
        (self.finished_at - self.started_at)
            .to_std()
            .unwrap_or_default()
    }
}

/// The three events that end a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Complete,
    Fail,
    Cancel,
}

impl Ending {
    pub fn event(self) -> RunEvent {
        match self {
            Ending::Complete => RunEvent::Complete,
            Ending::Fail => RunEvent::Fail,
            Ending::Cancel => RunEvent::Cancel,
        }
    }
}

/// Ends a run that is still active (FAILED and CANCELLED with `error`); returns how, when it
/// did. The caller holds the run lock.
pub async fn finish(
    conn: &mut PgConnection,
    run_id: Uuid,
    ending: Ending,
    error: Option<&str>,
) -> Result<Option<Ended>> {
    let sql = match ending {
        Ending::Complete => spelled!(concat!(
            "UPDATE workflow_runs SET status = {run.Complete.to}, error = $2, finished_at = clock_timestamp()
             WHERE id = $1 AND status IN {run.Complete.from} RETURNING ",
            run_ended_columns!()
        )),
        Ending::Fail => spelled!(concat!(
            "UPDATE workflow_runs SET status = {run.Fail.to}, error = $2, finished_at = clock_timestamp()
             WHERE id = $1 AND status IN {run.Fail.from} RETURNING ",
            run_ended_columns!()
        )),
        Ending::Cancel => spelled!(concat!(
            "UPDATE workflow_runs SET status = {run.Cancel.to}, error = $2, finished_at = clock_timestamp()
             WHERE id = $1 AND status IN {run.Cancel.from} RETURNING ",
            run_ended_columns!()
        )),
    };
    Ok(sqlx::query_as::<_, Ended>(sql)
        .bind(run_id)
        .bind(error)
        .fetch_optional(conn)
        .await?)
}

/// The run an earlier trigger with this idempotency key created.
pub async fn find_by_key(
    db: impl PgExecutor<'_>,
    project_id: i64,
    key: &str,
) -> Result<Option<Run>> {
    Ok(sqlx::query_as::<_, Run>(spelled!(concat!(
        "SELECT ",
        columns!(),
        " FROM workflow_runs WHERE project_id = $1 AND idempotency_key = $2"
    )))
    .bind(project_id)
    .bind(key)
    .fetch_optional(db)
    .await?)
}

/// FAILED or CANCELLED → RUNNING, in a new generation, with `context_patch` merged over its
/// context. `None` when the run was in neither status.
pub async fn restart(
    conn: &mut PgConnection,
    run_id: Uuid,
    context_patch: Option<&Value>,
) -> Result<Option<Run>> {
    Ok(sqlx::query_as::<_, Run>(spelled!(concat!(
        "UPDATE workflow_runs SET status = {run.Retry.to}, error = NULL, finished_at = NULL,
                generation = generation + 1, context = context || coalesce($2, '{}'::jsonb)
         WHERE id = $1 AND status IN {run.Retry.from} RETURNING ",
        columns!()
    )))
    .bind(run_id)
    .bind(context_patch.map(Json))
    .fetch_optional(conn)
    .await?)
}

/// Active runs whose nodes are all finished: the rescuer ends them.
pub async fn unfinalized(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(spelled!(
        "SELECT r.id FROM workflow_runs r
         WHERE r.status IN {run.active}
           AND NOT EXISTS (SELECT 1 FROM node_states n WHERE n.run_id = r.id AND n.status IN {node.open})
         LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Runs going for longer than `older_than_ms` in which nothing is READY, RUNNING or waiting for
/// approval, yet something is PENDING: no event will ever move them, so the rescuer looks.
pub async fn stalled(db: impl PgExecutor<'_>, older_than_ms: i64, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(spelled!(
        "SELECT r.id FROM workflow_runs r
         WHERE r.status = {run.RUNNING} AND r.started_at < now() - make_interval(secs => $1 / 1000.0)
           AND EXISTS (SELECT 1 FROM node_states n WHERE n.run_id = r.id AND n.status = {node.PENDING})
           AND NOT EXISTS (SELECT 1 FROM node_states n WHERE n.run_id = r.id
                           AND n.status IN ({node.READY}, {node.RUNNING}, {node.WAITING_APPROVAL}))
         LIMIT $2"
    ))
    .bind(older_than_ms as f64)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// RUNNING → WAITING_APPROVAL; false when the run was not RUNNING.
pub async fn await_approval(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<bool> {
    let done = sqlx::query(spelled!(
        "UPDATE workflow_runs SET status = {run.AwaitApproval.to}
         WHERE id = $1 AND status IN {run.AwaitApproval.from}"
    ))
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// WAITING_APPROVAL → RUNNING once no approval of the run is pending; whether it moved.
pub async fn resume_if_no_approvals(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<bool> {
    let done = sqlx::query(spelled!(
        "UPDATE workflow_runs SET status = {run.Resume.to}
         WHERE id = $1 AND status IN {run.Resume.from}
           AND NOT EXISTS (SELECT 1 FROM approvals WHERE run_id = $1 AND status = {approval.PENDING})"
    ))
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Figures the maintenance sampler reports for the whole deployment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Gauges {
    pub runs_in_progress: i64,
    pub approvals_pending: i64,
}

pub async fn gauges(db: impl PgExecutor<'_>) -> Result<Gauges> {
    Ok(sqlx::query_as::<_, Gauges>(spelled!(
        "SELECT (SELECT count(*) FROM workflow_runs WHERE status IN {run.active}) AS runs_in_progress,
                (SELECT count(*) FROM approvals WHERE status = {approval.PENDING}) AS approvals_pending"
    ))
    .fetch_one(db)
    .await?)
}
