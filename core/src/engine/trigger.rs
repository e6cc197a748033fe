//! Starting runs. A trigger (REST, an event, an alert) writes the run RUNNING and a node state
//! per node (roots READY, so they are jobs) in one statement, or not at all. A trigger whose
//! workflow was planned before and has not changed since reuses the plan (see `plans`), and
//! such triggers of one workflow arriving together share the statement (see `batch`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Engine;
use super::approval;
use super::batch::Wanted;
use super::change::Change;
use super::outcome;
use super::plans::CachedPlan;
use crate::dag::Dag;
use crate::domain::{PlannedNode, RunPlan, WorkflowStatus, limits};
use crate::effects::Effects;
use crate::error::{Error, Invalid, Result};
use crate::store::runs::{self, NewRun, Run};
use crate::store::{agents, workflows};

/// What a trigger did: started a run, or found the one an earlier trigger with the same
/// idempotency key started.
#[derive(Debug, Clone)]
pub struct Triggered {
    pub run: Run,
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
    /// Who asked, so they cannot approve their own run.
    pub actor: Option<&'a str>,
}

impl TriggerRequest<'_> {
    /// The run this request starts, from version `version` of its workflow planned as `plan`.
    fn new_run<'r>(
        &'r self,
        id: Uuid,
        version: i32,
        workflow_name: &'r str,
        plan: &'r RunPlan,
        traceparent: Option<&'r str>,
    ) -> NewRun<'r> {
        NewRun {
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

impl Engine {
    /// Starts a run of a workflow (or answers with the run an earlier trigger with the same
    /// idempotency key started).
    pub async fn trigger(&self, req: TriggerRequest<'_>) -> Result<Triggered> {
        if let Some(key) = req.idempotency_key {
            if key.is_empty() || key.len() > 255 {
                return Err(Invalid::new("Idempotency-Key must be 1 to 255 characters").into());
            }
            if let Some(run) = runs::find_by_key(&self.pool, req.project_id, key).await? {
                return replayed(run, req.workflow_id);
            }
        }
        match self.trigger_once(&req).await {
            // A concurrent trigger with the same key committed first: answer with its run.
            Err(Error::IdempotencyKeyTaken) => {
                let key = req.idempotency_key.unwrap_or_default();
                match runs::find_by_key(&self.pool, req.project_id, key).await? {
                    Some(run) => replayed(run, req.workflow_id),
                    None => Err(Error::IdempotencyKeyTaken),
                }
            }
            other => other.map(|run| Triggered { run, created: true }),
        }
    }

    async fn trigger_once(&self, req: &TriggerRequest<'_>) -> Result<Run> {
        if let Some(cached) = self.plans.get(req.project_id, req.workflow_id) {
            check_context(&req.context)?;
            let wanted = Wanted {
                id: Uuid::now_v7(),
                trigger: req.trigger.to_string(),
                context: req.context.clone(),
                idempotency_key: req.idempotency_key.map(str::to_string),
                triggered_by: req.actor.map(str::to_string),
                traceparent: crate::telemetry::traceparent_of(&tracing::Span::current()),
            };
            match self
                .batches
                .insert(self, req.workflow_id, cached, wanted)
                .await?
            {
                Some(run) => return Ok(run),
                // The workflow or an agent changed since it was planned.
                None => self.plans.put(req.workflow_id, None),
            }
        }
        let mut change = Change::begin(self).await?;
        let (conn, effects) = change.parts();
        let (run, plan) = create_planned(conn, effects, req).await?;
        change.commit(self).await?;
        self.plans.put(req.workflow_id, plan);
        Ok(run)
    }
}

fn replayed(run: Run, workflow_id: Uuid) -> Result<Triggered> {
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
/// inside the caller's change.
pub async fn run_create(
    conn: &mut PgConnection,
    effects: &mut Effects,
    req: &TriggerRequest<'_>,
) -> Result<Run> {
    create_planned(conn, effects, req).await.map(|(run, _)| run)
}

pub(crate) fn check_context(context: &Value) -> Result<()> {
    if !context.is_object() {
        return Err(Invalid::new("context must be a JSON object").into());
    }
    let size = serde_json::to_vec(context).map(|v| v.len()).unwrap_or(0);
    if size > limits::MAX_CONTEXT_BYTES {
        return Err(Invalid::new(format!(
            "context is {size} bytes; at most {} are allowed",
            limits::MAX_CONTEXT_BYTES
        ))
        .into());
    }
    Ok(())
}

/// [`run_create`], also returning the plan for the plan cache when later triggers can reuse
/// it (none when a root waits for approval: such a trigger writes more than the run).
async fn create_planned(
    conn: &mut PgConnection,
    effects: &mut Effects,
    req: &TriggerRequest<'_>,
) -> Result<(Run, Option<CachedPlan>)> {
    check_context(&req.context)?;
    let workflow = workflows::get_for_trigger(&mut *conn, req.project_id, req.workflow_id).await?;
    if workflow.status != WorkflowStatus::Active {
        return Err(Error::conflict(format!(
            "workflow \"{}\" is {}; activate it to trigger runs",
            workflow.name, workflow.status
        )));
    }
    let refs: Vec<String> = workflow.nodes.iter().map(|n| n.agent_id.clone()).collect();
    let agents = agents::resolve_many(&mut *conn, req.project_id, &refs).await?;
    // The workflow was valid when saved, but an agent it uses may have changed since.
    let dag = Dag::parse(workflow.nodes.clone(), &agents).map_err(|e| {
        Error::conflict(format!(
            "workflow \"{}\" is no longer valid: {}",
            workflow.name, e.message
        ))
    })?;
    let plan = dag.plan(&agents);
    let roots: Vec<String> = dag.roots().map(str::to_string).collect();
    // The request (or event) that starts the run starts its trace.
    let traceparent = crate::telemetry::traceparent_of(&tracing::Span::current());
    let new_run = req.new_run(
        Uuid::now_v7(),
        workflow.version,
        &workflow.name,
        &plan,
        traceparent.as_deref(),
    );
    let mut inserted = runs::insert(&mut *conn, std::slice::from_ref(&new_run), None)
        .await?
        .unwrap_or_default();
    let Some(run) = inserted.pop() else {
        return Err(Error::NotFound("workflow"));
    };
    outcome::run_started(effects, &run, &roots);
    // The insert made the roots READY and woke the workers; those that need a person first
    // wait for one.
    let gated: Vec<String> = roots
        .iter()
        .filter(|id| plan.nodes.get(*id).is_some_and(PlannedNode::needs_approval))
        .cloned()
        .collect();
    if !gated.is_empty() {
        let reference = run.reference();
        if approval::dispatch_ready(&mut *conn, effects, &reference, &gated, &plan).await? {
            return Ok((runs::find(&mut *conn, run.id).await?, None));
        }
        return Ok((run, None));
    }
    let mut used: Vec<(Uuid, DateTime<Utc>)> =
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
        roots,
    };
    Ok((run, Some(cached)))
}
