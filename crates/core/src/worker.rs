//! The worker: takes node jobs from the queue, claims the node, runs its agent, and records
//! the result. Used by the `orchestration-worker` binary and by the API's embedded workers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::BoxDynError;
use futures::future::BoxFuture;
use sqlx::PgPool;
use tracing::Instrument;

use crate::config::WorkerArgs;
use crate::engine::{self, AttemptEffect, AttemptResult, Claimed};
use crate::executor::{Executor, Invocation, Outcome};
use crate::queue::{self, ConsumerConfig, JobHandler, NodeJob};
use crate::telemetry::names;

/// A process-unique worker name: the queue tracks liveness per name.
pub fn unique_name(prefix: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{host}-{}-{}", std::process::id(), &id[..8])
}

pub struct NodeRunner {
    pool: PgPool,
    executor: Executor,
    name: String,
}

impl NodeRunner {
    pub fn new(pool: PgPool, executor: Executor, name: String) -> Self {
        Self {
            pool,
            executor,
            name,
        }
    }

    /// Runs one job to its end. Stale jobs return at once; database errors are returned so the
    /// queue delivers the job again.
    pub async fn run_job(&self, job: NodeJob) -> crate::error::Result<()> {
        let span = tracing::info_span!("node.execute", run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt);
        self.run_job_inner(job).instrument(span).await
    }

    async fn run_job_inner(&self, job: NodeJob) -> crate::error::Result<()> {
        let Some(claimed) = engine::node_claim(&self.pool, &job, &self.name).await? else {
            tracing::debug!(run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt, "stale job, nothing to do");
            return Ok(());
        };
        metrics::histogram!(names::QUEUE_WAIT).record(claimed.queue_wait.as_secs_f64());
        let started = Instant::now();
        let result = self.execute(&claimed).await;
        let elapsed = started.elapsed();
        let agent = claimed.node.agent.name.clone();
        let action = claimed.node.action.clone();
        metrics::histogram!(names::AGENT_RUN_DURATION, "agent" => agent.clone(), "action" => action.clone())
            .record(elapsed.as_secs_f64());
        let status = match &result {
            AttemptResult::Succeeded { .. } => "COMPLETED",
            AttemptResult::Failed { .. } => "FAILED",
        };
        metrics::counter!(names::NODE_EXECUTIONS, "agent" => agent.clone(), "action" => action, "status" => status)
            .increment(1);

        let recorded = self.record_with_retry(&claimed, &result).await?;
        match &recorded.effect {
            AttemptEffect::Stale => tracing::info!(
                run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt,
                "attempt result discarded: the attempt was closed by someone else"
            ),
            AttemptEffect::Completed { released } => tracing::info!(
                run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt,
                duration_ms = elapsed.as_millis() as u64, released = ?released, "node completed"
            ),
            AttemptEffect::RetryScheduled {
                next_attempt,
                delay,
            } => {
                metrics::counter!(names::NODE_RETRIES, "agent" => agent).increment(1);
                tracing::warn!(
                    run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt,
                    next_attempt, delay_ms = delay.as_millis() as u64,
                    error = result_error(&result), "attempt failed, retry scheduled"
                )
            }
            AttemptEffect::FailedForGood { skipped } => tracing::warn!(
                run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt, skipped,
                error = result_error(&result), "node failed"
            ),
        }
        if let Some((status, duration)) = recorded.run_finished {
            tracing::info!(run_id = %job.run_id, status = %status, duration_ms = duration.as_millis() as u64, "run finished");
            metrics::counter!(names::RUNS_FINISHED, "status" => status.as_str()).increment(1);
            metrics::histogram!(names::RUN_DURATION, "status" => status.as_str())
                .record(duration.as_secs_f64());
        }
        Ok(())
    }

    async fn execute(&self, claimed: &Claimed) -> AttemptResult {
        let inputs = match &claimed.inputs {
            Ok(inputs) => inputs,
            // A template that cannot render will not render on a second try either.
            Err(error) => {
                return AttemptResult::Failed {
                    error: error.clone(),
                    retryable: false,
                    exit_code: None,
                };
            }
        };
        let document = claimed.document(inputs);
        let env = vec![
            ("ORCH_RUN_ID".to_string(), claimed.job.run_id.to_string()),
            (
                "ORCH_WORKFLOW_ID".to_string(),
                claimed.workflow_id.to_string(),
            ),
            ("ORCH_NODE_ID".to_string(), claimed.job.node_id.clone()),
            ("ORCH_ATTEMPT".to_string(), claimed.job.attempt.to_string()),
        ];
        let outcome = self
            .executor
            .run(Invocation {
                agent: &claimed.node.agent,
                document: &document,
                timeout: Duration::from_secs(claimed.node.timeout_seconds as u64),
                env,
            })
            .await;
        match outcome {
            Outcome::Success { output, exit_code } => {
                AttemptResult::Succeeded { output, exit_code }
            }
            Outcome::Failure {
                error,
                retryable,
                exit_code,
            } => AttemptResult::Failed {
                error,
                retryable,
                exit_code,
            },
        }
    }

    /// The agent's work is done and must not be lost to a short database outage: keep trying
    /// to record it for a while before handing the job back to the queue.
    async fn record_with_retry(
        &self,
        claimed: &Claimed,
        result: &AttemptResult,
    ) -> crate::error::Result<engine::Recorded> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut delay = Duration::from_millis(100);
        loop {
            match engine::attempt_record(&self.pool, claimed, result).await {
                Ok(r) => return Ok(r),
                Err(crate::error::Error::Database(e))
                    if (crate::db::is_transient(&e) || is_serialization(&e))
                        && Instant::now() < deadline =>
                {
                    tracing::warn!(run_id = %claimed.job.run_id, node_id = %claimed.job.node_id, error = %e, "recording attempt failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_serialization(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001") | Some("40P01")))
}

fn result_error(result: &AttemptResult) -> &str {
    match result {
        AttemptResult::Failed { error, .. } => error,
        AttemptResult::Succeeded { .. } => "",
    }
}

impl JobHandler for NodeRunner {
    fn handle(&self, job: NodeJob) -> BoxFuture<'_, Result<(), BoxDynError>> {
        Box::pin(async move {
            self.run_job(job.clone()).await.map_err(|e| {
                tracing::error!(run_id = %job.run_id, node_id = %job.node_id, attempt = job.attempt, error = %e, "job failed, the queue will deliver it again");
                Box::new(e) as BoxDynError
            })
        })
    }
}

/// Runs a worker until `shutdown` resolves and in-flight attempts finish (or the grace
/// period ends).
pub async fn run(
    pool: PgPool,
    args: &WorkerArgs,
    name: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxDynError> {
    let agents_dir =
        std::fs::canonicalize(&args.agents_dir).unwrap_or_else(|_| args.agents_dir.clone());
    let runner = NodeRunner::new(pool.clone(), Executor::new(agents_dir), name.clone());
    tracing::info!(worker = %name, concurrency = args.worker_concurrency, "worker started");
    let config = ConsumerConfig {
        worker_name: name,
        concurrency: args.worker_concurrency as usize,
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        missed_heartbeats: args.missed_heartbeats as usize,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
    };
    queue::consume(pool, config, Arc::new(runner), shutdown).await
}
