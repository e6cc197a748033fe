//! A deployment inside the calling process: the API's `Application` and N workers'
//! `Application`s, each on a tokio runtime of its own, as if each were a process. Bound to
//! port 0; the addresses come back from the applications themselves. Stopping one is its
//! graceful shutdown; killing one shuts its runtime down on the spot, every task of it with it.
//!
//! Logs of every part go to one buffer of this process ([`capture_logs`]), printed with a
//! failure report (and live on stderr with `TEST_LOG` set).

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;

use super::{Config, Database, drop_database_blocking};

/// One part of the deployment: an application on a runtime of its own.
struct Part {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Part {
    /// Gone at once, whatever it was doing: every task of its runtime stops where it is.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Asks for a graceful shutdown and waits up to `grace` for it, then kills what is left.
    async fn stop(&mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(grace, done).await;
        }
        self.kill();
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Worker {
    part: Part,
    metrics_addr: SocketAddr,
    name: String,
}

pub struct InProcess {
    config: Config,
    /// The deployment-wide admin token's secret.
    pub token: String,
    pub database: Database,
    /// `http://<api address>`.
    pub base: String,
    api: Part,
    workers: Vec<Worker>,
    /// Replicas and parts replaced by restarts.
    retired: Vec<Part>,
}

impl InProcess {
    /// Creates the database and starts the API, then the workers.
    pub async fn start(mut config: Config) -> anyhow::Result<InProcess> {
        capture_logs();
        let token = config.admin_token();
        let database = Database::create(&config.pg, &config.db_prefix).await?;
        let mut deployment = InProcess {
            config,
            token,
            database,
            base: String::new(),
            api: Part {
                runtime: None,
                stop: None,
                done: None,
            },
            workers: Vec::new(),
            retired: Vec::new(),
        };
        let (api, addr) = deployment.start_api().await?;
        deployment.api = api;
        deployment.base = format!("http://{addr}");
        for i in 0..deployment.config.workers {
            let worker = deployment.start_worker(i).await?;
            deployment.workers.push(worker);
        }
        Ok(deployment)
    }

    /// The settings every part reads, as environment variables: the deployment's, then the
    /// caller's.
    fn env(&self, own: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), self.database.url.clone()),
            (
                "ORCH_AGENTS_DIR".into(),
                self.config.agents_dir.display().to_string(),
            ),
        ];
        env.extend(own.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env.extend(self.config.env.iter().cloned());
        env
    }

    async fn start_api(&self) -> anyhow::Result<(Part, SocketAddr)> {
        let env = self.env(&[("ORCH_LISTEN", "127.0.0.1:0")]);
        let args: orchestration_api::cli::Args = parse_env("orchestration-api", &env)?;
        let runtime = runtime("api")?;
        let app = runtime
            .spawn(orchestration_api::app::Application::build(args.settings()))
            .await
            .context("starting the API")??;
        let addr = app.address();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = runtime.spawn(async move {
            if let Err(e) = app
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await
            {
                tracing::error!(error = %e, "in-process API stopped");
            }
        });
        Ok((
            Part {
                runtime: Some(runtime),
                stop: Some(stop),
                done: Some(done),
            },
            addr,
        ))
    }

