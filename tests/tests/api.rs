//! End-to-end checks of the REST surface: validation errors, conflicts, project scoping and
//! health, with the real API binary on a fresh database.

use orchestration_e2e::TestApp;
use orchestration_e2e::reqwest::{Method, StatusCode};
use orchestration_e2e::serde_json::{Value, json};

async fn agent(app: &TestApp, name: &str, actions: &[&str]) -> String {
    app.create_agent(name, "testing/echo", actions, json!({}))
        .await
}

fn node(id: &str, agent: &str, action: &str, deps: &[&str], inputs: Value) -> Value {
    json!({"id": id, "agentId": agent, "action": action, "dependsOn": deps, "inputsJson": inputs})
}

async fn expect_invalid(app: &TestApp, nodes: Value, needle: &str) {
    let (status, body) = app
        .post("/api/workflows", json!({"name": "bad", "nodes": nodes}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "expected {needle:?} in {message:?}"
    );
}

#[tokio::test]
async fn workflow_validation_rejects_each_invalid_definition_with_a_precise_message() {
    let app = TestApp::spawn(0).await;
    let a = agent(&app, "echo", &["scan", "send"]).await;

    expect_invalid(&app, json!([]), "at least one node").await;
    expect_invalid(
        &app,
        json!([
            node("x", &a, "scan", &[], json!({})),
            node("x", &a, "scan", &[], json!({}))
        ]),
        "duplicate node id \"x\"",
    )
    .await;
    expect_invalid(
        &app,
        json!([node("x", &a, "scan", &["ghost"], json!({}))]),
        "depends on unknown node \"ghost\"",
    )
    .await;
    let cycle = json!([
        node("a", &a, "scan", &["c"], json!({})),
        node("b", &a, "scan", &["a"], json!({})),
        node("c", &a, "scan", &["b"], json!({})),
    ]);
    let (_, body) = app
        .post("/api/workflows", json!({"name": "bad", "nodes": cycle}))
        .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cycle"), "{message}");
    for n in ["a", "b", "c"] {
        assert!(message.contains(n), "cycle message names {n}: {message}");
    }
    expect_invalid(
        &app,
        json!([node(
            "x",
            "00000000-0000-0000-0000-000000000000",
            "scan",
            &[],
            json!({})
        )]),
        "unknown agent",
    )
    .await;
    expect_invalid(
        &app,
        json!([node("x", &a, "dance", &[], json!({}))]),
        "does not offer action \"dance\"",
    )
    .await;
    expect_invalid(
        &app,
        json!([node("x", &a, "scan", &[], json!({"v": "{{ context.a"}))]),
        "invalid template",
    )
    .await;
    expect_invalid(
        &app,
        json!([node("x", &a, "scan", &[], json!({"v": "{{ secrets.a }}"}))]),
        "unknown root",
    )
    .await;
    expect_invalid(
        &app,
        json!([
            node("x", &a, "scan", &[], json!({})),
            node("y", &a, "scan", &[], json!({"v": "{{ nodes.x.output.n }}"}))
        ]),
        "not an ancestor",
    )
    .await;
    expect_invalid(
        &app,
        json!([node(
            "x",
            &a,
            "scan",
            &[],
            json!({"v": "{{ nodes.zz.output }}"})
        )]),
        "unknown node \"zz\"",
    )
    .await;

    // Structurally wrong bodies are 4xx JSON errors too, never 500.
    let (status, body) = app
        .post(
            "/api/workflows",
            json!({"name": "bad", "nodes": [{"id": "x"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agentId"),
        "{body}"
    );
    let (status, body) = app
        .post("/api/workflows", json!({"name": "bad", "nodes": "nope"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let raw = app
        .client
        .post(format!("{}/api/workflows", app.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    let raw = app
        .client
        .post(format!("{}/api/workflows", app.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Nothing invalid was stored.
    let (_, list) = app.get("/api/workflows").await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn agents_crud_conflicts_and_deletion_rules() {
    let app = TestApp::spawn(0).await;
    let id = agent(&app, "scanner", &["scan"]).await;

    let (status, body) = app
        .post(
            "/api/agents",
            json!({"name": "scanner", "type": "SCRIPT", "entrypoint": "x", "capabilities": []}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    let (status, body) = app
        .post("/api/agents", json!({"name": "h", "type": "HTTP"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .post(
            "/api/agents",
            json!({"name": "h", "type": "FTP", "url": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .post(
            "/api/agents",
            json!({"name": "h", "type": "SCRIPT", "entrypoint": "x", "retry": {"maxAttempts": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maxAttempts")
    );

    let (status, got) = app.get(&format!("/api/agents/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["name"], "scanner");
    assert_eq!(got["riskLevel"], "AUTO");

    let (status, updated) = app
        .request(
            Method::PUT,
            &format!("/api/agents/{id}"),
            Some(json!({"name": "scanner", "type": "SCRIPT", "entrypoint": "testing/echo",
                        "capabilities": [{"name": "scan", "description": "scan a repo"}], "timeoutSeconds": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["timeoutSeconds"], 5);

    let wf = app
        .create_workflow(
            json!({"name": "uses-scanner", "nodes": [node("s", &id, "scan", &[], json!({}))]}),
        )
        .await;
    let (status, body) = app
        .request(Method::DELETE, &format!("/api/agents/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uses-scanner")
    );

    // A PAUSED workflow no longer holds the agent; triggering it is a conflict.
    let (status, body) = app
        .request(
            Method::PUT,
            &format!("/api/workflows/{wf}"),
            Some(json!({"name": "uses-scanner", "status": "PAUSED", "nodes": [node("s", &id, "scan", &[], json!({}))]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    let (status, body) = app
        .post(&format!("/api/workflows/{wf}/trigger"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = app
        .request(Method::DELETE, &format!("/api/agents/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/api/agents/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = app
        .request(Method::DELETE, &format!("/api/workflows/{wf}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn resources_of_another_project_are_not_found() {
    let app = TestApp::spawn(0).await;
    let (status, project) = app.post("/api/projects", json!({"name": "team-b"})).await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let b = project["id"].as_str().unwrap().to_string();
    let (status, _) = app.post("/api/projects", json!({"name": "team-b"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, projects) = app.get("/api/projects").await;
    assert_eq!(projects["items"].as_array().unwrap().len(), 2);

    let (status, agent_b) = app
        .post(&format!("/api/agents?projectId={b}"),
              json!({"name": "echo", "type": "SCRIPT", "entrypoint": "testing/echo", "capabilities": [{"name": "echo"}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent_b}");
    let agent_b = agent_b["id"].as_str().unwrap().to_string();
    // The same name is free in project 1.
    let agent_a = agent(&app, "echo", &["echo"]).await;

    let (status, wf_b) = app
        .post(
            &format!("/api/workflows?projectId={b}"),
            json!({"name": "w", "nodes": [node("n", &agent_b, "echo", &[], json!({}))]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wf_b}");
    let wf_b = wf_b["id"].as_str().unwrap().to_string();
    let (status, run_b) = app
        .post(
            &format!("/api/workflows/{wf_b}/trigger?projectId={b}"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run_b}");
    let run_b = run_b["runId"].as_str().unwrap().to_string();

    // From project 1 (the default), none of B's resources exist.
    for path in [
        format!("/api/agents/{agent_b}"),
        format!("/api/workflows/{wf_b}"),
        format!("/api/workflows/{wf_b}/runs"),
        format!("/api/runs/{run_b}"),
        format!("/api/workflows/{wf_b}/runs/{run_b}"),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, _) = app
        .post(&format!("/api/workflows/{wf_b}/trigger"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A workflow in project 1 cannot use B's agent.
    let (status, body) = app
        .post(
            "/api/workflows",
            json!({"name": "steal", "nodes": [node("n", &agent_b, "echo", &[], json!({}))]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, agents_a) = app.get("/api/agents").await;
    assert_eq!(agents_a["items"].as_array().unwrap().len(), 1);
    assert_eq!(agents_a["items"][0]["id"], agent_a.as_str());

    let (status, _) = app.get("/api/agents?projectId=999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/api/agents?projectId=abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/api/runs/not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn trigger_writes_the_run_nodes_and_root_jobs_together() {
    let app = TestApp::spawn(0).await;
    let a = agent(&app, "echo", &["echo"]).await;
    let wf = app
        .create_workflow(json!({"name": "pair", "nodes": [
            node("first", &a, "echo", &[], json!({})),
            node("second", &a, "echo", &["first"], json!({}))]}))
        .await;
    let (status, body) = app
        .post(
            &format!("/api/workflows/{wf}/trigger"),
            json!({"context": [1, 2]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let run_id = app.trigger(&wf, json!({"k": "v"})).await;

    // With no workers, the run waits with its root READY: the one job in the queue.
    let run = app.run(&run_id).await;
    assert_eq!(run["status"], "RUNNING");
    assert_eq!(run["context"], json!({"k": "v"}));
    assert_eq!(orchestration_e2e::node(&run, "first")["status"], "READY");
    assert_eq!(orchestration_e2e::node(&run, "second")["status"], "PENDING");
    assert!(orchestration_e2e::agent_runs(&run, "first").is_empty());
}

#[tokio::test]
async fn health_reports_the_database_and_unknown_routes_are_json_404s() {
    let app = TestApp::spawn(0).await;
    let (status, health) = app.get("/api/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "orchestration");
    assert_eq!(health["database"], true);
    assert!(health["nats"].is_null());
    assert!(health["timestamp"].is_string());
    let (status, body) = app.get("/api/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = app.request(Method::PATCH, "/api/agents", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

/// Triggers reuse the plan of a workflow while it and its agents are unchanged: every edit
/// must show in the next run, whichever process made it.
#[tokio::test]
async fn each_trigger_runs_the_workflow_and_agents_as_they_are_now() {
    let app = TestApp::spawn(0).await;
    let a = agent(&app, "echo", &["echo"]).await;
    let two = json!([
        node("first", &a, "echo", &[], json!({})),
        node("second", &a, "echo", &["first"], json!({}))
    ]);
    let wf = app
        .create_workflow(json!({"name": "edited", "nodes": two}))
        .await;
    let node_ids = |run: &Value| -> Vec<String> {
        let mut ids: Vec<String> = run["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["nodeId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    for _ in 0..2 {
        let run = app.run(&app.trigger(&wf, json!({})).await).await;
        assert_eq!(run["workflowVersion"], 1, "{run}");
        assert_eq!(node_ids(&run), ["first", "second"]);
    }

    // A new version of the workflow.
    let three = json!([
        node("first", &a, "echo", &[], json!({})),
        node("second", &a, "echo", &["first"], json!({})),
        node("third", &a, "echo", &["first"], json!({}))
    ]);
    let (status, body) = app
        .request(
            Method::PUT,
            &format!("/api/workflows/{wf}"),
            Some(json!({"name": "edited", "nodes": three})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = app.run(&app.trigger(&wf, json!({})).await).await;
    assert_eq!(run["workflowVersion"], 2, "{run}");
    assert_eq!(node_ids(&run), ["first", "second", "third"]);

    // An agent that now needs an approval: the root waits for one.
    let put_agent = |risk: &'static str| {
        let app = &app;
        let a = a.clone();
        async move {
            let (status, body) = app
                .request(
                    Method::PUT,
                    &format!("/api/agents/{a}"),
                    Some(
                        json!({"name": "echo", "type": "SCRIPT", "entrypoint": "testing/echo",
                                "capabilities": [{"name": "echo"}], "riskLevel": risk}),
                    ),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    put_agent("APPROVAL_REQUIRED").await;
    for _ in 0..2 {
        let run = app.run(&app.trigger(&wf, json!({})).await).await;
        assert_eq!(
            orchestration_e2e::node(&run, "first")["status"],
            "WAITING_APPROVAL",
            "{run}"
        );
        assert_eq!(run["approvals"].as_array().unwrap().len(), 1, "{run}");
    }
    put_agent("AUTO").await;
    let run = app.run(&app.trigger(&wf, json!({})).await).await;
    assert_eq!(orchestration_e2e::node(&run, "first")["status"], "READY");
    assert_eq!(run["approvals"], json!([]), "{run}");

    // A paused workflow starts no run.
    let (status, body) = app
        .request(
            Method::PUT,
            &format!("/api/workflows/{wf}"),
            Some(json!({"name": "edited", "status": "PAUSED", "nodes": three})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(&format!("/api/workflows/{wf}/trigger"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}
