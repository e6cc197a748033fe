//! The state machine of runs and nodes. Each function here is one transaction: trigger a run,
//! claim a node attempt, record how an attempt ended (and what that unlocks). The worker loop
//! and the API call these; SQL stays in `store`.

use std::time::{Duration, SystemTime};

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::dag::Dag;
use crate::domain::{PlannedNode, RunStatus, RunSummary};
use crate::error::{Error, Invalid, Result};
use crate::queue::{self, NodeJob};
use crate::store::{agents, nodes, runs, workflows};
use crate::template::{self, Scope};

/// Extra time a worker holds a node beyond the agent's timeout before a rescuer may take it.
pub const LEASE_GRACE_SECONDS: i64 = 30;

/// Starts a run of a workflow: the run, its node states and the jobs of its root nodes are
/// committed together, or not at all.
pub async fn run_trigger(
    pool: &PgPool,
    project_id: i64,
    workflow_id: Uuid,
    context: Value,
    trigger: &str,
) -> Result<RunSummary> {
    if !context.is_object() {
        return Err(Invalid::new("context must be a JSON object").into());
    }
    let mut tx = pool.begin().await?;
    let workflow = workflows::workflow_get_for_trigger(&mut tx, project_id, workflow_id).await?;
    if workflow.status != crate::domain::WorkflowStatus::Active {
        return Err(Error::conflict(format!(
            "workflow \"{}\" is {}; activate it to trigger runs",
            workflow.name,
            workflow.status.as_str()
        )));
    }
    let refs: Vec<String> = workflow.nodes.iter().map(|n| n.agent_id.clone()).collect();
    let agents = agents::agent_resolve_many(&mut tx, project_id, &refs).await?;
    // The workflow was valid when saved, but an agent it uses may have changed since.
    let dag = Dag::parse(workflow.nodes.clone(), &agents).map_err(|e| {
        Error::conflict(format!(
            "workflow \"{}\" is no longer valid: {}",
            workflow.name, e.message
        ))
    })?;
    let plan = dag.plan(&agents);
    let run_id = Uuid::now_v7();
    let summary = runs::run_insert(
        &mut tx,
        &runs::NewRun {
            id: run_id,
            project_id,
            workflow_id,
            workflow_version: workflow.version,
            workflow_name: &workflow.name,
            plan: &plan,
            trigger,
            context: &context,
        },
    )
    .await?;
    let jobs = dag
        .roots()
        .map(|id| {
            (
                NodeJob {
                    run_id,
                    node_id: id.to_string(),
                    attempt: 1,
                },
                None,
            )
        })
        .collect();
    queue::enqueue(&mut tx, jobs).await?;
    tx.commit().await?;
    tracing::info!(run_id = %run_id, workflow = %workflow.name, trigger, "run started");
    Ok(summary)
}

/// A node attempt a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: NodeJob,
    pub workflow_id: Uuid,
    pub node: PlannedNode,
    pub context: Value,
    /// The rendered inputs, or why they could not be rendered.
    pub inputs: std::result::Result<Value, String>,
    pub queue_wait: Duration,
}

