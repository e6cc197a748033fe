//! The durable outbox. The lifecycle events of a change are written as one apalis job
//! (apalis-postgres, tables in schema `apalis`) inside the change's own transaction, so they
//! exist exactly when the change committed; apalis workers in the worker processes deliver
//! them (the worker's `deliver`): to NATS JetStream when NATS is configured, and to the
//! project's webhook subscriptions. Node jobs stay on `node_states` (see `queue`); apalis only
//! carries deliveries.
//!
//! When neither NATS nor any subscription is configured nothing is written: the hot path is
//! unchanged. Which projects have subscriptions is kept in memory by [`Outbox::watch`], told
//! of changes by a notification on [`SUBSCRIPTIONS_CHANNEL`] that every subscription write
//! sends.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apalis_core::task::builder::TaskBuilder;
use std::str::FromStr;

use apalis_core::task::task_id::TaskId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::effects::Event;
use crate::error::{Error, Result};
use crate::store::subscriptions;

/// The apalis queue of event batches: one job per committed change with events.
pub const EVENTS_QUEUE: &str = "orchestration.events";
/// The apalis queue of webhook deliveries: one job per subscription and event.
pub const WEBHOOKS_QUEUE: &str = "orchestration.webhooks";
/// Notified (with the project id) whenever a subscription is created or deleted.
pub const SUBSCRIPTIONS_CHANNEL: &str = "orchestration_subscriptions";
/// A batch is delivered until it succeeds: a NATS outage loses nothing. With the deliverers'
/// backoff capped at a few seconds, this many attempts outlast a day.
pub const EVENT_MAX_ATTEMPTS: usize = 50_000;

/// One event as it is stored in a job and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub id: Uuid,
    pub project_id: i64,
    /// `run.completed`, `node.retrying`, `approval.requested`, ...
    pub kind: String,
    pub body: Value,
}

impl Envelope {
    pub fn of(event: &Event) -> Envelope {
        Envelope {
            id: event.id,
            project_id: event.run.project_id,
            kind: event.kind(),
            body: event.body(),
        }
    }

    /// The NATS subject: `orchestration.<kind>`, as lifecycle events always had.
    pub fn subject(&self) -> String {
        format!("orchestration.{}", self.kind)
    }
}

/// A job of [`EVENTS_QUEUE`]: the events of one change, in the order they happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBatch {
    /// Whether the writer had NATS configured: then the batch must reach the stream, and only
    /// a process with NATS may deliver it.
    pub nats: bool,
    pub events: Vec<Envelope>,
}

/// A job of [`WEBHOOKS_QUEUE`]: one event for one subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub subscription_id: Uuid,
    pub event: Envelope,
}

/// Decides which events go to the outbox, and writes them.
#[derive(Clone, Default)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// NATS is configured: every event is written.
    nats: bool,
    /// Projects with at least one webhook subscription.
    subscribed: RwLock<HashSet<i64>>,
    /// Whether anything is to be delivered at all; deliverers start when it turns true.
    needed: Option<watch::Sender<bool>>,
}

impl Outbox {
    /// An outbox that writes every event when `nats` is set, and the events of subscribed
    /// projects otherwise (see [`Outbox::watch`]).
    pub fn new(nats: bool) -> Outbox {
        let (needed, _) = watch::channel(nats);
        Outbox {
            inner: Arc::new(Inner {
                nats,
                subscribed: RwLock::default(),
                needed: Some(needed),
            }),
        }
    }

    /// Whether this deployment publishes to NATS.
    pub fn nats(&self) -> bool {
        self.inner.nats
    }

    /// Whether events of `project_id` are written.
    pub fn wanted(&self, project_id: i64) -> bool {
        self.inner.nats || self.subscribed().contains(&project_id)
    }

    fn subscribed(&self) -> std::sync::RwLockReadGuard<'_, HashSet<i64>> {
        self.inner
            .subscribed
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Turns true once anything is to be delivered (NATS, or a first subscription).
    pub fn needed(&self) -> watch::Receiver<bool> {
        match &self.inner.needed {
            Some(sender) => sender.subscribe(),
            None => watch::channel(false).1,
        }
    }

