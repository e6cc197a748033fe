//! Approvals: a node that needs a person waits in WAITING_APPROVAL (and so does its run) with a
//! request holding the input it will run with; a decision or the request's expiry moves it on.

use chrono::Utc;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Engine;
use super::change::Change;
use super::outcome;
use crate::domain::{DEFAULT_APPROVAL_TIMEOUT_SECONDS, PlannedNode, RunPlan};
use crate::effects::{Effects, NodeDetail, What};
use crate::error::{Error, Result};
use crate::lifecycle::{ApprovalEvent, NodeEvent, RunEvent, RunStatus};
use crate::store::approvals::{self, Approval};
use crate::store::nodes::{self, Denial};
use crate::store::runs::{self, RunRef};

/// Sends nodes that just became READY on their way: a READY node is its own job, so workers
/// only need waking; a node that needs a person first gets an approval request with the input
/// it will run with instead. Returns whether any node now waits for approval.
pub async fn dispatch_ready(
    conn: &mut PgConnection,
    effects: &mut Effects,
    run: &RunRef,
    ready: &[String],
    plan: &RunPlan,
) -> Result<bool> {
    let mut waiting = false;
    for node_id in ready {
        let gated = plan
            .nodes
            .get(node_id)
            .is_some_and(PlannedNode::needs_approval);
        if gated && request(&mut *conn, effects, run, node_id).await? {
            waiting = true;
        } else {
            effects.wake = true;
        }
    }
    Ok(waiting)
}

/// Puts a node in WAITING_APPROVAL with a request carrying its rendered input, and the run with
/// it. Returns false when the input cannot be rendered: such a node needs no approval, it
/// fails when it runs.
async fn request(
    conn: &mut PgConnection,
    effects: &mut Effects,
    run: &RunRef,
    node_id: &str,
) -> Result<bool> {
    let Some(to_run) = nodes::to_run(&mut *conn, run.run_id, node_id).await? else {
        return Ok(false);
    };
    let Ok(input) = outcome::input_of(&to_run) else {
        return Ok(false);
    };
    let node = to_run.node;
    let approval = approvals::insert(
        &mut *conn,
        &approvals::NewApproval {
            project_id: run.project_id,
            run_id: run.run_id,
            node_id,
            agent_name: &node.agent.name,
            action: &node.action,
            input: Some(&input),
            timeout_seconds: node
                .approval_timeout_seconds
                .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_SECONDS),
        },
    )
    .await?;
    if nodes::await_approval(&mut *conn, run.run_id, node_id).await? {
        effects.node(
            run,
            node_id,
            NodeEvent::AwaitApproval,
            NodeDetail::default(),
        );
    }
    if runs::await_approval(&mut *conn, run.run_id).await? {
        effects.run(
            run,
            Some(RunEvent::AwaitApproval),
            RunStatus::WaitingApproval,
            Default::default(),
        );
    }
    effects.push(
        run,
        What::ApprovalRequested {
            approval_id: approval.id,
            node_id: node_id.to_string(),
            agent: node.agent.name.clone(),
            action: node.action.clone(),
            expires_at: approval.expires_at,
        },
    );
    Ok(true)
}

/// A person's decision on an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Engine {
    /// Records a person's decision. Approving makes the node READY (its job) in the same
    /// transaction; rejecting fails the node (and skips what depends on it). Deciding twice is
    /// a conflict; the person who triggered the run may not decide on it.
    pub async fn approval_decide(
        &self,
        project_id: i64,
        approval_id: Uuid,
        decision: Decision,
        by: Option<&str>,
        actor: Option<&str>,
        comment: Option<&str>,
    ) -> Result<Approval> {
        let of = approvals::run_of(&self.pool, project_id, approval_id).await?;
        if let (Some(actor), Some(triggerer)) = (actor, of.triggered_by.as_deref())
            && actor == triggerer
        {
            return Err(Error::Forbidden(format!(
                "{actor} triggered this run and cannot decide on its approvals; another person must"
            )));
        }
        let who = by.or(actor);
        let event = match decision {
            Decision::Approve => ApprovalEvent::Approve,
            Decision::Reject => ApprovalEvent::Reject,
        };
        let reason = format!(
            "rejected by {}{}",
            who.unwrap_or("an unnamed reviewer"),
            comment.map(|c| format!(": {c}")).unwrap_or_default()
        );
        if !self
            .approval_close(of.run_id, approval_id, event, who, comment, &reason)
            .await?
        {
            let current = approvals::get(&self.pool, project_id, approval_id).await?;
            return Err(Error::conflict(format!(
                "the approval is already {}",
                current.status
            )));
        }
        approvals::get(&self.pool, project_id, approval_id).await
    }

    /// Closes a pending approval by `event` and applies it to its node: approved, the node is
    /// READY; rejected or expired, it fails with `failure`. Returns false when the request was
    /// no longer pending.
    pub async fn approval_close(
        &self,
        run_id: Uuid,
        approval_id: Uuid,
        event: ApprovalEvent,
        by: Option<&str>,
        comment: Option<&str>,
        failure: &str,
    ) -> Result<bool> {
        let mut change = Change::begin(self).await?;
        let (conn, effects) = change.parts();
        let Some(run) = runs::lock(&mut *conn, run_id).await? else {
            return Ok(false);
        };
        let run = run.run;
        let Some(approval) = approvals::decide(&mut *conn, approval_id, event, by, comment).await?
        else {
            return Ok(false);
        };
        effects.push(
            &run,
            What::ApprovalDecided {
                approval_id,
                node_id: approval.node_id.clone(),
                status: approval.status,
                decided_by: approval.decided_by.clone(),
                comment: approval.comment.clone(),
                waited: (Utc::now() - approval.requested_at)
                    .to_std()
                    .unwrap_or_default(),
            },
        );
        let node_id = &approval.node_id;
        match event {
            ApprovalEvent::Approve => {
                if nodes::approve(&mut *conn, run_id, node_id).await?.is_some() {
                    effects.node(&run, node_id, NodeEvent::Approve, NodeDetail::default());
                    effects.wake = true;
                }
            }
            ApprovalEvent::Reject | ApprovalEvent::Expire | ApprovalEvent::Cancel => {
                let (denial, node_event) = match event {
                    ApprovalEvent::Expire => (Denial::Expire, NodeEvent::Expire),
                    _ => (Denial::Reject, NodeEvent::Reject),
                };
                if nodes::deny(&mut *conn, run_id, node_id, denial, failure).await? {
                    effects.node(
                        &run,
                        node_id,
                        node_event,
                        NodeDetail {
                            error: Some(failure.to_string()),
                            ..NodeDetail::default()
                        },
                    );
                    let plan = runs::plan(&mut *conn, run_id).await?;
                    outcome::skip_descendants(&mut *conn, effects, &run, &plan, node_id).await?;
                }
            }
        }
        if runs::resume_if_no_approvals(&mut *conn, run_id).await? {
            effects.run(
                &run,
                Some(RunEvent::Resume),
                RunStatus::Running,
                Default::default(),
            );
        }
        outcome::finish_if_done(&mut *conn, effects, &run).await?;
        change.commit(self).await?;
        Ok(true)
    }
}