impl Claimed {
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

/// Takes the node for this job's attempt, or returns `None` when the job is stale.
pub async fn node_claim(pool: &PgPool, job: &NodeJob, worker: &str) -> Result<Option<Claimed>> {
    let mut tx = pool.begin().await?;
    let Some(run) = runs::run_get_for_node(&mut *tx, job.run_id, &job.node_id).await? else {
        return Ok(None);
    };
    let Some(node) = run.node else {
        tracing::warn!(run_id = %job.run_id, node_id = %job.node_id, "job names a node the run does not have");
        return Ok(None);
    };
    let lease = node.timeout_seconds as i64 + LEASE_GRACE_SECONDS;
    let Some(ready_at) = nodes::node_claim(
        &mut *tx,
        job.run_id,
        &job.node_id,
        job.attempt,
        worker,
        lease,
    )
    .await?
    else {
        return Ok(None);
    };
    let outputs = nodes::node_outputs(&mut *tx, job.run_id, &node.reads).await?;
    let inputs = template::render(
        &node.inputs,
        &Scope {
            context: &run.context,
            nodes: &outputs,
        },
    )
    .map_err(|e| e.to_string());
    nodes::agent_run_insert(
        &mut *tx,
        &nodes::NewAgentRun {
            run_id: job.run_id,
            node_id: &job.node_id,
            agent_id: node.agent.id,
            action: &node.action,
            attempt: job.attempt,
            input: inputs.as_ref().ok(),
            worker,
        },
    )
    .await?;
    tx.commit().await?;
    let queue_wait = (Utc::now() - ready_at).to_std().unwrap_or_default();
    Ok(Some(Claimed {
        job: job.clone(),
        workflow_id: run.workflow_id,
        node,
        context: run.context,
        inputs,
        queue_wait,
    }))
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

#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub effect: AttemptEffect,
    /// The run's final status, when this attempt finished the run.
    pub run_finished: Option<(RunStatus, Duration)>,
}

/// Records the end of an attempt and everything it causes: dependents becoming READY with
/// their jobs, a retry scheduled with backoff, descendants skipped, the run finished.
pub async fn attempt_record(
    pool: &PgPool,
    claimed: &Claimed,
    result: &AttemptResult,
) -> Result<Recorded> {
    let job = &claimed.job;
    let node = &claimed.node;
    let mut tx = pool.begin().await?;
    runs::run_lock(&mut tx, job.run_id).await?;
    let (success, output, error, exit_code) = match result {
        AttemptResult::Succeeded { output, exit_code } => (true, Some(output), None, *exit_code),
        AttemptResult::Failed {
            error, exit_code, ..
        } => (false, None, Some(error.as_str()), *exit_code),
    };
    let closed = nodes::agent_run_finish_if_running(
        &mut *tx,
        &nodes::AgentRunResult {
            run_id: job.run_id,
            node_id: &job.node_id,
            attempt: job.attempt,
            success,
            output,
            error,
            exit_code,
        },
    )
    .await?;
    if !closed {
        return Ok(Recorded {
            effect: AttemptEffect::Stale,
            run_finished: None,
        });
    }

    let effect = match result {
        AttemptResult::Succeeded { output, .. } => {
            if !nodes::node_complete_if_running(
                &mut *tx,
                job.run_id,
                &job.node_id,
                job.attempt,
                output,
            )
            .await?
            {
                return Ok(Recorded {
                    effect: AttemptEffect::Stale,
                    run_finished: None,
                });
            }
            let released =
                nodes::node_release_dependents(&mut *tx, job.run_id, &node.dependents).await?;
            let jobs = released
                .iter()
                .map(|id| {
                    (
                        NodeJob {
                            run_id: job.run_id,
                            node_id: id.clone(),
                            attempt: 1,
                        },
                        None,
                    )
                })
                .collect();
            queue::enqueue(&mut tx, jobs).await?;
            AttemptEffect::Completed { released }
        }
        AttemptResult::Failed {
            error, retryable, ..
        } => {
            let max_attempts = node.retry.max_attempts as i32;
            if *retryable && job.attempt < max_attempts {
                let next_attempt = job.attempt + 1;
                let delay = node.retry.backoff(next_attempt as u32);
                let ready_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                let message = format!("attempt {} of {max_attempts} failed: {error}", job.attempt);
                if !nodes::node_retry_if_running(
                    &mut *tx,
                    job.run_id,
                    &job.node_id,
                    job.attempt,
                    ready_at,
                    &message,
                )
                .await?
                {
                    return Ok(Recorded {
                        effect: AttemptEffect::Stale,
                        run_finished: None,
                    });
                }
                let next = NodeJob {
                    run_id: job.run_id,
                    node_id: job.node_id.clone(),
                    attempt: next_attempt,
                };
                queue::enqueue(&mut tx, vec![(next, Some(SystemTime::now() + delay))]).await?;
                AttemptEffect::RetryScheduled {
                    next_attempt,
                    delay,
                }
            } else {
                let message = if *retryable && max_attempts > 1 {
                    format!("failed after {} attempts: {error}", job.attempt)
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
                    return Ok(Recorded {
                        effect: AttemptEffect::Stale,
                        run_finished: None,
                    });
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

    let run_finished = run_finish_if_done(&mut tx, job.run_id).await?;
    tx.commit().await?;
    Ok(Recorded {
        effect,
        run_finished,
    })
}

/// Finishes the run when no node can make progress any more. The caller holds the run lock.
async fn run_finish_if_done(
    tx: &mut sqlx::PgConnection,
    run_id: Uuid,
) -> Result<Option<(RunStatus, Duration)>> {
    let progress = nodes::node_progress(tx, run_id).await?;
    if progress.open > 0 {
        return Ok(None);
    }
    let (status, error) = match progress.first_failure {
        Some((node_id, error)) => (
            RunStatus::Failed,
            Some(format!("node \"{node_id}\" failed: {error}")),
        ),
        None => (RunStatus::Completed, None),
    };
    let finished = runs::run_finish(tx, run_id, status, error.as_deref()).await?;
    Ok(finished.map(|(started, ended)| (status, (ended - started).to_std().unwrap_or_default())))
}
