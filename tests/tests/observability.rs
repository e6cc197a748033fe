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

#[tokio::test]
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
    let mut app = TestApp::spawn_with(1, &env).await;
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
    let status = app.workers[0]
        .signal_and_wait(15, Duration::from_secs(20))
        .expect("worker 0 stops");
    assert!(status.success());
    app.add_worker();
    let (status, body) = app
        .post(
            &format!("/api/approvals/{approval_id}/approve"),
            json!({"by": "alice"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
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
    let logs = app.workers[1].dump();
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
