//! Logging and metrics set-up, and the names of every metric in one place so that the API,
//! the workers and the dashboards agree on them.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    #[default]
    Json,
    /// Human-readable lines, for development.
    Pretty,
}

pub mod names {
    pub const NODE_EXECUTIONS: &str = "orchestration_node_executions_total";
    pub const AGENT_RUN_DURATION: &str = "orchestration_agent_run_duration_seconds";
    pub const NODE_RETRIES: &str = "orchestration_node_retries_total";
    pub const QUEUE_WAIT: &str = "orchestration_queue_wait_seconds";
    /// Attempts a worker recorded in one transaction.
    pub const RECORD_BATCH_SIZE: &str = "orchestration_record_batch_size";
    /// Nodes one claim took (0: woken or polling, nothing was due).
    pub const CLAIM_SIZE: &str = "orchestration_claim_size";
    /// Runs one trigger statement inserted (concurrent triggers of a workflow share one).
    pub const TRIGGER_BATCH_SIZE: &str = "orchestration_trigger_batch_size";
    pub const RUNS_STARTED: &str = "orchestration_workflow_runs_started_total";
    pub const RUNS_FINISHED: &str = "orchestration_workflow_runs_finished_total";
    pub const RUN_DURATION: &str = "orchestration_workflow_run_duration_seconds";
    pub const EVENTS_RECEIVED: &str = "orchestration_events_received_total";
    pub const ALERTS_RECEIVED: &str = "orchestration_alerts_received_total";
    pub const RESCUER_REPAIRS: &str = "orchestration_rescuer_repairs_total";
    pub const EXECUTION_SECONDS: &str = "orchestration_execution_seconds_total";
    pub const COST: &str = "orchestration_cost_total";
    pub const RUNS_IN_PROGRESS: &str = "orchestration_workflow_runs_in_progress";
    pub const QUEUE_DEPTH: &str = "orchestration_queue_depth";
    pub const APPROVALS_PENDING: &str = "orchestration_approvals_pending";
    pub const APPROVAL_WAIT: &str = "orchestration_approval_wait_seconds";
    pub const BUILD_INFO: &str = "orchestration_build_info";
    /// Lifecycle events delivered, by sink (`nats`, `webhook`), counted once the sink
    /// acknowledged them.
    pub const OUTBOX_DELIVERED: &str = "orchestration_outbox_delivered_total";
    /// Delivery attempts that failed (and will be retried), by sink.
    pub const OUTBOX_FAILURES: &str = "orchestration_outbox_failures_total";
    /// Outbox jobs not delivered yet, by queue (sampled).
    pub const OUTBOX_PENDING: &str = "orchestration_outbox_pending";
}

/// Keeps the trace exporter alive; dropping it flushes the spans still buffered.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging (JSON lines or pretty, filtered by `RUST_LOG`, default `info`) and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OTLP trace exporter (`OTEL_EXPORTER_OTLP_PROTOCOL`
/// `grpc` (default) or `http/protobuf`; service name from `OTEL_SERVICE_NAME`, else
/// `default_service`). Without an endpoint there is no exporter and no cost.
pub fn init(format: LogFormat, default_service: &str) -> TelemetryGuard {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => match build_provider(default_service) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!(
                    "OTEL_EXPORTER_OTLP_ENDPOINT {endpoint}: trace exporter not started: {e}"
                );
                None
            }
        },
        _ => None,
    };
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(p.tracer("orchestration"))
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
    };
    TelemetryGuard { provider }
}

fn build_provider(
    default_service: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|_| "grpc".into());
    let exporter = match protocol.as_str() {
        "grpc" => SpanExporter::builder().with_tonic().build(),
        "http/protobuf" => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not supported (grpc, http/protobuf)"
            ));
        }
    }
    .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(default_service.to_string());
    }
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The W3C `traceparent` of `span`, when it belongs to a sampled trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = span.context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent`.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The trace id of `span` as hex, for log lines.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    traceparent_of(span).and_then(|tp| tp.split('-').nth(1).map(str::to_string))
}

/// Installs the Prometheus recorder for this process (once: later calls, such as a second
/// application in one test process, share it) and returns the handle that renders it.
pub fn init_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install_metrics).clone()
}

fn install_metrics() -> PrometheusHandle {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0,
        ])
        .expect("static buckets are valid")
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(names::RECORD_BATCH_SIZE.to_string()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        )
        .expect("static buckets are valid")
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(names::CLAIM_SIZE.to_string()),
            &[0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        )
        .expect("static buckets are valid")
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(names::TRIGGER_BATCH_SIZE.to_string()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        )
        .expect("static buckets are valid")
        .install_recorder()
        .expect("metrics recorder is installed once per process");
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    handle
}
