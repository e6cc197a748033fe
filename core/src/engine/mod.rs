//! The state machine of runs and nodes. Each function here is one transaction: trigger a run,
//! claim a node attempt, record how an attempt ended (and what that unlocks). The worker loop
//! and the API call these; SQL stays in `store`.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::dag::Dag;
use crate::domain::{PlannedNode, RunStatus, RunSummary};
use crate::error::{Error, Invalid, Result};
use crate::queue::NodeJob;
use crate::store::{agents, approvals, nodes, queue, runs, workflows};
use crate::template::{self, Scope};

mod batch;

/// Starts a run of a workflow: the run, its node states and the jobs of its root nodes are
/// committed together, or not at all.
/// What a trigger did: started a run, or found the one an earlier trigger with the same
/// idempotency key started.
#[derive(Debug, Clone)]
pub struct Triggered {
    pub run: RunSummary,
    pub created: bool,
}

/// Everything that starts a run.
#[derive(Debug, Clone)]
pub struct TriggerRequest<'a> {
    pub project_id: i64,
    pub workflow_id: Uuid,
    pub context: Value,
    /// `manual`, `event` or `alert`.
    pub trigger: &'a str,
    pub idempotency_key: Option<&'a str>,
    /// Who asked (X-Actor), so they cannot approve their own run.
    pub actor: Option<&'a str>,
}

impl TriggerRequest<'_> {
    /// The run this request starts, from version `version` of its workflow planned as `plan`.
    fn new_run<'r>(
        &'r self,
        id: Uuid,
        version: i32,
        workflow_name: &'r str,
        plan: &'r crate::domain::RunPlan,
        traceparent: Option<&'r str>,
    ) -> runs::NewRun<'r> {
        runs::NewRun {
            id,
            project_id: self.project_id,
            workflow_id: self.workflow_id,
            workflow_version: version,
            workflow_name,
            plan,
            trigger: self.trigger,
            context: &self.context,
            idempotency_key: self.idempotency_key,
            triggered_by: self.actor,
            traceparent,
        }
    }
}

/// Plans of the workflows this process triggered, each with what it was planned from. A
/// trigger whose workflow and agents are unchanged since is then one statement, which checks
/// that they are while it inserts (see [`runs::run_insert_if_current`]); otherwise it plans
/// again. Such triggers of one workflow arriving together share the statement (see
/// [`batch`]).
#[derive(Default)]
pub struct PlanCache {
    plans: std::sync::Mutex<std::collections::HashMap<Uuid, std::sync::Arc<CachedPlan>>>,
    batches: batch::Batches,
}

struct CachedPlan {
    project_id: i64,
    workflow_id: Uuid,
    workflow_version: i32,
    workflow_name: String,
    plan: crate::domain::RunPlan,
    agents: Vec<(Uuid, chrono::DateTime<Utc>)>,
}

impl PlanCache {
    fn get(&self, project_id: i64, workflow_id: Uuid) -> Option<std::sync::Arc<CachedPlan>> {
        self.plans
            .lock()
            .expect("plan cache lock")
            .get(&workflow_id)
            .filter(|p| p.project_id == project_id)
            .cloned()
    }

    fn put(&self, workflow_id: Uuid, plan: Option<CachedPlan>) {
        let mut plans = self.plans.lock().expect("plan cache lock");
        match plan {
            Some(plan) => plans.insert(workflow_id, std::sync::Arc::new(plan)),
            None => plans.remove(&workflow_id),
        };
    }
}

