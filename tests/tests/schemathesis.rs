//! Schemathesis against the live service: property-based requests generated from the OpenAPI
//! document at `/api/openapi.json`, checked for server errors and for responses that do not
//! match the document (schema, status code, content type). Zero of either passes.
//!
//! Needs the pinned Schemathesis in `target/schemathesis-venv` (or `$SCHEMATHESIS_VENV`):
//! `scripts/install-schemathesis.sh` installs it. The run is bounded by `--max-time`.
//!
//! The second test pins the bugs Schemathesis found, so that they stay fixed without Python.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use orchestration_e2e::reqwest::{Method, StatusCode};
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{TestApp, fixtures_dir, repo_root};

/// Seconds Schemathesis may spend; its phases repeat until the budget is spent.
const MAX_TIME_SECONDS: u32 = 30;
/// Examples per operation and phase cycle.
const MAX_EXAMPLES: u32 = 25;
/// The whole Schemathesis process is killed after this; it normally ends at MAX_TIME_SECONDS.
const HARD_LIMIT: Duration = Duration::from_secs(150);

/// Failures accepted until their fix lands outside api, as (operation, check, failure
/// kind, signature) for Schemathesis' baseline; each has an ignored regression test below.
/// Keep this empty otherwise: every other 5xx or mismatch fails the test.
const KNOWN_FAILURES: &[(&str, &str, &str, &str)] = &[];

/// The AlertManager token the service is started with.
const TOKEN: &str = "schemathesis-test-token";

/// Headers every request sends, seeding and Schemathesis alike. When the API requires a token
/// of its own, add it here (one line).
fn headers() -> Vec<(String, String)> {
    vec![("Authorization".into(), format!("Bearer {TOKEN}"))]
}

