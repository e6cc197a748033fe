//! End-to-end: the API and two worker processes on a fresh database, driven over HTTP as a
//! user would.

use std::time::Duration;

use orchestration_e2e::reqwest::StatusCode;
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{TestApp, agent_runs, fixtures_dir, metric_value, node};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

async fn echo_agent(app: &TestApp) -> String {
    app.create_agent("echo", "testing/echo", &["echo", "join"], json!({}))
        .await
}

/// Registers the two agents of the reference scenario and the scan-and-notify workflow.
async fn scan_and_notify(app: &TestApp, notify_inputs: Value) -> String {
    let scanner = app
        .create_agent(
            "security-scanner",
            "security-scanner",
            &["scan"],
            json!({"timeoutSeconds": 60}),
        )
        .await;
    let notifier = app
        .create_agent("notifier", "notifier", &["send"], json!({}))
        .await;
    app.create_workflow(json!({
        "name": "scan-and-notify",
        "trigger": {"type": "manual"},
        "nodes": [
            {"id": "scan-node", "agentId": scanner, "action": "scan",
             "inputsJson": {"repositoryPath": "{{ context.repositoryPath }}"}},
            {"id": "notify-node", "agentId": notifier, "action": "send", "dependsOn": ["scan-node"],
             "inputsJson": notify_inputs}
        ]
    }))
    .await
}

fn expected_findings() -> i64 {
    let text =
        std::fs::read_to_string(fixtures_dir().join("vulnerable-repo.expected.json")).unwrap();
    let v: Value = orchestration_e2e::serde_json::from_str(&text).unwrap();
    v["total"].as_i64().unwrap()
}

fn vulnerable_repo() -> String {
    fixtures_dir().join("vulnerable-repo").display().to_string()
}