pub async fn run_trigger(
    pool: &PgPool,
    plans: &PlanCache,
    req: TriggerRequest<'_>,
) -> Result<Triggered> {
    if let Some(key) = req.idempotency_key {
        if key.is_empty() || key.len() > 255 {
            return Err(Invalid::new("Idempotency-Key must be 1 to 255 characters").into());
        }
        if let Some(run) = runs::run_find_by_key(pool, req.project_id, key).await? {
            return replayed(run, req.workflow_id);
        }
    }
    let attempt = async {
        if let Some(cached) = plans.get(req.project_id, req.workflow_id) {
            check_context(&req.context)?;
            let wanted = batch::Wanted {
                id: Uuid::now_v7(),
                trigger: req.trigger.to_string(),
                context: req.context.clone(),
                idempotency_key: req.idempotency_key.map(str::to_string),
                triggered_by: req.actor.map(str::to_string),
                traceparent: crate::telemetry::traceparent_of(&tracing::Span::current()),
            };
            match plans
                .batches
                .insert(pool, req.workflow_id, cached, wanted)
                .await?
            {
                Some(run) => return Ok(run),
                None => plans.put(req.workflow_id, None),
            }
        }
        let mut tx = pool.begin().await?;
        let (run, plan) = run_create_planned(&mut tx, &req).await?;
        tx.commit().await?;
        plans.put(req.workflow_id, plan);
        Ok::<_, Error>(run)
    };
    match attempt.await {
        // A concurrent trigger with the same key committed first: answer with its run.
        Err(Error::Conflict(m)) if m == runs::IDEMPOTENCY_CONFLICT => {
            let key = req.idempotency_key.unwrap_or_default();
            match runs::run_find_by_key(pool, req.project_id, key).await? {
                Some(run) => replayed(run, req.workflow_id),
                None => Err(Error::conflict(m)),
            }
        }
        other => other.map(|run| {
            tracing::info!(run_id = %run.id, workflow = %run.workflow_name, trigger = req.trigger, "run started");
            Triggered { run, created: true }
        }),
    }
}

fn replayed(run: RunSummary, workflow_id: Uuid) -> Result<Triggered> {
    if run.workflow_id != workflow_id {
        return Err(Error::conflict(
            "this Idempotency-Key was already used to trigger another workflow",
        ));
    }
    Ok(Triggered {
        run,
        created: false,
    })
}

/// Writes a run, its node states and what its root nodes need (jobs, or approval requests)
/// inside the caller's transaction.
pub async fn run_create(
    tx: &mut sqlx::PgConnection,
    req: &TriggerRequest<'_>,
) -> Result<RunSummary> {
    run_create_planned(tx, req).await.map(|(run, _)| run)
}

fn check_context(context: &Value) -> Result<()> {
    if !context.is_object() {
        return Err(Invalid::new("context must be a JSON object").into());
    }
    let size = serde_json::to_vec(context).map(|v| v.len()).unwrap_or(0);
    if size > crate::domain::limits::MAX_CONTEXT_BYTES {
        return Err(Invalid::new(format!(
            "context is {size} bytes; at most {} are allowed",
            crate::domain::limits::MAX_CONTEXT_BYTES
        ))
        .into());
    }
    Ok(())
}

/// [`run_create`], also returning the plan for a [`PlanCache`] when later triggers can reuse
/// it (none when a root waits for approval: such a trigger writes more than the run).
async fn run_create_planned(
    tx: &mut sqlx::PgConnection,
    req: &TriggerRequest<'_>,
) -> Result<(RunSummary, Option<CachedPlan>)> {
    check_context(&req.context)?;
    let workflow = workflows::workflow_get_for_trigger(tx, req.project_id, req.workflow_id).await?;
    if workflow.status != crate::domain::WorkflowStatus::Active {
        return Err(Error::conflict(format!(
            "workflow \"{}\" is {}; activate it to trigger runs",
            workflow.name,
            workflow.status.as_str()
        )));
    }
    let refs: Vec<String> = workflow.nodes.iter().map(|n| n.agent_id.clone()).collect();
    let agents = agents::agent_resolve_many(tx, req.project_id, &refs).await?;
    // The workflow was valid when saved, but an agent it uses may have changed since.
    let dag = Dag::parse(workflow.nodes.clone(), &agents).map_err(|e| {
        Error::conflict(format!(
            "workflow \"{}\" is no longer valid: {}",
            workflow.name, e.message
        ))
    })?;
    let plan = dag.plan(&agents);
    let run_id = Uuid::now_v7();
    // The request (or event) that starts the run starts its trace.
    let traceparent = crate::telemetry::traceparent_of(&tracing::Span::current());
    let summary = runs::run_insert(
        tx,
        &req.new_run(
            run_id,
            workflow.version,
            &workflow.name,
            &plan,
            traceparent.as_deref(),
        ),
    )
    .await?;
    // The insert made the other roots READY and woke the workers.
    let gated: Vec<String> = dag
        .roots()
        .filter(|id| plan.nodes.get(*id).is_some_and(PlannedNode::needs_approval))
        .map(str::to_string)
        .collect();
    if !gated.is_empty() {
        if dispatch_ready(tx, run_id, gated, Some(&plan)).await? {
            // The run waits for an approval already.
            return Ok((runs::run_find(&mut *tx, run_id).await?, None));
        }
        return Ok((summary, None));
    }
    let mut used: Vec<(Uuid, chrono::DateTime<Utc>)> =
        agents.values().map(|a| (a.id, a.updated_at)).collect();
    used.sort_unstable();
    used.dedup();
    let cached = CachedPlan {
        project_id: req.project_id,
        workflow_id: req.workflow_id,
        workflow_version: workflow.version,
        workflow_name: workflow.name,
        plan,
        agents: used,
    };
    Ok((summary, Some(cached)))
}

