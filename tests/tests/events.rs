//! Event triggers over a private JetStream-enabled nats-server, the REST event endpoint,
//! lifecycle events, and the AlertManager webhook.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use orchestration_e2e::nats::PrivateNats;
use orchestration_e2e::reqwest::StatusCode;
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{TestApp, fixtures_dir, node};

fn nats_env(nats: &PrivateNats) -> Vec<(&'static str, String)> {
    vec![("NATS_URL", nats.url())]
}

async fn app_with_nats(nats: &PrivateNats, workers: usize) -> TestApp {
    let env = nats_env(nats);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_with(workers, &env).await
}

async fn echo_on(app: &TestApp, pattern: &str, name: &str) -> String {
    let echo = match app.get("/api/agents").await.1["items"]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
    {
        Some(agent) => agent["id"].as_str().unwrap().to_string(),
        None => {
            app.create_agent("echo", "testing/echo", &["echo"], json!({}))
                .await
        }
    };
    app.create_workflow(json!({"name": name, "trigger": {"type": "event", "pattern": pattern},
        "nodes": [{"id": "echo", "agentId": echo, "action": "echo", "inputsJson": {"file": "{{ context.file }}"}}]}))
        .await
}

async fn runs_of(app: &TestApp, wf: &str) -> Vec<Value> {
    let (status, list) = app.get(&format!("/api/workflows/{wf}/runs")).await;
    assert_eq!(status, StatusCode::OK);
    list["items"].as_array().unwrap().clone()
}