#[tokio::test]
async fn single_node_workflow_completes_with_its_output() {
    let app = TestApp::spawn(2).await;
    let echo = echo_agent(&app).await;
    let wf = app
        .create_workflow(json!({
            "name": "one-step",
            "nodes": [{"id": "only", "agentId": echo, "action": "echo",
                       "inputsJson": {"greeting": "hello {{ context.who }}", "n": "{{ context.n }}"}}]
        }))
        .await;
    let run_id = app.trigger(&wf, json!({"who": "world", "n": 42})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;

    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert!(run["finishedAt"].is_string());
    assert_eq!(run["trigger"], "manual");
    let only = node(&run, "only");
    assert_eq!(only["status"], "COMPLETED");
    assert_eq!(only["attempts"], 1);
    assert_eq!(
        only["output"]["inputs"],
        json!({"greeting": "hello world", "n": 42})
    );
    assert_eq!(only["output"]["attempt"], 1);
    let attempts = agent_runs(&run, "only");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], "COMPLETED");
    assert_eq!(attempts[0]["exitCode"], 0);
    assert_eq!(
        attempts[0]["input"],
        json!({"greeting": "hello world", "n": 42})
    );
    assert!(attempts[0]["durationMs"].as_i64().unwrap() >= 0);

    // The run shows up in the workflow's history, newest first, and under the workflow path.
    let (status, list) = app
        .get(&format!(
            "/api/workflows/{wf}/runs?status=COMPLETED&limit=5"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"][0]["id"], run_id.as_str());
    let (status, same) = app.get(&format!("/api/workflows/{wf}/runs/{run_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["id"], run_id.as_str());
}

#[tokio::test]
async fn scan_and_notify_renders_the_real_finding_count() {
    let app = TestApp::spawn(2).await;
    let wf = scan_and_notify(
        &app,
        json!({"channel": "console",
               "message": "Security scan complete: {{ nodes.scan-node.output.summary.total }} findings",
               "findings": "{{ nodes.scan-node.output.summary.total }}"}),
    )
    .await;
    let run_id = app
        .trigger(&wf, json!({"repositoryPath": vulnerable_repo()}))
        .await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;

    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let total = expected_findings();
    assert!(total > 0);
    assert_eq!(node(&run, "scan-node")["output"]["summary"]["total"], total);
    let notify = node(&run, "notify-node");
    assert_eq!(
        notify["output"]["message"],
        format!("Security scan complete: {total} findings")
    );
    assert_eq!(notify["output"]["delivered"], true);
    // A whole-string template keeps the JSON type of what it reads.
    assert_eq!(
        agent_runs(&run, "notify-node")[0]["input"]["findings"],
        total
    );
}

#[tokio::test]
async fn notifier_webhook_channel_posts_the_message() {
    use axum::{Json, Router, routing::post};
    let received: std::sync::Arc<tokio::sync::Mutex<Vec<Value>>> = Default::default();
    let sink = received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().await.push(body);
                Json(json!({"ok": true}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let app = TestApp::spawn(1).await;
    let wf = scan_and_notify(
        &app,
        json!({"channel": "webhook", "url": hook,
               "message": "Security scan complete: {{ nodes.scan-node.output.summary.total }} findings"}),
    )
    .await;
    let run_id = app
        .trigger(&wf, json!({"repositoryPath": vulnerable_repo()}))
        .await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let got = received.lock().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]["message"],
        format!("Security scan complete: {} findings", expected_findings())
    );
    assert_eq!(got[0]["run"]["runId"], run_id.as_str());
}

#[tokio::test]
async fn fan_out_and_fan_in_join_sees_both_branches() {
    let app = TestApp::spawn(2).await;
    let echo = echo_agent(&app).await;
    let wf = app
        .create_workflow(json!({
            "name": "diamond",
            "nodes": [
                {"id": "root", "agentId": echo, "action": "echo", "inputsJson": {"seed": "{{ context.seed }}"}},
                {"id": "left", "agentId": echo, "action": "echo", "dependsOn": ["root"],
                 "inputsJson": {"side": "left", "seed": "{{ nodes.root.output.inputs.seed }}"}},
                {"id": "right", "agentId": echo, "action": "echo", "dependsOn": ["root"],
                 "inputsJson": {"side": "right", "seed": "{{ nodes.root.output.inputs.seed }}"}},
                {"id": "join", "agentId": echo, "action": "join", "dependsOn": ["left", "right"],
                 "inputsJson": {"left": "{{ nodes.left.output.inputs }}", "right": "{{ nodes.right.output.inputs }}",
                                "summary": "{{ nodes.left.output.inputs.side }}+{{ nodes.right.output.inputs.side }}"}}
            ]
        }))
        .await;
    let run_id = app.trigger(&wf, json!({"seed": 7})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let join = &node(&run, "join")["output"]["inputs"];
    assert_eq!(join["left"], json!({"side": "left", "seed": 7}));
    assert_eq!(join["right"], json!({"side": "right", "seed": 7}));
    assert_eq!(join["summary"], "left+right");
    // The join started only after both branches finished.
    let join_start = agent_runs(&run, "join")[0]["startedAt"]
        .as_str()
        .unwrap()
        .to_string();
    for branch in ["left", "right"] {
        let done = agent_runs(&run, branch)[0]["finishedAt"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            done <= join_start,
            "{branch} finished {done}, join started {join_start}"
        );
    }
    assert_eq!(run["agentRuns"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn an_agent_that_fails_twice_then_succeeds_completes_on_the_third_attempt() {
    let app = TestApp::spawn(2).await;
    let flaky = app
        .create_agent("flaky", "testing/flaky", &["work"],
            json!({"retry": {"maxAttempts": 3, "initialBackoffMs": 100, "multiplier": 2.0, "maxBackoffMs": 1000}}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "flaky", "nodes": [
            {"id": "work", "agentId": flaky, "action": "work", "inputsJson": {"failTimes": 2}}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;

    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let attempts = agent_runs(&run, "work");
    let statuses: Vec<&str> = attempts
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["FAILED", "FAILED", "COMPLETED"]);
    let numbers: Vec<i64> = attempts
        .iter()
        .map(|a| a["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("flaky: failing attempt 1"),
        "{:#}",
        attempts[0]
    );
    assert_eq!(attempts[0]["exitCode"], 1);
    let work = node(&run, "work");
    assert_eq!(work["attempts"], 3);
    assert_eq!(work["output"]["succeededOnAttempt"], 3);
    assert!(work["error"].is_null());
}

#[tokio::test]
async fn a_run_whose_last_node_succeeds_after_another_failed_is_failed() {
    let app = TestApp::spawn(1).await;
    let id = &app
        .create_builtin_agent(
            "builtin",
            &["sleep", "fail"],
            json!({"retry": {"maxAttempts": 1}}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "fail-then-succeed", "nodes": [
            {"id": "boom", "agentId": id, "action": "fail", "inputsJson": {"message": "early"}},
            {"id": "slow", "agentId": id, "action": "sleep", "inputsJson": {"ms": 700}}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    // The success closes the run, and the run still reports the failure that came first.
    assert_eq!(node(&run, "boom")["status"], "FAILED", "{run:#}");
    assert_eq!(node(&run, "slow")["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["status"], "FAILED", "{run:#}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("\"boom\"") && error.contains("early"),
        "{error}"
    );
}

#[tokio::test]
async fn an_agent_that_always_fails_fails_the_run_and_skips_descendants() {
    let app = TestApp::spawn(2).await;
    let echo = echo_agent(&app).await;
    let fail = app
        .create_agent("fail", "testing/fail", &["explode"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "doomed", "nodes": [
            {"id": "first", "agentId": echo, "action": "echo"},
            {"id": "boom", "agentId": fail, "action": "explode", "dependsOn": ["first"],
             "inputsJson": {"reason": "disk on fire"},
             "retry": {"maxAttempts": 2, "initialBackoffMs": 50, "multiplier": 1.0, "maxBackoffMs": 50}},
            {"id": "after", "agentId": echo, "action": "echo", "dependsOn": ["boom"]},
            {"id": "after-after", "agentId": echo, "action": "echo", "dependsOn": ["after"]},
            {"id": "independent", "agentId": echo, "action": "echo", "dependsOn": ["first"]}
        ]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;

    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert!(run["finishedAt"].is_string());
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("\"boom\"") && error.contains("disk on fire"),
        "{error}"
    );
    let boom = node(&run, "boom");
    assert_eq!(boom["status"], "FAILED");
    assert_eq!(boom["attempts"], 2);
    assert!(boom["finishedAt"].is_string());
    assert_eq!(agent_runs(&run, "boom").len(), 2);
    assert_eq!(agent_runs(&run, "boom")[1]["exitCode"], 3);
    for skipped in ["after", "after-after"] {
        let n = node(&run, skipped);
        assert_eq!(n["status"], "SKIPPED", "{n:#}");
        assert!(n["finishedAt"].is_string());
        assert!(agent_runs(&run, skipped).is_empty());
    }
    // A branch that does not depend on the failure still runs to completion.
    assert_eq!(node(&run, "independent")["status"], "COMPLETED");
}

#[tokio::test]
async fn a_timed_out_agent_is_killed_and_the_attempt_fails() {
    let app = TestApp::spawn(1).await;
    let sleeper = app
        .create_agent(
            "sleeper",
            "testing/sleep",
            &["sleep"],
            json!({"timeoutSeconds": 1}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "slow", "nodes": [
            {"id": "nap", "agentId": sleeper, "action": "sleep", "inputsJson": {"seconds": 30},
             "retry": {"maxAttempts": 1}}]}))
        .await;
    let started = std::time::Instant::now();
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run["status"], "FAILED", "{run:#}");
    let nap = agent_runs(&run, "nap");
    assert_eq!(nap.len(), 1);
    assert!(
        nap[0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{:#}",
        nap[0]
    );
}

#[tokio::test]
async fn node_timeout_overrides_the_agent_and_bad_output_is_a_failure() {
    let app = TestApp::spawn(1).await;
    let bad = app
        .create_agent("bad-output", "testing/bad-output", &["run"], json!({}))
        .await;
    let big = app
        .create_agent("big-output", "testing/big-output", &["run"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "bad", "nodes": [
            {"id": "bad", "agentId": bad, "action": "run", "retry": {"maxAttempts": 1}},
            {"id": "big", "agentId": big, "action": "run", "retry": {"maxAttempts": 1}, "timeoutSeconds": 30}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "FAILED");
    assert!(
        node(&run, "bad")["error"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{run:#}"
    );
    assert!(
        node(&run, "big")["error"]
            .as_str()
            .unwrap()
            .contains("exceeds 1048576 bytes"),
        "{run:#}"
    );
}

#[tokio::test]
async fn a_missing_template_path_fails_the_node_at_once_without_retry() {
    let app = TestApp::spawn(1).await;
    let echo = echo_agent(&app).await;
    let wf = app
        .create_workflow(json!({"name": "typo", "nodes": [
            {"id": "a", "agentId": echo, "action": "echo"},
            {"id": "b", "agentId": echo, "action": "echo", "dependsOn": ["a"],
             "inputsJson": {"x": "{{ nodes.a.output.inputs.nope }}"}}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "FAILED");
    let b = node(&run, "b");
    assert_eq!(b["status"], "FAILED");
    assert_eq!(b["attempts"], 1, "a template error is not retried: {b:#}");
    let error = b["error"].as_str().unwrap();
    assert!(
        error.contains("nodes.a.output.inputs.nope") && error.contains("\"nope\""),
        "{error}"
    );
}

#[tokio::test]
async fn http_agents_succeed_on_2xx_retry_on_5xx_and_stop_on_4xx() {
    use axum::{Json, Router, http::StatusCode as S, routing::post};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let flaky_calls = std::sync::Arc::new(AtomicUsize::new(0));
    let calls = flaky_calls.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route(
            "/ok",
            post(|Json(doc): Json<Value>| async move {
                Json(json!({"echo": doc["inputs"], "action": doc["action"]}))
            }),
        )
        .route(
            "/flaky",
            post(move || {
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        (S::SERVICE_UNAVAILABLE, Json(json!({"error": "warming up"})))
                    } else {
                        (S::OK, Json(json!({"ok": true})))
                    }
                }
            }),
        )
        .route(
            "/reject",
            post(|| async { (S::BAD_REQUEST, Json(json!({"error": "bad input"}))) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let app = TestApp::spawn(1).await;
    let mut ids = Vec::new();
    for path in ["ok", "flaky", "reject"] {
        let (status, agent) = app
            .post("/api/agents", json!({"name": format!("http-{path}"), "type": "HTTP", "url": format!("{base}/{path}"),
                "capabilities": [{"name": "call"}],
                "retry": {"maxAttempts": 3, "initialBackoffMs": 50, "multiplier": 1.0, "maxBackoffMs": 50}}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{agent}");
        ids.push(agent["id"].as_str().unwrap().to_string());
    }
    let wf = app
        .create_workflow(json!({"name": "http", "nodes": [
            {"id": "ok", "agentId": ids[0], "action": "call", "inputsJson": {"q": 1}},
            {"id": "flaky", "agentId": ids[1], "action": "call"},
            {"id": "reject", "agentId": ids[2], "action": "call"}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert_eq!(
        node(&run, "ok")["output"],
        json!({"echo": {"q": 1}, "action": "call"})
    );
    assert_eq!(node(&run, "flaky")["status"], "COMPLETED");
    assert_eq!(agent_runs(&run, "flaky").len(), 2);
    assert_eq!(agent_runs(&run, "flaky")[0]["exitCode"], 503);
    assert_eq!(node(&run, "reject")["status"], "FAILED");
    assert_eq!(agent_runs(&run, "reject").len(), 1, "a 4xx is not retried");
    assert_eq!(run["status"], "FAILED");
}

#[tokio::test]
async fn ten_concurrent_scan_and_notify_runs_complete_exactly_once_per_node() {
    let app = TestApp::spawn(2).await;
    let wf = scan_and_notify(
        &app,
        json!({"channel": "console",
               "message": "Security scan complete: {{ nodes.scan-node.output.summary.total }} findings"}),
    )
    .await;
    let triggers = (0..10).map(|_| app.trigger(&wf, json!({"repositoryPath": vulnerable_repo()})));
    let run_ids: Vec<String> = futures::future::join_all(triggers).await;
    let total = expected_findings();
    for run_id in &run_ids {
        let run = app.wait_for_run(run_id, Duration::from_secs(120)).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        for node_id in ["scan-node", "notify-node"] {
            let completed = agent_runs(&run, node_id)
                .iter()
                .filter(|a| a["status"] == "COMPLETED")
                .count();
            assert_eq!(completed, 1, "{node_id} of {run_id}: {run:#}");
        }
        assert_eq!(
            node(&run, "notify-node")["output"]["message"],
            format!("Security scan complete: {total} findings")
        );
    }
    // Every attempt was executed by one of the separate worker processes.
    let mut conn = app.db().await;
    let outside: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agent_runs WHERE worker IS NULL OR worker NOT LIKE 'worker-%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(outside, 0);
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT run_id, node_id FROM agent_runs WHERE status = 'COMPLETED' GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(dup, 0);
}

#[tokio::test]
async fn builtin_agents_run_in_the_worker_and_pass_outputs_along() {
    let app = TestApp::spawn(1).await;
    let (status, body) = app
        .post(
            "/api/agents",
            json!({"name": "bad-builtin", "type": "BUILTIN", "capabilities": [{"name": "dance"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("dance"),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/api/agents",
            json!({"name": "builtin", "type": "BUILTIN", "entrypoint": "x",
                   "capabilities": [{"name": "noop"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let id = &app
        .create_builtin_agent(
            "builtin",
            &["noop", "echo", "sleep", "fail"],
            json!({"retry": {"maxAttempts": 2, "initialBackoffMs": 10}}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "builtin-chain", "nodes": [
            {"id": "a", "agentId": id, "action": "noop"},
            {"id": "b", "agentId": id, "action": "sleep", "dependsOn": ["a"], "inputsJson": {"ms": 20}},
            {"id": "c", "agentId": id, "action": "echo", "dependsOn": ["b"],
             "inputsJson": {"slept": "{{ nodes.b.output.sleptMs }}", "who": "{{ context.who }}"}}]}))
        .await;
    let run_id = app.trigger(&wf, json!({"who": "loadtest"})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(node(&run, "a")["output"], json!({}));
    assert_eq!(
        node(&run, "c")["output"],
        json!({"slept": 20, "who": "loadtest"})
    );
    assert!(node(&run, "c")["readyAt"].is_string(), "{run:#}");

    // `fail` fails each attempt; the agent's retry policy applies as for any agent.
    let wf = app
        .create_workflow(json!({"name": "builtin-fail", "nodes": [
            {"id": "f", "agentId": id, "action": "fail", "inputsJson": {"message": "on purpose"}}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;
    let run = app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    let attempts = agent_runs(&run, "f");
    assert_eq!(attempts.len(), 2, "{run:#}");
    assert!(
        node(&run, "f")["error"]
            .as_str()
            .unwrap()
            .contains("on purpose"),
        "{run:#}"
    );
}

#[tokio::test]
async fn attempts_that_finish_together_are_recorded_together_and_exactly_once() {
    let mut app = TestApp::spawn_with(1, &[("ORCH_WORKER_CONCURRENCY", "32")]).await;
    let id = &app
        .create_builtin_agent(
            "builtin",
            &["noop", "fail"],
            json!({"retry": {"maxAttempts": 2, "initialBackoffMs": 10}}),
        )
        .await;
    let branches: Vec<String> = (0..30).map(|i| format!("b{i}")).collect();
    let mut wide = vec![json!({"id": "root", "agentId": id, "action": "noop"})];
    for b in &branches {
        wide.push(json!({"id": b, "agentId": id, "action": "noop", "dependsOn": ["root"]}));
    }
    let mut failing = wide.clone();
    wide.push(json!({"id": "join", "agentId": id, "action": "noop", "dependsOn": branches}));
    failing.push(json!({"id": "f", "agentId": id, "action": "fail", "dependsOn": ["root"]}));
    let mut after_all = branches.clone();
    after_all.push("f".into());
    failing.push(json!({"id": "join", "agentId": id, "action": "noop", "dependsOn": after_all}));
    let wide = app
        .create_workflow(json!({"name": "wide", "nodes": wide}))
        .await;
    let failing = app
        .create_workflow(json!({"name": "wide-failing", "nodes": failing}))
        .await;

    let mut runs = Vec::new();
    for i in 0..6 {
        let wf = if i % 3 == 2 { &failing } else { &wide };
        runs.push((wf == &failing, app.trigger(wf, json!({})).await));
    }
    for (fails, run_id) in &runs {
        let run = app.wait_for_run(run_id, RUN_TIMEOUT).await;
        for b in branches.iter().map(String::as_str).chain(["root"]) {
            let attempts = agent_runs(&run, b);
            assert_eq!(attempts.len(), 1, "{b}: {run:#}");
            assert_eq!(attempts[0]["status"], "COMPLETED", "{b}: {run:#}");
            assert_eq!(node(&run, b)["status"], "COMPLETED", "{b}: {run:#}");
        }
        if *fails {
            assert_eq!(run["status"], "FAILED", "{run:#}");
            let attempts = agent_runs(&run, "f");
            assert_eq!(attempts.len(), 2, "{run:#}");
            assert!(attempts.iter().all(|a| a["status"] == "FAILED"), "{run:#}");
            assert_eq!(node(&run, "join")["status"], "SKIPPED", "{run:#}");
        } else {
            assert_eq!(run["status"], "COMPLETED", "{run:#}");
            assert_eq!(agent_runs(&run, "join").len(), 1, "{run:#}");
        }
    }

    // Thirty branches released at once finish at once: the worker recorded some of them in
    // shared transactions, not one transaction each.
    let metrics = app.worker_metrics(0).await;
    let value = |name: &str| metric_value(&metrics, name);
    let attempts = value("orchestration_record_batch_size_sum");
    let transactions = value("orchestration_record_batch_size_count");
    assert!(attempts >= 6.0 * 32.0, "{metrics}");
    assert!(
        transactions < attempts,
        "{transactions} transactions for {attempts} attempts"
    );
}

/// A worker renews the leases of all its running nodes in one statement while a batch of
/// recordings holds some of the same rows: both lock them in (run, node) order, or they
/// deadlock until Postgres breaks the tie a second later (a failed renewal or a failed batch
/// in the worker's log). A short lease makes renewals frequent.
#[tokio::test]
async fn lease_renewals_and_batched_recordings_do_not_deadlock() {
    let app = TestApp::spawn_with(
        1,
        &[
            ("ORCH_WORKER_CONCURRENCY", "64"),
            ("ORCH_LEASE_TTL_MS", "1000"),
        ],
    )
    .await;
    let id = &app
        .create_builtin_agent("builtin", &["noop"], json!({}))
        .await;
    let branches: Vec<String> = (0..60).map(|i| format!("b{i:02}")).collect();
    let mut nodes = vec![json!({"id": "root", "agentId": id, "action": "noop"})];
    for b in &branches {
        nodes.push(json!({"id": b, "agentId": id, "action": "noop", "dependsOn": ["root"]}));
    }
    nodes.push(json!({"id": "join", "agentId": id, "action": "noop", "dependsOn": branches}));
    let wf = app
        .create_workflow(json!({"name": "wide", "nodes": nodes}))
        .await;

    let mut runs = Vec::new();
    for _ in 0..40 {
        runs.push(app.trigger(&wf, json!({})).await);
    }
    for run_id in &runs {
        let run = app.wait_for_run(run_id, RUN_TIMEOUT).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        for b in branches.iter().map(String::as_str).chain(["root", "join"]) {
            assert_eq!(agent_runs(&run, b).len(), 1, "{b}: {run:#}");
        }
    }
    let logs = app.dump_logs();
    assert!(!logs.contains("deadlock"), "{logs}");
    assert!(!logs.contains("taken away"), "{logs}");
}

/// Each trigger notifies every worker. A worker that claimed a moment ago waits out the claim
/// gap and then takes, in one claim, every node those notifications announced, instead of one
/// claim per notification; the notifications it has read meanwhile wake it no more.
#[tokio::test]
async fn one_claim_takes_the_nodes_of_several_notifications() {
    let mut app = TestApp::spawn_with(
        1,
        &[
            ("ORCH_CLAIM_GAP_MS", "400"),
            ("ORCH_WORKER_CONCURRENCY", "16"),
        ],
    )
    .await;
    let id = &app
        .create_builtin_agent("builtin", &["noop"], json!({}))
        .await;
    let wf = app
        .create_workflow(
            json!({"name": "one", "nodes": [{"id": "a", "agentId": id, "action": "noop"}]}),
        )
        .await;
    let first = app.trigger(&wf, json!({})).await;
    app.wait_for_run(&first, RUN_TIMEOUT).await;
    // The first run was claimed (and finished) within the last 400 ms; these five come
    // inside the gap that follows.
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(app.trigger(&wf, json!({})).await);
    }
    for run_id in &runs {
        let run = app.wait_for_run(run_id, RUN_TIMEOUT).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        assert_eq!(agent_runs(&run, "a").len(), 1, "{run:#}");
    }

    let metrics = app.worker_metrics(0).await;
    let value = |name: &str| metric_value(&metrics, name);
    let nodes = value("orchestration_claim_size_sum");
    let claims = value("orchestration_claim_size_count");
    let empty = value("orchestration_claim_size_bucket{le=\"0\"}");
    assert_eq!(nodes, 6.0, "{metrics}");
    assert!(
        claims - empty <= 3.0,
        "{} claims took the 6 nodes:\n{metrics}",
        claims - empty
    );
}

/// A workflow's history filtered by status: a run is listed under RUNNING while it runs, and
/// under COMPLETED (and no longer RUNNING) once it is done, among many finished runs.
#[tokio::test]
async fn runs_listed_by_status_follow_the_run() {
    let app = TestApp::spawn(1).await;
    let id = &app
        .create_builtin_agent("builtin", &["noop", "sleep"], json!({}))
        .await;
    let quick = app
        .create_workflow(
            json!({"name": "quick", "nodes": [{"id": "a", "agentId": id, "action": "noop"}]}),
        )
        .await;
    let slow = app
        .create_workflow(json!({"name": "slow", "nodes": [
            {"id": "a", "agentId": id, "action": "sleep", "inputsJson": {"ms": 1500}}]}))
        .await;
    for _ in 0..20 {
        let done = app.trigger(&quick, json!({})).await;
        app.wait_for_run(&done, RUN_TIMEOUT).await;
    }
    let ids = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let app = &app;
    let list = |wf: &str, query: &str| {
        let path = format!("/api/workflows/{wf}/runs{query}");
        async move {
            let (status, list) = app.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{list}");
            ids(&list)
        }
    };
    let run_id = app.trigger(&slow, json!({})).await;
    assert_eq!(list(&slow, "?status=RUNNING").await, vec![run_id.clone()]);
    assert!(list(&slow, "?status=COMPLETED").await.is_empty());
    assert!(list(&quick, "?status=RUNNING").await.is_empty());
    assert_eq!(list(&quick, "?status=COMPLETED&limit=100").await.len(), 20);
    assert_eq!(list(&quick, "").await.len(), 20);

    app.wait_for_run(&run_id, RUN_TIMEOUT).await;
    assert!(list(&slow, "?status=RUNNING").await.is_empty());
    assert_eq!(list(&slow, "?status=COMPLETED").await, vec![run_id.clone()]);
    assert_eq!(list(&slow, "").await, vec![run_id]);
}

/// Triggers of one workflow arriving together share an insert statement, and each still gets
/// its own run with its own context; triggers sharing an Idempotency-Key among them still
/// start one run between them (a batch that hits the key goes again one by one).
#[tokio::test]
async fn concurrent_triggers_share_statements_and_each_gets_its_run() {
    let app = TestApp::spawn(1).await;
    let id = &app
        .create_builtin_agent("builtin", &["echo"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "echoes", "nodes": [
            {"id": "a", "agentId": id, "action": "echo", "inputs": {"i": "{{ context.i }}"}}]}))
        .await;
    // The first trigger plans the workflow; the plan is reused by the rest.
    let first = app.trigger(&wf, json!({"i": -1})).await;
    app.wait_for_run(&first, RUN_TIMEOUT).await;

    let url = format!("{}/api/workflows/{wf}/trigger", app.base);
    let plain = (0..40).map(|i| {
        let request = app.client.post(&url).json(&json!({"context": {"i": i}}));
        async move { (Some(i), request.send().await) }
    });
    let keyed = (0..10).map(|_| {
        let request = app
            .client
            .post(&url)
            .header("Idempotency-Key", "batch-key")
            .json(&json!({"context": {"i": 100}}));
        async move { (None, request.send().await) }
    });
    let requests: Vec<_> = plain
        .map(futures::FutureExt::boxed)
        .chain(keyed.map(futures::FutureExt::boxed))
        .collect();
    let responses = futures::future::join_all(requests).await;

    let mut runs = std::collections::HashMap::new();
    let mut keyed_runs = std::collections::HashSet::new();
    let mut keyed_created = 0;
    for (i, response) in responses {
        let response = response.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        let run_id = match body["runId"].as_str() {
            Some(id) => id.to_string(),
            None => panic!("trigger answered {status}: {body}"),
        };
        match i {
            Some(i) => {
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
                assert!(runs.insert(run_id, i).is_none(), "two triggers got one run");
            }
            None => {
                assert!(
                    status == StatusCode::ACCEPTED || status == StatusCode::OK,
                    "{status}: {body}"
                );
                keyed_created += usize::from(status == StatusCode::ACCEPTED);
                keyed_runs.insert(run_id);
            }
        }
    }
    assert_eq!(keyed_runs.len(), 1, "one run for one key: {keyed_runs:?}");
    assert_eq!(keyed_created, 1);
    assert_eq!(runs.len(), 40);
    for (run_id, i) in runs.iter().chain(keyed_runs.iter().map(|r| (r, &100))) {
        let run = app.wait_for_run(run_id, RUN_TIMEOUT).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        assert_eq!(run["context"]["i"], *i, "{run:#}");
        assert_eq!(node(&run, "a")["output"]["i"], *i, "{run:#}");
    }

    let metrics = app.api_metrics().await;
    let inserted = metric_value(&metrics, "orchestration_trigger_batch_size_sum");
    // 50 cached-plan triggers (the first one planned), a keyed batch's runs counted again
    // when they go one by one.
    assert!(inserted >= 50.0, "{metrics}");
    // Sharing needs the requests to overlap in the API, which a starved machine may not
    // give them every time: a few more bursts until one statement carried several runs.
    for burst in 0..4 {
        let metrics = app.api_metrics().await;
        let inserted = metric_value(&metrics, "orchestration_trigger_batch_size_sum");
        let statements = metric_value(&metrics, "orchestration_trigger_batch_size_count");
        if statements < inserted {
            return;
        }
        if burst == 3 {
            panic!("every trigger had a statement of its own:\n{metrics}");
        }
        let requests = (0..40).map(|_| app.client.post(&url).json(&json!({})).send());
        for response in futures::future::join_all(requests).await {
            assert_eq!(response.unwrap().status(), StatusCode::ACCEPTED);
        }
    }
}
