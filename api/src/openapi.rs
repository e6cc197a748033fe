//! The OpenAPI 3 document of the API, served at `GET /api/openapi.json`.
//!
//! Each handler carries its own `#[utoipa::path]` next to its code, and `routes::api()`
//! registers handlers with `utoipa_axum::routes!`, which adds the handler to the axum router
//! and its operation to the document in one step: a route cannot be served undocumented or
//! documented unserved. This module holds what is common to all operations (the error
//! responses, the security scheme, tags); the types are in `wire`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{
    BadRequest, Conflict, ErrorBody, Forbidden, NotFound, PayloadTooLarge, Unauthorized,
    Unavailable, Unprocessable, UnsupportedMediaType,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orchestration",
        description = "A Postgres-backed DAG workflow orchestrator: agents, workflows, runs, \
                       events, alerts, approvals and cost. Ids are opaque strings. Every error \
                       answers with `{\"error\": {\"code\": .., \"message\": ..}}`. Most \
                       operations act in one project, chosen with `?projectId=` (default 1).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(
        // Schemas that only query parameters refer to are not collected by themselves.
        schemas(
            ErrorBody,
            crate::wire::AlertStateDoc,
            crate::wire::RunStatusDoc,
            crate::wire::ApprovalStatusDoc
        ),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            Unavailable
        )
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Liveness, metrics and this document"),
        (name = "projects", description = "Projects scope agents, workflows, runs and approvals"),
        (name = "agents", description = "The programs and services that nodes run"),
        (name = "workflows", description = "DAGs of nodes, each an action of an agent"),
        (name = "runs", description = "Executions of a workflow"),
        (name = "events", description = "Events that start workflows with an event trigger"),
        (name = "alerts", description = "Prometheus AlertManager deliveries"),
        (name = "approvals", description = "Nodes that wait for a person's decision"),
        (name = "cost", description = "Execution time and cost by workflow and agent"),
        (name = "tokens", description = "API tokens: roles admin, operator, viewer; one project each"),
        (name = "subscriptions", description = "Webhooks that receive a project's lifecycle events"),
    )
)]
pub struct ApiDoc;

/// The scheme name of API tokens.
pub const API_TOKEN: &str = "apiToken";

/// The scheme name of the AlertManager webhook's bearer token.
pub const ALERTMANAGER_TOKEN: &str = "alertmanagerToken";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ALERTMANAGER_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "ORCH_ALERTMANAGER_TOKEN; required only when the service is configured \
                         with one",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (POST /api/tokens, or ORCH_ADMIN_TOKEN). Roles: viewer \
                         reads, operator also triggers/cancels/retries/approves and posts events, \
                         admin also manages projects, agents, workflows and tokens.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every operation that needs a token says so, with the 401 and 403 it may answer. Applied to
/// the finished document: the routes are only known once the router has registered them.
struct TokenRequirements;

impl Modify for TokenRequirements {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let unauthorized = utoipa::openapi::Ref::from_response_name("Unauthorized");
        let forbidden = utoipa::openapi::Ref::from_response_name("Forbidden");
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in [
                ("GET", item.get.as_mut()),
                ("POST", item.post.as_mut()),
                ("PUT", item.put.as_mut()),
                ("DELETE", item.delete.as_mut()),
            ] {
                let Some(op) = op else { continue };
                let Some(role) = crate::auth::required_role(method, path) else {
                    continue;
                };
                op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new::<
                    &str,
                    [&str; 0],
                    &str,
                >(API_TOKEN, [])]);
                op.responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| unauthorized.clone().into());
                op.responses
                    .responses
                    .entry("403".into())
                    .or_insert_with(|| forbidden.clone().into());
                let note = format!("Needs a token with role `{role}` or stronger.");
                op.description = Some(match op.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
                    _ => note,
                });
            }
        }
    }
}

/// Finishes the document the router's registrations produced: the security requirement of
/// every operation that needs a token.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    TokenRequirements.modify(&mut doc);
    doc
}
