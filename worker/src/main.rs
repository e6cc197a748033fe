use clap::Parser;
use orchestration_core::telemetry;
use orchestration_worker::app::Application;
use orchestration_worker::cli::Args;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _telemetry = telemetry::init(args.log.format(), "orchestration-worker");
    match Application::build(args.settings()).await {
        Ok(app) => app.run_until_stopped(shutdown_signal()).await,
        Err(e) => {
            tracing::error!(error = %e, "orchestration-worker stopped");
            eprintln!("orchestration-worker: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn shutdown_signal() {
    orchestration_worker::app::signal().await;
    tracing::info!("shutting down: no new jobs, finishing in-flight attempts");
}
