//! The rescuer finds what should not exist and repairs it:
//! - a RUNNING node whose lease expired (its worker died): the attempt is closed as FAILED
//!   ("worker lost") and the node's retry policy decides what comes next;
//! - a run whose nodes are all finished but which is not: it is finished;
//! - a pending approval past its deadline: it expires and its node fails;
//! - a running run in which nothing can move though nodes are PENDING: their readiness is
//!   recomputed from the plan.
//!
//! Every repair takes the run's row lock and re-checks the condition under it, so two rescuers
//! (or a rescuer and a worker) never repair the same thing twice.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{ApprovalStatus, NodeStatus};
use crate::engine::{self, AttemptResult};
use crate::error::Result;
use crate::queue::NodeJob;
use crate::store::{approvals, nodes, runs};
use crate::telemetry::names;

#[derive(Debug, Clone)]
pub struct RescuerConfig {
    pub interval: Duration,
    /// A run in which nothing has moved for this long has its readiness recomputed.
    pub ready_after: Duration,
    /// Most repairs of each kind per pass, so one pass stays short.
    pub batch: i64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repairs {
    pub expired_leases: u64,
    pub unfinalized_runs: u64,
    pub stalled_runs: u64,
    pub expired_approvals: u64,
}

impl Repairs {
    pub fn total(&self) -> u64 {
        self.expired_leases + self.unfinalized_runs + self.stalled_runs + self.expired_approvals
    }
}

pub async fn run_once(pool: &PgPool, config: &RescuerConfig) -> Result<Repairs> {
    let mut repairs = Repairs::default();
    for lease in nodes::node_expired_leases(pool, config.batch).await? {
        if rescue_expired_lease(pool, &lease).await? {
            repairs.expired_leases += 1;
            count("expired_lease");
        }
    }
    for (id, run_id, expired_at) in approvals::approval_expired(pool, config.batch).await? {
        let reason = format!("approval expired at {expired_at} without a decision");
        let decided = engine::approval_close(
            pool,
            run_id,
            id,
            ApprovalStatus::Expired,
            None,
            None,
            &reason,
        )
        .await?;
        if decided {
            repairs.expired_approvals += 1;
            count("expired_approval");
        }
    }
    for run_id in runs::run_unfinalized(pool, config.batch).await? {
        if finish_run(pool, run_id).await? {
            repairs.unfinalized_runs += 1;
            count("unfinalized_run");
        }
    }
    for run_id in
        runs::run_stalled(pool, config.ready_after.as_millis() as i64, config.batch).await?
    {
        if unstall_run(pool, run_id).await? {
            repairs.stalled_runs += 1;
            count("stalled_run");
        }
    }
    Ok(repairs)
}

fn count(kind: &'static str) {
    metrics::counter!(names::RESCUER_REPAIRS, "kind" => kind).increment(1);
}

async fn rescue_expired_lease(pool: &PgPool, lease: &nodes::ExpiredLease) -> Result<bool> {
    let mut tx = pool.begin().await?;
    runs::run_lock(&mut tx, lease.run_id).await?;
    let Some(lease) =
        nodes::node_expired_lease_lock(&mut tx, lease.run_id, &lease.node_id, lease.attempt)
            .await?
    else {
        return Ok(false);
    };
    let Some(node) = nodes::node_to_run(&mut *tx, lease.run_id, &lease.node_id)
        .await?
        .map(|r| r.node)
    else {
        return Ok(false);
    };
    let holder = lease.locked_by.as_deref().unwrap_or("unknown");
    let job = NodeJob {
        run_id: lease.run_id,
        node_id: lease.node_id.clone(),
        attempt: lease.attempt,
        traceparent: None,
    };
    let result = AttemptResult::Failed {
        error: format!("worker lost: {holder} stopped renewing its lease on this attempt"),
        retryable: true,
        exit_code: None,
    };
    let recorded =
        engine::attempt_record_locked(&mut tx, &job, &node, lease.attempt_base, &result, None)
            .await?;
    tx.commit().await?;
    recorded.run_finished.iter().for_each(runs::RunEnded::count);
    tracing::warn!(
        run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt, worker = holder,
        effect = ?recorded.effect, "rescuer took back a node from a lost worker"
    );
    Ok(true)
}

async fn finish_run(pool: &PgPool, run_id: Uuid) -> Result<bool> {
    let mut tx = pool.begin().await?;
    runs::run_lock(&mut tx, run_id).await?;
    let finished = engine::run_finish_if_done(&mut tx, run_id).await?;
    tx.commit().await?;
    if let Some(ended) = &finished {
        ended.count();
        tracing::warn!(run_id = %run_id, status = %ended.status, "rescuer finished a run whose nodes were all done");
    }
    Ok(finished.is_some())
}

async fn unstall_run(pool: &PgPool, run_id: Uuid) -> Result<bool> {
    let mut tx = pool.begin().await?;
    runs::run_lock(&mut tx, run_id).await?;
    let plan = runs::run_plan(&mut *tx, run_id).await?;
    let states: HashMap<String, (NodeStatus, i32)> = nodes::node_statuses_lock(&mut tx, run_id)
        .await?
        .into_iter()
        .filter_map(|(id, s, attempts)| NodeStatus::parse(&s).map(|s| (id, (s, attempts))))
        .collect();
    let moving = states.values().any(|(s, _)| {
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
    for (id, (status, attempts)) in &states {
        if *status != NodeStatus::Pending {
            continue;
        }
        let Some(node) = plan.nodes.get(id) else {
            continue;
        };
        let dep_status: Vec<NodeStatus> = node
            .depends_on
            .iter()
            .filter_map(|d| states.get(d).map(|(s, _)| *s))
            .collect();
        if dep_status.iter().all(|s| *s == NodeStatus::Completed) {
            ready.push((id.clone(), *attempts));
        } else if dep_status.iter().any(|s| {
            matches!(
                s,
                NodeStatus::Failed | NodeStatus::Skipped | NodeStatus::Cancelled
            )
        }) {
            skip.push(id.clone());
        }
    }
    for (id, _) in &ready {
        nodes::node_set_ready(&mut *tx, run_id, id).await?;
    }
    nodes::node_skip_many(
        &mut *tx,
        run_id,
        &skip,
        "skipped: an upstream node did not complete",
    )
    .await?;
    let dispatch = ready.iter().map(|(id, _)| id.clone()).collect();
    engine::dispatch_ready(&mut tx, run_id, dispatch, Some(&plan)).await?;
    let ended = engine::run_finish_if_done(&mut tx, run_id).await?;
    tx.commit().await?;
    ended.iter().for_each(runs::RunEnded::count);
    let repaired = !ready.is_empty() || !skip.is_empty();
    if repaired {
        tracing::warn!(run_id = %run_id, ready = ?ready, skipped = ?skip, "rescuer moved a stalled run");
    }
    Ok(repaired)
}

/// Runs [`run_once`] every `config.interval` until `stop` fires.
pub async fn run_loop(
    pool: PgPool,
    config: RescuerConfig,
    stop: tokio_util::sync::CancellationToken,
) {
    let (pool, config) = (&pool, &config);
    super::every(config.interval, stop, || async move {
        match run_once(pool, config).await {
            Ok(r) if r.total() > 0 => tracing::info!(repairs = ?r, "rescuer pass"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rescuer pass failed; will try again"),
        }
    })
    .await
}
