//! The API process, started and stopped in one place: the binary is a few lines around
//! [`Application`], and tests start it inside their own process on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use orchestration_core::db;
use orchestration_core::engine::Engine;
use orchestration_core::outbox::Outbox;
use orchestration_core::store::tokens;
use orchestration_core::telemetry;
use orchestration_worker::app::Services;
use orchestration_worker::maintenance::sampler;
use orchestration_worker::nats;
use orchestration_worker::runner;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthMode;
use crate::settings::Settings;
use crate::{AppState, metrics_listener};

/// The API process, connected and bound, not yet serving.
pub struct Application {
    settings: Settings,
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl Application {
    /// Connects to (and migrates) the database and NATS, makes sure there is an admin token,
    /// and binds the addresses. An error names the setting that is wrong.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let metrics = telemetry::init_metrics();
        let pool = db::open(&settings.database)
            .await
            .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
        let auth = if settings.auth_disabled {
            tracing::warn!(
                "AUTHENTICATION IS DISABLED (ORCH_AUTH_DISABLED=true): anyone who reaches this port \
                 can read and change everything. Never run this way outside a trusted development machine."
            );
            eprintln!(
                "WARNING: orchestration-api is running WITHOUT AUTHENTICATION (ORCH_AUTH_DISABLED=true)"
            );
            AuthMode::Disabled
        } else {
            let configured = settings
                .admin_token
                .as_deref()
                .filter(|t| !t.trim().is_empty());
            if configured.is_some_and(|t| t.len() < 16) {
                anyhow::bail!("ORCH_ADMIN_TOKEN must be at least 16 characters");
            }
            if let Some(secret) = tokens::bootstrap(&pool, configured).await? {
                // Shown once, on the terminal only: logs tend to travel further.
                eprintln!(
                    "orchestration-api: generated the admin token (shown only now, store it safely):\n  {secret}"
                );
                tracing::warn!(
                    "generated a bootstrap admin token at first start; it was printed to stderr once"
                );
            }
            AuthMode::Required
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("ORCH_LISTEN {}", settings.listen))?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("ORCH_API_METRICS_LISTEN {addr}"))?,
            ),
            None => None,
        };
        let nats = nats::connect(&settings.nats)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let engine = Engine::new(pool.clone(), Outbox::new(settings.nats.url.is_some()));
        let state = AppState {
            engine,
            pool,
            nats,
            alertmanager_token: settings.alertmanager_token.clone(),
            metrics: Some(metrics),
            started: Instant::now(),
            auth,
            agent_policy: settings.worker.agent_policy(),
            allow_private_webhooks: settings.outbox.allow_private,
            body_limit: settings.max_body_bytes,
            known_projects: Default::default(),
            openapi: Arc::from(""),
        };
        Ok(Application {
            settings,
            state,
            listener,
            metrics_listener,
        })
    }

    /// The address the API listens on.
    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// The address `/metrics` is also served on, when asked for.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The engine this process runs, for tests that look behind the API.
    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests, stops consuming
    /// events and lets the embedded workers finish (see `runner::run`).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            settings,
            state,
            listener,
            metrics_listener,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let signals = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });

        // The API samples the database gauges for the whole deployment.
        let sampler = sampler::spawn(Some(state.pool.clone()), Duration::from_secs(5));
        let consumer_stop = CancellationToken::new();
        let consumer = state.nats.clone().map(|client| {
            tokio::spawn(crate::triggers::consume(
                client,
                state.engine.clone(),
                settings.nats.clone(),
                consumer_stop.clone(),
            ))
        });
        // Every process that writes events keeps the subscriptions in view; one that runs
        // workers also delivers them.
        let watch_stop = CancellationToken::new();
        let services = if settings.embedded_workers > 0 {
            Some(Services::start(
                &runner::unique_name("api"),
                &state.engine,
                state.nats.clone(),
                &settings.nats,
                &settings.outbox,
            ))
        } else {
            None
        };
        let watch = services.is_none().then(|| {
            state
                .engine
                .outbox()
                .watch(state.pool.clone(), watch_stop.clone())
        });
        let workers: Vec<_> = (0..settings.embedded_workers)
            .map(|i| {
                let engine = state.engine.clone();
                let worker_settings = settings.worker.clone();
                let name = runner::unique_name(&format!("embedded{i}"));
                let shutdown = stopped();
                tokio::spawn(async move {
                    runner::run(engine, &worker_settings, name, shutdown).await;
                })
            })
            .collect();

        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, embedded_workers = settings.embedded_workers, "listening");
        if let (Some(listener), Some(metrics)) = (metrics_listener, state.metrics.clone()) {
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            metrics_listener::spawn(listener, metrics);
        }
        crate::serve(listener, state, stopped()).await?;
        consumer_stop.cancel();
        if let Some(c) = consumer {
            let _ = c.await;
        }
        for w in workers {
            let _ = w.await;
        }
        if let Some(services) = services {
            services.stop().await;
        }
        watch_stop.cancel();
        if let Some(watch) = watch {
            let _ = watch.await;
        }
        sampler.abort();
        signals.abort();
        Ok(())
    }
}