    async fn start_worker(&self, i: usize) -> anyhow::Result<Worker> {
        let env = self.env(&[("ORCH_METRICS_LISTEN", "127.0.0.1:0")]);
        let args: orchestration_worker::cli::Args = parse_env("orchestration-worker", &env)?;
        let runtime = runtime(&format!("worker-{i}"))?;
        let app = runtime
            .spawn(orchestration_worker::app::Application::build(
                args.settings(),
            ))
            .await
            .context("starting a worker")??;
        let metrics_addr = app.metrics_addr();
        let name = app.name().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = runtime.spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Worker {
            part: Part {
                runtime: Some(runtime),
                stop: Some(stop),
                done: Some(done),
            },
            metrics_addr,
            name,
        })
    }

    /// Worker `i` is gone at once (its tasks stop where they are; its leases expire).
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].part.kill();
    }

    /// Starts a fresh worker in slot `i` (killing what was there).
    pub async fn restart_worker(&mut self, i: usize) -> anyhow::Result<()> {
        self.workers[i].part.kill();
        let fresh = self.start_worker(i).await?;
        let old = std::mem::replace(&mut self.workers[i], fresh);
        self.retired.push(old.part);
        Ok(())
    }

    /// Starts one more worker; returns its slot.
    pub async fn add_worker(&mut self) -> anyhow::Result<usize> {
        let i = self.workers.len();
        let worker = self.start_worker(i).await?;
        self.workers.push(worker);
        Ok(i)
    }

    /// Starts another API on the same database (a replica); returns its base URL.
    pub async fn add_api(&mut self) -> anyhow::Result<String> {
        let (part, addr) = self.start_api().await?;
        self.retired.push(part);
        Ok(format!("http://{addr}"))
    }

    /// The API is gone at once (its tasks stop where they are).
    pub fn kill_api(&mut self) {
        self.api.kill();
    }

    /// Whether the API still runs.
    pub fn api_is_running(&self) -> bool {
        self.api.done.as_ref().is_some_and(|d| !d.is_finished())
    }

    /// Kills the API (if it still runs) and starts it again (on a new port).
    pub async fn restart_api(&mut self) -> anyhow::Result<()> {
        self.api.kill();
        let (part, addr) = self.start_api().await?;
        let old = std::mem::replace(&mut self.api, part);
        self.retired.push(old);
        self.base = format!("http://{addr}");
        Ok(())
    }

    /// The address worker `i` serves `/metrics` on.
    pub fn worker_metrics_addr(&self, i: usize) -> String {
        self.workers[i].metrics_addr.to_string()
    }

    /// The name worker `i` holds its leases by.
    pub fn worker_name(&self, i: usize) -> &str {
        &self.workers[i].name
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Stops every part gracefully and drops the database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for w in &mut self.workers {
            w.part.stop(Duration::from_secs(10)).await;
        }
        self.api.stop(Duration::from_secs(10)).await;
        for p in &mut self.retired {
            p.kill();
        }
        self.database.drop_it().await
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.part.kill();
        }
        self.api.kill();
        for p in &mut self.retired {
            p.kill();
        }
        drop_database_blocking(&self.database);
    }
}

fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("orch-{name}"))
        .enable_all()
        .build()
        .context("building a runtime")
}

/// The settings binary `binary` would read from environment `env`: each variable one of its
/// arguments reads becomes that argument on its command line (anything else in `env` is
/// another binary's), parsed by the binary's own parser with its defaults.
fn parse_env<P: clap::Parser>(binary: &str, env: &[(String, String)]) -> anyhow::Result<P> {
    let command = P::command();
    let mut argv = vec![binary.to_string()];
    // A variable given twice takes its last value, as in a process's environment.
    let mut last: Vec<(&String, &String)> = Vec::new();
    for (key, value) in env {
        last.retain(|(k, _)| *k != key);
        last.push((key, value));
    }
    for (key, value) in last {
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == key.as_str()));
        if let Some(long) = arg.and_then(|a| a.get_long()) {
            argv.push(format!("--{long}={value}"));
        }
    }
    P::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("{binary} settings: {e}"))
}

/// Where in-process logs go.
static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

/// Sends this process's logs (JSON lines, as the binaries write them) to a buffer, and to
/// stderr too when `TEST_LOG` is set. Once per process; later calls do nothing.
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        LOGS.get_or_init(|| Mutex::new(Vec::new()));
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(|| Captured),
            )
            .try_init();
    });
}

/// Everything logged so far in this process (see [`capture_logs`]).
pub fn captured_logs() -> String {
    LOGS.get()
        .map(|logs| String::from_utf8_lossy(&logs.lock().expect("log buffer lock")).into_owned())
        .unwrap_or_default()
}

struct Captured;

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(logs) = LOGS.get() {
            logs.lock().expect("log buffer lock").extend_from_slice(buf);
        }
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
