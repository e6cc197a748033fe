//! The job queue, behind one small interface so it can be swapped: apalis 1.0 with
//! apalis-postgres. A job names one attempt of one node; our own tables stay the source of truth,
//! and a job that no longer matches them is a no-op (delivery is at least once).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::Result;

/// The apalis queue (its `job_type`) that carries node attempts.
pub const NODE_QUEUE: &str = "orchestration.node";

/// One attempt of one node of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeJob {
    pub run_id: Uuid,
    pub node_id: String,
    pub attempt: i32,
    /// The run's trace, so the node's span joins it wherever it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl NodeJob {
    /// Unique per attempt: the queue refuses a second job for the same attempt.
    fn idempotency_key(&self) -> String {
        format!("{}/{}/{}", self.run_id, self.node_id, self.attempt)
    }
}

/// A job and the earliest time it may run (`None`: now).
pub type Scheduled = (NodeJob, Option<SystemTime>);

/// Creates the queue's schema (tables in schema `apalis`).
pub async fn setup(pool: &PgPool) -> Result<()> {
    PostgresStorage::setup(pool).await?;
    Ok(())
}

/// Enqueues inside the caller's transaction, so a job exists exactly when the state change
/// that made it ready commits.
pub async fn enqueue(conn: &mut PgConnection, jobs: Vec<Scheduled>) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let tasks = jobs
        .into_iter()
        .map(|(job, at)| {
            let key = job.idempotency_key();
            let bytes = serde_json::to_vec(&job).expect("NodeJob serializes");
            let mut builder = TaskBuilder::new(bytes)
                .idempotency_key(key)
                // Queue-level retries only cover infrastructure errors in the handler; the
                // node's own retry policy lives in our tables.
                .max_attempts(25);
            if let Some(at) = at {
                builder = builder.run_at_time(at);
            }
            builder.build()
        })
        .collect();
    apalis_postgres::queries::push_tasks(conn, NODE_QUEUE, tasks).await?;
    Ok(())
}

/// Makes sure each of `jobs` has a job that will be delivered: a job that is pending, held by
/// a worker seen within `stale_after`, or failed with queue retries left counts as live; any
/// other (finished, exhausted, abandoned, missing) is put back to pending or created. A job that
/// turns out to be delivered twice is harmless: the engine ignores a stale attempt. Returns how
/// many jobs were revived or created.
pub async fn ensure_live(
    conn: &mut PgConnection,
    jobs: Vec<NodeJob>,
    stale_after: Duration,
) -> Result<u64> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let keys: Vec<String> = jobs.iter().map(NodeJob::idempotency_key).collect();
    let existing: Vec<(String, bool)> = sqlx::query_as(
        "SELECT idempotency_key,
                status = 'Pending'
                OR (status IN ('Queued', 'Running') AND lock_at > now() - make_interval(secs => $3))
                OR (status = 'Failed' AND attempts < max_attempts) AS live
         FROM apalis.jobs WHERE job_type = $1 AND idempotency_key = ANY($2)",
    )
    .bind(NODE_QUEUE)
    .bind(&keys)
    .bind(stale_after.as_secs_f64())
    .fetch_all(&mut *conn)
    .await?;
    let dead: Vec<String> = existing
        .iter()
        .filter(|(_, live)| !live)
        .map(|(k, _)| k.clone())
        .collect();
    let mut repaired = 0;
    if !dead.is_empty() {
        repaired += sqlx::query(
            "UPDATE apalis.jobs SET status = 'Pending', run_at = now(), lock_by = NULL, lock_at = NULL,
                    done_at = NULL, attempts = 0
             WHERE job_type = $1 AND idempotency_key = ANY($2)",
        )
        .bind(NODE_QUEUE)
        .bind(&dead)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    let missing: Vec<Scheduled> = jobs
        .into_iter()
        .filter(|j| {
            let key = j.idempotency_key();
            !existing.iter().any(|(k, _)| *k == key)
        })
        .map(|j| (j, None))
        .collect();
    repaired += missing.len() as u64;
    enqueue(conn, missing).await?;
    Ok(repaired)
}

