//! The outbox's deliverers: apalis workers that take the jobs `outbox` wrote in the changes'
//! own transactions and deliver them, with retries and backoff, until they succeed.
//!
//! - `orchestration.events` (one job per change): published to NATS JetStream (each event with
//!   `Nats-Msg-Id` = its id, counted delivered only once the stream acknowledged it, so a
//!   batch retried after a partial publish adds no duplicate), then fanned out into one
//!   `orchestration.webhooks` job per matching subscription and event.
//! - `orchestration.webhooks`: one signed POST per job (see `webhook`); its attempts and last
//!   error are what `GET /api/subscriptions/{id}/deliveries` lists.
//!
//! apalis fetches a failed job again at once, so a failing handler first puts its job's next
//! attempt off (`store::deliveries::job_delay`). A deliverer whose database connection fails
//! stops for good, so each runs under a supervisor that starts a fresh one (with a new name:
//! apalis keys liveness by name) until shutdown; jobs a dead deliverer held are taken over by
//! the others once its heartbeats stop. Nothing runs until something is to be delivered
//! (NATS configured, or a first subscription), so a deployment without either pays nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage, Pubsub};
use orchestration_core::outbox::{
    self, EVENTS_QUEUE, Envelope, EventBatch, Outbox, WEBHOOKS_QUEUE, WebhookDelivery,
};
use orchestration_core::store::{deliveries, subscriptions};
use orchestration_core::telemetry::names;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::nats::{self, LIFECYCLE_SUBJECTS, async_nats};
use crate::settings::{NatsSettings, OutboxSettings, backoff};
use crate::webhook;

/// What the handlers share.
struct Deliverer {
    pool: PgPool,
    nats: Option<async_nats::Client>,
    events_stream: String,
    /// The lifecycle stream was made sure of since the last failure.
    stream_ready: AtomicBool,
    settings: OutboxSettings,
}

/// Runs the deliverers of this process (named `process`, unique) until `stop` fires; they
/// start once anything is to be delivered. `pool` should be the outbox's own (a listener holds
/// one of its connections per queue).
pub async fn run(
    pool: PgPool,
    outbox: Outbox,
    nats: Option<async_nats::Client>,
    nats_settings: &NatsSettings,
    settings: OutboxSettings,
    process: &str,
    stop: CancellationToken,
) {
    let mut needed = outbox.needed();
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = needed.wait_for(|n| *n) => {}
    }
    let deliverer = Arc::new(Deliverer {
        pool: pool.clone(),
        nats,
        events_stream: nats_settings.events_stream.clone(),
        stream_ready: AtomicBool::new(false),
        settings,
    });
    tracing::info!("outbox deliverers started");
    // apalis keys a deliverer's liveness by its name: unique per process and per restart, and
    // naming the process, so one can tell whose deliveries a job waits on.
    let instance = process.to_string();
    let events = {
        let (pool, d, stop, instance) = (
            pool.clone(),
            deliverer.clone(),
            stop.clone(),
            instance.clone(),
        );
        supervise(EVENTS_QUEUE, stop.clone(), move |run| {
            let storage = storage(&pool, EVENTS_QUEUE, &d.settings);
            // One at a time: the events of a run leave in the order their changes committed.
            let worker = WorkerBuilder::new(format!("{EVENTS_QUEUE}-{instance}-{run}"))
                .backend(storage)
                .data(d.clone())
                .concurrency(1)
                .build(deliver_events);
            let stop = stop.clone();
            async move { worker.run_until(stopped(stop)).await }
        })
    };
    let webhooks = {
        let (pool, d, stop, instance) = (pool.clone(), deliverer.clone(), stop.clone(), instance);
        supervise(WEBHOOKS_QUEUE, stop.clone(), move |run| {
            let storage = storage(&pool, WEBHOOKS_QUEUE, &d.settings);
            let worker = WorkerBuilder::new(format!("{WEBHOOKS_QUEUE}-{instance}-{run}"))
                .backend(storage)
                .data(d.clone())
                .concurrency(8)
                .build(deliver_webhook);
            let stop = stop.clone();
            async move { worker.run_until(stopped(stop)).await }
        })
    };
    let cleaner = clean(pool, deliverer.settings.retention, stop);
    tokio::join!(events, webhooks, cleaner);
}

async fn stopped(stop: CancellationToken) -> Result<(), WorkerError> {
    stop.cancelled().await;
    Ok(())
}

