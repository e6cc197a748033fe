mod agents;
pub(crate) mod alerts;
mod approvals;
mod cost;
mod events;
mod health;
mod projects;
mod runs;
mod tokens;
mod workflows;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::ApiDoc;

/// Every route with its documentation. Register routes here only with `routes!`, which adds
/// the handler and its `#[utoipa::path]` operation together (one `routes!` per path); the
/// `openapi` end-to-end test fails on a route that is served but not documented.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::metrics))
        .routes(routes!(crate::openapi::document))
        .routes(routes!(projects::create, projects::list))
        .routes(routes!(agents::create, agents::list))
        .routes(routes!(agents::get, agents::update, agents::delete))
        .routes(routes!(workflows::create, workflows::list))
        .routes(routes!(
            workflows::get,
            workflows::update,
            workflows::delete
        ))
        .routes(routes!(runs::trigger))
        .routes(routes!(runs::list))
        .routes(routes!(cost::workflow))
        .routes(routes!(cost::project))
        .routes(routes!(runs::get_in_workflow))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::retry))
        .routes(routes!(events::ingest))
        .routes(routes!(alerts::webhook))
        .routes(routes!(alerts::list))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::get))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::reject))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
}

pub fn router() -> Router<AppState> {
    let (router, _) = api().split_for_parts();
    router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
}
