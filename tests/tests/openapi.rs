//! The OpenAPI document at `/api/openapi.json` stays true to the router: it is a well-formed
//! OpenAPI 3 document, every operation it documents is served, and the router serves no
//! operation it does not document.
//!
//! Routes and documentation come from the same `utoipa_axum::routes!` registrations in
//! `api/src/routes/mod.rs`; this test checks the served result from outside, and that
//! nothing is registered around those macros. Schemathesis (tests/tests/schemathesis.rs)
//! checks the schemas against what the service really sends.

use std::collections::{BTreeMap, BTreeSet};

use orchestration_e2e::reqwest::{Method, StatusCode};
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{TestApp, repo_root};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (method, path) the document lists.
fn operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for (key, op) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&key.as_str()) {
                ops.insert((key.to_uppercase(), path.clone()), op);
            }
        }
    }
    ops
}

/// Resolves a local `$ref` (`#/a/b`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// Every `$ref` anywhere in `value`, with where it was found.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(r) = v.as_str()
                {
                    out.push((at.to_string(), r.to_string()));
                }
                refs(v, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Follows `$ref`s until a non-reference object.
fn deref<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => value = resolve(doc, r).unwrap_or(&Value::Null),
            None => break,
        }
    }
    value
}

/// The structural rules of OpenAPI 3 that a generator can get wrong, and the conventions of
/// this API (JSON error bodies, camelCase `projectId`). Returns what is wrong.
fn problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut bad = |m: String| problems.push(m);

    let version = doc["openapi"].as_str().unwrap_or("");
    let parts: Vec<&str> = version.split('.').collect();
    if !(parts.len() == 3
        && parts[0] == "3"
        && matches!(parts[1], "0" | "1")
        && parts[2].parse::<u32>().is_ok())
    {
        bad(format!("openapi must be 3.0.x or 3.1.x, is {version:?}"));
    }
    for field in ["title", "version"] {
        if !doc["info"][field].is_string() {
            bad(format!("info.{field} is missing"));
        }
    }
    if doc["paths"].as_object().is_none_or(|p| p.is_empty()) {
        bad("paths is empty".into());
    }

    let mut all_refs = Vec::new();
    refs(doc, "#", &mut all_refs);
    for (at, r) in &all_refs {
        if !r.starts_with("#/") || resolve(doc, r).is_none() {
            bad(format!("{at}: $ref {r} does not resolve"));
        }
    }

    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        if !path.starts_with('/') {
            bad(format!("path {path} does not start with /"));
        }
        for key in item.as_object().into_iter().flatten().map(|(k, _)| k) {
            if !METHODS.contains(&key.as_str())
                && !["parameters", "summary", "description", "servers"].contains(&key.as_str())
            {
                bad(format!("{path}: unknown path item field {key}"));
            }
        }
        let template: BTreeSet<String> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(name, _)| name.to_string()))
            .collect();
        for (key, op) in item.as_object().into_iter().flatten() {
            if !METHODS.contains(&key.as_str()) {
                continue;
            }
            let at = format!("{} {path}", key.to_uppercase());
            match op["operationId"].as_str() {
                Some(id) if operation_ids.insert(id.to_string()) => {}
                Some(id) => bad(format!("{at}: operationId {id} is not unique")),
                None => bad(format!("{at}: no operationId")),
            }
            let params: Vec<&Value> = item["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(op["parameters"].as_array().into_iter().flatten())
                .map(|p| deref(doc, p))
                .collect();
            let mut seen = BTreeSet::new();
            let mut in_path = BTreeSet::new();
            for p in &params {
                let name = p["name"].as_str().unwrap_or("");
                let location = p["in"].as_str().unwrap_or("");
                if name.is_empty()
                    || !["query", "header", "path", "cookie"].contains(&location)
                    || !(p["schema"].is_object() || p["content"].is_object())
                {
                    bad(format!("{at}: malformed parameter {p}"));
                }
                if !seen.insert((name, location)) {
                    bad(format!("{at}: parameter {name} in {location} twice"));
                }
                if location == "path" {
                    in_path.insert(name.to_string());
                    if p["required"] != true {
                        bad(format!("{at}: path parameter {name} is not required"));
                    }
                }
                if location == "query" && name.eq_ignore_ascii_case("project_id") {
                    bad(format!("{at}: the project parameter is spelled projectId"));
                }
            }
            if in_path != template {
                bad(format!(
                    "{at}: path parameters {in_path:?} differ from the template's {template:?}"
                ));
            }
            if let Some(body) = op.get("requestBody") {
                let body = deref(doc, body);
                if body["content"].as_object().is_none_or(|c| c.is_empty()) {
                    bad(format!("{at}: request body without content"));
                }
            }
            let Some(responses) = op["responses"].as_object().filter(|r| !r.is_empty()) else {
                bad(format!("{at}: no responses"));
                continue;
            };
            if !responses.keys().any(|k| k.starts_with('2')) {
                bad(format!("{at}: no success response"));
            }
            for (status, response) in responses {
                let valid_key = status == "default"
                    || (status.len() == 3
                        && status.chars().all(|c| c.is_ascii_digit())
                        && ("100".."600").contains(&status.as_str()))
                    || matches!(status.as_str(), "1XX" | "2XX" | "3XX" | "4XX" | "5XX");
                if !valid_key {
                    bad(format!("{at}: response key {status} is not a status code"));
                }
                let response = deref(doc, response);
                if !response["description"].is_string() {
                    bad(format!("{at} {status}: response without description"));
                }
                // Every error answers with the one error body.
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    let named = schema["$ref"].as_str() == Some("#/components/schemas/ErrorBody");
                    if !named && !at.ends_with("/api/health") {
                        bad(format!(
                            "{at} {status}: error response is not an ErrorBody: {response}"
                        ));
                    }
                }
            }
        }
    }
    let error = deref(doc, &doc["components"]["schemas"]["ErrorBody"]);
    let detail = deref(doc, &error["properties"]["error"]);
    if error["required"] != json!(["error"])
        || detail["properties"]["code"].is_null()
        || detail["properties"]["message"]["type"] != "string"
    {
        bad(format!(
            "ErrorBody is not {{\"error\": {{\"code\", \"message\"}}}}: {error} {detail}"
        ));
    }
    problems
}

