//! # orchestration-api
//!
//! The REST API: it translates HTTP to the engine's calls and back. The state machine and all
//! SQL live in `orchestration-core`; the worker runtime (for embedded workers) in
//! `orchestration-worker`.
//!
//! ## Layout
//! - [`app`]: start-up and shutdown of the API process (settings in [`settings`], flags and
//!   environment in [`cli`]), embedded workers and the event-trigger consumer included.
//! - `routes`: one file per resource, each handler next to its OpenAPI operation;
//!   [`openapi`]: what the document shares (errors, security, tags).
//! - [`wire`]: the JSON the API takes and gives, and the schemas of both.
//! - [`auth`]: the route-to-role table and the middleware that enforces it; `extract`:
//!   request parsing that answers every malformed request with a JSON error.
//! - [`error`]: the one error type, mapped to HTTP status in one place.
//! - [`triggers`]: the JetStream consumer that turns NATS messages into runs.
//! - [`metrics_listener`]: `/metrics` on an address of its own.

pub mod app;
pub mod auth;
pub mod cli;
pub mod error;
mod extract;
pub mod metrics_listener;
pub mod openapi;
mod routes;
pub mod settings;
pub mod triggers;
pub mod wire;

pub use extract::KnownProjects;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use metrics_exporter_prometheus::PrometheusHandle;
use orchestration_core::engine::Engine;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tracing::Instrument;

/// Default largest request body.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// The engine's pool, for reads.
    pub pool: PgPool,
    /// Present when NATS_URL is set; health reports its connection.
    pub nats: Option<orchestration_worker::nats::async_nats::Client>,
    /// When set, the AlertManager webhook requires `Authorization: Bearer <token>`.
    pub alertmanager_token: Option<String>,
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
    /// Whether requests need an API token (see [`auth`]).
    pub auth: auth::AuthMode,
    /// Checked when agents are registered (and again by workers when they run).
    pub agent_policy: orchestration_worker::executor::AgentPolicy,
    /// Webhook subscriptions may point at private addresses.
    pub allow_private_webhooks: bool,
    /// Largest request body.
    pub body_limit: usize,
    pub known_projects: KnownProjects,
    /// The OpenAPI document of the routes served.
    pub openapi: std::sync::Arc<str>,
}

/// The API's router over `state` (whose `openapi` it fills with its own document).
pub fn router(mut state: AppState) -> Router {
    let (routes, doc) = routes::router();
    state.openapi = doc
        .to_json()
        .expect("the OpenAPI document serializes")
        .into();
    routes
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn(record_http_metrics))
        .layer(DefaultBodyLimit::max(state.body_limit))
        .with_state(state)
}

/// Records `http_server_request_duration_seconds` by route template, never by raw path, so
/// that ids in URLs cannot blow up the number of series.
async fn record_http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    // A request is a span; a caller's `traceparent` makes it part of the caller's trace, and a
    // trigger stores it so that every node of the run joins the same trace.
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(parent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        orchestration_core::telemetry::set_parent(&span, parent);
    }
    if let Some(trace_id) = orchestration_core::telemetry::trace_id_of(&span) {
        span.record("trace_id", trace_id);
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

pub(crate) async fn metrics_text(State(state): State<AppState>) -> String {
    state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default()
}

pub(crate) const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(2);