/// Deletes up to `limit` jobs that ended (done, killed, or failed with no queue retries left)
/// more than `older_than` ago, and returns how many. Our own tables keep every attempt; the
/// queue needs only live jobs, and without this its table and indexes grow with every node
/// ever run, which slows every fetch. A job deleted here is one the engine never needs again:
/// [`ensure_live`] creates a job afresh when a repair calls for one.
pub async fn prune_finished(pool: &PgPool, older_than: Duration, limit: i64) -> Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM apalis.jobs WHERE id IN (
             SELECT id FROM apalis.jobs
             WHERE job_type = $1
               AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))
               AND coalesce(done_at, lock_at, run_at) < now() - make_interval(secs => $2)
             LIMIT $3
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(NODE_QUEUE)
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// Jobs by state: `pending` (due, waiting for a worker), `scheduled` (a retry waiting out its
/// backoff), `running` (held by a worker).
pub async fn depth(pool: &PgPool) -> Result<Vec<(&'static str, i64)>> {
    let row: (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'Pending' AND run_at <= now()),
                count(*) FILTER (WHERE status = 'Pending' AND run_at > now()),
                count(*) FILTER (WHERE status IN ('Queued', 'Running'))
         FROM apalis.jobs WHERE job_type = $1 AND status IN ('Pending', 'Queued', 'Running')",
    )
    .bind(NODE_QUEUE)
    .fetch_one(pool)
    .await?;
    Ok(vec![
        ("pending", row.0),
        ("scheduled", row.1),
        ("running", row.2),
    ])
}

/// Handles one job. Returning an error asks the queue to deliver it again.
pub trait JobHandler: Send + Sync + 'static {
    fn handle(&self, job: NodeJob) -> BoxFuture<'_, Result<(), BoxDynError>>;
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Unique per process: the queue tracks liveness per worker name.
    pub worker_name: String,
    pub concurrency: usize,
    /// Fallback poll for jobs whose run time lies in the future (retries with backoff);
    /// new jobs wake the worker at once through LISTEN/NOTIFY.
    pub poll_interval: Duration,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// How long in-flight jobs may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

async fn run_job(job: NodeJob, handler: Data<Arc<dyn JobHandler>>) -> Result<(), BoxDynError> {
    handler.handle(job).await
}

/// Consumes node jobs until `shutdown` resolves. The monitor restarts the worker after a
/// database error instead of letting it stop for good.
pub async fn consume(
    pool: PgPool,
    config: ConsumerConfig,
    handler: Arc<dyn JobHandler>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxDynError> {
    let storage_config = Config::default()
        .queue(NODE_QUEUE)
        .batch_size(config.concurrency.max(1))
        .heartbeat_interval(config.heartbeat)
        .missed_heartbeats(config.missed_heartbeats)
        .persist_results(true);
    let cfg = config.clone();
    let monitor = Monitor::new()
        .should_restart(|ctx, err| {
            tracing::warn!(worker = ctx.name(), error = %err, "queue worker stopped, restarting");
            true
        })
        .shutdown_timeout(config.shutdown_grace)
        .register(move |restarts| {
            if restarts > 0 {
                tracing::info!(restarts, "queue worker restarting");
            }
            let strategy = apalis_core_strategy(&pool, &cfg);
            let storage = PostgresStorage::<NodeJob>::new(&pool)
                .with_config(storage_config.clone())
                .poll_with_strategy(strategy);
            WorkerBuilder::new(cfg.worker_name.as_str())
                .backend(storage)
                .concurrency(cfg.concurrency.max(1))
                .data(handler.clone())
                .parallelize(tokio::spawn)
                .build(run_job)
        });
    monitor
        .run_with_signal(async move {
            shutdown.await;
            Ok(())
        })
        .await?;
    Ok(())
}

fn apalis_core_strategy(pool: &PgPool, cfg: &ConsumerConfig) -> Strategy {
    Strategy::new()
        .stream(apalis_postgres::Pubsub::new(
            pool.clone(),
            NODE_QUEUE.to_string(),
        ))
        .interval(cfg.poll_interval)
}
