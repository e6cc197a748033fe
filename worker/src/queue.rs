//! The job queue. A job is a READY node whose `ready_at` has come (`store::queue` of the core
//! library): workers take
//! batches of them with `FOR UPDATE SKIP LOCKED`, are woken by LISTEN/NOTIFY when a node becomes
//! READY, and poll for nodes whose retry backoff runs out. Keeping the queue in the engine's own
//! table means making a node READY and creating its job are the same write, and taking the
//! job, moving the node to RUNNING and opening its attempt are one statement.
//!
//! (Until December 2026 this was apalis-postgres. Its separate job table cost an insert, a
//! fetch through a SQL function PostgreSQL re-plans at every call, and a done-mark per node on
//! top of the engine's own writes, and it could lose or duplicate a job relative to the node;
//! see BENCHMARKS.md.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use orchestration_core::Result;
use orchestration_core::store::READY_CHANNEL;

/// What the queue needs from a worker: a way to take due jobs, and a way to run one.
pub trait Consumer: Send + Sync + 'static {
    type Job: Send + 'static;
    /// Takes up to `limit` due jobs; none when nothing is due.
    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Self::Job>>>;
    /// Runs a job to its end. Failures are the consumer's to record: a job it drops stays
    /// RUNNING until its lease runs out and the rescuer takes it back.
    fn run(self: Arc<Self>, job: Self::Job) -> BoxFuture<'static, ()>;
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub concurrency: usize,
    /// How often an idle worker looks for jobs that became due without a notification
    /// (retries whose backoff ran out, notifications missed while reconnecting).
    pub poll_interval: Duration,
    /// The least time between two claims a notification wakes. Under load every trigger
    /// notifies every worker, and a claim per notification takes one node at best (the other
    /// workers find none); waiting this long after the last claim lets the nodes of several
    /// notifications go in one claim. An idle worker, whose last claim is older, claims at once.
    pub claim_gap: Duration,
    /// How long in-flight jobs may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

/// Takes and runs jobs, at most `concurrency` at once, until `shutdown` resolves; then waits
/// up to the grace period for the running ones. The free slots are filled by one claim
/// statement, so a worker that frees several slots at once takes a batch. After a claim that
/// found fewer jobs than it asked for, the queue was empty: the next claim waits for a
/// notification (or the poll interval) instead of asking again as soon as a slot frees.
pub async fn consume<C: Consumer>(
    pool: PgPool,
    config: ConsumerConfig,
    consumer: Arc<C>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let stop = CancellationToken::new();
    let on_shutdown = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        })
    };
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    // Listen before the first claim, so a node made READY in between still wakes us.
    let mut wakeups = Wakeups::connect(pool).await;
    let mut running = JoinSet::new();
    let mut drained = false;
    let mut last_claim = tokio::time::Instant::now() - config.claim_gap;
    loop {
        while running.try_join_next().is_some() {}
        if drained {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = wakeups.wait(config.poll_interval) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(last_claim + config.claim_gap) => {}
            }
            wakeups.drain();
        }
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let asked = permits.len();
        last_claim = tokio::time::Instant::now();
        let jobs = match consumer.claim(asked).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "taking jobs failed; trying again");
                drop(permits);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(config.poll_interval) => continue,
                }
            }
        };
        drained = jobs.len() < asked;
        for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
            let consumer = consumer.clone();
            running.spawn(async move {
                consumer.run(job).await;
                drop(permit);
            });
        }
        drop(permits);
    }
    let finished = tokio::time::timeout(config.shutdown_grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            left = running.len(),
            "attempts still running after the shutdown grace period; their leases will expire"
        );
        running.abort_all();
    }
    on_shutdown.abort();
}

/// Notifications that a node became READY, on a connection of its own.
struct Wakeups {
    pool: PgPool,
    listener: Option<PgListener>,
}

impl Wakeups {
    async fn connect(pool: PgPool) -> Wakeups {
        let mut wakeups = Wakeups {
            pool,
            listener: None,
        };
        wakeups.listener = wakeups.listen().await;
        wakeups
    }

    async fn listen(&self) -> Option<PgListener> {
        let attempt = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(READY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match attempt.await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new jobs; polling until it can");
                None
            }
        }
    }

    /// Forgets the notifications that have arrived, read or still in the socket: the claim
    /// about to be made serves them all.
    fn drain(&mut self) {
        let Some(listener) = self.listener.as_mut() else {
            return;
        };
        loop {
            match listener.recv().now_or_never() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return self.lost(e),
                None => return,
            }
        }
    }

    /// Drops a broken listening connection; the next wait sleeps and listens anew.
    fn lost(&mut self, e: sqlx::Error) {
        tracing::warn!(error = %e, "lost the notification connection; reconnecting");
        self.listener = None;
    }

    /// Returns when a node became READY, or after `timeout` at the latest.
    async fn wait(&mut self, timeout: Duration) {
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(timeout).await;
            self.listener = self.listen().await;
            return;
        };
        match tokio::time::timeout(timeout, listener.recv()).await {
            Ok(Ok(_)) => self.drain(),
            Ok(Err(e)) => self.lost(e),
            Err(_) => {}
        }
    }
}
