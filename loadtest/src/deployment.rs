//! Where the load goes: a deployment someone else runs (`--url`), or one this harness starts
//! itself (API and N worker processes on a database it creates and drops), which is what
//! `--chaos` needs to kill and restart workers.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::Connection as _;

/// How the harness starts processes of its own.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Server URL without a database (`postgres://user@host:port`).
    pub pg: String,
    pub bin_dir: PathBuf,
    pub agents_dir: PathBuf,
    pub workers: usize,
    pub worker_concurrency: u32,
    pub lease_ms: u64,
    pub keep_db: bool,
    /// Extra environment for every process (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

impl LocalConfig {
    /// The URL of database `name` on the server: `pg` may carry options after `?`
    /// (`?sslmode=disable`), which stay after the database name.
    fn database_url(&self, name: &str) -> String {
        match self.pg.split_once('?') {
            Some((server, options)) => {
                format!("{}/{name}?{options}", server.trim_end_matches('/'))
            }
            None => format!("{}/{name}", self.pg.trim_end_matches('/')),
        }
    }
}

/// One child process, its recent output kept for error reports.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<std::collections::VecDeque<String>>>,
}

const KEPT_LINES: usize = 200;

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Proc> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let lines = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut lines = lines.lock().expect("log lock");
                    if lines.len() == KEPT_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            });
        }
        Ok(Proc {
            name: name.to_string(),
            child,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a JSON log line with this `message`; returns it.
    fn wait_for(&mut self, message: &str, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .expect("log lock")
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["message"] == message);
            if let Some(v) = found {
                return Ok(v);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}):\n{}", self.name, self.tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not log {message:?} in time:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn tail(&self) -> String {
        let lines = self.lines.lock().expect("log lock");
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if it does not stop in time.
    fn stop(&mut self, grace: Duration) {
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A deployment the harness started: API, workers, and the database they use.
pub struct Local {
    config: LocalConfig,
    /// The deployment-wide admin token of this deployment (ORCH_ADMIN_TOKEN).
    pub token: String,
    pub db_name: String,
    pub database_url: String,
    pub base: String,
    pub api: Proc,
    pub workers: Vec<Proc>,
}

impl Local {
    pub async fn start(config: LocalConfig) -> anyhow::Result<Local> {
        for bin in ["orchestration-api", "orchestration-worker"] {
            let path = config.bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} not found: build the binaries first (cargo build --release --bins) or pass --bin-dir",
                    path.display()
                );
            }
        }
        let db_name = format!(
            "orch_loadtest_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = sqlx::PgConnection::connect(&config.database_url("postgres"))
            .await
            .with_context(|| format!("connecting to {}", config.pg))?;
        // The name is ours: a fixed prefix and hex digits.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await
            .context("creating the load-test database")?;
        let database_url = config.database_url(&db_name);
        let mut local = Local {
            config,
            token: format!("loadtest-admin-{}", uuid::Uuid::new_v4().simple()),
            db_name,
            database_url,
            base: String::new(),
            api: Proc::spawn("placeholder", Command::new("true"))?,
            workers: Vec::new(),
        };
        let mut api = local.api_proc()?;
        let line = api.wait_for("listening", Duration::from_secs(60))?;
        local.base = format!("http://{}", line["addr"].as_str().unwrap_or_default());
        local.api = api;
        for i in 0..local.config.workers {
            let w = local.worker_proc(i)?;
            local.workers.push(w);
        }
        for w in &mut local.workers {
            w.wait_for("worker started", Duration::from_secs(60))?;
        }
        Ok(local)
    }

    fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(self.config.bin_dir.join(binary));
        cmd.env("DATABASE_URL", &self.database_url)
            .env("ORCH_LOG_FORMAT", "json")
            .env("ORCH_AGENTS_DIR", &self.config.agents_dir)
            .env("ORCH_LEASE_TTL_MS", self.config.lease_ms.to_string())
            .env("ORCH_ADMIN_TOKEN", &self.token)
            .env_remove("ORCH_AUTH_DISABLED")
            .env_remove("NATS_URL");
        // The harness waits for the "listening" and "worker started" lines: a RUST_LOG that
        // hides them must not leave it waiting, so those two targets always log at info.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env(
            "RUST_LOG",
            format!("{filter},orchestration_api=info,orchestration_core::worker=info"),
        );
        for (k, v) in &self.config.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn api_proc(&self) -> anyhow::Result<Proc> {
        let mut cmd = self.command("orchestration-api");
        cmd.env("ORCH_LISTEN", "127.0.0.1:0")
            .env("ORCH_EMBEDDED_WORKERS", "0");
        Proc::spawn("api", cmd)
    }

    fn worker_proc(&self, i: usize) -> anyhow::Result<Proc> {
        let mut cmd = self.command("orchestration-worker");
        cmd.env("ORCH_METRICS_LISTEN", "127.0.0.1:0").env(
            "ORCH_WORKER_CONCURRENCY",
            self.config.worker_concurrency.to_string(),
        );
        Proc::spawn(&format!("worker-{i}"), cmd)
    }

    /// SIGKILLs worker `i` and starts a fresh process in its place; returns the killed pid.
    pub fn kill_and_restart_worker(&mut self, i: usize) -> anyhow::Result<u32> {
        let pid = self.workers[i].pid();
        self.workers[i].kill();
        let mut fresh = self.worker_proc(i)?;
        fresh.wait_for("worker started", Duration::from_secs(60))?;
        self.workers[i] = fresh;
        Ok(pid)
    }

    /// Output of every process, for a failure report.
    pub fn tails(&self) -> String {
        std::iter::once(&self.api)
            .chain(&self.workers)
            .map(|p| format!("--- {} ---\n{}", p.name, p.tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the processes and drops the database (unless asked to keep it).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for w in &mut self.workers {
            w.stop(Duration::from_secs(10));
        }
        self.api.stop(Duration::from_secs(10));
        if self.config.keep_db {
            eprintln!("kept database {}", self.database_url);
            return Ok(());
        }
        let mut admin = sqlx::PgConnection::connect(&self.config.database_url("postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db_name
        )))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}
