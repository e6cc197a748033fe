//! A worker process, started and stopped in one place: the binary is a few lines around
//! [`Application`], and tests start it inside their own process.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use orchestration_core::db::{self, DatabaseSettings};
use orchestration_core::engine::Engine;
use orchestration_core::outbox::Outbox;
use orchestration_core::telemetry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::maintenance::sampler;
use crate::nats::{self, async_nats};
use crate::settings::{NatsSettings, OutboxSettings, WorkerSettings};
use crate::{deliver, runner};

/// Everything a worker process runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where `/metrics` and `/health` are served (port 0: any free one).
    pub metrics_listen: SocketAddr,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub outbox: OutboxSettings,
    pub worker: WorkerSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
            database: DatabaseSettings::default(),
            nats: NatsSettings::default(),
            outbox: OutboxSettings::default(),
            worker: WorkerSettings::default(),
        }
    }
}

/// A worker process, connected and listening, not yet taking jobs.
pub struct Application {
    settings: Settings,
    engine: Engine,
    nats: Option<async_nats::Client>,
    listener: TcpListener,
    name: String,
}

impl Application {
    /// Connects to (and migrates) the database and NATS and binds the metrics address. An
    /// error names the setting that is wrong.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        if !settings.worker.agents_dir.is_dir() {
            anyhow::bail!(
                "ORCH_AGENTS_DIR {}: not a directory",
                settings.worker.agents_dir.display()
            );
        }
        telemetry::init_metrics();
        let pool = db::open(&settings.database)
            .await
            .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
        let listener = TcpListener::bind(settings.metrics_listen)
            .await
            .with_context(|| format!("ORCH_METRICS_LISTEN {}", settings.metrics_listen))?;
        let nats = nats::connect(&settings.nats)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let engine = Engine::new(pool, Outbox::new(settings.nats.url.is_some()));
        Ok(Application {
            settings,
            engine,
            nats,
            listener,
            name: runner::unique_name("worker"),
        })
    }

    /// The address `/metrics` is served on.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.settings.metrics_listen)
    }

    /// The name this worker holds its leases by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes and runs jobs until `shutdown` resolves, then drains (see `runner::run`).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let metrics = telemetry::init_metrics();
        let app = Router::new()
            .route(
                "/metrics",
                get(move || std::future::ready(metrics.render())),
            )
            .route("/health", get(|| async { "ok" }));
        let metrics_addr = self.metrics_addr();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(self.listener, app).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
        tracing::info!(metrics_addr = %metrics_addr, worker = %self.name, "worker metrics listening");
        let sampler = sampler::spawn(None, Duration::from_secs(5));
        let services = Services::start(
            &self.name,
            &self.engine,
            self.nats,
            &self.settings.nats,
            &self.settings.outbox,
        );
        runner::run(self.engine, &self.settings.worker, self.name, shutdown).await;
        services.stop().await;
        sampler.abort();
        server.abort();
        tracing::info!("worker stopped");
    }
}

/// What runs once per process beside its node runners: the outbox's deliverers and the watch
/// on webhook subscriptions. The API starts these too when it runs embedded workers.
pub struct Services {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Services {
    /// Starts them for process `name` (unique: deliverers are told apart by it).
    pub fn start(
        name: &str,
        engine: &Engine,
        nats: Option<async_nats::Client>,
        nats_settings: &NatsSettings,
        outbox_settings: &OutboxSettings,
    ) -> Services {
        let stop = CancellationToken::new();
        let outbox = engine.outbox().clone();
        let watch = outbox.watch(engine.pool().clone(), stop.clone());
        let deliverers = tokio::spawn({
            let pool = outbox_pool(engine.pool());
            let nats_settings = nats_settings.clone();
            let outbox_settings = outbox_settings.clone();
            let stop = stop.clone();
            let name = name.to_string();
            async move {
                deliver::run(
                    pool,
                    outbox,
                    nats,
                    &nats_settings,
                    outbox_settings,
                    &name,
                    stop,
                )
                .await
            }
        });
        Services {
            stop,
            tasks: vec![watch, deliverers],
        }
    }

    /// Lets deliveries in flight finish, then stops.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("outbox deliverers did not stop in time; their jobs go to others");
            }
        }
    }
}

/// A small pool of the outbox's own: its deliverers hold a listening connection per queue,
/// which must not take the engine's.
fn outbox_pool(pool: &PgPool) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(pool.connect_options().as_ref().clone())
}

/// Resolves at SIGTERM or Ctrl-C: how the binaries learn to shut down.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
