//! Logging and metrics set-up, and the names of every metric in one place so that the API,
//! the workers and the dashboards agree on them.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub mod names {
    pub const NODE_EXECUTIONS: &str = "orchestration_node_executions_total";
    pub const AGENT_RUN_DURATION: &str = "orchestration_agent_run_duration_seconds";
    pub const NODE_RETRIES: &str = "orchestration_node_retries_total";
    pub const QUEUE_WAIT: &str = "orchestration_queue_wait_seconds";
    pub const RUNS_STARTED: &str = "orchestration_workflow_runs_started_total";
    pub const RUNS_FINISHED: &str = "orchestration_workflow_runs_finished_total";
    pub const RUN_DURATION: &str = "orchestration_workflow_run_duration_seconds";
    pub const EVENTS_RECEIVED: &str = "orchestration_events_received_total";
    pub const ALERTS_RECEIVED: &str = "orchestration_alerts_received_total";
    pub const RESCUER_REPAIRS: &str = "orchestration_rescuer_repairs_total";
    pub const BUILD_INFO: &str = "orchestration_build_info";
}

/// Installs the global tracing subscriber. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Installs the Prometheus recorder for this process and returns the handle that renders it.
pub fn init_metrics() -> PrometheusHandle {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0,
        ])
        .expect("static buckets are valid")
        .install_recorder()
        .expect("metrics recorder is installed once per process");
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    handle
}
