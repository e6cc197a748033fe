//! The optional second listener that serves only `/metrics` (ORCH_API_METRICS_LISTEN), for
//! deployments that keep scraping on a network of its own. It is not part of the API router:
//! the operation it serves is the documented `GET /metrics` of the API itself.

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// Serves `/metrics` from `handle` on `listener` until the process ends.
pub fn spawn(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    let app = Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
}
