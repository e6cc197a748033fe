//! Attempts: a worker claims due nodes (`Claim`), runs their agents outside any transaction,
//! and records how each attempt ended: the node COMPLETES and releases its dependents, is
//! retried after a backoff, or FAILS and skips its descendants; the run ends when nothing can
//! move. This is the hot path of every node, so it is written to take as few statements and
//! commits as it can (see BENCHMARKS.md).

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Engine;
use super::approval;
use super::change::Change;
use super::outcome;
use crate::domain::{Outcome, PlannedNode};
use crate::effects::{Effects, NodeDetail};
use crate::error::Result;
use crate::lifecycle::NodeEvent;
use crate::store::nodes::{self, AttemptEnd, NodeToRun};
use crate::store::runs::{self, RunRef};
use crate::store::{attempts, queue};

/// One attempt of one node of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeJob {
    pub run_id: Uuid,
    pub node_id: String,
    pub attempt: i32,
    /// The run's trace, so the node's span joins it wherever it runs.
    pub traceparent: Option<String>,
}

/// A node attempt a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job, its `traceparent` filled from the run.
    pub job: NodeJob,
    pub run: RunRef,
    pub node: PlannedNode,
    pub context: Value,
    /// Attempts before the run's current generation; the retry policy counts from here.
    pub attempt_base: i32,
    /// The rendered inputs, or why they could not be rendered.
    pub inputs: std::result::Result<Value, String>,
    pub queue_wait: Duration,
}

impl Claimed {
    fn new(
        job: NodeJob,
        to_run: NodeToRun,
        attempt_base: i32,
        inputs: std::result::Result<Value, String>,
        ready_at: chrono::DateTime<Utc>,
    ) -> Claimed {
        let run_id = job.run_id;
        Claimed {
            job: NodeJob {
                traceparent: job.traceparent.or(to_run.traceparent),
                ..job
            },
            run: RunRef {
                run_id,
                project_id: to_run.project_id,
                workflow_id: to_run.workflow_id,
                workflow_name: to_run.workflow_name,
            },
            node: to_run.node,
            context: to_run.context,
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
                "workflowId": self.run.workflow_id,
                "nodeId": self.job.node_id,
                "attempt": self.job.attempt,
            }
        })
    }

    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            job: &self.job,
            run: &self.run,
            node: &self.node,
            attempt_base: self.attempt_base,
        }
    }

    fn claimed_event(&self, effects: &mut Effects) {
        effects.node(
            &self.run,
            &self.job.node_id,
            NodeEvent::Claim,
            NodeDetail {
                attempt: Some(self.job.attempt),
                agent: Some(self.node.agent.name.clone()),
                ..NodeDetail::default()
            },
        );
    }
}

/// The attempt a result is recorded for: a claimed one, or one the rescuer takes back.
pub struct Attempt<'a> {
    pub job: &'a NodeJob,
    pub run: &'a RunRef,
    pub node: &'a PlannedNode,
    pub attempt_base: i32,
}

/// How an attempt ended: the executor's outcome and how long the agent ran.
#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: Outcome,
    pub elapsed: Option<Duration>,
}

/// What recording an attempt led to, for the worker's logs.
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
        skipped: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub effect: AttemptEffect,
    /// A dependent this attempt released and that the recording worker now holds, to run
    /// next without a trip through the queue (see [`Continue`]).
    pub next: Option<Box<Claimed>>,
}

const STALE: Recorded = Recorded {
    effect: AttemptEffect::Stale,
    next: None,
};

/// Asks a recording to hand one released dependent straight to the recording worker: it is
/// claimed in the same transaction that completes its parent, so the next step starts without
/// a queue round trip. Crash safety is unchanged: the node is RUNNING under this worker's
/// lease like any claimed node, and the rescuer takes it back if the lease runs out.
#[derive(Debug, Clone, Copy)]
pub struct Continue<'a> {
    pub worker: &'a str,
    pub lease: Duration,
}

