//! Run control: cancel a run that is still going, retry a failed or cancelled one from where
//! it stopped.

use serde_json::Value;
use uuid::Uuid;

use super::Engine;
use super::approval;
use super::change::Change;
use super::outcome;
use crate::effects::{NodeDetail, What};
use crate::error::{Error, Invalid, Result};
use crate::lifecycle::{NodeEvent, NodeStatus, RunEvent, RunStatus};
use crate::store::runs::{self, Ending, Run};
use crate::store::{approvals, attempts, nodes};

impl Engine {
    /// Cancels a run that is still going: its pending approvals and open nodes are CANCELLED
    /// and open attempts closed, so no node starts any more and workers stop the agents they
    /// run (they notice at their next lease renewal).
    pub async fn run_cancel(&self, project_id: i64, run_id: Uuid, reason: &str) -> Result<Run> {
        let mut change = Change::begin(self).await?;
        let (conn, effects) = change.parts();
        let locked = runs::lock_in_project(&mut *conn, project_id, run_id).await?;
        if locked.status.is_terminal() {
            return Err(Error::conflict(format!(
                "the run is already {}",
                locked.status
            )));
        }
        let run = &locked.run;
        for approval in approvals::cancel_pending(&mut *conn, run_id, reason).await? {
            effects.push(
                run,
                What::ApprovalDecided {
                    approval_id: approval.id,
                    node_id: approval.node_id,
                    status: approval.status,
                    decided_by: None,
                    comment: approval.comment,
                    waited: (chrono::Utc::now() - approval.requested_at)
                        .to_std()
                        .unwrap_or_default(),
                },
            );
        }
        let cancelled = nodes::cancel_open(&mut *conn, run_id, reason).await?;
        effects.nodes(run, &cancelled, NodeEvent::Cancel);
        // After the nodes: their update waits for a claim in flight to commit, so this sees
        // the attempt row that claim wrote and closes it too.
        attempts::abandon_open(&mut *conn, run_id, reason).await?;
        if let Some(ended) = runs::finish(&mut *conn, run_id, Ending::Cancel, Some(reason)).await? {
            outcome::run_ended(effects, run, &ended);
        }
        let cancelled_run = runs::find(&mut *conn, run_id).await?;
        change.commit(self).await?;
        Ok(cancelled_run)
    }

    /// Runs a FAILED or CANCELLED run again from where it stopped: COMPLETED nodes keep their
    /// outputs; every other node gets a fresh generation of attempts, READY when its
    /// dependencies are completed and PENDING on them otherwise.
    pub async fn run_retry(
        &self,
        project_id: i64,
        run_id: Uuid,
        context_patch: Option<Value>,
    ) -> Result<Run> {
        if context_patch.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(Invalid::new("context must be a JSON object").into());
        }
        let mut change = Change::begin(self).await?;
        let (conn, effects) = change.parts();
        let locked = runs::lock_in_project(&mut *conn, project_id, run_id).await?;
        if !matches!(locked.status, RunStatus::Failed | RunStatus::Cancelled) {
            return Err(Error::conflict(format!(
                "only a FAILED or CANCELLED run can be retried; this one is {}",
                locked.status
            )));
        }
        let run = &locked.run;
        let plan = runs::plan(&mut *conn, run_id).await?;
        let states = nodes::statuses_lock(&mut *conn, run_id).await?;
        let completed: std::collections::HashSet<&str> = states
            .iter()
            .filter(|(_, s)| *s == NodeStatus::Completed)
            .map(|(id, _)| id.as_str())
            .collect();
        let mut ready = Vec::new();
        for (node_id, status) in &states {
            if *status == NodeStatus::Completed {
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
            if nodes::reset_for_retry(&mut *conn, run_id, node_id, pending).await? {
                let event = if pending == 0 {
                    NodeEvent::ResetReady
                } else {
                    NodeEvent::ResetPending
                };
                effects.node(run, node_id, event, NodeDetail::default());
            }
            if pending == 0 {
                ready.push(node_id.clone());
            }
        }
        if runs::restart(&mut *conn, run_id, context_patch.as_ref())
            .await?
            .is_some()
        {
            effects.run(
                run,
                Some(RunEvent::Retry),
                RunStatus::Running,
                Default::default(),
            );
        }
        approval::dispatch_ready(&mut *conn, effects, run, &ready, &plan).await?;
        let retried = runs::find(&mut *conn, run_id).await?;
        change.commit(self).await?;
        Ok(retried)
    }
}
