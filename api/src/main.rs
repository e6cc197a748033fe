use clap::Parser;
use orchestration_api::app::Application;
use orchestration_api::cli::Args;
use orchestration_core::telemetry;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _telemetry = telemetry::init(args.log.format(), "orchestration-api");
    let app = match Application::build(args.settings()).await {
        Ok(app) => app,
        Err(e) => stop(e),
    };
    if let Err(e) = app
        .run_until_stopped(orchestration_worker::app::signal())
        .await
    {
        stop(e);
    }
}

fn stop(e: anyhow::Error) -> ! {
    tracing::error!(error = %e, "orchestration-api stopped");
    eprintln!("orchestration-api: {e:#}");
    std::process::exit(1);
}