/// A queue's storage: woken by the notification apalis sends for each new job, and every
/// second for jobs whose put-off attempt came due. A deliverer silent for five heartbeats is
/// taken for dead.
fn storage(
    pool: &PgPool,
    queue: &str,
    settings: &OutboxSettings,
) -> apalis_core::backend::ext::poll_strategy::PollWith<
    PostgresStorage<Value>,
    apalis_core::backend::ext::poll_strategy::Strategy,
> {
    let config = Config::default()
        .queue(queue)
        .batch_size(50)
        .heartbeat_interval(settings.heartbeat)
        .missed_heartbeats(5)
        .lock_tasks(false);
    let strategy = apalis_core::backend::ext::poll_strategy::Strategy::new()
        .stream(Pubsub::new(pool.clone(), queue.to_string()))
        .interval(Duration::from_secs(1));
    PostgresStorage::<Value>::new(pool)
        .with_config(config)
        .poll_with_strategy(strategy)
}

/// Runs the deliverer `start` builds until `stop` fires, starting a fresh one whenever one
/// stops on an error (a database outage stops apalis workers for good), after a pause that
/// grows while they keep failing.
async fn supervise<F, Fut>(queue: &str, stop: CancellationToken, mut start: F)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), WorkerError>>,
{
    let mut pause = Duration::from_millis(250);
    for run in 0usize.. {
        if stop.is_cancelled() {
            return;
        }
        let result = start(run).await;
        if stop.is_cancelled() {
            return;
        }
        match result {
            Ok(()) => tracing::warn!(queue, "outbox deliverer stopped; starting another"),
            Err(e) => {
                tracing::warn!(queue, error = %e, "outbox deliverer failed; starting another")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Deletes delivered jobs past their retention, once a minute.
async fn clean(pool: PgPool, retention: Duration, stop: CancellationToken) {
    crate::maintenance::every(Duration::from_secs(60), stop, || {
        let pool = pool.clone();
        async move {
            match deliveries::jobs_clean(&pool, retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "removed delivered outbox jobs past retention"),
                Err(e) => tracing::debug!(error = %e, "could not clean the outbox; will try again"),
            }
        }
    })
    .await
}

/// A job apalis will never take again: its payload cannot be read (it would fail every time).
fn unreadable(queue: &str, e: serde_json::Error) -> BoxDynError {
    tracing::error!(queue, error = %e, "outbox job cannot be read; giving it up");
    AbortError::new(format!("unreadable job: {e}")).into()
}

async fn deliver_events(
    job: Value,
    id: TaskId,
    attempt: Attempt,
    d: Data<Arc<Deliverer>>,
) -> Result<(), BoxDynError> {
    let batch: EventBatch = serde_json::from_value(job).map_err(|e| unreadable(EVENTS_QUEUE, e))?;
    let delivered = async {
        if batch.nats {
            d.publish(&batch.events).await?;
        }
        d.fan_out(&batch.events).await
    };
    if let Err(e) = delivered.await {
        let delay = backoff(
            d.settings.nats_backoff,
            d.settings.nats_backoff_max,
            attempt.current(),
        );
        d.put_off(&id, delay).await;
        tracing::warn!(job = %id, attempt = attempt.current(), retry_in_ms = delay.as_millis() as u64, error = %e, "lifecycle events not delivered; will try again");
        return Err(e.into());
    }
    Ok(())
}

async fn deliver_webhook(
    job: Value,
    id: TaskId,
    attempt: Attempt,
    d: Data<Arc<Deliverer>>,
) -> Result<(), BoxDynError> {
    let delivery: WebhookDelivery =
        serde_json::from_value(job).map_err(|e| unreadable(WEBHOOKS_QUEUE, e))?;
    let subscription = subscriptions::find(&d.pool, delivery.subscription_id).await?;
    // Deleted since: there is no one to deliver to.
    let Some(subscription) = subscription else {
        return Ok(());
    };
    let result = async {
        let destination = webhook::destination(&subscription.url, d.settings.allow_private).await?;
        let body = serde_json::to_vec(&delivery.event.body).unwrap_or_default();
        webhook::post(
            &destination,
            &body,
            subscription.secret.as_deref(),
            d.settings.webhook_timeout,
        )
        .await
    }
    .await;
    match result {
        Ok(()) => {
            metrics::counter!(names::OUTBOX_DELIVERED, "sink" => "webhook").increment(1);
            Ok(())
        }
        Err(error) => {
            metrics::counter!(names::OUTBOX_FAILURES, "sink" => "webhook").increment(1);
            if let Err(e) = deliveries::record_failure(
                &d.pool,
                delivery.subscription_id,
                delivery.event.id,
                &error,
            )
            .await
            {
                tracing::debug!(error = %e, "could not record a webhook failure");
            }
            let delay = backoff(
                d.settings.webhook_backoff,
                d.settings.webhook_backoff_max,
                attempt.current(),
            );
            d.put_off(&id, delay).await;
            tracing::warn!(subscription = %delivery.subscription_id, event = %delivery.event.id, attempt = attempt.current(), error = %error, "webhook delivery failed");
            Err(error.into())
        }
    }
}

impl Deliverer {
    /// Publishes the events to the lifecycle stream and waits for the stream to acknowledge
    /// each. Fails at once while NATS is away.
    async fn publish(&self, events: &[Envelope]) -> Result<(), String> {
        let Some(client) = &self.nats else {
            return Err(
                "this process has no NATS_URL; a process with one delivers this batch".into(),
            );
        };
        if !nats::is_connected(client) {
            return Err("NATS is not connected".into());
        }
        let js = async_nats::jetstream::new(client.clone());
        if !self.stream_ready.load(Ordering::Relaxed) {
            nats::ensure_stream(&js, &self.events_stream, &[LIFECYCLE_SUBJECTS.to_string()])
                .await
                .map_err(|e| {
                    format!(
                        "the lifecycle stream {} is not there: {e}",
                        self.events_stream
                    )
                })?;
            self.stream_ready.store(true, Ordering::Relaxed);
        }
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id.to_string().as_str());
            let body = serde_json::to_vec(&event.body).unwrap_or_default();
            let ack = js
                .publish_with_headers(event.subject(), headers, body.into())
                .await;
            match ack {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    self.stream_ready.store(false, Ordering::Relaxed);
                    return Err(format!("publishing {} failed: {e}", event.subject()));
                }
            }
        }
        for ack in acks {
            match tokio::time::timeout(Duration::from_secs(10), ack).await {
                Ok(Ok(_)) => {
                    metrics::counter!(names::OUTBOX_DELIVERED, "sink" => "nats").increment(1);
                }
                Ok(Err(e)) => {
                    self.stream_ready.store(false, Ordering::Relaxed);
                    metrics::counter!(names::OUTBOX_FAILURES, "sink" => "nats").increment(1);
                    return Err(format!("the stream did not take an event: {e}"));
                }
                Err(_) => {
                    metrics::counter!(names::OUTBOX_FAILURES, "sink" => "nats").increment(1);
                    return Err("the stream did not acknowledge an event within 10 s".into());
                }
            }
        }
        Ok(())
    }

    /// Turns each event into one delivery job per subscription of its project that wants it,
    /// once (a batch fanned out again finds its deliveries recorded).
    async fn fan_out(&self, events: &[Envelope]) -> Result<(), String> {
        let mut by_project: HashMap<i64, Vec<subscriptions::Subscription>> = HashMap::new();
        for event in events {
            if let std::collections::hash_map::Entry::Vacant(entry) =
                by_project.entry(event.project_id)
            {
                let subs = subscriptions::for_project(&self.pool, event.project_id)
                    .await
                    .map_err(|e| e.to_string())?;
                entry.insert(subs);
            }
        }
        if by_project.values().all(Vec::is_empty) {
            return Ok(());
        }
        let write = async {
            let mut tx = self.pool.begin().await?;
            for event in events {
                for sub in &by_project[&event.project_id] {
                    if !sub.wants(&event.kind) {
                        continue;
                    }
                    let job_id = outbox::new_job_id();
                    if deliveries::insert(&mut *tx, sub.id, event.id, &event.kind, &job_id).await? {
                        let job = WebhookDelivery {
                            subscription_id: sub.id,
                            event: event.clone(),
                        };
                        outbox::push_as(
                            &mut tx,
                            WEBHOOKS_QUEUE,
                            &job_id,
                            &job,
                            self.settings.webhook_max_attempts,
                        )
                        .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, orchestration_core::Error>(())
        };
        write
            .await
            .map_err(|e| format!("fanning out to webhooks failed: {e}"))
    }

    /// Puts off job `id`'s next attempt by `delay`.
    async fn put_off(&self, id: &TaskId, delay: Duration) {
        if let Err(e) = deliveries::job_delay(&self.pool, &id.to_string(), delay).await {
            tracing::debug!(job = %id, error = %e, "could not put off an outbox job's next attempt");
        }
    }
}
