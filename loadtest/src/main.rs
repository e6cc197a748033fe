use clap::Parser;

#[tokio::main]
async fn main() {
    let args = orchestration_loadtest::Args::parse();
    match orchestration_loadtest::run(args).await {
        Ok(passed) => std::process::exit(if passed { 0 } else { 1 }),
        Err(e) => {
            eprintln!("orchestration-loadtest: {e:#}");
            std::process::exit(2);
        }
    }
}
