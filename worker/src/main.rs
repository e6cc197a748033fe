use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use orchestration_core::config::{DatabaseArgs, LogArgs, WorkerArgs};
use orchestration_core::events::nats::{self, NatsArgs, Publisher};
use orchestration_core::{db, telemetry, worker};

/// An orchestration worker: claims node jobs, runs agents, records results.
#[derive(Parser, Debug)]
#[command(name = "orchestration-worker", version)]
struct Args {
    /// Address of this worker's /metrics and /health endpoints.
    #[arg(long, env = "ORCH_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
    metrics_listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArgs,
    /// NATS for lifecycle events (the worker does not consume event triggers).
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
    let _telemetry = telemetry::init(args.log.log_format, "orchestration-worker");
    if let Err(e) = run(args).await {
        tracing::error!(error = %e, "orchestration-worker stopped");
        eprintln!("orchestration-worker: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !args.worker.agents_dir.is_dir() {
        anyhow::bail!(
            "ORCH_AGENTS_DIR {}: not a directory",
            args.worker.agents_dir.display()
        );
    }
    let metrics = telemetry::init_metrics();
    let pool = db::connect_and_migrate(
        &args.database.database_url,
        args.database.db_max_connections,
        args.database.startup_timeout(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    telemetry::spawn_sampler(None, std::time::Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| anyhow::anyhow!("ORCH_METRICS_LISTEN {}: {e}", args.metrics_listen))?;
    let metrics_addr = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route("/health", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    let name = worker::unique_name("worker");
    tracing::info!(metrics_addr = %metrics_addr, worker = %name, "worker metrics listening");
    let publisher = Publisher::new(
        nats::connect(&args.nats)
            .await
            .map_err(|e| anyhow::anyhow!(e))?,
    );
    worker::run(pool, &args.worker, name, publisher, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!("worker stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: no new jobs, finishing in-flight attempts");
}