/// Sends nodes that just became READY on their way: a READY node is its own job, so workers
/// only need waking; a node that needs a person first gets an approval request with the input
/// it will run with instead. Returns whether any node now waits for approval.
pub(crate) async fn dispatch_ready(
    tx: &mut sqlx::PgConnection,
    run_id: Uuid,
    ready: Vec<String>,
    plan: Option<&crate::domain::RunPlan>,
) -> Result<bool> {
    let mut runnable = false;
    let mut waiting = false;
    for node_id in ready {
        let gated = plan
            .and_then(|p| p.nodes.get(&node_id))
            .is_some_and(PlannedNode::needs_approval);
        if gated && request_approval(tx, run_id, &node_id).await? {
            waiting = true;
        } else {
            runnable = true;
        }
    }
    if runnable {
        queue::queue_notify(&mut *tx).await?;
    }
    Ok(waiting)
}

/// Puts a node in WAITING_APPROVAL with a request carrying its rendered input. Returns false
/// when the input cannot be rendered: such a node needs no approval, it fails when it runs.
async fn request_approval(
    tx: &mut sqlx::PgConnection,
    run_id: Uuid,
    node_id: &str,
) -> Result<bool> {
    let Some(run) = nodes::node_to_run(&mut *tx, run_id, node_id).await? else {
        return Ok(false);
    };
    let Ok(input) = render_input(&run) else {
        return Ok(false);
    };
    let node = run.node;
    approvals::approval_insert(
        &mut *tx,
        &approvals::NewApproval {
            project_id: run.project_id,
            run_id,
            node_id,
            agent_name: &node.agent.name,
            action: &node.action,
            input: Some(&input),
            timeout_seconds: node
                .approval_timeout_seconds
                .unwrap_or(crate::domain::DEFAULT_APPROVAL_TIMEOUT_SECONDS),
        },
    )
    .await?;
    nodes::node_wait_for_approval(&mut *tx, run_id, node_id).await?;
    runs::run_mark_waiting(&mut *tx, run_id).await?;
    tracing::info!(run_id = %run_id, node_id, "node waits for approval");
    Ok(true)
}

/// A node attempt a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job, its `traceparent` filled from the run when the job did not carry one.
    pub job: NodeJob,
    pub project_id: i64,
    pub workflow_id: Uuid,
    pub workflow_name: String,
    pub node: PlannedNode,
    pub context: Value,
    /// Attempts before the run's current generation; the retry policy counts from here.
    pub attempt_base: i32,
    /// The rendered inputs, or why they could not be rendered.
    pub inputs: std::result::Result<Value, String>,
    pub queue_wait: Duration,
}

impl Claimed {
    /// `job`'s attempt, running `run`'s node with `inputs`; the job's `traceparent` is filled
    /// from the run when it carries none.
    fn new(
        job: NodeJob,
        run: nodes::NodeToRun,
        attempt_base: i32,
        inputs: std::result::Result<Value, String>,
        ready_at: chrono::DateTime<Utc>,
    ) -> Claimed {
        Claimed {
            job: NodeJob {
                traceparent: job.traceparent.or(run.traceparent),
                ..job
            },
            project_id: run.project_id,
            workflow_id: run.workflow_id,
            workflow_name: run.workflow_name,
            node: run.node,
            context: run.context,
            attempt_base,
            inputs,
            queue_wait: (Utc::now() - ready_at).to_std().unwrap_or_default(),
        }
    }

