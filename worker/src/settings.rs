//! What a worker runs with, as plain values (`cli` reads them from flags and the environment;
//! tests build them directly). Defaults work on a developer machine.

use std::path::PathBuf;
use std::time::Duration;

use crate::executor::AgentPolicy;

/// One worker: how many attempts it runs, how it claims, leases and repairs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Where relative SCRIPT entrypoints resolve.
    pub agents_dir: PathBuf,
    /// Node attempts run at the same time.
    pub concurrency: usize,
    /// How often an idle worker looks for due nodes no notification announced (retries whose
    /// backoff ran out).
    pub poll_interval: Duration,
    /// The least time between two claims woken by notifications (see `queue`).
    pub claim_gap: Duration,
    /// How long a hold on a running node lasts without renewal.
    pub lease_ttl: Duration,
    /// How often the rescuer looks for expired leases, stalled and unfinished runs.
    pub rescue_interval: Duration,
    /// A run in which nothing moved for this long has its nodes' readiness recomputed.
    pub rescue_ready_after: Duration,
    /// Time in-flight attempts get to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// RLIMIT_AS of a SCRIPT agent in MiB; 0 for none.
    pub agent_memory_mb: u64,
    /// RLIMIT_NPROC of a SCRIPT agent; 0 for none.
    pub agent_max_processes: u64,
    /// Where HTTP agents may send requests (empty: anywhere).
    pub http_agent_allow: Vec<String>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            agents_dir: PathBuf::from("agents"),
            concurrency: 8,
            poll_interval: Duration::from_millis(200),
            claim_gap: Duration::from_millis(2),
            lease_ttl: Duration::from_millis(8_000),
            rescue_interval: Duration::from_millis(2_000),
            rescue_ready_after: Duration::from_millis(15_000),
            shutdown_grace: Duration::from_secs(30),
            agent_memory_mb: 2048,
            agent_max_processes: 4096,
            http_agent_allow: Vec::new(),
        }
    }
}

impl WorkerSettings {
    /// The limits agents run under, as the executor and the API (at registration) apply them.
    pub fn agent_policy(&self) -> AgentPolicy {
        AgentPolicy {
            agents_dir: std::fs::canonicalize(&self.agents_dir)
                .unwrap_or_else(|_| self.agents_dir.clone()),
            memory_bytes: self.agent_memory_mb.saturating_mul(1024 * 1024),
            max_processes: self.agent_max_processes,
            http_allow: self
                .http_agent_allow
                .iter()
                .map(|e| e.trim().to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }
}

/// NATS: event triggers (consumed by the API) and the lifecycle events stream (fed by the
/// deliverers).
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: Option<String>,
    /// The stream event triggers are read from.
    pub stream: String,
    pub subjects: Vec<String>,
    /// The durable consumer all API replicas share.
    pub consumer: String,
    /// The stream lifecycle events are kept in (`orchestration.>`); may be the triggers' own.
    pub events_stream: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub creds_file: Option<PathBuf>,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: None,
            stream: "ORCHESTRATION_EVENTS".into(),
            subjects: vec!["graph.>".into(), "events.>".into(), "alert.>".into()],
            consumer: "orchestration-triggers".into(),
            events_stream: "ORCHESTRATION_EVENTS".into(),
            user: None,
            password: None,
            token: None,
            creds_file: None,
        }
    }
}

/// How the outbox's deliverers work (see `deliver`).
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Webhooks may point at loopback, private and link-local addresses.
    pub allow_private: bool,
    /// Retries of a batch that could not reach NATS: the first after this, each later one
    /// after twice the last, at most `nats_backoff_max`, for as long as it takes.
    pub nats_backoff: Duration,
    pub nats_backoff_max: Duration,
    /// Retries of a webhook delivery, likewise, until `webhook_max_attempts` have failed.
    pub webhook_backoff: Duration,
    pub webhook_backoff_max: Duration,
    pub webhook_max_attempts: usize,
    /// How long a webhook receiver may take to answer.
    pub webhook_timeout: Duration,
    /// A deliverer's heartbeat: one that misses five is taken for dead and its jobs go to
    /// another.
    pub heartbeat: Duration,
    /// How long delivered jobs are kept (the deliveries a subscription lists).
    pub retention: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            allow_private: false,
            nats_backoff: Duration::from_millis(500),
            nats_backoff_max: Duration::from_secs(5),
            webhook_backoff: Duration::from_secs(1),
            webhook_backoff_max: Duration::from_secs(600),
            webhook_max_attempts: 12,
            webhook_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The delay before the next attempt after `failed` failed ones: `first`, doubling, at most
/// `max`.
pub fn backoff(first: Duration, max: Duration, failed: usize) -> Duration {
    let exponent = failed.saturating_sub(1).min(20) as u32;
    first.saturating_mul(2u32.saturating_pow(exponent)).min(max)
}
