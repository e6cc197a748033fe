use std::net::SocketAddr;
use std::time::Instant;

use clap::Parser;
use orchestration_api::AppState;
use orchestration_core::config::{DatabaseArgs, LogArgs, WorkerArgs};
use orchestration_core::events::nats::{self, NatsArgs, Publisher};
use orchestration_core::{db, telemetry, worker};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The orchestration REST API (and, with --embedded-workers, its workers in the same process).
#[derive(Parser, Debug)]
#[command(name = "orchestration-api", version)]
struct Args {
    /// Address the API listens on.
    #[arg(long, env = "ORCH_LISTEN", default_value = "0.0.0.0:9002")]
    listen: SocketAddr,
    /// Workers to run inside this process, so one command gives a working system.
    #[arg(long, env = "ORCH_EMBEDDED_WORKERS", default_value_t = 0)]
    embedded_workers: u32,
    /// Bearer token the AlertManager webhook requires (AlertManager's http_config sends it).
    #[arg(long, env = "ORCH_ALERTMANAGER_TOKEN", hide_env_values = true)]
    alertmanager_token: Option<String>,
    /// Secret of the deployment-wide admin token. Without it, one is generated at the first
    /// start and printed once.
    #[arg(long, env = "ORCH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Also serve /metrics on this address (e.g. one only the monitoring network reaches).
    #[arg(long, env = "ORCH_API_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Largest request body in bytes; larger ones get a 413.
    #[arg(long, env = "ORCH_MAX_BODY_BYTES", default_value_t = orchestration_api::DEFAULT_BODY_LIMIT as u64, value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    max_body_bytes: u64,
    /// Serve without authentication: for development on a trusted machine only.
    #[arg(long, env = "ORCH_AUTH_DISABLED", default_value_t = false, action = clap::ArgAction::Set)]
    auth_disabled: bool,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _telemetry = telemetry::init(args.log.log_format, "orchestration-api");
    if let Err(e) = run(args).await {
        tracing::error!(error = %e, "orchestration-api stopped");
        eprintln!("orchestration-api: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    let pool = db::connect_and_migrate(
        &args.database.database_url,
        args.database.db_max_connections,
        args.database.startup_timeout(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    let auth = if args.auth_disabled {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (ORCH_AUTH_DISABLED=true): anyone who reaches this port \
             can read and change everything. Never run this way outside a trusted development machine."
        );
        eprintln!(
            "WARNING: orchestration-api is running WITHOUT AUTHENTICATION (ORCH_AUTH_DISABLED=true)"
        );
        orchestration_api::auth::AuthMode::Disabled
    } else {
        let configured = args.admin_token.as_deref().filter(|t| !t.trim().is_empty());
        if configured.is_some_and(|t| t.len() < 16) {
            anyhow::bail!("ORCH_ADMIN_TOKEN must be at least 16 characters");
        }
        if let Some(secret) =
            orchestration_core::store::tokens::token_bootstrap(&pool, configured).await?
        {
            // Shown once, on the terminal only: logs tend to travel further.
            eprintln!(
                "orchestration-api: generated the admin token (shown only now, store it safely):\n  {secret}"
            );
            tracing::warn!(
                "generated a bootstrap admin token at first start; it was printed to stderr once"
            );
        }
        orchestration_api::auth::AuthMode::Required
    };
    // The API samples the database gauges for the whole deployment.
    telemetry::spawn_sampler(Some(pool.clone()), std::time::Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("ORCH_LISTEN {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let nats_client = nats::connect(&args.nats)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let publisher = Publisher::new(nats_client.clone());
    let consumer_stop = CancellationToken::new();
    let consumer = nats_client.clone().map(|client| {
        tokio::spawn(nats::consume(
            client,
            pool.clone(),
            args.nats.clone(),
            consumer_stop.clone(),
        ))
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..args.embedded_workers {
        let pool = pool.clone();
        let worker_args = args.worker.clone();
        let mut rx = stop_rx.clone();
        let name = worker::unique_name(&format!("embedded{i}"));
        let publisher = publisher.clone();
        workers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = worker::run(pool, &worker_args, name, publisher, shutdown).await {
                tracing::error!(error = %e, "embedded worker stopped");
            }
        }));
    }

    tracing::info!(addr = %addr, embedded_workers = args.embedded_workers, "listening");
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("ORCH_API_METRICS_LISTEN {addr}: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
        orchestration_api::metrics_listener::spawn(listener, metrics.clone());
    }
    let state = AppState {
        pool,
        nats: nats_client,
        publisher,
        alertmanager_token: args.alertmanager_token.clone().filter(|t| !t.is_empty()),
        metrics: Some(metrics),
        started: Instant::now(),
        auth,
        agent_policy: args.worker.agent_policy(),
        body_limit: args.max_body_bytes as usize,
        known_projects: Default::default(),
        plans: Default::default(),
    };
    let mut rx = stop_rx.clone();
    let shutdown = async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    orchestration_api::serve(listener, state, shutdown).await?;
    consumer_stop.cancel();
    if let Some(c) = consumer {
        let _ = c.await;
    }
    for w in workers {
        let _ = w.await;
    }
    signals.abort();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