    /// The document a SCRIPT agent reads on stdin and an HTTP agent receives as its body.
    pub fn document(&self, inputs: &Value) -> Value {
        json!({
            "action": self.node.action,
            "inputs": inputs,
            "context": self.context,
            "run": {
                "runId": self.job.run_id,
                "workflowId": self.workflow_id,
                "nodeId": self.job.node_id,
                "attempt": self.job.attempt,
            }
        })
    }
}

/// Takes up to `limit` due nodes for `worker` (see [`queue::queue_claim_due`]) and renders
/// their inputs: two statements and one commit for the whole batch. The attempts and their
/// inputs are written together, so an attempt never shows without its input, and a failure
/// before the commit leaves the nodes READY for the next claim.
pub async fn claim_due(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    limit: usize,
) -> Result<Vec<Claimed>> {
    let mut tx = pool.begin().await?;
    let taken = queue::queue_claim_due(&mut *tx, worker, limit, lease.as_millis() as i64).await?;
    if taken.is_empty() {
        // Nothing was locked or written: there is nothing to commit.
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    let claimed: Vec<(Uuid, Claimed)> = taken
        .into_iter()
        .map(|t| {
            let job = NodeJob {
                run_id: t.run_id,
                node_id: t.node_id,
                attempt: t.attempt,
                traceparent: None,
            };
            let inputs = render_input(&t.run);
            let claimed = Claimed::new(job, t.run, t.attempt_base, inputs, t.ready_at);
            (t.attempt_id, claimed)
        })
        .collect();
    let inputs: Vec<(Uuid, &Value)> = claimed
        .iter()
        .filter_map(|(id, c)| c.inputs.as_ref().ok().map(|v| (*id, v)))
        .collect();
    queue::queue_attempt_inputs(&mut tx, &inputs).await?;
    tx.commit().await?;
    Ok(claimed.into_iter().map(|(_, c)| c).collect())
}

/// Takes the node for `job`'s attempt on the caller's connection (or inside its transaction),
/// or returns `None` when the job is stale. The input is
/// rendered before the claim, so the claim and the attempt row are written together; the
/// claim only succeeds for the run generation the input was rendered in.
async fn node_claim_in(
    conn: &mut sqlx::PgConnection,
    job: &NodeJob,
    worker: &str,
    lease: Duration,
) -> Result<Option<Claimed>> {
    let lease_ms = lease.as_millis() as i64;
    // A retry with a patched context between the read and the claim starts a new
    // generation; then read again. Twice in a row would take two retries within a moment.
    for _ in 0..3 {
        let Some(run) = nodes::node_to_run(&mut *conn, job.run_id, &job.node_id).await? else {
            tracing::warn!(run_id = %job.run_id, node_id = %job.node_id, "job names a run or node that does not exist");
            return Ok(None);
        };
        let inputs = render_input(&run);
        let claim = nodes::node_claim(
            &mut *conn,
            &nodes::NewAgentRun {
                run_id: job.run_id,
                node_id: &job.node_id,
                agent_id: run.node.agent.id,
                action: &run.node.action,
                attempt: job.attempt,
                input: inputs.as_ref().ok(),
                worker,
            },
            run.generation,
            lease_ms,
        )
        .await?;
        let (ready_at, attempt_base) = match claim {
            nodes::Claim::Taken {
                ready_at,
                attempt_base,
            } => (ready_at, attempt_base),
            nodes::Claim::NewGeneration => continue,
            nodes::Claim::Stale => return Ok(None),
        };
        return Ok(Some(Claimed::new(
            job.clone(),
            run,
            attempt_base,
            inputs,
            ready_at,
        )));
    }
    Ok(None)
}

/// The node's input, rendered from the run's context and the outputs its templates read, or
/// why it cannot be.
fn render_input(run: &nodes::NodeToRun) -> std::result::Result<Value, String> {
    template::render(
        &run.node.inputs,
        &Scope {
            context: &run.context,
            nodes: &run.outputs,
        },
    )
    .map_err(|e| e.to_string())
}

/// How an attempt ended, as the engine sees it.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    Succeeded {
        output: Value,
        exit_code: Option<i32>,
    },
    Failed {
        error: String,
        retryable: bool,
        exit_code: Option<i32>,
    },
}

