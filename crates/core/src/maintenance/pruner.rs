//! The pruner deletes queue jobs that ended long ago. The engine's own tables keep the
//! history of every run; the queue's table only has to hold what may still be delivered, and
//! keeping it small keeps fetching from it fast.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::Result;
use crate::queue;
use crate::telemetry::names;

#[derive(Debug, Clone)]
pub struct PrunerConfig {
    pub interval: Duration,
    /// Ended jobs younger than this are kept (to look at while debugging).
    pub retention: Duration,
    /// Most jobs deleted per statement, so no pass holds many row locks at once.
    pub batch: i64,
}

/// Deletes ended jobs older than the retention, a batch at a time, until none are left.
/// Returns how many it deleted.
pub async fn run_once(pool: &PgPool, config: &PrunerConfig) -> Result<u64> {
    let mut total = 0;
    loop {
        let deleted = queue::prune_finished(pool, config.retention, config.batch).await?;
        total += deleted;
        if deleted < config.batch as u64 {
            break;
        }
    }
    if total > 0 {
        metrics::counter!(names::JOBS_PRUNED).increment(total);
    }
    Ok(total)
}

/// Runs [`run_once`] every `config.interval` until `stop` fires.
pub async fn run_loop(
    pool: PgPool,
    config: PrunerConfig,
    stop: tokio_util::sync::CancellationToken,
) {
    let (pool, config) = (&pool, &config);
    super::every(config.interval, stop, || async move {
        match run_once(pool, config).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned ended queue jobs"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning queue jobs failed; will try again"),
        }
    })
    .await
}
