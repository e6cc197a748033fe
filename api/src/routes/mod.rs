//! Every route, each next to its documentation (`#[utoipa::path]`), one file per resource.

mod agents;
mod alerts;
mod approvals;
mod cost;
mod events;
mod health;
mod projects;
mod runs;
mod subscriptions;
mod tokens;
mod workflows;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::{self, ApiDoc};

/// Every route with its documentation. Register routes here only with `routes!`, which adds
/// the handler and its `#[utoipa::path]` operation together (one `routes!` per path); the
/// `openapi` end-to-end test fails on a route that is served but not documented.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::metrics))
        .routes(routes!(health::document))
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
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(subscriptions::get, subscriptions::delete))
        .routes(routes!(subscriptions::deliveries))
}

/// The router, and the OpenAPI document of exactly the routes it serves.
pub fn router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, doc) = api().split_for_parts();
    let router = router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        });
    (router, openapi::finish(doc))
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::{Value, json};

    fn doc() -> Value {
        serde_json::to_value(super::router().1).unwrap()
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

    fn keys(value: &Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn enum_values(doc: &Value, schema: &str) -> Vec<String> {
        doc["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("schema {schema} is an enum"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

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

    /// The statuses and kinds are the core library's enums, described here by mirrors: the
    /// document must name them as they are sent.
    #[test]
    fn enums_are_documented_as_serialized() {
        use orchestration_core::domain::{AgentType, RiskLevel, WorkflowStatus};
        use orchestration_core::lifecycle::{ApprovalStatus, AttemptStatus, NodeStatus, RunStatus};
        let doc = doc();
        assert_eq!(enum_values(&doc, "RunStatus"), serialized(RunStatus::ALL));
        assert_eq!(enum_values(&doc, "NodeStatus"), serialized(NodeStatus::ALL));
        assert_eq!(
            enum_values(&doc, "ApprovalStatus"),
            serialized(ApprovalStatus::ALL)
        );
        assert_eq!(
            enum_values(&doc, "AgentRunStatus"),
            serialized(AttemptStatus::ALL)
        );
        assert_eq!(enum_values(&doc, "AgentType"), serialized(AgentType::ALL));
        assert_eq!(enum_values(&doc, "RiskLevel"), serialized(RiskLevel::ALL));
        assert_eq!(
            enum_values(&doc, "WorkflowStatus"),
            serialized(WorkflowStatus::ALL)
        );
    }

    /// The definitions users write are the core library's types too: their mirrors must
    /// name every field they serialize.
    #[test]
    fn stored_definitions_are_documented_as_serialized() {
        use orchestration_core::domain::{ApprovalSpec, Capability, NodeSpec, RetryPolicy};
        let doc = doc();
        let node = NodeSpec {
            id: "a".into(),
            agent_id: "b".into(),
            action: "c".into(),
            inputs_json: json!({}),
            depends_on: vec![],
            retry: Some(RetryPolicy::default()),
            timeout_seconds: Some(1),
            approval: Some(ApprovalSpec {
                required: true,
                timeout_seconds: Some(1),
            }),
        };
        let node = serde_json::to_value(&node).unwrap();
        assert_eq!(keys(&node), properties(&doc, "NodeSpec"));
        assert_eq!(keys(&node["retry"]), properties(&doc, "RetryPolicy"));
        assert_eq!(keys(&node["approval"]), properties(&doc, "ApprovalSpec"));
        let capability = Capability {
            name: "n".into(),
            description: Some("d".into()),
            input_schema: Some(json!({})),
            output_schema: Some(json!({})),
        };
        assert_eq!(
            keys(&serde_json::to_value(&capability).unwrap()),
            properties(&doc, "Capability")
        );
        let alert = orchestration_core::store::alerts::Alert {
            id: uuid::Uuid::nil(),
            fingerprint: "f".into(),
            status: "firing".into(),
            alertname: "A".into(),
            labels: json!({}),
            annotations: json!({}),
            starts_at: chrono::Utc::now(),
            ends_at: Some(chrono::Utc::now()),
            generator_url: Some("g".into()),
            receiver: Some("r".into()),
            first_received_at: chrono::Utc::now(),
            last_received_at: chrono::Utc::now(),
        };
        assert_eq!(
            keys(&serde_json::to_value(&alert).unwrap()),
            properties(&doc, "Alert")
        );
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
            "/api/subscriptions/{id}/deliveries",
            "/metrics",
        ] {
            assert!(paths.contains_key(p), "{p} is documented");
        }
    }
}