/// What recording an attempt led to, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEffect {
    /// Someone else closed this attempt first (cancel, rescue); nothing was changed.
    Stale,
    Completed {
        released: Vec<String>,
    },
    RetryScheduled {
        next_attempt: i32,
        delay: Duration,
    },
    FailedForGood {
        skipped: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub effect: AttemptEffect,
    /// How the run ended, when this attempt ended it (counted once committed).
    pub run_finished: Option<runs::RunEnded>,
    /// A dependent this attempt released and that the recording worker now holds, to run
    /// next without a trip through the queue (see [`Continue`]).
    pub next: Option<Box<Claimed>>,
}

/// Asks [`attempt_record`] to hand one released dependent straight to the recording worker:
/// it is claimed in the same transaction that completes its parent, so the next step starts
/// without a queue round trip (no job insert, notification, fetch or done-mark). Crash safety
/// is unchanged: the node is RUNNING under this worker's lease like any claimed node, and the
/// rescuer takes it back if the lease runs out.
#[derive(Debug, Clone, Copy)]
pub struct Continue<'a> {
    pub worker: &'a str,
    pub lease: Duration,
}

/// Records the end of an attempt and everything it causes: dependents becoming READY with
/// their jobs, a retry scheduled with backoff, descendants skipped, the run finished.
pub async fn attempt_record(
    pool: &PgPool,
    claimed: &Claimed,
    result: &AttemptResult,
    continue_as: Option<Continue<'_>>,
) -> Result<Recorded> {
    // A success of a node alone in its run cannot race another node's to end the run, so the
    // completing statement's own run lock is enough. Without dependents, that statement is
    // all there is to write: it goes on its own, one round trip and one commit.
    let alone = claimed.node.alone && matches!(result, AttemptResult::Succeeded { .. });
    if alone && claimed.node.dependents.is_empty() {
        let mut conn = pool.acquire().await?;
        let recorded = record_locked(&mut conn, claimed, result, continue_as).await?;
        recorded.run_finished.iter().for_each(runs::RunEnded::count);
        return Ok(recorded);
    }
    let mut tx = pool.begin().await?;
    if !alone {
        runs::run_lock(&mut tx, claimed.job.run_id).await?;
    }
    let recorded = record_locked(&mut tx, claimed, result, continue_as).await?;
    if recorded.effect != AttemptEffect::Stale {
        tx.commit().await?;
        recorded.run_finished.iter().for_each(runs::RunEnded::count);
    }
    Ok(recorded)
}

/// Records several attempts in one transaction: one commit, and one statement locking all
/// their runs, for the whole batch. A stale attempt among them writes nothing and is answered
/// `Stale`. A failure's recording takes several statements, so it gets a savepoint to roll
/// back to when it turns out stale; a success's single statement needs none. Any error rolls
/// back the whole batch: the caller can then record the attempts one by one.
pub async fn attempt_record_many(
    pool: &PgPool,
    batch: &[(&Claimed, &AttemptResult)],
    continue_as: Option<Continue<'_>>,
) -> Result<Vec<Recorded>> {
    let mut tx = pool.begin().await?;
    let mut runs: Vec<Uuid> = batch.iter().map(|(c, _)| c.job.run_id).collect();
    runs.sort_unstable();
    runs.dedup();
    runs::run_lock_many(&mut tx, &runs).await?;
    // Node rows are locked in (run, node) order, as a lease renewal locks them
    // (nodes::node_lease_renew), so the two never deadlock over the worker's nodes.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&batch[a].0.job, &batch[b].0.job);
        nodes::lock_order(a.run_id, &a.node_id).cmp(&nodes::lock_order(b.run_id, &b.node_id))
    });
    let mut recorded = vec![STALE; batch.len()];
    for i in order {
        let (claimed, result) = batch[i];
        let r = match result {
            AttemptResult::Succeeded { .. } => {
                record_locked(&mut tx, claimed, result, continue_as).await?
            }
            AttemptResult::Failed { .. } => {
                let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
                let r = record_locked(&mut savepoint, claimed, result, continue_as).await?;
                if r.effect == AttemptEffect::Stale {
                    savepoint.rollback().await?;
                } else {
                    savepoint.commit().await?;
                }
                r
            }
        };
        recorded[i] = r;
    }
    tx.commit().await?;
    for r in &recorded {
        r.run_finished.iter().for_each(runs::RunEnded::count);
    }
    Ok(recorded)
}

