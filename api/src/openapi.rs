//! The OpenAPI 3 document of the API, served at `GET /api/openapi.json`.
//!
//! Each handler carries its own `#[utoipa::path]` next to its code, and `routes::api()`
//! registers handlers with `utoipa_axum::routes!`, which adds the handler to the axum router
//! and its operation to the document in one step: a route cannot be served undocumented or
//! documented unserved. This module holds what is common to all operations (the error
//! responses, the security scheme, tags) and the response types that exist only as JSON.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

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
            AlertState,
            orchestration_core::domain::RunStatus,
            orchestration_core::domain::ApprovalStatus
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
                let Some(role) = orchestration_core::auth::required_role(method, path) else {
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

/// The whole document, built once from the router's own registrations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = crate::routes::api().split_for_parts().1;
    TokenRequirements.modify(&mut doc);
    doc
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "getOpenApi",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3 document of this API", body = Object))
)]
pub async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// An alert's state.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum AlertState {
    Firing,
    Resolved,
}

/// `{"items": [..]}`: every list the API returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemList<T> {
    pub items: Vec<T>,
}

impl<T> From<Vec<T>> for ItemList<T> {
    fn from(items: Vec<T>) -> Self {
        ItemList { items }
    }
}

/// `ok` when everything the service uses answers, `degraded` when NATS does not.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: HealthStatus,
    pub service: &'static str,
    pub version: &'static str,
    /// Whether the database answered within two seconds.
    pub database: bool,
    /// Whether NATS is connected; `null` when NATS is not configured.
    pub nats: Option<bool>,
    pub uptime_seconds: u64,
    pub timestamp: DateTime<Utc>,
}

/// The answer to a trigger: the run it started (202) or, for a repeated `Idempotency-Key`, the
/// run the first trigger started (200).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggered {
    pub run_id: Uuid,
    pub status: orchestration_core::domain::RunStatus,
    pub workflow_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventAccepted {
    /// The caller's id for the event, or the one the service gave it.
    pub event_id: String,
    /// The runs the event started.
    pub triggered_runs: Vec<Uuid>,
    /// Whether an event with this id was received before (and so started nothing new).
    pub duplicate: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReceived {
    /// Alerts stored from this delivery.
    pub received: usize,
    /// Runs started by newly firing alerts.
    pub triggered_runs: Vec<Uuid>,
}

/// Execution time and cost in `[from, to)`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    #[schema(value_type = String)]
    pub project_id: String,
    /// The workflow the report is limited to; `null` for the whole project.
    pub workflow_id: Option<Uuid>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub execution_seconds: f64,
    pub execution_minutes: f64,
    pub cost: f64,
    /// By workflow and agent.
    #[schema(value_type = Vec<CostLine>)]
    pub items: Vec<orchestration_core::store::cost::CostLine>,
}

/// One line of a cost report: the attempts of one agent in one workflow. Describes
/// `orchestration_core::store::cost::CostLine` as it serializes (checked by a test below).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CostLine {
    workflow: String,
    agent: String,
    attempts: i64,
    execution_seconds: f64,
    cost: f64,
}

/// AlertManager's webhook payload, version 4 (the fields the service reads; others are
/// ignored). Describes `orchestration_core::alerts::Webhook`.
#[derive(ToSchema)]
#[schema(as = AlertManagerWebhook)]
#[allow(dead_code)]
pub struct WebhookDoc {
    /// Must be "4".
    #[schema(example = "4")]
    version: String,
    receiver: Option<String>,
    status: Option<String>,
    #[schema(max_items = 1000)]
    alerts: Vec<WebhookAlertDoc>,
}

#[derive(ToSchema)]
#[schema(as = AlertManagerAlert, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct WebhookAlertDoc {
    /// `firing` or `resolved`.
    status: String,
    /// Must contain `alertname`.
    labels: std::collections::BTreeMap<String, String>,
    #[schema(required = false)]
    annotations: std::collections::BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    #[schema(rename = "generatorURL")]
    generator_url: Option<String>,
    /// 1 to 128 characters.
    fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(&DOCUMENT).unwrap()
    }

    fn properties(doc: &Value, schema: &str) -> Vec<String> {
        let mut keys: Vec<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {schema} has properties"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn cost_line_doc_matches_what_the_core_type_serializes() {
        let line = orchestration_core::store::cost::CostLine {
            workflow: "w".into(),
            agent: "a".into(),
            attempts: 1,
            execution_seconds: 1.0,
            cost: 0.5,
        };
        let json = serde_json::to_value(&line).unwrap();
        let mut keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, properties(&doc(), "CostLine"));
    }

    fn enum_values(doc: &Value, schema: &str) -> Vec<String> {
        doc["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("schema {schema} is an enum"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// The statuses serialize through `serde(rename = ..)` inside a macro, which the schema
    /// derive cannot read: check the document names them as they are sent.
    #[test]
    fn status_enums_are_documented_as_serialized() {
        use orchestration_core::domain::{AgentRunStatus, ApprovalStatus, NodeStatus, RunStatus};
        fn serialized<T: Serialize>(values: &[T]) -> Vec<String> {
            values
                .iter()
                .map(|v| {
                    serde_json::to_value(v)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        }
        let doc = doc();
        use RunStatus as R;
        let runs = [
            R::Pending,
            R::Running,
            R::WaitingApproval,
            R::Completed,
            R::Failed,
            R::Cancelled,
        ];
        assert_eq!(enum_values(&doc, "RunStatus"), serialized(&runs));
        use NodeStatus as N;
        let nodes = [
            N::Pending,
            N::Ready,
            N::Running,
            N::WaitingApproval,
            N::Completed,
            N::Failed,
            N::Skipped,
            N::Cancelled,
        ];
        assert_eq!(enum_values(&doc, "NodeStatus"), serialized(&nodes));
        use ApprovalStatus as A;
        let approvals = [
            A::Pending,
            A::Approved,
            A::Rejected,
            A::Expired,
            A::Cancelled,
        ];
        assert_eq!(enum_values(&doc, "ApprovalStatus"), serialized(&approvals));
        use AgentRunStatus as G;
        let attempts = [G::Running, G::Completed, G::Failed];
        assert_eq!(enum_values(&doc, "AgentRunStatus"), serialized(&attempts));
    }

    #[test]
    fn document_is_openapi_3_with_every_route() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/health",
            "/api/openapi.json",
            "/api/runs/{run_id}",
            "/api/webhooks/alertmanager",
            "/metrics",
        ] {
            assert!(paths.contains_key(p), "{p} is documented");
        }
    }
}
