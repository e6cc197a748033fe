//! Flags and environment variables: every setting of a worker (and of the API's embedded
//! workers) is both, with a default that works on a developer machine. Each group turns into
//! its plain settings; a bad value stops start-up with one line naming it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orchestration_core::db::DatabaseSettings;
use orchestration_core::telemetry::LogFormat;

use crate::settings::{NatsSettings, OutboxSettings, WorkerSettings};

#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL; the database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orchestration"
    )]
    pub database_url: String,
    /// Largest number of connections this process opens.
    #[arg(long, env = "ORCH_DB_MAX_CONNECTIONS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub db_max_connections: u32,
    /// How long start-up waits for an unreachable database before giving up.
    #[arg(long, env = "ORCH_DB_STARTUP_TIMEOUT_SECONDS", default_value_t = 30)]
    pub db_startup_timeout_seconds: u64,
}

impl DatabaseArgs {
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            max_connections: self.db_max_connections,
            startup_timeout: Duration::from_secs(self.db_startup_timeout_seconds),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Directory that relative SCRIPT entrypoints resolve against.
    #[arg(long, env = "ORCH_AGENTS_DIR", default_value = "agents")]
    pub agents_dir: PathBuf,
    /// Node attempts one worker runs at the same time.
    #[arg(long, env = "ORCH_WORKER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_concurrency: u32,
    /// How often an idle worker looks for due nodes no notification announced (retries whose
    /// backoff ran out); nodes made READY wake workers at once by LISTEN/NOTIFY.
    #[arg(long, env = "ORCH_POLL_INTERVAL_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,
    /// The least time between two claims woken by notifications, so that under load one claim
    /// takes the nodes of several triggers; an idle worker claims at once. 0 claims on every
    /// notification.
    #[arg(long, env = "ORCH_CLAIM_GAP_MS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=1_000))]
    pub claim_gap_ms: u64,
    /// How long a worker's hold on a running node lasts without renewal; a worker that dies
    /// loses its nodes to the rescuer this long after its last renewal.
    #[arg(long, env = "ORCH_LEASE_TTL_MS", default_value_t = 8_000, value_parser = clap::value_parser!(u64).range(500..=3_600_000))]
    pub lease_ttl_ms: u64,
    /// How often the rescuer looks for expired leases, stalled and unfinished runs.
    #[arg(long, env = "ORCH_RESCUE_INTERVAL_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub rescue_interval_ms: u64,
    /// A run in which nothing moved for this long has its nodes' readiness recomputed.
    #[arg(long, env = "ORCH_RESCUE_READY_AFTER_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub rescue_ready_after_ms: u64,
    /// Time in-flight attempts get to finish after SIGTERM.
    #[arg(long, env = "ORCH_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Address space a SCRIPT agent may map (RLIMIT_AS), in MiB; 0 for no limit.
    #[arg(long, env = "ORCH_AGENT_MEMORY_MB", default_value_t = 2048)]
    pub agent_memory_mb: u64,
    /// Processes the user running agents may have (RLIMIT_NPROC; the kernel does not apply
    /// it to root); 0 for no limit.
    #[arg(long, env = "ORCH_AGENT_MAX_PROCESSES", default_value_t = 4096)]
    pub agent_max_processes: u64,
    /// Where HTTP agents may send requests: comma-separated `host`, `host:port`,
    /// `*.domain` or `scheme://host[:port]` entries. Unset: anywhere.
    #[arg(long, env = "ORCH_HTTP_AGENT_ALLOW", value_delimiter = ',')]
    pub http_agent_allow: Vec<String>,
}