async fn record_locked(
    conn: &mut sqlx::PgConnection,
    claimed: &Claimed,
    result: &AttemptResult,
    continue_as: Option<Continue<'_>>,
) -> Result<Recorded> {
    attempt_record_locked(
        conn,
        &claimed.job,
        &claimed.node,
        claimed.attempt_base,
        result,
        continue_as,
    )
    .await
}

const STALE: Recorded = Recorded {
    effect: AttemptEffect::Stale,
    run_finished: None,
    next: None,
};

/// [`attempt_record`] inside a transaction that already holds the run's lock (or, for the
/// success of a node alone in its run, that takes it with the completing statement).
pub(crate) async fn attempt_record_locked(
    tx: &mut sqlx::PgConnection,
    job: &NodeJob,
    node: &PlannedNode,
    attempt_base: i32,
    result: &AttemptResult,
    continue_as: Option<Continue<'_>>,
) -> Result<Recorded> {
    let mut next = None;
    // Set when the attempt completed its node: whether that ended the run is known from the
    // completing statement itself.
    let mut completed = None;
    let (success, output, error, exit_code) = match result {
        AttemptResult::Succeeded { output, exit_code } => (true, Some(output), None, *exit_code),
        AttemptResult::Failed {
            error, exit_code, ..
        } => (false, None, Some(error.as_str()), *exit_code),
    };
    let attempt_result = nodes::AgentRunResult {
        run_id: job.run_id,
        node_id: &job.node_id,
        attempt: job.attempt,
        success,
        output,
        error,
        exit_code,
        cost_per_minute: node.agent.cost_per_minute,
    };
    if let AttemptResult::Failed { .. } = result
        && !nodes::agent_run_finish_if_running(&mut *tx, &attempt_result).await?
    {
        return Ok(STALE);
    }

    let effect = match result {
        AttemptResult::Succeeded { .. } => {
            // The attempt, the node and the dependents' counts in one statement: this is the
            // hot path of every node.
            let Some(completion) =
                nodes::node_complete_attempt(&mut *tx, &attempt_result, &node.dependents).await?
            else {
                return Ok(STALE);
            };
            completed = Some(completion.run_finished);
            let released = completion.released;
            let (gated, plain): (Vec<String>, Vec<String>) = released
                .iter()
                .cloned()
                .partition(|id| node.gated_dependents.contains(id));
            let mut plain = plain.into_iter();
            let inline = continue_as.and_then(|c| plain.next().map(|id| (c, id)));
            // The rest are READY, so they are jobs already: wake the workers.
            if plain.next().is_some() {
                queue::queue_notify(&mut *tx).await?;
            }
            if let Some((c, id)) = inline {
                let job = NodeJob {
                    run_id: job.run_id,
                    node_id: id,
                    attempt: 1,
                    traceparent: job.traceparent.clone(),
                };
                match node_claim_in(tx, &job, c.worker, c.lease).await? {
                    Some(claimed) => next = Some(Box::new(claimed)),
                    // Released a moment ago under the run lock, so this does not happen;
                    // if it did, the node is still READY and the queue takes it.
                    None => queue::queue_notify(&mut *tx).await?,
                }
            }
            if !gated.is_empty() {
                let plan = runs::run_plan(&mut *tx, job.run_id).await?;
                dispatch_ready(tx, job.run_id, gated, Some(&plan)).await?;
            }
            AttemptEffect::Completed { released }
        }
        AttemptResult::Failed {
            error, retryable, ..
        } => {
            let max_attempts = node.retry.max_attempts as i32;
            let attempt_in_generation = job.attempt - attempt_base;
            if *retryable && attempt_in_generation < max_attempts {
                let next_attempt = job.attempt + 1;
                let delay = node.retry.backoff((attempt_in_generation + 1) as u32);
                let message =
                    format!("attempt {attempt_in_generation} of {max_attempts} failed: {error}");
                if !nodes::node_retry_if_running(
                    &mut *tx,
                    job.run_id,
                    &job.node_id,
                    job.attempt,
                    delay,
                    &message,
                )
                .await?
                {
                    return Ok(STALE);
                }
                // A retry with backoff becomes due later: idle workers poll for it. One due
                // now wakes them.
                if delay.is_zero() {
                    queue::queue_notify(&mut *tx).await?;
                }
                AttemptEffect::RetryScheduled {
                    next_attempt,
                    delay,
                }
            } else {
                let message = if *retryable && max_attempts > 1 {
                    format!("failed after {attempt_in_generation} attempts: {error}")
                } else {
                    error.clone()
                };
                if !nodes::node_fail_if_running(
                    &mut *tx,
                    job.run_id,
                    &job.node_id,
                    job.attempt,
                    &message,
                )
                .await?
                {
                    return Ok(STALE);
                }
                let plan = runs::run_plan(&mut *tx, job.run_id).await?;
                let descendants = plan.descendants(&job.node_id);
                let cause = format!("skipped: upstream node \"{}\" failed", job.node_id);
                let skipped =
                    nodes::node_skip_many(&mut *tx, job.run_id, &descendants, &cause).await?;
                AttemptEffect::FailedForGood { skipped }
            }
        }
    };

    let run_finished = match completed {
        Some(run_finished) => run_finished,
        None => run_finish_if_done(tx, job.run_id).await?,
    };
    Ok(Recorded {
        effect,
        run_finished,
        next,
    })
}

