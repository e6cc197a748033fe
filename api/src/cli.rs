//! The `orchestration-api` binary's flags and environment variables (the worker settings of
//! its embedded workers are the worker binary's own).

use std::net::SocketAddr;

use orchestration_worker::cli::{DatabaseArgs, LogArgs, NatsArgs, OutboxArgs, WorkerArgs};

use crate::settings::Settings;

/// The orchestration REST API (and, with --embedded-workers, its workers in the same process).
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "orchestration-api", version)]
pub struct Args {
    /// Address the API listens on.
    #[arg(long, env = "ORCH_LISTEN", default_value = "0.0.0.0:9002")]
    pub listen: SocketAddr,
    /// Workers to run inside this process, so one command gives a working system.
    #[arg(long, env = "ORCH_EMBEDDED_WORKERS", default_value_t = 0)]
    pub embedded_workers: u32,
    /// Bearer token the AlertManager webhook requires (AlertManager's http_config sends it).
    #[arg(long, env = "ORCH_ALERTMANAGER_TOKEN", hide_env_values = true)]
    pub alertmanager_token: Option<String>,
    /// Secret of the deployment-wide admin token. Without it, one is generated at the first
    /// start and printed once.
    #[arg(long, env = "ORCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Also serve /metrics on this address (e.g. one only the monitoring network reaches).
    #[arg(long, env = "ORCH_API_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Largest request body in bytes; larger ones get a 413.
    #[arg(long, env = "ORCH_MAX_BODY_BYTES", default_value_t = crate::DEFAULT_BODY_LIMIT as u64, value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub max_body_bytes: u64,
    /// Serve without authentication: for development on a trusted machine only.
    #[arg(long, env = "ORCH_AUTH_DISABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub auth_disabled: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
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
    pub fn settings(&self) -> Settings {
        Settings {
            listen: self.listen,
            embedded_workers: self.embedded_workers as usize,
            alertmanager_token: self.alertmanager_token.clone().filter(|t| !t.is_empty()),
            admin_token: self.admin_token.clone(),
            metrics_listen: self.metrics_listen,
            max_body_bytes: self.max_body_bytes as usize,
            auth_disabled: self.auth_disabled,
            database: self.database.settings(),
            nats: self.nats.settings(),
            outbox: self.outbox.settings(),
            worker: self.worker.settings(),
        }
    }
}