/// The handlers registered in `routes/mod.rs`, and any registration that bypasses `routes!`.
fn registrations() -> (Vec<String>, Vec<String>) {
    let dir = repo_root().join("api/src");
    let source = std::fs::read_to_string(dir.join("routes/mod.rs")).unwrap();
    let mut handlers = Vec::new();
    for chunk in source.split("routes!(").skip(1) {
        let inner = chunk.split(')').next().unwrap();
        handlers.extend(
            inner
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(String::from),
        );
    }
    let mut bypasses = Vec::new();
    for file in ["routes/mod.rs", "lib.rs", "main.rs"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for call in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            ".merge(",
            ".fallback_service(",
        ] {
            if text.contains(call) {
                bypasses.push(format!("{file} calls {call}"));
            }
        }
    }
    (handlers, bypasses)
}

fn concrete(path: &str) -> String {
    // Ids that are well-formed but exist nowhere: the route answers, the resource does not.
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        out.push_str("00000000-0000-0000-0000-000000000000");
        rest = &rest[rest[start..].find('}').unwrap() + start + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether the response is the router's own "no such route" or "method not allowed".
async fn unrouted(app: &TestApp, method: &str, path: &str) -> Option<String> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app
        .client
        .request(method.clone(), format!("{}{}", app.base, concrete(path)));
    if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.expect("request is sent");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return Some(format!("405 {body}"));
    }
    if status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route" {
        return Some(format!("404 {body}"));
    }
    None
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let app = TestApp::spawn(0).await;

    let resp = app
        .client
        .get(format!("{}/api/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = resp.json().await.unwrap();

    let problems = problems(&doc);
    assert!(
        problems.is_empty(),
        "the document is not well-formed:\n{}",
        problems.join("\n")
    );

    let ops = operations(&doc);
    let (handlers, bypasses) = registrations();
    assert!(
        bypasses.is_empty(),
        "routes registered around utoipa_axum::routes! are served undocumented: {bypasses:?}"
    );
    assert_eq!(
        handlers.len(),
        ops.len(),
        "routes/mod.rs registers {} handlers ({handlers:?}) but the document has {} operations ({:?})",
        handlers.len(),
        ops.len(),
        ops.keys().collect::<Vec<_>>()
    );
    for must in [
        ("GET", "/api/health"),
        ("GET", "/api/openapi.json"),
        ("POST", "/api/workflows/{id}/trigger"),
        ("GET", "/api/runs/{run_id}"),
        ("POST", "/api/webhooks/alertmanager"),
        ("GET", "/metrics"),
    ] {
        assert!(
            ops.contains_key(&(must.0.to_string(), must.1.to_string())),
            "{must:?} is documented"
        );
    }

    // Documented => served.
    let mut unserved = Vec::new();
    for (method, path) in ops.keys() {
        if let Some(answer) = unrouted(&app, method, path).await {
            unserved.push(format!("{method} {path}: {answer}"));
        }
    }
    assert!(
        unserved.is_empty(),
        "documented but not served:\n{}",
        unserved.join("\n")
    );

    // Served => documented, method by method on the documented paths.
    let paths: BTreeSet<&String> = ops.keys().map(|(_, p)| p).collect();
    let mut undocumented = Vec::new();
    for path in paths {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if ops.contains_key(&(method.to_string(), path.clone())) {
                continue;
            }
            if unrouted(&app, method, path).await.is_none() {
                undocumented.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "served but not documented:\n{}",
        undocumented.join("\n")
    );

    // The router's fallbacks are JSON errors too.
    let (status, body) = app.get("/api/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = app.request(Method::PATCH, "/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn documented_names_are_the_ones_sent() {
    // A few responses checked field by field against their schemas' property names; the
    // Schemathesis test checks every response in depth.
    let app = TestApp::spawn(0).await;
    let (_, doc) = app.get("/api/openapi.json").await;
    let props = |schema: &str| -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{schema} has properties"))
            .keys()
            .cloned()
            .collect()
    };
    let agent_id = app
        .create_agent(
            "echo",
            "testing/echo",
            &["scan"],
            json!({"timeoutSeconds": 5}),
        )
        .await;
    let (_, agent) = app.get(&format!("/api/agents/{agent_id}")).await;
    let sent: BTreeSet<String> = agent.as_object().unwrap().keys().cloned().collect();
    assert!(
        sent.is_subset(&props("Agent")),
        "{sent:?} vs {:?}",
        props("Agent")
    );
    assert!(agent["id"].is_string() && agent["projectId"].is_string());

    let (_, projects) = app.get("/api/projects").await;
    let project = &projects["items"][0];
    assert_eq!(project["id"], "1", "ids are strings: {projects}");
    let sent: BTreeSet<String> = project.as_object().unwrap().keys().cloned().collect();
    assert_eq!(sent, props("Project"));

    let (_, health) = app.get("/api/health").await;
    let sent: BTreeSet<String> = health.as_object().unwrap().keys().cloned().collect();
    assert_eq!(sent, props("Health"));
}