/// Finishes the run when no node can make progress any more. The caller holds the run lock.
pub(crate) async fn run_finish_if_done(
    tx: &mut sqlx::PgConnection,
    run_id: Uuid,
) -> Result<Option<runs::RunEnded>> {
    let progress = nodes::node_progress(tx, run_id).await?;
    if progress.open {
        return Ok(None);
    }
    let status = match progress.failure {
        Some(_) => RunStatus::Failed,
        None => RunStatus::Completed,
    };
    runs::run_finish(tx, run_id, status, progress.failure.as_deref()).await
}

/// Cancels a run that is still going: its unfinished nodes become CANCELLED and open attempts
/// are closed, so no node starts any more and workers stop the agents they run (they notice at
/// their next lease renewal).
pub async fn run_cancel(
    pool: &PgPool,
    project_id: i64,
    run_id: Uuid,
    reason: &str,
) -> Result<RunSummary> {
    let mut tx = pool.begin().await?;
    let status = runs::run_lock_in_project(&mut tx, project_id, run_id).await?;
    if status.is_terminal() {
        return Err(Error::conflict(format!("the run is already {status}")));
    }
    nodes::node_cancel_open(&mut tx, run_id, reason).await?;
    let ended = runs::run_finish(&mut tx, run_id, RunStatus::Cancelled, Some(reason)).await?;
    let run = runs::run_find(&mut *tx, run_id).await?;
    tx.commit().await?;
    ended.iter().for_each(runs::RunEnded::count);
    tracing::info!(run_id = %run_id, "run cancelled");
    Ok(run)
}

/// Runs a FAILED or CANCELLED run again from where it stopped: COMPLETED nodes keep their
/// outputs; every other node gets a fresh generation of attempts.
pub async fn run_retry(
    pool: &PgPool,
    project_id: i64,
    run_id: Uuid,
    context_patch: Option<Value>,
) -> Result<RunSummary> {
    if context_patch.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(Invalid::new("context must be a JSON object").into());
    }
    let mut tx = pool.begin().await?;
    let status = runs::run_lock_in_project(&mut tx, project_id, run_id).await?;
    if !matches!(status, RunStatus::Failed | RunStatus::Cancelled) {
        return Err(Error::conflict(format!(
            "only a FAILED or CANCELLED run can be retried; this one is {status}"
        )));
    }
    let plan = runs::run_plan(&mut *tx, run_id).await?;
    let states = nodes::node_statuses_lock(&mut tx, run_id).await?;
    let completed: std::collections::HashSet<&str> = states
        .iter()
        .filter(|(_, s, _)| s == "COMPLETED")
        .map(|(id, _, _)| id.as_str())
        .collect();
    let mut ready = Vec::new();
    for (node_id, status, _) in &states {
        if status == "COMPLETED" {
            continue;
        }
        let Some(node) = plan.nodes.get(node_id) else {
            continue;
        };
        let pending = node
            .depends_on
            .iter()
            .filter(|d| !completed.contains(d.as_str()))
            .count() as i32;
        nodes::node_reset_for_retry(&mut tx, run_id, node_id, pending).await?;
        if pending == 0 {
            ready.push(node_id.clone());
        }
    }
    runs::run_restart(&mut tx, run_id, context_patch.as_ref()).await?;
    dispatch_ready(&mut tx, run_id, ready, Some(&plan)).await?;
    let run = runs::run_find(&mut *tx, run_id).await?;
    tx.commit().await?;
    tracing::info!(run_id = %run_id, "run retried");
    Ok(run)
}

