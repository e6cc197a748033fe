//! Samples what only a look can tell: this process's CPU and memory, and (given a pool, in one
//! process per deployment: the API) the deployment's gauges read from the database: runs in
//! progress, the queue's depth by state, pending approvals, undelivered outbox jobs.

use std::time::Duration;

use orchestration_core::store::{deliveries, queue, runs};
use orchestration_core::telemetry::names;
use sqlx::PgPool;

/// Samples every `every` until the process ends.
pub fn spawn(pool: Option<PgPool>, every: Duration) -> tokio::task::JoinHandle<()> {
    let collector = metrics_process::Collector::default();
    collector.describe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            collector.collect();
            if let Some(pool) = &pool
                && let Err(e) = sample_database(pool).await
            {
                tracing::debug!(error = %e, "could not sample database gauges");
            }
        }
    })
}

async fn sample_database(pool: &PgPool) -> orchestration_core::Result<()> {
    let gauges = runs::gauges(pool).await?;
    metrics::gauge!(names::RUNS_IN_PROGRESS).set(gauges.runs_in_progress as f64);
    metrics::gauge!(names::APPROVALS_PENDING).set(gauges.approvals_pending as f64);
    for (state, n) in queue::depth(pool).await? {
        metrics::gauge!(names::QUEUE_DEPTH, "state" => state).set(n as f64);
    }
    let pending = deliveries::jobs_pending(pool).await?;
    for queue in [
        orchestration_core::outbox::EVENTS_QUEUE,
        orchestration_core::outbox::WEBHOOKS_QUEUE,
    ] {
        let n = pending
            .iter()
            .find(|(q, _)| q == queue)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!(names::OUTBOX_PENDING, "queue" => queue).set(n as f64);
    }
    Ok(())
}