impl WorkerArgs {
    pub fn settings(&self) -> WorkerSettings {
        WorkerSettings {
            agents_dir: self.agents_dir.clone(),
            concurrency: self.worker_concurrency as usize,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            claim_gap: Duration::from_millis(self.claim_gap_ms),
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            rescue_interval: Duration::from_millis(self.rescue_interval_ms),
            rescue_ready_after: Duration::from_millis(self.rescue_ready_after_ms),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            agent_memory_mb: self.agent_memory_mb,
            agent_max_processes: self.agent_max_processes,
            http_agent_allow: self.http_agent_allow.clone(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server for event triggers and lifecycle events (optional).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream stream the event triggers read; created if missing.
    #[arg(long, env = "ORCH_NATS_STREAM", default_value = "ORCHESTRATION_EVENTS")]
    pub nats_stream: String,
    /// Subjects the trigger stream captures (comma-separated).
    #[arg(
        long,
        env = "ORCH_NATS_SUBJECTS",
        default_value = "graph.>,events.>,alert.>",
        value_delimiter = ','
    )]
    pub nats_subjects: Vec<String>,
    /// Durable consumer shared by all API replicas.
    #[arg(
        long,
        env = "ORCH_NATS_CONSUMER",
        default_value = "orchestration-triggers"
    )]
    pub nats_consumer: String,
    /// JetStream stream that keeps the lifecycle events (`orchestration.>`) for followers to
    /// replay; created if missing, and may be the trigger stream itself.
    #[arg(
        long,
        env = "ORCH_NATS_EVENTS_STREAM",
        default_value = "ORCHESTRATION_EVENTS"
    )]
    pub nats_events_stream: String,
    #[arg(long, env = "ORCH_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "ORCH_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    #[arg(long, env = "ORCH_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    #[arg(long, env = "ORCH_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<PathBuf>,
}

impl NatsArgs {
    pub fn settings(&self) -> NatsSettings {
        NatsSettings {
            url: self.nats_url.clone().filter(|u| !u.trim().is_empty()),
            stream: self.nats_stream.clone(),
            subjects: self.nats_subjects.clone(),
            consumer: self.nats_consumer.clone(),
            events_stream: self.nats_events_stream.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            creds_file: self.nats_creds_file.clone(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct OutboxArgs {
    /// Let webhook subscriptions point at loopback, private and link-local addresses
    /// (refused by default: no server-side request forgery).
    #[arg(long, env = "ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub subscriptions_allow_private: bool,
    /// First delay before a failed webhook delivery is tried again; it doubles each time.
    #[arg(long, env = "ORCH_WEBHOOK_BACKOFF_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub webhook_backoff_ms: u64,
    /// Attempts a webhook delivery gets before it is given up.
    #[arg(long, env = "ORCH_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub webhook_max_attempts: u64,
    /// How often a deliverer tells the others it is alive; one silent for five beats is
    /// taken for dead and its deliveries resume elsewhere.
    #[arg(long, env = "ORCH_OUTBOX_HEARTBEAT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1_000..=60_000))]
    pub outbox_heartbeat_ms: u64,
    /// Days delivered events are kept (a subscription's deliveries list them).
    #[arg(long, env = "ORCH_OUTBOX_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=365))]
    pub outbox_retention_days: u64,
}

impl OutboxArgs {
    pub fn settings(&self) -> OutboxSettings {
        OutboxSettings {
            allow_private: self.subscriptions_allow_private,
            webhook_backoff: Duration::from_millis(self.webhook_backoff_ms),
            webhook_max_attempts: self.webhook_max_attempts as usize,
            heartbeat: Duration::from_millis(self.outbox_heartbeat_ms),
            retention: Duration::from_secs(self.outbox_retention_days * 24 * 3600),
            ..OutboxSettings::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable lines, for development.
    Pretty,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    #[arg(long, env = "ORCH_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Json)]
    pub log_format: LogFormatArg,
}

impl LogArgs {
    pub fn format(&self) -> LogFormat {
        match self.log_format {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Pretty => LogFormat::Pretty,
        }
    }
}

/// The `orchestration-worker` binary: one worker process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "orchestration-worker", version)]
pub struct Args {
    /// Address of this worker's /metrics and /health endpoints.
    #[arg(long, env = "ORCH_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
    pub metrics_listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// NATS for lifecycle events (the worker does not consume event triggers).
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub outbox: OutboxArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    pub fn settings(&self) -> crate::app::Settings {
        crate::app::Settings {
            metrics_listen: self.metrics_listen,
            database: self.database.settings(),
            nats: self.nats.settings(),
            outbox: self.outbox.settings(),
            worker: self.worker.settings(),
        }
    }
}
