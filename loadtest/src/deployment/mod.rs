//! Deployments this harness starts itself, for the load test and for the end-to-end tests
//! (one harness serves both): the API and N workers on a database created for them and dropped
//! afterwards, either as real processes ([`Processes`]: what `--chaos` and crash tests kill)
//! or inside the calling process ([`InProcess`]: each on a runtime of its own, bound to port 0,
//! its address returned rather than read from a log line).
//!
//! Both are configured like the binaries, by environment variables (`ORCH_*`, `NATS_URL`):
//! real processes get them as their environment, in-process applications through the
//! binaries' own flag parsers, so the two read the same settings the same way.

mod database;
mod in_process;
mod proc;
mod processes;

pub use database::{Database, drop_database_blocking};
pub use in_process::{InProcess, capture_logs, captured_logs};
pub use proc::Proc;
pub use processes::{ProcessConfig, Processes};

/// What a deployment is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server URL without a database (`postgres://user@host:port`, options after `?`).
    pub pg: String,
    /// Where relative SCRIPT entrypoints live.
    pub agents_dir: std::path::PathBuf,
    /// Worker processes (or in-process workers) to start.
    pub workers: usize,
    /// Environment of every process (or settings of every application), applied last.
    pub env: Vec<(String, String)>,
    /// The database's name starts with this.
    pub db_prefix: String,
}

impl Config {
    /// The admin token the deployment serves: `ORCH_ADMIN_TOKEN` from `env` (which may be
    /// empty: the API then generates one), else a fresh one added to `env`.
    pub fn admin_token(&mut self) -> String {
        match self.env.iter().find(|(k, _)| k == "ORCH_ADMIN_TOKEN") {
            Some((_, v)) => v.clone(),
            None => {
                let token = format!("admin-{}", uuid::Uuid::new_v4().simple());
                self.env.push(("ORCH_ADMIN_TOKEN".into(), token.clone()));
                token
            }
        }
    }
}