impl Engine {
    /// Takes up to `limit` due nodes for `worker` (see `store::queue::claim_due`) and renders
    /// their inputs: two statements and one commit for the whole batch. The attempts and their
    /// inputs are written together, so an attempt never shows without its input, and a failure
    /// before the commit leaves the nodes READY for the next claim.
    pub async fn claim_due(
        &self,
        worker: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>> {
        let mut change = Change::begin(self).await?;
        let taken =
            queue::claim_due(change.conn(), worker, limit, lease.as_millis() as i64).await?;
        if taken.is_empty() {
            // Nothing was locked or written: there is nothing to commit.
            change.rollback().await?;
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
                let inputs = outcome::input_of(&t.run);
                let claimed = Claimed::new(job, t.run, t.attempt_base, inputs, t.ready_at);
                (t.attempt_id, claimed)
            })
            .collect();
        let (conn, effects) = change.parts();
        for (_, c) in &claimed {
            c.claimed_event(effects);
        }
        let inputs: Vec<(Uuid, &Value)> = claimed
            .iter()
            .filter_map(|(id, c)| c.inputs.as_ref().ok().map(|v| (*id, v)))
            .collect();
        queue::attempt_inputs(conn, &inputs).await?;
        change.commit(self).await?;
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    /// Records the end of an attempt and everything it causes: dependents becoming READY, a
    /// retry scheduled with backoff, descendants skipped, the run ended.
    pub async fn attempt_record(
        &self,
        claimed: &Claimed,
        ended: &Finished,
        continue_as: Option<Continue<'_>>,
    ) -> Result<Recorded> {
        // A success of a node alone in its run cannot race another node's to end the run, so
        // the completing statement's own run lock is enough. Without dependents, that
        // statement is all there is to write: it goes on its own, one round trip and one
        // commit (unless its events go to the outbox with it).
        let alone = claimed.node.alone && ended.outcome.succeeded();
        let mut change = if alone && claimed.node.dependents.is_empty() {
            Change::single(self, claimed.run.project_id).await?
        } else {
            let mut change = Change::begin(self).await?;
            if !alone {
                runs::lock(change.conn(), claimed.job.run_id).await?;
            }
            change
        };
        let (conn, effects) = change.parts();
        let recorded = record_locked(conn, effects, &claimed.attempt(), ended, continue_as).await?;
        if recorded.effect == AttemptEffect::Stale {
            change.rollback().await?;
        } else {
            change.commit(self).await?;
        }
        Ok(recorded)
    }

    /// Records several attempts in one transaction: one commit, and one statement locking all
    /// their runs, for the whole batch. A stale attempt among them writes nothing and is
    /// answered `Stale`. A failure's recording takes several statements, so it gets a
    /// savepoint to roll back to when it turns out stale; a success's single statement needs
    /// none. Any error rolls back the whole batch: the caller can then record the attempts one
    /// by one.
    pub async fn attempt_record_many(
        &self,
        batch: &[(&Claimed, &Finished)],
        continue_as: Option<Continue<'_>>,
    ) -> Result<Vec<Recorded>> {
        let mut change = Change::begin(self).await?;
        let (conn, effects) = change.parts();
        let mut run_ids: Vec<Uuid> = batch.iter().map(|(c, _)| c.job.run_id).collect();
        run_ids.sort_unstable();
        run_ids.dedup();
        runs::lock_many(&mut *conn, &run_ids).await?;
        // Node rows are locked in (run, node) order, as a lease renewal locks them
        // (nodes::lease_renew), so the two never deadlock over the worker's nodes.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&batch[a].0.job, &batch[b].0.job);
            nodes::lock_order(a.run_id, &a.node_id).cmp(&nodes::lock_order(b.run_id, &b.node_id))
        });
        let mut recorded = vec![STALE; batch.len()];
        for i in order {
            let (claimed, ended) = batch[i];
            recorded[i] = if ended.outcome.succeeded() {
                record_locked(&mut *conn, effects, &claimed.attempt(), ended, continue_as).await?
            } else {
                let mark = effects.events.len();
                let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
                let r = record_locked(
                    &mut savepoint,
                    effects,
                    &claimed.attempt(),
                    ended,
                    continue_as,
                )
                .await?;
                if r.effect == AttemptEffect::Stale {
                    savepoint.rollback().await?;
                    effects.events.truncate(mark);
                } else {
                    savepoint.commit().await?;
                }
                r
            };
        }
        change.commit(self).await?;
        Ok(recorded)
    }
}

