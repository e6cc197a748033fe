//! Settings shared by the binaries: each is a flag and an environment variable with a default
//! that works on a developer machine. The binaries flatten these into their own parsers.

use std::path::PathBuf;
use std::time::Duration;

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
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.db_startup_timeout_seconds)
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
    /// The limits agents run under, as the executor and the API (at registration) apply them.
    pub fn agent_policy(&self) -> crate::executor::AgentPolicy {
        crate::executor::AgentPolicy {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable lines, for development.
    Pretty,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    #[arg(long, env = "ORCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}