    /// Writes the wanted ones of `events` as one job, in the caller's transaction.
    pub async fn write(&self, conn: &mut sqlx::PgConnection, events: &[Event]) -> Result<()> {
        let wanted: Vec<Envelope> = events
            .iter()
            .filter(|e| self.wanted(e.run.project_id))
            .map(Envelope::of)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let batch = EventBatch {
            nats: self.inner.nats,
            events: wanted,
        };
        push(conn, EVENTS_QUEUE, &batch, EVENT_MAX_ATTEMPTS).await?;
        Ok(())
    }

    /// Reads which projects have subscriptions.
    pub async fn refresh(&self, pool: &PgPool) -> Result<()> {
        let projects: HashSet<i64> = subscriptions::projects(pool).await?.into_iter().collect();
        let any = !projects.is_empty();
        *self
            .inner
            .subscribed
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = projects;
        if let Some(needed) = &self.inner.needed
            && any
        {
            needed.send_if_modified(|n| !std::mem::replace(n, true));
        }
        Ok(())
    }

    /// Keeps the subscribed projects current until `stop` fires: reads them now, again at
    /// every notification on [`SUBSCRIPTIONS_CHANNEL`], and every half minute in case one was
    /// missed. Listens on a connection of its own, outside `pool`.
    pub fn watch(&self, pool: PgPool, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let outbox = self.clone();
        tokio::spawn(async move {
            let listen_pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(pool.connect_options().as_ref().clone());
            let mut listener: Option<PgListener> = None;
            loop {
                // Listen first, then read: a change committed in between is both read and
                // heard, never missed.
                if listener.is_none() {
                    listener = listen(&listen_pool).await;
                }
                if let Err(e) = outbox.refresh(&pool).await {
                    tracing::debug!(error = %e, "could not read the webhook subscriptions; trying again");
                }
                let wait = async {
                    match listener.as_mut() {
                        Some(l) => !matches!(
                            tokio::time::timeout(Duration::from_secs(30), l.recv()).await,
                            Ok(Err(_))
                        ),
                        None => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            true
                        }
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    alive = wait => if !alive { listener = None },
                }
            }
        })
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(SUBSCRIPTIONS_CHANNEL).await.ok()?;
    Some(listener)
}

/// Enqueues `job` on `queue` in the caller's transaction (`apalis_postgres::queries::push_tasks`);
/// returns the job's id.
pub async fn push<T: Serialize>(
    conn: &mut sqlx::PgConnection,
    queue: &str,
    job: &T,
    max_attempts: usize,
) -> Result<String> {
    let id = new_job_id();
    push_as(conn, queue, &id, job, max_attempts).await?;
    Ok(id)
}

/// An id for a job about to be pushed with [`push_as`] (apalis reads its ids as ULIDs).
pub fn new_job_id() -> String {
    ulid::Ulid::generate().to_string()
}

/// [`push`] with an id chosen before (to record it elsewhere in the same transaction).
pub async fn push_as<T: Serialize>(
    conn: &mut sqlx::PgConnection,
    queue: &str,
    id: &str,
    job: &T,
    max_attempts: usize,
) -> Result<()> {
    let bytes =
        serde_json::to_vec(job).map_err(|e| Error::Database(sqlx::Error::Encode(Box::new(e))))?;
    let task = TaskBuilder::new(bytes)
        .task_id(
            TaskId::from_str(id)
                .map_err(|e| Error::Database(sqlx::Error::Protocol(e.to_string())))?,
        )
        .max_attempts(max_attempts)
        .build();
    apalis_postgres::queries::push_tasks(conn, queue, vec![task])
        .await
        .map_err(|e| match e {
            apalis_postgres::Error::Database(e) => Error::Database(e),
            other => Error::Database(sqlx::Error::Protocol(other.to_string())),
        })
}