/// Records an attempt's end inside a transaction that already holds the run's lock (or, for
/// the success of a node alone in its run, that takes it with the completing statement).
pub async fn record_locked(
    conn: &mut PgConnection,
    effects: &mut Effects,
    attempt: &Attempt<'_>,
    ended: &Finished,
    continue_as: Option<Continue<'_>>,
) -> Result<Recorded> {
    let job = attempt.job;
    let node = attempt.node;
    let (output, error, exit_code) = match &ended.outcome {
        Outcome::Succeeded { output, exit_code } => (Some(output), None, *exit_code),
        Outcome::Failed {
            error, exit_code, ..
        } => (None, Some(error.as_str()), *exit_code),
    };
    let end = AttemptEnd {
        run_id: job.run_id,
        node_id: &job.node_id,
        attempt: job.attempt,
        output,
        error,
        exit_code,
        cost_per_minute: node.agent.cost_per_minute,
    };
    let detail = NodeDetail {
        attempt: Some(job.attempt),
        agent: Some(node.agent.name.clone()),
        error: error.map(str::to_string),
        duration: ended.elapsed,
    };
    match &ended.outcome {
        Outcome::Succeeded { .. } => {
            record_success(conn, effects, attempt, &end, detail, continue_as).await
        }
        Outcome::Failed {
            error, retryable, ..
        } => {
            if !attempts::fail_if_running(&mut *conn, &end).await? {
                return Ok(STALE);
            }
            record_failure(conn, effects, attempt, error, *retryable, detail).await
        }
    }
}

async fn record_success(
    conn: &mut PgConnection,
    effects: &mut Effects,
    attempt: &Attempt<'_>,
    end: &AttemptEnd<'_>,
    detail: NodeDetail,
    continue_as: Option<Continue<'_>>,
) -> Result<Recorded> {
    let (job, run, node) = (attempt.job, attempt.run, attempt.node);
    // The attempt, the node, the dependents' counts and the run's end in one statement: this
    // is the hot path of every node.
    let Some(completion) = nodes::complete_attempt(&mut *conn, end, &node.dependents).await? else {
        return Ok(STALE);
    };
    effects.node(run, &job.node_id, NodeEvent::Complete, detail);
    let released = completion.released;
    effects.nodes(run, &released, NodeEvent::Release);
    let (gated, plain): (Vec<String>, Vec<String>) = released
        .iter()
        .cloned()
        .partition(|id| node.gated_dependents.contains(id));
    let mut plain = plain.into_iter();
    let mut next = None;
    if let Some((c, id)) = continue_as.and_then(|c| plain.next().map(|id| (c, id))) {
        let job = NodeJob {
            run_id: job.run_id,
            node_id: id,
            attempt: 1,
            traceparent: job.traceparent.clone(),
        };
        match node_claim_in(&mut *conn, &job, c.worker, c.lease).await? {
            Some(claimed) => {
                claimed.claimed_event(effects);
                next = Some(Box::new(claimed));
            }
            // Released a moment ago under the run lock, so this does not happen; if it did,
            // the node is still READY and the queue takes it.
            None => effects.wake = true,
        }
    }
    // The rest are READY, so they are jobs already: wake the workers.
    if plain.next().is_some() {
        effects.wake = true;
    }
    if !gated.is_empty() {
        let plan = runs::plan(&mut *conn, job.run_id).await?;
        approval::dispatch_ready(&mut *conn, effects, run, &gated, &plan).await?;
    }
    if let Some(ended) = &completion.run_ended {
        outcome::run_ended(effects, run, ended);
    }
    Ok(Recorded {
        effect: AttemptEffect::Completed { released },
        next,
    })
}

