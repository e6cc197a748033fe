mod agents;
mod alerts;
mod approvals;
mod cost;
mod events;
mod health;
mod projects;
mod runs;
mod workflows;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health::health))
        .route("/api/projects", post(projects::create).get(projects::list))
        .route("/api/agents", post(agents::create).get(agents::list))
        .route(
            "/api/agents/{id}",
            get(agents::get).put(agents::update).delete(agents::delete),
        )
        .route(
            "/api/workflows",
            post(workflows::create).get(workflows::list),
        )
        .route(
            "/api/workflows/{id}",
            get(workflows::get)
                .put(workflows::update)
                .delete(workflows::delete),
        )
        .route("/api/workflows/{id}/trigger", post(runs::trigger))
        .route("/api/workflows/{id}/runs", get(runs::list))
        .route("/api/workflows/{id}/cost", get(cost::workflow))
        .route("/api/cost", get(cost::project))
        .route(
            "/api/workflows/{id}/runs/{run_id}",
            get(runs::get_in_workflow),
        )
        .route("/api/runs/{run_id}", get(runs::get))
        .route("/api/runs/{run_id}/cancel", post(runs::cancel))
        .route("/api/runs/{run_id}/retry", post(runs::retry))
        .route("/api/events", post(events::ingest))
        .route("/api/webhooks/alertmanager", post(alerts::webhook))
        .route("/api/alerts", get(alerts::list))
        .route("/api/approvals", get(approvals::list))
        .route("/api/approvals/{id}", get(approvals::get))
        .route("/api/approvals/{id}/approve", post(approvals::approve))
        .route("/api/approvals/{id}/reject", post(approvals::reject))
        .route("/metrics", get(crate::metrics_text))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
}