async fn wait_runs(app: &TestApp, wf: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = runs_of(app, wf).await;
        if runs.len() >= n {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} runs of {wf}, have {}\n{}",
            runs.len(),
            app.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(nats: &PrivateNats, subject: &str, payload: &[u8], msg_id: Option<&str>) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut headers = HeaderMap::new();
    if let Some(id) = msg_id {
        headers.insert("Nats-Msg-Id", id);
    }
    // The stream exists once the API has started consuming; retry briefly until it does.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match js
            .publish_with_headers(
                subject.to_string(),
                headers.clone(),
                payload.to_vec().into(),
            )
            .await
        {
            Ok(ack) => {
                ack.await.unwrap();
                return;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "publish to {subject} failed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

macro_rules! nats_or_skip {
    () => {
        match PrivateNats::start() {
            Some(n) => n,
            None => {
                eprintln!("skipped: nats-server could not be started here");
                return;
            }
        }
    };
}

#[tokio::test]
async fn a_nats_event_starts_scan_and_notify_with_the_payload_as_context() {
    let nats = nats_or_skip!();
    let app = app_with_nats(&nats, 2).await;
    let scanner = app
        .create_agent("security-scanner", "security-scanner", &["scan"], json!({}))
        .await;
    let notifier = app
        .create_agent("notifier", "notifier", &["send"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "scan-on-change", "trigger": {"type": "event", "pattern": "graph.file.updated"},
            "nodes": [
                {"id": "scan-node", "agentId": scanner, "action": "scan", "inputsJson": {"repositoryPath": "{{ context.repositoryPath }}"}},
                {"id": "notify-node", "agentId": notifier, "action": "send", "dependsOn": ["scan-node"],
                 "inputsJson": {"channel": "console", "message": "Security scan complete: {{ nodes.scan-node.output.summary.total }} findings"}}]}))
        .await;
    let repo = fixtures_dir().join("vulnerable-repo").display().to_string();
    let payload = json!({"repositoryPath": repo, "changedBy": "ci"});
    publish(
        &nats,
        "graph.file.updated",
        payload.to_string().as_bytes(),
        Some("evt-1"),
    )
    .await;

    let runs = wait_runs(&app, &wf, 1).await;
    let run = app
        .wait_for_run(runs[0]["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["trigger"], "event");
    assert_eq!(run["context"]["repositoryPath"], repo);
    assert_eq!(run["context"]["changedBy"], "ci");
    assert_eq!(run["context"]["event"]["subject"], "graph.file.updated");
    assert_eq!(run["context"]["event"]["id"], "evt-1");
    assert!(
        node(&run, "notify-node")["output"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Security scan complete: ")
    );
}

#[tokio::test]
async fn duplicates_junk_and_unmatched_messages_start_nothing_extra() {
    let nats = nats_or_skip!();
    let app = app_with_nats(&nats, 1).await;
    let wf = echo_on(&app, "graph.file.*", "on-file").await;
    publish(
        &nats,
        "graph.file.updated",
        br#"{"file": "a.txt"}"#,
        Some("same-id"),
    )
    .await;
    publish(
        &nats,
        "graph.file.updated",
        br#"{"file": "a.txt"}"#,
        Some("same-id"),
    )
    .await;
    publish(
        &nats,
        "graph.dir.created",
        br#"{"file": "matches the stream, not the workflow"}"#,
        None,
    )
    .await;
    publish(&nats, "graph.file.updated", b"this is not json", None).await;
    publish(
        &nats,
        "graph.file.updated",
        br#"{"file": "b.txt"}"#,
        Some("other-id"),
    )
    .await;

    let runs = wait_runs(&app, &wf, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs_after = runs_of(&app, &wf).await;
    assert_eq!(
        runs_after.len(),
        2,
        "one run per distinct message: {runs:#?}"
    );
    let mut files: Vec<String> = runs_after
        .iter()
        .map(|r| r["context"]["file"].as_str().unwrap().to_string())
        .collect();
    files.sort();
    assert_eq!(files, ["a.txt", "b.txt"]);
}

#[tokio::test]
async fn an_event_published_while_the_api_is_down_starts_its_run_after_restart() {
    let nats = nats_or_skip!();
    let mut app = app_with_nats(&nats, 1).await;
    let wf = echo_on(&app, "events.deploy.>", "on-deploy").await;
    // Let the consumer create the stream, then stop the API.
    publish(
        &nats,
        "events.deploy.started",
        br#"{"file": "first"}"#,
        None,
    )
    .await;
    wait_runs(&app, &wf, 1).await;
    app.kill_api();
    publish(
        &nats,
        "events.deploy.finished",
        br#"{"file": "while-down"}"#,
        None,
    )
    .await;
    app.restart_api().await;
    let runs = wait_runs(&app, &wf, 2).await;
    assert!(
        runs.iter().any(|r| r["context"]["file"] == "while-down"),
        "{runs:#?}"
    );
    for r in runs {
        let run = app
            .wait_for_run(r["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(run["status"], "COMPLETED");
    }
}

#[tokio::test]
async fn two_api_replicas_share_the_consumer_and_start_each_event_once() {
    let nats = nats_or_skip!();
    let mut app = app_with_nats(&nats, 1).await;
    app.add_api().await;
    let wf = echo_on(&app, "graph.>", "on-graph").await;
    for i in 0..20 {
        publish(
            &nats,
            "graph.node.changed",
            json!({"file": format!("f{i}")}).to_string().as_bytes(),
            None,
        )
        .await;
    }
    wait_runs(&app, &wf, 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs_of(&app, &wf).await.len(), 20);
}

#[tokio::test]
async fn lifecycle_events_follow_a_run_and_health_tracks_nats() {
    let mut nats = nats_or_skip!();
    let app = app_with_nats(&nats, 1).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("orchestration.>").await.unwrap();
    client.flush().await.unwrap();
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let wf = app.create_workflow(json!({"name": "watched", "nodes": [{"id": "only", "agentId": echo, "action": "echo"}]})).await;
    let run_id = app.trigger(&wf, json!({})).await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(&"orchestration.run.completed".to_string()) {
        let msg = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            sub.next(),
        )
        .await
        .unwrap_or_else(|_| panic!("lifecycle events so far: {seen:?}"))
        .unwrap();
        let body: Value = orchestration_e2e::serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(body["runId"], run_id.as_str());
        assert_eq!(body["workflowName"], "watched");
        seen.push(msg.subject.to_string());
    }
    // Every status change of the run and its node, in the order they committed (since the
    // outbox: the node's READY and RUNNING too).
    assert_eq!(
        seen,
        [
            "orchestration.run.running",
            "orchestration.node.ready",
            "orchestration.node.running",
            "orchestration.node.completed",
            "orchestration.run.completed"
        ]
    );

    let (status, health) = app.get("/api/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["nats"], true);
    assert_eq!(health["status"], "ok");

    // NATS goes away: REST keeps working and health says so.
    drop(sub);
    nats.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, health) = app.get("/api/health").await;
        assert_eq!(status, StatusCode::OK);
        if health["nats"] == false {
            assert_eq!(health["status"], "degraded");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never noticed NATS was down: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let manual = app.trigger(&wf, json!({})).await;
    assert_eq!(
        app.wait_for_run(&manual, Duration::from_secs(30)).await["status"],
        "COMPLETED"
    );

    // It comes back, and so does consumption.
    nats.start_again();
    let on_event = echo_on(&app, "graph.file.updated", "after-outage").await;
    publish(&nats, "graph.file.updated", br#"{"file": "after"}"#, None).await;
    let runs = wait_runs(&app, &on_event, 1).await;
    assert_eq!(runs[0]["context"]["file"], "after");
    let (_, health) = app.get("/api/health").await;
    assert_eq!(health["nats"], true);
}

#[tokio::test]
async fn rest_events_go_through_the_same_path_once_per_id() {
    let app = TestApp::spawn(1).await;
    let wf = echo_on(&app, "graph.file.updated", "rest-events").await;
    let (status, body) = app
        .post(
            "/api/events",
            json!({"subject": "graph.file.updated", "payload": {"file": "x"}, "id": "ext-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let runs = body["triggeredRuns"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    let (status, again) = app
        .post(
            "/api/events",
            json!({"subject": "graph.file.updated", "payload": {"file": "x"}, "id": "ext-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["triggeredRuns"], json!(runs));
    assert_eq!(again["duplicate"], true);
    let (_, none) = app
        .post(
            "/api/events",
            json!({"subject": "graph.other", "payload": {}}),
        )
        .await;
    assert_eq!(none["triggeredRuns"], json!([]));
    for bad in [
        json!({"subject": "graph.*"}),
        json!({"subject": ""}),
        json!({"payload": {}}),
        json!({"subject": "a..b"}),
    ] {
        let (status, body) = app.post("/api/events", bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let run = app
        .wait_for_run(runs[0].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(run["status"], "COMPLETED");
    assert_eq!(run["context"]["file"], "x");
    assert_eq!(runs_of(&app, &wf).await.len(), 1);
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("alertmanager").join(name)).unwrap();
    orchestration_e2e::serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn alertmanager_alerts_are_stored_once_start_workflows_and_resolve() {
    let app = TestApp::spawn(1).await;
    let echo = app
        .create_agent("remediate", "testing/echo", &["fix"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "remediation", "trigger": {"type": "event", "pattern": "alert.>"},
            "nodes": [{"id": "fix", "agentId": echo, "action": "fix",
                       "inputsJson": {"alert": "{{ context.alert.labels.alertname }}", "severity": "{{ context.alert.labels.severity }}"}}]}))
        .await;
    let sample = fixture("alertmanager-webhook-sample.json");
    let (status, body) = app.post("/api/webhooks/alertmanager", sample.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["received"], 1);
    let runs = body["triggeredRuns"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    let run = app
        .wait_for_run(runs[0].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["trigger"], "alert");
    assert_eq!(run["context"]["event"]["subject"], "alert.AlwaysFiring");
    assert_eq!(
        node(&run, "fix")["output"]["inputs"],
        json!({"alert": "AlwaysFiring", "severity": "critical"})
    );

    // AlertManager repeats itself: no new alert, no new run.
    let (status, again) = app.post("/api/webhooks/alertmanager", sample).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["triggeredRuns"], json!([]));
    let (_, firing) = app.get("/api/alerts?status=firing").await;
    let items = firing["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["fingerprint"], "de7889b2804c8e35");
    assert_eq!(items[0]["labels"]["severity"], "critical");
    assert_eq!(
        items[0]["annotations"]["summary"],
        "Always firing test alert"
    );
    assert!(items[0]["endsAt"].is_null());
    assert_eq!(runs_of(&app, &wf).await.len(), 1);

    // The resolved delivery updates the same alert.
    let mut resolved = fixture("alertmanager-webhook-sample.json");
    resolved["status"] = json!("resolved");
    resolved["alerts"][0]["status"] = json!("resolved");
    resolved["alerts"][0]["endsAt"] = json!("2026-11-28T05:10:00Z");
    let (status, body) = app.post("/api/webhooks/alertmanager", resolved).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["triggeredRuns"], json!([]));
    let (_, firing) = app.get("/api/alerts?status=firing").await;
    assert_eq!(firing["items"], json!([]));
    let (_, done) = app.get("/api/alerts?status=resolved").await;
    assert_eq!(done["items"].as_array().unwrap().len(), 1);
    assert_eq!(done["items"][0]["endsAt"], "2026-11-28T05:10:00Z");
    let (status, _) = app.get("/api/alerts?status=pending").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_alertmanager_bodies_get_a_4xx_never_a_5xx() {
    let app = TestApp::spawn(0).await;
    let sample = fixture("alertmanager-webhook-sample.json");
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty body".into(), b"".to_vec()),
        ("not json".into(), b"<html>".to_vec()),
        (
            "truncated".into(),
            br#"{"version":"4","alerts":[{"#.to_vec(),
        ),
        ("array".into(), b"[]".to_vec()),
        ("null".into(), b"null".to_vec()),
    ];
    let mut mutate = |name: &str, f: &dyn Fn(&mut Value)| {
        let mut v = sample.clone();
        f(&mut v);
        cases.push((name.to_string(), v.to_string().into_bytes()));
    };
    mutate("no alerts", &|v| {
        v.as_object_mut().unwrap().remove("alerts");
    });
    mutate("alerts not a list", &|v| v["alerts"] = json!("x"));
    mutate("version 3", &|v| v["version"] = json!("3"));
    mutate("no version", &|v| {
        v.as_object_mut().unwrap().remove("version");
    });
    mutate("bad startsAt", &|v| {
        v["alerts"][0]["startsAt"] = json!("yesterday")
    });
    mutate("no fingerprint", &|v| {
        v["alerts"][0]
            .as_object_mut()
            .unwrap()
            .remove("fingerprint");
    });
    mutate("no alertname", &|v| {
        v["alerts"][0]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("alertname");
    });
    mutate("bad status", &|v| {
        v["alerts"][0]["status"] = json!("pending")
    });
    mutate("labels not strings", &|v| {
        v["alerts"][0]["labels"]["severity"] = json!(5)
    });
    mutate("empty fingerprint", &|v| {
        v["alerts"][0]["fingerprint"] = json!("")
    });
    for (name, body) in cases {
        let resp = app
            .client
            .post(format!("{}/api/webhooks/alertmanager", app.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_client_error(), "{name}: {status} {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {body}"
        );
    }
    let (_, alerts) = app.get("/api/alerts").await;
    assert_eq!(alerts["items"], json!([]), "nothing malformed was stored");
}

async fn approval_app() -> (TestApp, String) {
    let app = TestApp::spawn_with(1, &[("ORCH_RESCUE_INTERVAL_MS", "250")]).await;
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let deploy = app
        .create_agent(
            "deployer",
            "testing/echo",
            &["deploy"],
            json!({"riskLevel": "APPROVAL_REQUIRED"}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "guarded", "nodes": [
            {"id": "plan", "agentId": echo, "action": "echo", "inputsJson": {"target": "{{ context.target }}"}},
            {"id": "deploy", "agentId": deploy, "action": "deploy", "dependsOn": ["plan"],
             "inputsJson": {"target": "{{ nodes.plan.output.inputs.target }}"}, "approval": {"required": true, "timeoutSeconds": 3600}},
            {"id": "announce", "agentId": echo, "action": "echo", "dependsOn": ["deploy"]}]}))
        .await;
    (app, wf)
}

/// A client acting as `person`: an operator token named after them.
async fn as_person(app: &TestApp, person: &str) -> orchestration_e2e::reqwest::Client {
    orchestration_e2e::client_with_token(&app.create_token("1", "operator", person).await)
}

async fn trigger_as(app: &TestApp, wf: &str, actor: &str) -> String {
    let resp = as_person(app, actor)
        .await
        .post(format!("{}/api/workflows/{wf}/trigger", app.base))
        .json(&json!({"context": {"target": "prod"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    resp.json::<Value>().await.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn pending_approval(app: &TestApp, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = app.run(run_id).await;
        if let Some(a) = run["approvals"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["status"] == "PENDING"))
        {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "no approval requested: {run:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn decide(
    app: &TestApp,
    id: &str,
    verb: &str,
    actor: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let client = match actor {
        Some(a) => as_person(app, a).await,
        None => app.client.clone(),
    };
    let resp = client
        .post(format!("{}/api/approvals/{id}/{verb}", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_high_risk_node_waits_for_approval_and_runs_once_approved() {
    let (app, wf) = approval_app().await;
    let run_id = trigger_as(&app, &wf, "carol").await;
    let approval = pending_approval(&app, &run_id).await;
    let run = app.run(&run_id).await;
    assert_eq!(run["status"], "WAITING_APPROVAL");
    assert_eq!(node(&run, "deploy")["status"], "WAITING_APPROVAL");
    assert_eq!(
        approval["input"],
        json!({"target": "prod"}),
        "the request shows the rendered input"
    );
    assert_eq!(approval["agentName"], "deployer");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        orchestration_e2e::agent_runs(&app.run(&run_id).await, "deploy").is_empty(),
        "nothing runs before approval"
    );

    let id = approval["id"].as_str().unwrap();
    let (status, listed) = app.get("/api/approvals?status=PENDING").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"][0]["id"], id);
    let (status, body) = decide(&app, id, "approve", Some("carol"), json!({"by": "carol"})).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the triggerer cannot approve: {body}"
    );
    let (status, body) = decide(
        &app,
        id,
        "approve",
        Some("alice"),
        json!({"by": "alice", "comment": "ship it"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "APPROVED");
    let (status, _) = decide(&app, id, "reject", Some("bob"), json!({"by": "bob"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "deciding twice");

    let run = app.wait_for_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(
        node(&run, "deploy")["output"]["inputs"],
        json!({"target": "prod"})
    );
    let decided = &run["approvals"][0];
    // The token says who decided, whatever the body claims.
    assert_eq!(decided["decidedBy"], "token:alice");
    assert_eq!(run["triggeredBy"], "token:carol");
    assert_eq!(decided["comment"], "ship it");
    assert!(decided["decidedAt"].is_string());
    let (status, one) = app.get(&format!("/api/approvals/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["status"], "APPROVED");
}

#[tokio::test]
async fn a_rejected_approval_fails_the_run_with_who_and_why() {
    let (app, wf) = approval_app().await;
    let run_id = trigger_as(&app, &wf, "carol").await;
    let approval = pending_approval(&app, &run_id).await;
    let (status, body) = decide(
        &app,
        approval["id"].as_str().unwrap(),
        "reject",
        Some("bob"),
        json!({"by": "mallory", "comment": "not on a Friday"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = app.wait_for_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "FAILED");
    let error = node(&run, "deploy")["error"].as_str().unwrap();
    assert!(
        error.contains("rejected by token:bob") && error.contains("not on a Friday"),
        "{error}"
    );
    assert_eq!(node(&run, "announce")["status"], "SKIPPED");
    assert!(run["error"].as_str().unwrap().contains("deploy"));
}

#[tokio::test]
async fn an_unanswered_approval_expires_and_fails_the_node() {
    let app = TestApp::spawn_with(1, &[("ORCH_RESCUE_INTERVAL_MS", "250")]).await;
    let deploy = app
        .create_agent(
            "deployer",
            "testing/echo",
            &["deploy"],
            json!({"riskLevel": "APPROVAL_REQUIRED"}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "short-fuse", "nodes": [
            {"id": "deploy", "agentId": deploy, "action": "deploy", "approval": {"required": true, "timeoutSeconds": 1}}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert!(
        node(&run, "deploy")["error"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{run:#}"
    );
    assert_eq!(run["approvals"][0]["status"], "EXPIRED");
    let (status, _) = decide(
        &app,
        run["approvals"][0]["id"].as_str().unwrap(),
        "approve",
        Some("alice"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_alertmanager_webhook_requires_its_bearer_token_when_one_is_set() {
    let app = TestApp::spawn_with(0, &[("ORCH_ALERTMANAGER_TOKEN", "s3cret-token")]).await;
    let sample = fixture("alertmanager-webhook-sample.json");
    let url = format!("{}/api/webhooks/alertmanager", app.base);
    for auth in [None, Some("Bearer wrong"), Some("s3cret-token")] {
        let mut req = app.client.post(&url).json(&sample);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let resp = app
        .client
        .post(&url)
        .bearer_auth("s3cret-token")
        .json(&sample)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, alerts) = app.get("/api/alerts").await;
    assert_eq!(alerts["items"].as_array().unwrap().len(), 1);
}