/// A decision on an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

/// Records a person's decision. Approving makes the node READY and enqueues it in the same
/// transaction; rejecting fails the node (and skips what depends on it). Deciding twice is a
/// conflict; the person who triggered the run may not decide on it.
pub async fn approval_decide(
    pool: &PgPool,
    project_id: i64,
    approval_id: Uuid,
    decision: Decision,
    by: Option<&str>,
    actor: Option<&str>,
    comment: Option<&str>,
) -> Result<crate::domain::Approval> {
    let (run_id, triggered_by) = approvals::approval_run(pool, project_id, approval_id).await?;
    if let (Some(actor), Some(triggerer)) = (actor, triggered_by.as_deref())
        && actor == triggerer
    {
        return Err(Error::Forbidden(format!(
            "{actor} triggered this run and cannot decide on its approvals; another person must"
        )));
    }
    let who = by.or(actor);
    let status = match decision {
        Decision::Approve => crate::domain::ApprovalStatus::Approved,
        Decision::Reject => crate::domain::ApprovalStatus::Rejected,
    };
    let reason = format!(
        "rejected by {}{}",
        who.unwrap_or("an unnamed reviewer"),
        comment.map(|c| format!(": {c}")).unwrap_or_default()
    );
    if !approval_close(pool, run_id, approval_id, status, who, comment, &reason).await? {
        let current = approvals::approval_get(pool, project_id, approval_id).await?;
        return Err(Error::conflict(format!(
            "the approval is already {}",
            current.status
        )));
    }
    approvals::approval_get(pool, project_id, approval_id).await
}

/// Closes a pending approval with `status` and applies it to its node: APPROVED enqueues the
/// node; anything else fails it with `failure`. Returns false when it was no longer pending.
pub(crate) async fn approval_close(
    pool: &PgPool,
    run_id: Uuid,
    approval_id: Uuid,
    status: crate::domain::ApprovalStatus,
    by: Option<&str>,
    comment: Option<&str>,
    failure: &str,
) -> Result<bool> {
    let mut tx = pool.begin().await?;
    runs::run_lock(&mut tx, run_id).await?;
    let Some(approval) =
        approvals::approval_decide(&mut tx, approval_id, status, by, comment).await?
    else {
        return Ok(false);
    };
    metrics::histogram!(crate::telemetry::names::APPROVAL_WAIT, "status" => status.as_str())
        .record(
            (Utc::now() - approval.requested_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64(),
        );
    if status == crate::domain::ApprovalStatus::Approved {
        if nodes::node_approve(&mut *tx, run_id, &approval.node_id)
            .await?
            .is_some()
        {
            queue::queue_notify(&mut *tx).await?;
        }
    } else if nodes::node_fail_waiting(&mut *tx, run_id, &approval.node_id, failure).await? {
        let plan = runs::run_plan(&mut *tx, run_id).await?;
        let descendants = plan.descendants(&approval.node_id);
        let cause = format!("skipped: upstream node \"{}\" failed", approval.node_id);
        nodes::node_skip_many(&mut *tx, run_id, &descendants, &cause).await?;
    }
    runs::run_resume_if_no_approvals(&mut *tx, run_id).await?;
    let ended = run_finish_if_done(&mut tx, run_id).await?;
    tx.commit().await?;
    ended.iter().for_each(runs::RunEnded::count);
    tracing::info!(run_id = %run_id, node_id = %approval.node_id, status = %status, by, "approval decided");
    Ok(true)
}
