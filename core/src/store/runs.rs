use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::domain::{
    AgentRun, AgentRunStatus, NodeState, NodeStatus, RunDetail, RunPlan, RunStatus, RunSummary,
};
use crate::error::{Error, Result};

/// The conflict message of a concurrent trigger that lost the race for an idempotency key.
pub const IDEMPOTENCY_CONFLICT: &str = "idempotency key taken by a concurrent trigger";

const COLUMNS: &str = "id, triggered_by, workflow_id, workflow_name, workflow_version, trigger, status, context, error, created_at, started_at, finished_at";

fn from_row(row: &PgRow) -> Result<RunSummary> {
    let status: String = row.get("status");
    Ok(RunSummary {
        id: row.get("id"),
        triggered_by: row.get("triggered_by"),
        workflow_id: row.get("workflow_id"),
        workflow_name: row.get("workflow_name"),
        workflow_version: row.get("workflow_version"),
        trigger: row.get("trigger"),
        status: super::decode(RunStatus::parse(&status), "run status", &status)?,
        context: row.get::<Json<Value>, _>("context").0,
        error: row.get("error"),
        created_at: row.get("created_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    })
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

/// Inserts a run that starts now, with a node state per planned node: roots READY, the rest
/// PENDING on their dependencies.
pub async fn run_insert(conn: &mut PgConnection, run: &NewRun<'_>) -> Result<RunSummary> {
    let mut inserted = insert(&mut *conn, std::slice::from_ref(run), None).await?;
    Ok(inserted.pop().expect("an unguarded insert returns its row"))
}

/// Inserts runs of one workflow version, planned alike, as [`run_insert`] does, in one
/// statement of its own, if and only if their workflow is ACTIVE at that version and the
/// agents they were planned with are unchanged in the statement's snapshot: all of them, in
/// the order given, or none (`None`: something changed since the plan was made; plan again).
/// Concurrent triggers share such a statement and its commit (see `engine::batch`).
/// Nothing is locked: an edit committed after the snapshot was taken comes after these
/// triggers, which ran the workflow as it was when they began. (Share locks on the workflow
/// and agent rows cost a multixact per concurrent trigger and 3 % of the throughput.) A
/// workflow deleted meanwhile fails the runs' foreign key: "workflow not found". Any
/// conflict (an idempotency key taken, a deleted workflow) fails them all: inserted one by
/// one, each gets its own answer.
pub async fn run_insert_if_current(
    db: impl PgExecutor<'_>,
    runs: &[NewRun<'_>],
    from: &PlannedFrom<'_>,
) -> Result<Option<Vec<RunSummary>>> {
    let inserted = insert(db, runs, Some(from)).await?;
    Ok((!inserted.is_empty() || runs.is_empty()).then_some(inserted))
}

/// One statement for the runs and their nodes: a trigger is on the hot path of short runs.
/// Their READY roots are jobs, so the same statement wakes the workers (at commit).
async fn insert(
    db: impl PgExecutor<'_>,
    runs: &[NewRun<'_>],
    guard: Option<&PlannedFrom<'_>>,
) -> Result<Vec<RunSummary>> {
    let Some(first) = runs.first() else {
        return Ok(Vec::new());
    };
    debug_assert!(runs.iter().all(|r| r.workflow_id == first.workflow_id
        && r.workflow_version == first.workflow_version
        && std::ptr::eq(r.plan, first.plan)));
    let (nodes, pending) = planned_nodes(first.plan);
    let (current, condition) = match guard {
        None => (String::new(), "true"),
        Some(_) => (format!("{GUARD},"), GUARDED),
    };
    let sql = format!(
        "WITH {current}
         given AS (
             SELECT * FROM unnest($1::uuid[], $7::text[], $8::jsonb[], $9::text[], $10::text[], $11::text[])
                 AS g(id, trigger, context, idempotency_key, triggered_by, traceparent)),
         run AS (
             INSERT INTO workflow_runs (id, project_id, workflow_id, workflow_version, workflow_name, definition, trigger, status, context, started_at, idempotency_key, triggered_by, traceparent)
             SELECT g.id, $2, $3, $4, $5, $6, g.trigger, 'RUNNING', g.context, now(), g.idempotency_key, g.triggered_by, g.traceparent
             FROM given g
             WHERE {condition}
             RETURNING {COLUMNS}),
         states AS ({STATES})
         SELECT *, (SELECT pg_notify('{channel}', '')) AS notified FROM run",
        channel = super::queue::READY_CHANNEL
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
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
    let rows = query.fetch_all(db).await.map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("workflow_runs_idempotency_key") => {
            Error::Conflict(IDEMPOTENCY_CONFLICT.to_string())
        }
        sqlx::Error::Database(db) if db.constraint() == Some("workflow_runs_workflow_id_fkey") => {
            Error::NotFound("workflow")
        }
        _ => Error::Database(e),
    })?;
    let mut inserted = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    // In the order asked for: each trigger waits for its own run.
    if inserted.len() > 1 {
        let position = |id: &Uuid| runs.iter().position(|r| r.id == *id);
        inserted.sort_by_key(|r| position(&r.id));
    }
    Ok(inserted)
}

/// The guard of an insert planned earlier: the workflow ($3 in project $2) is ACTIVE at the
/// planned version ($4), and the agents it was planned with ($14, $15) are unchanged.
const GUARD: &str = "fresh AS (
         SELECT 1 FROM workflows
         WHERE id = $3 AND project_id = $2 AND version = $4 AND status = 'ACTIVE'),
     unchanged AS (
         SELECT 1 FROM agents a
         JOIN unnest($14::uuid[], $15::timestamptz[]) AS p(id, updated_at)
           ON a.id = p.id AND a.updated_at = p.updated_at
         WHERE a.project_id = $2)";
const GUARDED: &str = "EXISTS (SELECT 1 FROM fresh)
     AND (SELECT count(*) FROM unchanged) = cardinality($14::uuid[])";

/// A node state per planned node of each inserted run: roots READY, the rest PENDING on
/// their dependencies ($12 node ids, $13 dependency counts). Foreign keys are checked at the
/// end of the statement, when the run rows exist. READY roots are jobs.
const STATES: &str = "INSERT INTO node_states (run_id, node_id, status, pending_deps, ready_at)
     SELECT run.id, t.id, CASE WHEN deps = 0 THEN 'READY' ELSE 'PENDING' END, deps,
            CASE WHEN deps = 0 THEN now() END
     FROM run, unnest($12::text[], $13::int[]) AS t(id, deps)";

fn planned_nodes(plan: &RunPlan) -> (Vec<&str>, Vec<i32>) {
    plan.nodes
        .values()
        .map(|node| (node.id.as_str(), node.depends_on.len() as i32))
        .unzip()
}

pub async fn run_get(db: &mut PgConnection, project_id: i64, run_id: Uuid) -> Result<RunDetail> {
    let sql = format!("SELECT {COLUMNS} FROM workflow_runs WHERE project_id = $1 AND id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(run_id)
        .fetch_optional(&mut *db)
        .await?;
    let Some(row) = row else {
        return Err(Error::NotFound("run"));
    };
    let run = from_row(&row)?;
    let nodes = sqlx::query(
        "SELECT node_id, status, attempts, output, error, ready_at, started_at, finished_at
         FROM node_states WHERE run_id = $1 ORDER BY ready_at NULLS LAST, node_id",
    )
    .bind(run_id)
    .fetch_all(&mut *db)
    .await?
    .iter()
    .map(|r| {
        let status: String = r.get("status");
        Ok(NodeState {
            node_id: r.get("node_id"),
            status: super::decode(NodeStatus::parse(&status), "node status", &status)?,
            attempts: r.get("attempts"),
            output: r.get::<Option<Json<Value>>, _>("output").map(|j| j.0),
            error: r.get("error"),
            ready_at: r.get("ready_at"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let agent_runs = sqlx::query(
        "SELECT id, node_id, agent_id, action, attempt, status, input, output, error, exit_code, worker,
                started_at, finished_at, duration_ms
         FROM agent_runs WHERE run_id = $1 ORDER BY started_at, node_id, attempt",
    )
    .bind(run_id)
    .fetch_all(&mut *db)
    .await?
    .iter()
    .map(|r| {
        let status: String = r.get("status");
        Ok(AgentRun {
            id: r.get("id"),
            node_id: r.get("node_id"),
            agent_id: r.get("agent_id"),
            action: r.get("action"),
            attempt: r.get("attempt"),
            status: super::decode(AgentRunStatus::parse(&status), "agent run status", &status)?,
            input: r.get::<Option<Json<Value>>, _>("input").map(|j| j.0),
            output: r.get::<Option<Json<Value>>, _>("output").map(|j| j.0),
            error: r.get("error"),
            exit_code: r.get("exit_code"),
            worker: r.get("worker"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            duration_ms: r.get("duration_ms"),
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let approvals = super::approvals::approval_list_for_run(&mut *db, run_id).await?;
    Ok(RunDetail {
        run,
        nodes,
        agent_runs,
        approvals,
    })
}

pub async fn run_list(
    db: impl PgExecutor<'_>,
    project_id: i64,
    workflow_id: Uuid,
    status: Option<RunStatus>,
    limit: i64,
) -> Result<Vec<RunSummary>> {
    // An active status is asked for with the active statuses spelled out, so that the
    // planner can use the index holding only active runs (a generic plan cannot prove `$3`
    // is one of them): through the workflow's index a poll of its running runs read every
    // run it ever had (0.7 ms with 1,000 finished runs, growing with each).
    let filter = match status {
        None => "$3::text IS NULL",
        Some(s) if s.is_terminal() => "status = $3",
        Some(_) => concat!("status = $3 AND status IN ", active_run_statuses!()),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM workflow_runs
         WHERE project_id = $1 AND workflow_id = $2 AND {filter}
         ORDER BY created_at DESC, id DESC LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(workflow_id)
        .bind(status.map(|s| s.as_str()))
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Locks a run for a state change and returns its status. Every transaction that may finish
/// a run takes this lock first, so two nodes finishing at once cannot both miss that the run
/// is done. NO KEY UPDATE, because the run's key never changes: the foreign-key checks of a
/// sibling node's claim (its attempt row) need not wait for this lock.
pub async fn run_lock(conn: &mut PgConnection, run_id: Uuid) -> Result<Option<RunStatus>> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = $1 FOR NO KEY UPDATE")
            .bind(run_id)
            .fetch_optional(conn)
            .await?;
    status
        .map(|s| super::decode(RunStatus::parse(&s), "run status", &s))
        .transpose()
}

/// Locks several runs as [`run_lock`] does, in id order, so two transactions locking
/// overlapping sets wait for each other instead of deadlocking.
pub async fn run_lock_many(conn: &mut PgConnection, run_ids: &[Uuid]) -> Result<()> {
    sqlx::query("SELECT id FROM workflow_runs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(run_ids)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn run_plan(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<RunPlan> {
    let plan: Json<RunPlan> =
        sqlx::query_scalar("SELECT definition FROM workflow_runs WHERE id = $1")
            .bind(run_id)
            .fetch_one(db)
            .await?;
    Ok(plan.0)
}

/// Ends a run that is not terminal yet; returns how, when it did.
pub async fn run_finish(
    conn: &mut PgConnection,
    run_id: Uuid,
    status: RunStatus,
    error: Option<&str>,
) -> Result<Option<RunEnded>> {
    let row = sqlx::query(concat!(
        "UPDATE workflow_runs SET status = $2, error = $3, finished_at = clock_timestamp()
         WHERE id = $1 AND status NOT IN ",
        ended_run_statuses!(),
        " RETURNING ",
        run_ended_columns!()
    ))
    .bind(run_id)
    .bind(status.as_str())
    .bind(error)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(RunEnded::from_row).transpose()
}

/// A run a statement ended: how, and how long it took.
#[derive(Debug, Clone)]
#[must_use = "a run that ended is counted (RunEnded::count) once its transaction commits"]
pub struct RunEnded {
    pub status: RunStatus,
    pub duration: std::time::Duration,
    workflow: String,
}

impl RunEnded {
    /// Reads the columns `run_ended_columns!` names.
    pub(crate) fn from_row(r: &PgRow) -> Result<RunEnded> {
        let status: String = r.try_get("status")?;
        let started: DateTime<Utc> = r.try_get("started_at")?;
        let finished: DateTime<Utc> = r.try_get("finished_at")?;
        Ok(RunEnded {
            status: super::decode(RunStatus::parse(&status), "run status", &status)?,
            duration: (finished - started).to_std().unwrap_or_default(),
            workflow: r.try_get("workflow_name")?,
        })
    }

    /// Counts the run in the run metrics. Called after the commit, by whoever ended the run
    /// (worker, cancel, rescuer, approvals): a transaction that rolls back, such as a
    /// recording batch that is then recorded attempt by attempt, must not count its runs.
    pub fn count(&self) {
        let status = self.status.as_str();
        metrics::counter!(crate::telemetry::names::RUNS_FINISHED, "workflow" => self.workflow.clone(), "status" => status)
            .increment(1);
        metrics::histogram!(crate::telemetry::names::RUN_DURATION, "workflow" => self.workflow.clone(), "status" => status)
            .record(self.duration.as_secs_f64());
    }
}

/// The run an earlier trigger with this idempotency key created.
pub async fn run_find_by_key(
    db: impl PgExecutor<'_>,
    project_id: i64,
    key: &str,
) -> Result<Option<RunSummary>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workflow_runs WHERE project_id = $1 AND idempotency_key = $2"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(key)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Locks a run of `project_id` for run control; NotFound when it is not theirs.
pub async fn run_lock_in_project(
    conn: &mut PgConnection,
    project_id: i64,
    run_id: Uuid,
) -> Result<RunStatus> {
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM workflow_runs WHERE id = $1 AND project_id = $2 FOR NO KEY UPDATE",
    )
    .bind(run_id)
    .bind(project_id)
    .fetch_optional(conn)
    .await?;
    let Some(status) = status else {
        return Err(Error::NotFound("run"));
    };
    super::decode(RunStatus::parse(&status), "run status", &status)
}

/// Starts a new generation of a finished run, with `context_patch` merged over its context.
pub async fn run_restart(
    conn: &mut PgConnection,
    run_id: Uuid,
    context_patch: Option<&Value>,
) -> Result<RunSummary> {
    let sql = format!(
        "UPDATE workflow_runs SET status = 'RUNNING', error = NULL, finished_at = NULL, generation = generation + 1,
                context = context || coalesce($2, '{{}}'::jsonb)
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .bind(context_patch.map(Json))
        .fetch_one(conn)
        .await?;
    from_row(&row)
}

/// Runs still going whose nodes are all finished: the rescuer closes them.
pub async fn run_unfinalized(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT r.id FROM workflow_runs r
         WHERE r.status IN ('PENDING', 'RUNNING', 'WAITING_APPROVAL')
           AND NOT EXISTS (SELECT 1 FROM node_states n WHERE n.run_id = r.id
                           AND n.status IN ",
        open_node_statuses!(),
        ")
         LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Runs going for longer than `older_than_ms` in which nothing is READY, RUNNING or waiting for
/// approval, yet something is PENDING: no event will ever move them, so the rescuer looks.
pub async fn run_stalled(
    db: impl PgExecutor<'_>,
    older_than_ms: i64,
    limit: i64,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT r.id FROM workflow_runs r
         WHERE r.status = 'RUNNING' AND r.started_at < now() - make_interval(secs => $1 / 1000.0)
           AND EXISTS (SELECT 1 FROM node_states n WHERE n.run_id = r.id AND n.status = 'PENDING')
           AND NOT EXISTS (SELECT 1 FROM node_states n WHERE n.run_id = r.id
                           AND n.status IN ('READY', 'RUNNING', 'WAITING_APPROVAL'))
         LIMIT $2",
    )
    .bind(older_than_ms as f64)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

pub async fn run_find(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<RunSummary> {
    let sql = format!("SELECT {COLUMNS} FROM workflow_runs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .fetch_one(db)
        .await?;
    from_row(&row)
}

/// Marks a running run as waiting for a person.
pub async fn run_mark_waiting(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE workflow_runs SET status = 'WAITING_APPROVAL' WHERE id = $1 AND status = 'RUNNING'",
    )
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(())
}

/// A waiting run goes back to RUNNING once no approval of it is pending.
pub async fn run_resume_if_no_approvals(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE workflow_runs SET status = 'RUNNING' WHERE id = $1 AND status = 'WAITING_APPROVAL'
           AND NOT EXISTS (SELECT 1 FROM approvals WHERE run_id = $1 AND status = 'PENDING')",
    )
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(())
}

pub struct Gauges {
    pub runs_in_progress: i64,
    pub approvals_pending: i64,
}

pub async fn run_gauges(db: impl PgExecutor<'_>) -> Result<Gauges> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM workflow_runs WHERE status IN ('PENDING', 'RUNNING', 'WAITING_APPROVAL')) AS runs,
                (SELECT count(*) FROM approvals WHERE status = 'PENDING') AS approvals",
    )
    .fetch_one(db)
    .await?;
    Ok(Gauges {
        runs_in_progress: row.get("runs"),
        approvals_pending: row.get("approvals"),
    })
}
