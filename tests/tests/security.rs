//! Who gets in where: token roles on every documented operation, project isolation by token,
//! revocation, the bootstrap token, and the explicit development switch that turns auth off.

use std::time::Duration;

use orchestration_e2e::reqwest::{Method, StatusCode};
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{TestApp, client_with_token};

/// Every (method, path) the OpenAPI document says needs a token, with the role it names.
async fn protected_operations(app: &TestApp) -> Vec<(Method, String, String)> {
    let (status, doc) = app.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(desc) = op["description"].as_str() else {
                continue;
            };
            let Some(role) = desc
                .split("Needs a token with role `")
                .nth(1)
                .and_then(|r| r.split('`').next())
            else {
                continue;
            };
            // Ids in paths do not matter: the token is checked before anything is looked up.
            let concrete = path
                .replace("{id}", &uuid::Uuid::nil().to_string())
                .replace("{run_id}", &uuid::Uuid::nil().to_string());
            ops.push((
                method.to_uppercase().parse().unwrap(),
                concrete,
                role.to_string(),
            ));
        }
    }
    ops
}

#[tokio::test]
async fn every_operation_needs_a_token_and_a_strong_enough_role() {
    let app = TestApp::spawn(0).await;
    let viewer = client_with_token(&app.create_token("1", "viewer", "vera").await);
    let operator = client_with_token(&app.create_token("1", "operator", "otto").await);
    let anonymous = orchestration_e2e::reqwest::Client::new();
    let ops = protected_operations(&app).await;
    assert!(ops.len() >= 25, "{ops:?}");
    let mut checked = 0;
    for (method, path, role) in &ops {
        let url = format!("{}{path}", app.base);
        let resp = anonymous
            .request(method.clone(), &url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        let wrong = client_with_token("orch_not-a-real-token");
        let resp = wrong
            .request(method.clone(), &url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let weaker: Vec<&orchestration_e2e::reqwest::Client> = match role.as_str() {
            "admin" => vec![&viewer, &operator],
            "operator" => vec![&viewer],
            _ => vec![],
        };
        for client in weaker {
            let resp = client
                .request(method.clone(), &url)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
    // Open: health, metrics, the API description.
    for path in ["/api/health", "/metrics", "/api/openapi.json"] {
        let resp = anonymous
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    // A viewer reads; an operator triggers.
    let resp = viewer
        .get(format!("{}/api/workflows", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_project_token_sees_nothing_of_another_project() {
    let app = TestApp::spawn(1).await;
    // Project 1's things, made by the deployment-wide admin.
    let agent = app
        .create_agent(
            "echo",
            "testing/echo",
            &["echo"],
            json!({"riskLevel": "APPROVAL_REQUIRED"}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "secret", "nodes": [
            {"id": "a", "agentId": agent, "action": "echo"}]}))
        .await;
    let run = app.trigger(&wf, json!({})).await;
    let approval = loop {
        let r = app.run(&run).await;
        if let Some(a) = r["approvals"].as_array().and_then(|a| a.first()) {
            break a["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, project) = app.post("/api/projects", json!({"name": "tenant-b"})).await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let b = project["id"].as_str().unwrap().to_string();
    let b_admin = client_with_token(&app.create_token(&b, "admin", "b-admin").await);

    let call = |method: Method, path: String, body: Option<Value>| {
        let client = b_admin.clone();
        let base = app.base.clone();
        async move {
            let mut req = client.request(method, format!("{base}{path}"));
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    // Guessed ids of project 1: not found, whatever the verb.
    for (method, path, body) in [
        (Method::GET, format!("/api/agents/{agent}"), None),
        (
            Method::PUT,
            format!("/api/agents/{agent}"),
            Some(json!({"name": "x", "type": "BUILTIN"})),
        ),
        (Method::DELETE, format!("/api/agents/{agent}"), None),
        (Method::GET, format!("/api/workflows/{wf}"), None),
        (Method::DELETE, format!("/api/workflows/{wf}"), None),
        (
            Method::POST,
            format!("/api/workflows/{wf}/trigger"),
            Some(json!({})),
        ),
        (Method::GET, format!("/api/workflows/{wf}/runs"), None),
        (Method::GET, format!("/api/runs/{run}"), None),
        (Method::POST, format!("/api/runs/{run}/cancel"), None),
        (Method::POST, format!("/api/runs/{run}/retry"), None),
        (Method::GET, format!("/api/approvals/{approval}"), None),
        (
            Method::POST,
            format!("/api/approvals/{approval}/approve"),
            None,
        ),
        (
            Method::POST,
            format!("/api/approvals/{approval}/reject"),
            None,
        ),
    ] {
        let (status, body) = call(method.clone(), path.clone(), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    // Lists show only project B's (empty) world.
    for path in [
        "/api/agents",
        "/api/workflows",
        "/api/approvals",
        "/api/alerts",
    ] {
        let (status, body) = call(Method::GET, path.to_string(), None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["items"], json!([]), "{path}: {body}");
    }
    let (_, projects) = call(Method::GET, "/api/projects".into(), None).await;
    assert_eq!(projects["items"].as_array().unwrap().len(), 1, "{projects}");
    // Naming project 1 outright is refused.
    let (status, body) = call(Method::GET, "/api/agents?projectId=1".into(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = call(
        Method::POST,
        "/api/tokens".into(),
        Some(json!({"projectId": "1", "role": "admin", "name": "escalate"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        Method::POST,
        "/api/projects".into(),
        Some(json!({"name": "c"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only the deployment admin creates projects"
    );
    // Project 1's run is untouched.
    let (status, body) = app.get(&format!("/api/runs/{run}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "WAITING_APPROVAL");
    // B works in B without naming it.
    let (status, body) = call(
        Method::POST,
        "/api/agents".into(),
        Some(json!({"name": "b-noop", "type": "BUILTIN", "capabilities": [{"name": "noop"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["projectId"], b.as_str());
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_revoked_at_once() {
    let app = TestApp::spawn(0).await;
    let (status, created) = app
        .post(
            "/api/tokens",
            json!({"projectId": "1", "role": "viewer", "name": "dashboard"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("orch_") && secret.len() > 40);
    let id = created["id"].as_str().unwrap().to_string();
    let (status, listed) = app.get("/api/tokens").await;
    assert_eq!(status, StatusCode::OK);
    let text = listed.to_string();
    assert!(!text.contains(&secret), "{text}");
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none())
    );
    assert!(text.contains("dashboard"));

    let viewer = client_with_token(&secret);
    let url = format!("{}/api/workflows", app.base);
    assert_eq!(
        viewer.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let (status, _) = app
        .request(Method::DELETE, &format!("/api/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        viewer.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    for bad in [
        json!({"projectId": "1", "role": "root", "name": "x"}),
        json!({"projectId": "1", "role": "viewer", "name": ""}),
        json!({"projectId": "999", "role": "viewer", "name": "x"}),
    ] {
        let (status, body) = app.post("/api/tokens", bad.clone()).await;
        assert!(status.is_client_error(), "{bad}: {status} {body}");
    }
}

#[tokio::test]
async fn without_a_configured_token_the_first_start_prints_one_and_later_starts_do_not() {
    // An empty ORCH_ADMIN_TOKEN counts as unset.
    let mut app = TestApp::processes(0, &[("ORCH_ADMIN_TOKEN", "")]).await;
    let line = app
        .procs()
        .api
        .dump()
        .lines()
        .skip_while(|l| !l.contains("generated the admin token"))
        .nth(1)
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| panic!("no generated token in:\n{}", app.dump_logs()));
    assert!(line.starts_with("orch_"), "{line}");
    let admin = client_with_token(&line);
    let resp = admin
        .get(format!("{}/api/tokens", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    app.restart_api().await;
    assert!(
        !app.procs().api.dump().contains("generated the admin token"),
        "a second start generates nothing"
    );
    let resp = admin
        .get(format!("{}/api/tokens", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the first token still works");
}

#[tokio::test]
async fn auth_can_be_switched_off_only_explicitly_and_loudly() {
    let mut app = TestApp::processes(0, &[("ORCH_AUTH_DISABLED", "true")]).await;
    let resp = orchestration_e2e::reqwest::Client::new()
        .get(format!("{}/api/workflows", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        app.procs()
            .api
            .dump()
            .contains("AUTHENTICATION IS DISABLED"),
        "{}",
        app.procs().api.dump()
    );
}

/// An agents directory of this test's own, with the scripts it needs.
fn agents_dir_with(scripts: &[(&str, &str)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("orch-agents-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

async fn script_agent(app: &TestApp, name: &str, entrypoint: &str) -> (StatusCode, Value) {
    app.post(
        "/api/agents",
        json!({"name": name, "type": "SCRIPT", "entrypoint": entrypoint,
               "capabilities": [{"name": "run"}], "timeoutSeconds": 60,
               "retry": {"maxAttempts": 1}}),
    )
    .await
}

async fn run_one(app: &TestApp, agent_id: &str, name: &str) -> Value {
    let wf = app
        .create_workflow(json!({"name": name, "nodes": [
            {"id": "n", "agentId": agent_id, "action": "run"}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    app.wait_for_run(&run_id, Duration::from_secs(90)).await
}

#[tokio::test]
async fn entrypoints_stay_inside_the_agents_directory_and_agents_see_no_secrets() {
    let dir = agents_dir_with(&[
        (
            "env-dump",
            "#!/bin/sh\ncat >/dev/null\nexec python3 -c 'import json,os; print(json.dumps(dict(os.environ)))'\n",
        ),
        ("ok", "#!/bin/sh\ncat >/dev/null\necho '{\"ok\": true}'\n"),
    ]);
    std::os::unix::fs::symlink("/bin/true", dir.join("escape")).unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let dir_s = dir.display().to_string();
    let app = TestApp::spawn_with(
        1,
        &[
            ("ORCH_AGENTS_DIR", dir_s.as_str()),
            ("ORCH_ALERTMANAGER_TOKEN", "am-secret-value-0123456789"),
        ],
    )
    .await;
    for (entrypoint, why) in [
        ("../ok", "\"..\""),
        ("/bin/sh", "relative"),
        ("sub/../../ok", "\"..\""),
        ("escape", "outside the agents directory"),
        ("sub", "not a file"),
    ] {
        let (status, body) = script_agent(&app, "bad", entrypoint).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{entrypoint}: {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{entrypoint}: {body}"
        );
    }
    // Registered while harmless, turned into an escape afterwards: refused when it runs.
    let (status, later) = script_agent(&app, "later", "later").await;
    assert_eq!(status, StatusCode::CREATED, "{later}");
    std::os::unix::fs::symlink("/bin/true", dir.join("later")).unwrap();
    let run = run_one(&app, later["id"].as_str().unwrap(), "escape-at-run").await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    let error = run["nodes"][0]["error"].as_str().unwrap();
    assert!(error.contains("outside the agents directory"), "{error}");

    // The worker's own secrets never reach an agent.
    let (status, env_agent) = script_agent(&app, "env-dump", "env-dump").await;
    assert_eq!(status, StatusCode::CREATED, "{env_agent}");
    let run = run_one(&app, env_agent["id"].as_str().unwrap(), "env").await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let env = &run["nodes"][0]["output"];
    assert!(
        env["ORCH_RUN_ID"].is_string(),
        "run variables are there: {env:#}"
    );
    let text = env.to_string();
    for secret in [
        "DATABASE_URL",
        "ORCH_ADMIN_TOKEN",
        "ORCH_ALERTMANAGER_TOKEN",
        &app.token,
        "am-secret-value-0123456789",
        &app.database_url,
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {env:#}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_agent_over_its_limits_fails_cleanly_and_the_worker_keeps_serving() {
    let dir = agents_dir_with(&[
        (
            "flood",
            "#!/bin/sh\ncat >/dev/null\nhead -c 104857600 /dev/zero | tr '\\0' x\n",
        ),
        (
            "hog",
            "#!/bin/sh\ncat >/dev/null\nexec python3 -c 'x = bytearray(1024 * 1024 * 1024); print(len(x))'\n",
        ),
        ("ok", "#!/bin/sh\ncat >/dev/null\necho '{\"ok\": true}'\n"),
    ]);
    let dir_s = dir.display().to_string();
    let mut app = TestApp::processes(
        1,
        &[
            ("ORCH_AGENTS_DIR", dir_s.as_str()),
            ("ORCH_AGENT_MEMORY_MB", "256"),
        ],
    )
    .await;
    let (_, flood) = script_agent(&app, "flood", "flood").await;
    let started = std::time::Instant::now();
    let run = run_one(&app, flood["id"].as_str().unwrap(), "flood").await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    let error = run["nodes"][0]["error"].as_str().unwrap();
    assert!(error.contains("exceeds"), "100 MiB of output: {error}");
    assert!(started.elapsed() < Duration::from_secs(60));

    let (_, hog) = script_agent(&app, "hog", "hog").await;
    let run = run_one(&app, hog["id"].as_str().unwrap(), "hog").await;
    assert_eq!(
        run["status"], "FAILED",
        "a 1 GiB allocation under a 256 MiB limit: {run:#}"
    );
    assert!(
        run["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("MemoryError"),
        "{run:#}"
    );

    let (_, ok) = script_agent(&app, "ok", "ok").await;
    let run = run_one(&app, ok["id"].as_str().unwrap(), "after").await;
    assert_eq!(
        run["status"], "COMPLETED",
        "the worker still serves: {run:#}"
    );
    assert!(
        app.procs()
            .workers
            .iter()
            .all(|w| !w.dump().contains("panicked"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn http_agents_only_reach_allowed_destinations() {
    let app = TestApp::spawn_with(
        0,
        &[("ORCH_HTTP_AGENT_ALLOW", "127.0.0.1:9,*.internal.example")],
    )
    .await;
    for (url, expected) in [
        ("http://127.0.0.1:9/run", StatusCode::CREATED),
        ("https://api.internal.example/x", StatusCode::CREATED),
        ("http://127.0.0.1:10/run", StatusCode::UNPROCESSABLE_ENTITY),
        ("https://evil.example/x", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "https://internal.example.evil.com/",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, body) = app
            .post(
                "/api/agents",
                json!({"name": format!("h-{}", uuid::Uuid::new_v4()), "type": "HTTP", "url": url,
                       "capabilities": [{"name": "run"}]}),
            )
            .await;
        assert_eq!(status, expected, "{url}: {body}");
    }
}

/// A one-node workflow of a BUILTIN no-op agent; returns its id.
async fn noop_workflow(app: &TestApp) -> String {
    let (status, agent) = app
        .post(
            "/api/agents",
            json!({"name": "noop", "type": "BUILTIN", "capabilities": [{"name": "noop"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    app.create_workflow(json!({"name": "ctx", "nodes": [
        {"id": "a", "agentId": agent["id"], "action": "noop"}]}))
        .await
}

#[tokio::test]
async fn oversized_and_deeply_nested_bodies_get_clear_4xx_errors() {
    let app = TestApp::spawn_with(0, &[("ORCH_MAX_BODY_BYTES", "65536")]).await;
    let big = "x".repeat(70_000);
    let (status, body) = app.post("/api/projects", json!({ "name": big })).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let (status, body) = app
        .post("/api/events", json!({"subject": "a.b", "payload": deep}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nested")
    );

    let wf = noop_workflow(&app).await;
    let (status, body) = app
        .post(
            &format!("/api/workflows/{wf}/trigger"),
            json!({"context": {"blob": "y".repeat(60_000), "more": "z".repeat(0)}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Over the body limit a context is a 413; within it but over the context limit, a 422
    // (checked directly against the default limit on a fresh app below).
    let app = TestApp::spawn(0).await;
    let wf = noop_workflow(&app).await;
    let (status, body) = app
        .post(
            &format!("/api/workflows/{wf}/trigger"),
            json!({"context": {"blob": "y".repeat(300_000)}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context")
    );
}

#[tokio::test]
async fn metrics_can_be_served_on_an_address_of_their_own() {
    let port = orchestration_e2e::monitoring::free_port();
    let addr = format!("127.0.0.1:{port}");
    let app = TestApp::spawn_with(0, &[("ORCH_API_METRICS_LISTEN", addr.as_str())]).await;
    let resp = orchestration_e2e::reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("orchestration_build_info")
    );
    let (status, _) = app.get("/api/health").await;
    assert_eq!(status, StatusCode::OK);
}