fn schemathesis_bin() -> PathBuf {
    let venv = std::env::var_os("SCHEMATHESIS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("schemathesis-venv"));
    venv.join("bin").join("st")
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    for (name, value) in headers() {
        req = req.header(name, value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request is sent");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, value) = send(app, Method::POST, path, Some(body)).await;
    assert!(status.is_success(), "POST {path}: {status} {value}");
    value
}

/// Ids that exist, for Schemathesis to use in paths next to the ones it makes up.
struct Seeded {
    ids: Vec<String>,
    run_ids: Vec<String>,
}

/// An agent, a plain and an approval-gated workflow, runs in three states (pending, cancelled,
/// waiting for approval) with a pending approval, an alert and a webhook subscription.
async fn seed(app: &TestApp) -> Seeded {
    let agent = created(
        app,
        "/api/agents",
        json!({"name": "echo", "type": "SCRIPT", "entrypoint": "testing/echo",
               "capabilities": [{"name": "scan"}], "costPerMinute": 0.5}),
    )
    .await;
    let agent_id = agent["id"].as_str().unwrap().to_string();
    let node = |gated: bool| {
        json!({"id": "a", "agentId": agent_id, "action": "scan",
               "inputsJson": {"target": "{{ context.target }}"},
               "approval": {"required": gated}})
    };
    let plain = created(
        app,
        "/api/workflows",
        json!({"name": "plain", "nodes": [node(false)]}),
    )
    .await;
    let gated = created(
        app,
        "/api/workflows",
        json!({"name": "gated", "nodes": [node(true)]}),
    )
    .await;
    let (plain_id, gated_id) = (
        plain["id"].as_str().unwrap().to_string(),
        gated["id"].as_str().unwrap().to_string(),
    );
    let trigger = |wf: String| async move {
        let run = created(
            app,
            &format!("/api/workflows/{wf}/trigger"),
            json!({"context": {"target": "x"}}),
        )
        .await;
        run["runId"].as_str().unwrap().to_string()
    };
    let pending = trigger(plain_id.clone()).await;
    let cancelled = trigger(plain_id.clone()).await;
    created(app, &format!("/api/runs/{cancelled}/cancel"), json!({})).await;
    let waiting = trigger(gated_id.clone()).await;
    let (_, run) = send(app, Method::GET, &format!("/api/runs/{waiting}"), None).await;
    let approval = run["approvals"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the gated run waits for approval: {run}"))
        .to_string();
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(
            fixtures_dir().join("alertmanager/alertmanager-webhook-sample.json"),
        )
        .unwrap(),
    )
    .unwrap();
    created(app, "/api/webhooks/alertmanager", sample).await;
    let subscription = created(
        app,
        "/api/subscriptions",
        json!({"url": "https://93.184.216.34/hook", "events": ["run.failed"]}),
    )
    .await;
    let subscription_id = subscription["id"].as_str().unwrap().to_string();
    Seeded {
        ids: vec![agent_id, plain_id, gated_id, approval, subscription_id],
        run_ids: vec![pending, cancelled, waiting],
    }
}

fn toml_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

#[tokio::test]
async fn schemathesis_finds_no_server_errors_and_no_schema_mismatches() {
    let st = schemathesis_bin();
    assert!(
        st.exists(),
        "{} is missing: run scripts/install-schemathesis.sh",
        st.display()
    );
    let mut app = TestApp::spawn_with(
        0,
        &[
            ("ORCH_ALERTMANAGER_TOKEN", TOKEN),
            ("ORCH_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;
    let seeded = seed(&app).await;

    // Schemathesis makes up path ids and project ids; most of the time it takes real ones.
    let work = std::env::temp_dir().join(format!("orch-schemathesis-{}", app.db_name));
    std::fs::create_dir_all(&work).unwrap();
    let config = format!(
        r#"[dictionaries.ids]
values = {ids}

[dictionaries.runs]
values = {runs}

[dictionaries.projects]
values = ["1"]

[parameters]
"path.id" = {{ dictionary = "ids", probability = 0.8 }}
"path.run_id" = {{ dictionary = "runs", probability = 0.8 }}
"query.projectId" = {{ dictionary = "projects", probability = 0.8 }}
"#,
        ids = toml_list(&seeded.ids),
        runs = toml_list(&seeded.run_ids),
    );
    let config_path = work.join("schemathesis.toml");
    std::fs::write(&config_path, config).unwrap();
    let baseline = json!({
        "format_version": 1,
        "entries": KNOWN_FAILURES
            .iter()
            .map(|(operation, check, failure, signature)| json!({
                "operation": operation, "check": check, "failure": failure, "signature": signature,
            }))
            .collect::<Vec<_>>(),
    });
    let baseline_path = work.join("baseline.json");
    std::fs::write(&baseline_path, baseline.to_string()).unwrap();

    let mut cmd = tokio::process::Command::new(&st);
    cmd.current_dir(&work)
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(format!("{}/api/openapi.json", app.base))
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,\
             content_type_conformance,response_headers_conformance",
            "--max-time",
            &MAX_TIME_SECONDS.to_string(),
            "--max-examples",
            &MAX_EXAMPLES.to_string(),
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .arg("--baseline")
        .arg(&baseline_path);
    for (name, value) in headers() {
        cmd.arg("--header").arg(format!("{name}: {value}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = cmd.spawn().expect("schemathesis starts");
    let output = tokio::time::timeout(HARD_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {HARD_LIMIT:?}"))
        .expect("schemathesis runs");
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&work);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    // "Test cases:" is followed by e.g. "2047 generated, 2047 passed".
    let generated: u64 = stdout
        .lines()
        .find(|l| l.contains(" generated,"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    println!("schemathesis: {generated} test cases in {elapsed:.1?}\n{summary}");
    // Schemathesis (through Hypothesis) sometimes fails inside itself while generating a case
    // ("Runtime Error" with a traceback in site-packages, e.g. Python's "AST constructor
    // recursion depth mismatch"). That says nothing about the API; anything else still fails.
    // Error lines read "🚫 <kind>: <count>"; a failed phase is listed as "🚫 <phase>" (no
    // count) under "Test Phases" and says nothing of its own.
    let error_kinds: Vec<&str> = summary
        .lines()
        .filter_map(|l| l.trim().strip_prefix("🚫 "))
        .filter_map(|l| l.split_once(": ").map(|(kind, _)| kind))
        .collect();
    let only_tool_errors = !stdout.contains("FAILURES")
        && !error_kinds.is_empty()
        && error_kinds.iter().all(|k| *k == "Runtime Error")
        && stdout.contains("site-packages");
    if only_tool_errors {
        println!("schemathesis failed inside itself (not a finding about the API):\n{stdout}");
    }
    assert!(
        output.status.success() || only_tool_errors,
        "schemathesis found problems ({}):\n{stdout}\n{stderr}\n{}",
        output.status,
        app.dump_logs()
    );
    assert!(
        generated >= 200,
        "schemathesis ran only {generated} test cases:\n{stdout}\n{stderr}"
    );
    assert!(
        app.api_is_alive().await,
        "the API survived:\n{}",
        app.dump_logs()
    );
}

/// Each of these answered 500 (or dropped the connection) before the fixes in api.
#[tokio::test]
async fn input_schemathesis_found_gets_a_4xx_json_error() {
    let app = TestApp::spawn_with(
        0,
        &[
            ("ORCH_ALERTMANAGER_TOKEN", TOKEN),
            ("ORCH_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;
    let agent = created(
        &app,
        "/api/agents",
        json!({"name": "echo", "type": "SCRIPT", "entrypoint": "testing/echo",
               "capabilities": [{"name": "scan"}]}),
    )
    .await;
    let wf = created(
        &app,
        "/api/workflows",
        json!({"name": "w", "nodes": [{"id": "a", "agentId": agent["id"], "action": "scan"}]}),
    )
    .await;
    let wf = wf["id"].as_str().unwrap();

    let expect = |what: &str, status: StatusCode, body: &Value, want: StatusCode| {
        assert_eq!(status, want, "{what}: {body}");
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{what} answers a JSON error: {body}"
        );
    };

    // PostgreSQL stores NUL in neither text nor jsonb: the insert failed with a 500.
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/agents",
        Some(json!({"name": "a\u{0}b", "type": "SCRIPT", "entrypoint": "testing/echo"})),
    )
    .await;
    expect(
        "NUL in a name",
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("NUL"));
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/events",
        Some(json!({"subject": "a.b", "payload": {"k": "\u{0}"}})),
    )
    .await;
    expect(
        "NUL in an event payload",
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/workflows/{wf}/trigger"),
        Some(json!({"context": {"k\u{0}": 1}})),
    )
    .await;
    expect(
        "NUL in a context key",
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    // An escaped backslash before "u0000" is no NUL.
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/workflows/{wf}/trigger"),
        Some(json!({"context": {"k": "\\u0000"}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Optional bodies were read with axum's Bytes, whose 413 was plain text.
    let big = format!(
        "{{\"context\": {{\"k\": \"{}\"}}}}",
        "x".repeat(1024 * 1024 + 1)
    );
    let resp = app
        .client
        .post(format!("{}/api/workflows/{wf}/trigger", app.base))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    expect(
        "an oversized trigger body",
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
    );

    // A JSON null is an absent optional body.
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/workflows/{wf}/trigger"),
        Some(Value::Null),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Times PostgreSQL cannot store were a 500; the earliest chrono time made `to - 30 days`
    // overflow and panic.
    for query in [
        "to=-262143-01-01T00:00:00Z",
        "from=-5000-01-01T00:00:00Z",
        "from=2026-01-01T00:00:00Z&to=+200000-01-01T00:00:00Z",
    ] {
        let (status, body) = send(&app, Method::GET, &format!("/api/cost?{query}"), None).await;
        expect(query, status, &body, StatusCode::BAD_REQUEST);
    }
    let mut hook: Value = serde_json::from_str(
        &std::fs::read_to_string(
            fixtures_dir().join("alertmanager/alertmanager-webhook-sample.json"),
        )
        .unwrap(),
    )
    .unwrap();
    hook["alerts"][0]["startsAt"] = json!("-5000-01-01T00:00:00Z");
    let (status, body) = send(&app, Method::POST, "/api/webhooks/alertmanager", Some(hook)).await;
    expect(
        "an alert from 5001 BC",
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
}

/// Found by Schemathesis: `approval_close` inserted the approved node's job although the first
/// approval's job (same run/node/attempt key) still existed after cancel and retry.
#[tokio::test]
async fn approving_again_after_cancel_and_retry_is_not_a_server_error() {
    let app = TestApp::spawn_with(0, &[("ORCH_ADMIN_TOKEN", TOKEN)]).await;
    let agent = created(
        &app,
        "/api/agents",
        json!({"name": "echo", "type": "SCRIPT", "entrypoint": "testing/echo",
               "capabilities": [{"name": "scan"}]}),
    )
    .await;
    let wf = created(
        &app,
        "/api/workflows",
        json!({"name": "gated", "nodes": [{"id": "a", "agentId": agent["id"], "action": "scan",
                                            "approval": {"required": true}}]}),
    )
    .await;
    // Someone else triggers: the admin decides, and the two-person rule holds.
    let runner =
        orchestration_e2e::client_with_token(&app.create_token("1", "operator", "runner").await);
    let run: Value = runner
        .post(format!(
            "{}/api/workflows/{}/trigger",
            app.base,
            wf["id"].as_str().unwrap()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["runId"].as_str().unwrap();
    let (_, detail) = send(&app, Method::GET, &format!("/api/runs/{run_id}"), None).await;
    let first = detail["approvals"][0]["id"].as_str().unwrap().to_string();
    created(&app, &format!("/api/approvals/{first}/approve"), json!({})).await;
    created(&app, &format!("/api/runs/{run_id}/cancel"), json!({})).await;
    let retried = created(&app, &format!("/api/runs/{run_id}/retry"), json!({})).await;
    let second = retried["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["status"] == "PENDING")
        .expect("the retried node asks again")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/approvals/{second}/approve"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", app.dump_logs());
}

/// Found by Schemathesis: a number near f64::MAX in a context went into jsonb, came back as a
/// 309-digit decimal, and the default (fast, inexact) float parser overflowed on it, so the run
/// could not be read back. Floats now parse exactly (serde_json `float_roundtrip`).
#[tokio::test]
async fn extreme_numbers_in_a_context_round_trip() {
    let app = TestApp::spawn_with(0, &[("ORCH_ADMIN_TOKEN", TOKEN)]).await;
    let agent = created(
        &app,
        "/api/agents",
        json!({"name": "noop", "type": "BUILTIN", "capabilities": [{"name": "noop"}]}),
    )
    .await;
    let wf = created(
        &app,
        "/api/workflows",
        json!({"name": "numbers", "nodes": [{"id": "a", "agentId": agent["id"], "action": "noop"}]}),
    )
    .await;
    let context = json!({"max": 1.7976931348623155e308, "big": 3.16274225972122e137,
                         "tiny": 5e-324, "neg": -1.7976931348623157e308});
    let run = created(
        &app,
        &format!("/api/workflows/{}/trigger", wf["id"].as_str().unwrap()),
        json!({ "context": context }),
    )
    .await;
    let (status, detail) = send(
        &app,
        Method::GET,
        &format!("/api/runs/{}", run["runId"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["context"], context);
}
