//! Traces, logs and metrics as an operator sees them: one trace per run across the API and two
//! worker processes (received by a real OTLP gRPC collector in this test), JSON logs carrying
//! run, node and trace ids, and the Prometheus metrics every dashboard and alert relies on.

use std::time::Duration;

use fake_opentelemetry_collector::FakeCollectorServer;
use orchestration_e2e::reqwest::StatusCode;
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{TestApp, fixtures_dir, node};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

// Multi-threaded: the collector is served by this test's runtime, and a worker flushes its spans
// into it while the test blocks waiting for that worker to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_across_two_workers_is_one_trace_with_correct_parents() {
    let mut collector = FakeCollectorServer::start()
        .await
        .expect("OTLP collector starts");
    let endpoint = collector.endpoint();
    // The collector hands spans over through a small channel: drain it all the time, or
    // exports stall once it is full.
    let received: std::sync::Arc<
        std::sync::Mutex<Vec<fake_opentelemetry_collector::ExportedSpan>>,
    > = Default::default();
    let sink = received.clone();
    tokio::spawn(async move {
        loop {
            let batch = collector
                .exported_spans(1, Duration::from_millis(200))
                .await;
            sink.lock().unwrap().extend(batch);
        }
    });
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("ORCH_WORKER_CONCURRENCY", "1"),
    ];
    let mut app = TestApp::processes(1, &env).await;
    let scanner = app
        .create_agent("security-scanner", "security-scanner", &["scan"], json!({}))
        .await;
    // The notifier waits for an approval, so that the first worker can be stopped in between
    // and the second half of the run provably happens in another process.
    let notifier = app
        .create_agent(
            "notifier",
            "notifier",
            &["send"],
            json!({"riskLevel": "APPROVAL_REQUIRED"}),
        )
        .await;
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "traced", "nodes": [
            {"id": "scan-node", "agentId": scanner, "action": "scan",
             "inputsJson": {"repositoryPath": "{{ context.repositoryPath }}"}},
            {"id": "notify-node", "agentId": notifier, "action": "send", "dependsOn": ["scan-node"],
             "inputsJson": {"channel": "console", "message": "Security scan complete: {{ nodes.scan-node.output.summary.total }} findings"}},
            {"id": "audit", "agentId": echo, "action": "echo", "dependsOn": ["notify-node"]}]}))
        .await;
    let resp = app
        .client
        .post(format!("{}/api/workflows/{wf}/trigger", app.base))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"context": {"repositoryPath": fixtures_dir().join("vulnerable-repo")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run_id = resp.json::<Value>().await.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string();

    // First half in worker 0, then it stops and worker 1 does the rest.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let approval_id = loop {
        let run = app.run(&run_id).await;
        if let Some(a) = run["approvals"].as_array().and_then(|a| a.first()) {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no approval: {run:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = app.procs().workers[0]
        .signal_and_wait(15, Duration::from_secs(20))
        .expect("worker 0 stops");
    assert!(status.success());
    app.add_worker().await;
    // Approved by someone other than the admin token that triggered the run.
    let alice =
        orchestration_e2e::client_with_token(&app.create_token("1", "operator", "alice").await);
    let resp = alice
        .post(format!("{}/api/approvals/{approval_id}/approve", app.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let run = app.wait_for_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let workers: Vec<&str> = run["agentRuns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["worker"].as_str().unwrap())
        .collect();
    assert_ne!(
        workers[0], workers[2],
        "two worker processes took part: {workers:?}"
    );

    // Everything the run did arrives as one trace (spans come in batches; gather until the
    // three node spans are in).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = received.lock().unwrap().clone();
        let node_spans = spans
            .iter()
            .filter(|s| s.trace_id == TRACE_ID && s.name == "node.execute")
            .count();
        if node_spans >= 3 {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node spans missing: {:#?}",
            spans
                .iter()
                .map(|s| (&s.name, &s.trace_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let trigger = in_trace
        .iter()
        .find(|s| s.name.starts_with("POST /api/workflows/{id}/trigger"))
        .unwrap_or_else(|| {
            panic!(
                "no trigger span in {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.name, &s.trace_id))
                    .collect::<Vec<_>>()
            )
        });
    assert_eq!(
        trigger.parent_span_id, CALLER_SPAN,
        "the request continues the caller's trace"
    );
    let node_spans: Vec<_> = in_trace
        .iter()
        .filter(|s| s.name == "node.execute")
        .collect();
    let mut nodes: Vec<String> = node_spans.iter().map(|s| attr(s, "node_id")).collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["audit", "notify-node", "scan-node"],
        "{node_spans:#?}"
    );
    for s in &node_spans {
        assert_eq!(
            s.parent_span_id, trigger.span_id,
            "node spans are children of the trigger"
        );
        assert_eq!(attr(s, "run_id"), run_id);
        assert!(!attr(s, "agent").is_empty());
        assert_eq!(attr(s, "attempt"), "1");
        assert_eq!(attr(s, "outcome"), "completed");
    }
    let span_workers: std::collections::HashSet<String> =
        node_spans.iter().map(|s| attr(s, "worker")).collect();
    assert_eq!(
        span_workers.len(),
        2,
        "spans came from two worker processes"
    );

    // The agent process got the node span as its TRACEPARENT.
    let audit_span = node_spans
        .iter()
        .find(|s| attr(s, "node_id") == "audit")
        .unwrap();
    assert_eq!(
        node(&run, "audit")["output"]["traceparent"],
        format!("00-{TRACE_ID}-{}-01", audit_span.span_id)
    );

    // The JSON logs of the node carry its ids and the trace id.
    let logs = app.procs().workers[1].dump();
    let line = logs
        .lines()
        .filter_map(|l| orchestration_e2e::serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "node completed" && l["span"]["node_id"] == "audit")
        .unwrap_or_else(|| panic!("no log line for the audit node:\n{logs}"));
    assert_eq!(line["span"]["run_id"], run_id);
    assert_eq!(line["span"]["trace_id"], TRACE_ID);
    assert_eq!(line["span"]["span_id"], audit_span.span_id);
    for key in ["timestamp", "level", "message", "target"] {
        assert!(line.get(key).is_some(), "log line has {key}: {line}");
    }
}

/// An attribute's value as text (the collector keeps the protobuf `AnyValue` debug form).
fn attr(span: &fake_opentelemetry_collector::ExportedSpan, key: &str) -> String {
    let raw = span
        .attributes
        .get(key)
        .map(String::as_str)
        .unwrap_or_default();
    for (open, close) in [("StringValue(\"", "\")"), ("IntValue(", ")")] {
        if let Some(start) = raw.find(open) {
            let rest = &raw[start + open.len()..];
            return rest[..rest.find(close).unwrap_or(rest.len())].to_string();
        }
    }
    raw.to_string()
}

/// Every metric the issue names, exported after a scan-and-notify run (the union of the API's
/// and a worker's `/metrics`).
pub const EXPECTED_METRICS: &[&str] = &[
    "http_server_request_duration_seconds",
    "orchestration_workflow_runs_started_total",
    "orchestration_workflow_runs_finished_total",
    "orchestration_workflow_run_duration_seconds",
    "orchestration_workflow_runs_in_progress",
    "orchestration_node_executions_total",
    "orchestration_agent_run_duration_seconds",
    "orchestration_node_retries_total",
    "orchestration_queue_wait_seconds",
    "orchestration_queue_depth",
    "orchestration_approvals_pending",
    "orchestration_approval_wait_seconds",
    "orchestration_events_received_total",
    "orchestration_alerts_received_total",
    "orchestration_rescuer_repairs_total",
    "orchestration_execution_seconds_total",
    "orchestration_cost_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "orchestration_build_info",
];

/// Metric names (without `_bucket`/`_sum`/`_count` suffixes) in a Prometheus text exposition.
pub fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

/// Scrapes the API and the first worker after a run that exercises retries, approvals, events,
/// alerts, cost and a rescue.
pub async fn scrape_after_a_busy_run() -> (String, String) {
    let mut app = TestApp::processes(
        1,
        &[
            ("ORCH_RESCUE_INTERVAL_MS", "250"),
            ("ORCH_RESCUE_READY_AFTER_MS", "1000"),
        ],
    )
    .await;
    let scanner = app
        .create_agent(
            "security-scanner",
            "security-scanner",
            &["scan"],
            json!({"costPerMinute": 0.5}),
        )
        .await;
    let notifier = app
        .create_agent(
            "notifier",
            "notifier",
            &["send"],
            json!({"riskLevel": "APPROVAL_REQUIRED"}),
        )
        .await;
    let flaky = app
        .create_agent(
            "flaky",
            "testing/flaky",
            &["work"],
            json!({"retry": {"maxAttempts": 2, "initialBackoffMs": 10}}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "scan-and-notify", "trigger": {"type": "event", "pattern": "alert.>"}, "nodes": [
            {"id": "scan-node", "agentId": scanner, "action": "scan", "inputsJson": {"repositoryPath": "{{ context.repositoryPath }}"}},
            {"id": "flaky", "agentId": flaky, "action": "work", "inputsJson": {"failTimes": 1}},
            {"id": "notify-node", "agentId": notifier, "action": "send", "dependsOn": ["scan-node", "flaky"],
             "inputsJson": {"channel": "console", "message": "Security scan complete: {{ nodes.scan-node.output.summary.total }} findings"}}]}))
        .await;
    let repo = fixtures_dir().join("vulnerable-repo").display().to_string();
    let run_id = app.trigger(&wf, json!({"repositoryPath": repo})).await;
    // An alert (and so an event) too.
    let sample: Value = orchestration_e2e::serde_json::from_str(
        &std::fs::read_to_string(
            fixtures_dir().join("alertmanager/alertmanager-webhook-sample.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let (status, _) = app.post("/api/webhooks/alertmanager", sample).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = app.run(&run_id).await;
        if let Some(a) = run["approvals"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["status"] == "PENDING"))
        {
            // Someone other than the triggering (admin) token decides.
            let ops = orchestration_e2e::client_with_token(
                &app.create_token("1", "operator", "ops").await,
            );
            let resp = ops
                .post(format!(
                    "{}/api/approvals/{}/approve",
                    app.base,
                    a["id"].as_str().unwrap()
                ))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{run:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = app.wait_for_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    // A rescue: a run whose nodes are all done (here by hand) but which is still open.
    let other = app.trigger(&wf, json!({"repositoryPath": repo})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.run(&other).await["status"] != "WAITING_APPROVAL" {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut conn = app.db().await;
    sqlx::query("UPDATE node_states SET status = 'COMPLETED', output = '{}', finished_at = now() WHERE run_id = $1::uuid")
        .bind(&other)
        .execute(&mut conn)
        .await
        .unwrap();
    app.wait_for_run(&other, Duration::from_secs(30)).await;
    // Let the API's sampler take one more look at the database gauges.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let api = app.api_metrics().await;
    let worker = app.worker_metrics(0).await;
    (api, worker)
}

#[tokio::test]
async fn every_named_metric_is_exported_with_route_templates_not_raw_paths() {
    let (api, worker) = scrape_after_a_busy_run().await;
    let mut names = metric_names(&api);
    names.extend(metric_names(&worker));
    for expected in EXPECTED_METRICS {
        assert!(
            names.contains(*expected),
            "{expected} is not exported\nAPI:\n{api}\nworker:\n{worker}"
        );
    }
    assert!(
        api.contains(r#"route="/api/runs/{run_id}""#),
        "route label is the template"
    );
    assert!(
        !api.lines()
            .any(|l| l.starts_with("http_server") && l.contains("route=\"/api/runs/0")),
        "no raw paths"
    );
    assert!(api.contains(r#"orchestration_workflow_runs_started_total{workflow="scan-and-notify",trigger="manual"}"#), "{api}");
    assert!(api.contains(
        r#"orchestration_alerts_received_total{alertname="AlwaysFiring",status="firing"}"#
    ));
    assert!(worker.contains(r#"orchestration_cost_total{project="1",workflow="scan-and-notify",agent="security-scanner"}"#), "{worker}");
    assert!(
        worker.contains(r#"orchestration_rescuer_repairs_total{kind="unfinalized_run"}"#),
        "{worker}"
    );
    assert!(worker.contains(r#"orchestration_node_retries_total{agent="flaky"}"#));
    assert!(api.contains("orchestration_build_info{version="));

    // No dashboard panel or alert rule reads a series the service does not export.
    let samples: std::collections::BTreeSet<&str> = api
        .lines()
        .chain(worker.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let used =
        std::fs::read_to_string(orchestration_e2e::repo_root().join("deploy/metric-names.txt"))
            .unwrap();
    let used: Vec<&str> = used
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        used.len() > 10,
        "deploy/metric-names.txt lists the names dashboards and rules use"
    );
    for name in used {
        assert!(
            samples.contains(name),
            "{name} is used by a dashboard or rule but not exported"
        );
    }
}

#[test]
fn deployment_files_pass_their_checks() {
    // docker-compose config, promtool check/test rules, amtool check-config, dashboards JSON,
    // and that deploy/metric-names.txt matches what dashboards and rules use.
    let output = std::process::Command::new("bash")
        .arg(orchestration_e2e::repo_root().join("scripts/check-deploy.sh"))
        .current_dir(orchestration_e2e::repo_root())
        .output()
        .expect("check-deploy.sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("promtool test rules") && text.contains("PASS"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}
