//! The rescuer finds what should not exist and repairs it:
//! - a RUNNING node whose lease expired (its worker died): the attempt is closed as FAILED
//!   ("worker lost") and the node's retry policy decides what comes next;
//! - a run whose nodes are all finished but which is not: it is finished;
//! - a pending approval past its deadline: it expires and its node fails;
//! - a running run in which nothing can move though nodes are PENDING: their readiness is
//!   recomputed from the plan.
//!
//! The repairs themselves are the engine's (`engine::repair`): the same transitions as every
//! other change, with their events. Each takes the run's row lock and re-checks the condition
//! under it, so two rescuers (or a rescuer and a worker) never repair the same thing twice.

use std::time::Duration;

use orchestration_core::Result;
use orchestration_core::engine::Engine;
use orchestration_core::store::{approvals, nodes, runs};
use orchestration_core::telemetry::names;

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

/// One pass: finds each kind of thing to repair and has the engine repair it.
pub async fn run_once(engine: &Engine, config: &RescuerConfig) -> Result<Repairs> {
    let pool = engine.pool();
    let mut repairs = Repairs::default();
    for lease in nodes::expired_leases(pool, config.batch).await? {
        if engine.rescue_expired_lease(&lease).await? {
            repairs.expired_leases += 1;
            count("expired_lease");
        }
    }
    for expired in approvals::expired(pool, config.batch).await? {
        if engine.expire_approval(&expired).await? {
            repairs.expired_approvals += 1;
            count("expired_approval");
        }
    }
    for run_id in runs::unfinalized(pool, config.batch).await? {
        if engine.finish_unfinalized(run_id).await? {
            repairs.unfinalized_runs += 1;
            count("unfinalized_run");
        }
    }
    let ready_after = config.ready_after.as_millis() as i64;
    for run_id in runs::stalled(pool, ready_after, config.batch).await? {
        if engine.unstall(run_id).await? {
            repairs.stalled_runs += 1;
            count("stalled_run");
        }
    }
    Ok(repairs)
}

fn count(kind: &'static str) {
    metrics::counter!(names::RESCUER_REPAIRS, "kind" => kind).increment(1);
}

/// Runs [`run_once`] every `config.interval` until `stop` fires.
pub async fn run_loop(
    engine: Engine,
    config: RescuerConfig,
    stop: tokio_util::sync::CancellationToken,
) {
    let (engine, config) = (&engine, &config);
    super::every(config.interval, stop, || async move {
        match run_once(engine, config).await {
            Ok(r) if r.total() > 0 => tracing::info!(repairs = ?r, "rescuer pass"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rescuer pass failed; will try again"),
        }
    })
    .await
}