/// A closed failed attempt: the node is retried after its backoff while attempts are left
/// (and the failure may pass), or fails for good and skips its descendants.
async fn record_failure(
    conn: &mut PgConnection,
    effects: &mut Effects,
    attempt: &Attempt<'_>,
    error: &str,
    retryable: bool,
    detail: NodeDetail,
) -> Result<Recorded> {
    let (job, run, node) = (attempt.job, attempt.run, attempt.node);
    let max_attempts = node.retry.max_attempts as i32;
    let attempt_in_generation = job.attempt - attempt.attempt_base;
    let effect = if retryable && attempt_in_generation < max_attempts {
        let delay = node.retry.backoff((attempt_in_generation + 1) as u32);
        let message = format!("attempt {attempt_in_generation} of {max_attempts} failed: {error}");
        if !nodes::retry_if_running(
            &mut *conn,
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
        effects.node(run, &job.node_id, NodeEvent::Retry, detail);
        // A retry with backoff becomes due later: idle workers poll for it. One due now
        // wakes them.
        if delay.is_zero() {
            effects.wake = true;
        }
        AttemptEffect::RetryScheduled {
            next_attempt: job.attempt + 1,
            delay,
        }
    } else {
        let message = if retryable && max_attempts > 1 {
            format!("failed after {attempt_in_generation} attempts: {error}")
        } else {
            error.to_string()
        };
        if !nodes::fail_if_running(&mut *conn, job.run_id, &job.node_id, job.attempt, &message)
            .await?
        {
            return Ok(STALE);
        }
        effects.node(
            run,
            &job.node_id,
            NodeEvent::Fail,
            NodeDetail {
                error: Some(message),
                ..detail
            },
        );
        let plan = runs::plan(&mut *conn, job.run_id).await?;
        let skipped =
            outcome::skip_descendants(&mut *conn, effects, run, &plan, &job.node_id).await?;
        AttemptEffect::FailedForGood {
            skipped: skipped.len(),
        }
    };
    outcome::finish_if_done(&mut *conn, effects, run).await?;
    Ok(Recorded { effect, next: None })
}

/// Takes the node for `job`'s attempt on the caller's connection (or inside its transaction),
/// or returns `None` when the job is stale. The input is rendered before the claim, so the
/// claim and the attempt row are written together; the claim only succeeds for the run
/// generation the input was rendered in.
async fn node_claim_in(
    conn: &mut PgConnection,
    job: &NodeJob,
    worker: &str,
    lease: Duration,
) -> Result<Option<Claimed>> {
    let lease_ms = lease.as_millis() as i64;
    // A retry with a patched context between the read and the claim starts a new
    // generation; then read again. Twice in a row would take two retries within a moment.
    for _ in 0..3 {
        let Some(to_run) = nodes::to_run(&mut *conn, job.run_id, &job.node_id).await? else {
            tracing::warn!(run_id = %job.run_id, node_id = %job.node_id, "job names a run or node that does not exist");
            return Ok(None);
        };
        let inputs = outcome::input_of(&to_run);
        let claim = nodes::claim(
            &mut *conn,
            &nodes::NewAttempt {
                run_id: job.run_id,
                node_id: &job.node_id,
                agent_id: to_run.node.agent.id,
                action: &to_run.node.action,
                attempt: job.attempt,
                input: inputs.as_ref().ok(),
                worker,
            },
            to_run.generation,
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
            to_run,
            attempt_base,
            inputs,
            ready_at,
        )));
    }
    Ok(None)
}
