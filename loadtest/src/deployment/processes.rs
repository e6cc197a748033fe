//! A deployment of real processes: `orchestration-api` and N `orchestration-worker`s started
//! from a directory of binaries, on a database of their own. What the chaos scenario and the
//! crash tests kill and restart.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use super::{Config, Database, Proc, drop_database_blocking};

/// How long a process may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub config: Config,
    /// Holds orchestration-api and orchestration-worker.
    pub bin_dir: PathBuf,
    /// Lines of output kept per process (`None`: all, for a test's failure report).
    pub keep_lines: Option<usize>,
    /// Leave the database behind (for digging into it).
    pub keep_db: bool,
}

pub struct Processes {
    config: ProcessConfig,
    /// The deployment-wide admin token's secret (ORCH_ADMIN_TOKEN).
    pub token: String,
    pub database: Database,
    /// `http://<api address>`.
    pub base: String,
    pub api: Proc,
    pub workers: Vec<Proc>,
    /// Processes replaced by restarts or started beside, kept for the failure report.
    pub retired: Vec<Proc>,
}

impl Processes {
    /// Creates the database and starts the API and the workers at once (migrations are safe
    /// to run concurrently), waiting until each says it is ready.
    pub async fn start(mut config: ProcessConfig) -> anyhow::Result<Processes> {
        for bin in ["orchestration-api", "orchestration-worker"] {
            let path = config.bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} not found: build the binaries first (cargo build --release --bins) or pass --bin-dir",
                    path.display()
                );
            }
        }
        let token = config.config.admin_token();
        let database = Database::create(&config.config.pg, &config.config.db_prefix).await?;
        let mut deployment = Processes {
            config,
            token,
            database,
            base: String::new(),
            api: Proc::spawn("placeholder", Command::new("true"), Some(1))?,
            workers: Vec::new(),
            retired: Vec::new(),
        };
        let mut api = deployment.api_proc()?;
        let mut workers = (0..deployment.config.config.workers)
            .map(|i| deployment.worker_proc(i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let line = api.wait_for("listening", START_TIMEOUT)?;
        deployment.base = format!("http://{}", line["addr"].as_str().unwrap_or_default());
        deployment.api = api;
        for w in &mut workers {
            w.wait_for("worker started", START_TIMEOUT)?;
        }
        deployment.workers = workers;
        Ok(deployment)
    }

    fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(self.config.bin_dir.join(binary));
        cmd.env("DATABASE_URL", &self.database.url)
            .env("ORCH_LOG_FORMAT", "json")
            .env("ORCH_AGENTS_DIR", &self.config.config.agents_dir)
            .env_remove("ORCH_AUTH_DISABLED")
            .env_remove("NATS_URL");
        // The harness waits for the "listening" and "worker started" lines: a RUST_LOG that
        // hides them must not leave it waiting, so those targets always log at info.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env(
            "RUST_LOG",
            format!(
                "{filter},orchestration_api=info,orchestration_worker::runner=info,orchestration_worker::app=info"
            ),
        );
        for (k, v) in &self.config.config.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn api_proc(&self) -> anyhow::Result<Proc> {
        let mut cmd = self.command("orchestration-api");
        cmd.env("ORCH_LISTEN", "127.0.0.1:0");
        Proc::spawn("api", cmd, self.config.keep_lines)
    }

    fn worker_proc(&self, i: usize) -> anyhow::Result<Proc> {
        let mut cmd = self.command("orchestration-worker");
        cmd.env("ORCH_METRICS_LISTEN", "127.0.0.1:0");
        Proc::spawn(&format!("worker-{i}"), cmd, self.config.keep_lines)
    }

    /// SIGKILLs worker `i` (no chance to clean up).
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].kill();
    }

    /// Starts a fresh process in worker slot `i` (killing what was there) and waits until it
    /// takes jobs; returns the pid it replaced.
    pub fn restart_worker(&mut self, i: usize) -> anyhow::Result<u32> {
        let pid = self.workers[i].pid();
        self.workers[i].kill();
        let mut fresh = self.worker_proc(i)?;
        fresh.wait_for("worker started", START_TIMEOUT)?;
        let old = std::mem::replace(&mut self.workers[i], fresh);
        self.retired.push(old);
        Ok(pid)
    }

    /// Starts one more worker; returns its slot.
    pub fn add_worker(&mut self) -> anyhow::Result<usize> {
        let i = self.workers.len();
        let mut w = self.worker_proc(i)?;
        w.wait_for("worker started", START_TIMEOUT)?;
        self.workers.push(w);
        Ok(i)
    }

    /// Starts another API process on the same database (a replica); returns its base URL.
    pub fn add_api(&mut self) -> anyhow::Result<String> {
        let mut api = self.api_proc()?;
        let line = api.wait_for("listening", START_TIMEOUT)?;
        let base = format!("http://{}", line["addr"].as_str().unwrap_or_default());
        self.retired.push(api);
        Ok(base)
    }

    /// SIGKILLs the API and starts it again (on a new port).
    pub fn restart_api(&mut self) -> anyhow::Result<()> {
        self.api.kill();
        let mut fresh = self.api_proc()?;
        let line = fresh.wait_for("listening", START_TIMEOUT)?;
        self.base = format!("http://{}", line["addr"].as_str().unwrap_or_default());
        let old = std::mem::replace(&mut self.api, fresh);
        self.retired.push(old);
        Ok(())
    }

    /// The address worker `i` serves `/metrics` on.
    pub fn worker_metrics_addr(&mut self, i: usize) -> anyhow::Result<String> {
        let line = self.workers[i].wait_for("worker metrics listening", Duration::from_secs(5))?;
        Ok(line["metrics_addr"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Index of the live worker process whose pid appears in `worker_name`.
    pub fn worker_index_by_name(&mut self, worker_name: &str) -> Option<usize> {
        self.workers
            .iter_mut()
            .position(|w| w.is_alive() && worker_name.contains(&format!("-{}-", w.pid())))
    }

    /// Output of every process, for a failure report.
    pub fn dump_logs(&self) -> String {
        std::iter::once(&self.api)
            .chain(&self.retired)
            .chain(&self.workers)
            .map(|p| format!("--- {} ---\n{}", p.name, p.dump()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the processes (SIGTERM, then SIGKILL) and drops the database unless it is kept.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for w in &mut self.workers {
            w.stop(Duration::from_secs(10));
        }
        self.api.stop(Duration::from_secs(10));
        if self.config.keep_db {
            eprintln!("kept database {}", self.database.url);
            self.config.keep_db = true;
            return Ok(());
        }
        self.kill_all();
        self.database.drop_it().await?;
        // Dropped already: nothing left for `Drop` to do.
        self.config.keep_db = true;
        Ok(())
    }

    fn kill_all(&mut self) {
        self.api.kill();
        for p in self.workers.iter_mut().chain(&mut self.retired) {
            p.kill();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_all();
        if !self.config.keep_db {
            drop_database_blocking(&self.database);
        }
    }
}
