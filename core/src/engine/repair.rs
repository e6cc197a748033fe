//! What the rescuer repairs, each through the same transitions as everything else: an attempt
//! whose worker stopped renewing its lease fails as "worker lost" (and the node's retry policy
//! decides what comes next), a run whose nodes are all finished ends, a pending approval past
//! its deadline expires, and a run in which nothing can move though nodes wait releases (or
//! skips) them. Each repair takes the run's row lock and re-checks its condition under it, so
//! two rescuers, or a rescuer and a worker, never repair the same thing twice.

use std::collections::HashMap;

use uuid::Uuid;

use super::Engine;
use super::approval;
use super::attempt::{self, Attempt, AttemptEffect, Finished, NodeJob};
use super::change::Change;
use super::outcome;
use crate::domain::Outcome;
use crate::error::Result;
use crate::lifecycle::{ApprovalEvent, NodeEvent, NodeStatus};
use crate::store::approvals::Expired;
use crate::store::nodes::{self, ExpiredLease};
use crate::store::runs;

impl Engine {
    /// Fails the attempt of an expired lease as "worker lost"; false when the lease was
    /// renewed or the attempt closed meanwhile.
    pub async fn rescue_expired_lease(&self, lease: &ExpiredLease) -> Result<bool> {
        let mut change = Change::begin(self).await?;
        let (conn, effects) = change.parts();
        let Some(locked) = runs::lock(&mut *conn, lease.run_id).await? else {
            return Ok(false);
        };
        let Some(lease) =
            nodes::expired_lease_lock(&mut *conn, lease.run_id, &lease.node_id, lease.attempt)
                .await?
        else {
            return Ok(false);
        };
        let Some(to_run) = nodes::to_run(&mut *conn, lease.run_id, &lease.node_id).await? else {
            return Ok(false);
        };
        let holder = lease.locked_by.as_deref().unwrap_or("unknown");
        let job = NodeJob {
            run_id: lease.run_id,
            node_id: lease.node_id.clone(),
            attempt: lease.attempt,
            traceparent: None,
        };
        let lost = Finished {
            outcome: Outcome::failed(
                format!("worker lost: {holder} stopped renewing its lease on this attempt"),
                true,
                None,
            ),
            elapsed: None,
        };
        let attempt = Attempt {
            job: &job,
            run: &locked.run,
            node: &to_run.node,
            attempt_base: lease.attempt_base,
        };
        let recorded = attempt::record_locked(&mut *conn, effects, &attempt, &lost, None).await?;
        if recorded.effect == AttemptEffect::Stale {
            change.rollback().await?;
            return Ok(false);
        }
        change.commit(self).await?;
        tracing::warn!(
            run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt, worker = holder,
            effect = ?recorded.effect, "rescuer took back a node from a lost worker"
        );
        Ok(true)
    }

    /// Ends an active run whose nodes are all finished; false when it was not (or no longer).
    pub async fn finish_unfinalized(&self, run_id: Uuid) -> Result<bool> {
        let mut change = Change::begin(self).await?;
        let (conn, effects) = change.parts();
        let Some(locked) = runs::lock(&mut *conn, run_id).await? else {
            return Ok(false);
        };
        let ended = outcome::finish_if_done(&mut *conn, effects, &locked.run).await?;
        change.commit(self).await?;
        if let Some(ended) = &ended {
            tracing::warn!(run_id = %run_id, status = %ended.status, "rescuer finished a run whose nodes were all done");
        }
        Ok(ended.is_some())
    }

    /// Expires a pending approval past its deadline: its node fails.
    pub async fn expire_approval(&self, expired: &Expired) -> Result<bool> {
        let reason = format!(
            "approval expired at {} without a decision",
            expired.expires_at
        );
        self.approval_close(
            expired.run_id,
            expired.id,
            ApprovalEvent::Expire,
            None,
            None,
            &reason,
        )
        .await
    }

    /// Moves a run in which nothing is READY, RUNNING or waiting for approval, yet nodes are
    /// PENDING: those whose dependencies all completed are released, those behind a node that
    /// did not complete are skipped. Whether anything moved.
    pub async fn unstall(&self, run_id: Uuid) -> Result<bool> {
        let mut change = Change::begin(self).await?;
        let (conn, effects) = change.parts();
        let Some(locked) = runs::lock(&mut *conn, run_id).await? else {
            return Ok(false);
        };
        let run = &locked.run;
        let plan = runs::plan(&mut *conn, run_id).await?;
        let states: HashMap<String, NodeStatus> = nodes::statuses_lock(&mut *conn, run_id)
            .await?
            .into_iter()
            .collect();
        let moving = states.values().any(|s| {
            matches!(
                s,
                NodeStatus::Ready | NodeStatus::Running | NodeStatus::WaitingApproval
            )
        });
        if moving {
            return Ok(false);
        }
        let mut ready = Vec::new();
        let mut skip = Vec::new();
        for (id, status) in &states {
            if *status != NodeStatus::Pending {
                continue;
            }
            let Some(node) = plan.nodes.get(id) else {
                continue;
            };
            let dependencies: Vec<NodeStatus> = node
                .depends_on
                .iter()
                .filter_map(|d| states.get(d).copied())
                .collect();
            if dependencies.iter().all(|s| *s == NodeStatus::Completed) {
                ready.push(id.clone());
            } else if dependencies
                .iter()
                .any(|s| !s.is_open() && *s != NodeStatus::Completed)
            {
                skip.push(id.clone());
            }
        }
        ready.sort();
        let mut released = Vec::new();
        for id in &ready {
            if nodes::release(&mut *conn, run_id, id).await? {
                released.push(id.clone());
            }
        }
        effects.nodes(run, &released, NodeEvent::Release);
        let skipped = nodes::skip_many(
            &mut *conn,
            run_id,
            &skip,
            "skipped: an upstream node did not complete",
        )
        .await?;
        effects.nodes(run, &skipped, NodeEvent::Skip);
        approval::dispatch_ready(&mut *conn, effects, run, &released, &plan).await?;
        outcome::finish_if_done(&mut *conn, effects, run).await?;
        change.commit(self).await?;
        let repaired = !released.is_empty() || !skipped.is_empty();
        if repaired {
            tracing::warn!(run_id = %run_id, ready = ?released, skipped = ?skipped, "rescuer moved a stalled run");
        }
        Ok(repaired)
    }
}
