//! The whole observation loop with the real monitoring stack: workflow runs fail, a real
//! Prometheus scrapes the API's and the worker's /metrics, evaluates the project's own
//! `WorkflowFailureRateHigh` rule (deploy/prometheus/rules/orchestration.rules.yml), a real
//! AlertManager delivers the alert to the API's webhook, and the alert starts the remediation
//! workflow subscribed to `alert.>`.
//!
//! Needs Debian's `prometheus` and `prometheus-alertmanager` (scripts/install-test-deps.sh);
//! without them the test says why on stderr and passes without checking anything. Everything
//! listens on 127.0.0.1 only, on ports picked free at start.

use std::process::Command;
use std::time::{Duration, Instant};

/// What AlertManager sends as its bearer token (ORCH_ALERTMANAGER_TOKEN).
const AM_TOKEN: &str = "alertmanager-test-token-0123456789";

use orchestration_e2e::monitoring::{ScratchDir, fetch_text, find_binary, free_port, wait_ready};
use orchestration_e2e::reqwest::Client;
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{Proc, TestApp, node, repo_root};

const ALERT: &str = "WorkflowFailureRateHigh";

// ---------------------------------------------------------------------------------------------
// The rule under test, taken from the project's rule file.
//
// `serde_yaml` is not in Cargo.lock, so the rule is cut out of the YAML text line by line. This
// relies only on the ordinary block style the rule file uses: `- alert: <name>` starts a rule,
// the rule's keys sit two columns right of its dash, and the rule ends at the next non-blank,
// non-comment line at or left of the dash. Keys are copied verbatim (so quoting and the
// annotations' `{{ $labels.x }}` templates survive untouched) except `for:` and the range
// windows inside `expr:`.
// ---------------------------------------------------------------------------------------------

/// The production rule, adapted for a test that must finish in about a minute.
struct TestRule {
    /// The rule's YAML, re-indented to sit under `groups[0].rules` (dash at column 6).
    yaml: String,
    /// The expression as in the production file.
    original_expr: String,
    /// The expression with every range window replaced by `[1m]`.
    expr: String,
    /// The production `for:` duration (None if absent).
    original_for: Option<String>,
    /// `labels:` of the rule (values unquoted).
    labels: Vec<(String, String)>,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// Replaces every PromQL range window (`[5m]`, `[1h30m]`, the range of a subquery `[10m:30s]`)
/// with 1m. Label matchers never contain `[`, and regex classes inside quoted matcher values are
/// left alone because only brackets holding a bare duration are rewritten.
fn shorten_windows(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) => {
                let inside = &after[..close];
                let (range, step) = match inside.split_once(':') {
                    Some((r, s)) => (r, Some(s)),
                    None => (inside, None),
                };
                let is_duration = !range.is_empty()
                    && range.starts_with(|c: char| c.is_ascii_digit())
                    && range
                        .chars()
                        .all(|c| c.is_ascii_digit() || "smhdwy".contains(c));
                if is_duration {
                    out.push_str("[1m");
                    if let Some(step) = step {
                        out.push(':');
                        out.push_str(step);
                    }
                    out.push(']');
                } else {
                    out.push('[');
                    out.push_str(inside);
                    out.push(']');
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn extract_rule(yaml: &str, alert: &str) -> Result<TestRule, String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            l.trim_start()
                .strip_prefix("- alert:")
                .is_some_and(|name| unquote(name) == alert)
        })
        .ok_or_else(|| format!("no `- alert: {alert}` line"))?;
    let dash = indent_of(lines[start]);
    let key_indent = dash + 2;
    let mut end = start + 1;
    while end < lines.len() {
        let l = lines[end];
        let t = l.trim_start();
        if !t.is_empty() && !t.starts_with('#') && indent_of(l) <= dash {
            break;
        }
        end += 1;
    }
    let block = &lines[start..end];

    let reindent = |l: &str| -> String {
        if l.trim().is_empty() {
            String::new()
        } else {
            let strip = indent_of(l).min(dash);
            format!("      {}", &l[strip..])
        }
    };

    let mut yaml_out = vec![reindent(block[0])];
    let mut current_key = String::new();
    let mut expr_lines: Vec<String> = Vec::new();
    let mut original_for = None;
    let mut labels = Vec::new();
    for &l in &block[1..] {
        let t = l.trim_start();
        if t.starts_with('#') {
            continue;
        }
        if !t.is_empty() && indent_of(l) == key_indent {
            let (key, value) = t
                .split_once(':')
                .ok_or_else(|| format!("unexpected rule line {l:?}"))?;
            current_key = key.trim().to_string();
            match current_key.as_str() {
                "for" => {
                    original_for = Some(unquote(value));
                    yaml_out.push(reindent(&format!("{}for: 0s", " ".repeat(key_indent))));
                    continue;
                }
                "expr" => {
                    let v = value.trim();
                    if !v.is_empty() && !v.starts_with('|') && !v.starts_with('>') {
                        expr_lines.push(unquote(v));
                    }
                    yaml_out.push(reindent(&shorten_windows(l)));
                    continue;
                }
                _ => {}
            }
        } else if !t.is_empty() && indent_of(l) > key_indent {
            match current_key.as_str() {
                "expr" => {
                    expr_lines.push(t.to_string());
                    yaml_out.push(reindent(&shorten_windows(l)));
                    continue;
                }
                "labels" => {
                    if let Some((k, v)) = t.split_once(':') {
                        labels.push((k.trim().to_string(), unquote(v)));
                    }
                }
                _ => {}
            }
        }
        yaml_out.push(reindent(l));
    }
    if original_for.is_none() {
        yaml_out.push(format!("{}for: 0s", " ".repeat(8)));
    }
    let original_expr = expr_lines.join("\n");
    if original_expr.trim().is_empty() {
        return Err(format!("rule {alert} has no expr"));
    }
    Ok(TestRule {
        yaml: yaml_out.join("\n"),
        expr: shorten_windows(&original_expr),
        original_expr,
        original_for,
        labels,
    })
}

/// The finished-runs volume the expression demands, from `increase(...runs_finished...) >= N`
/// (or `> N`); 1 if the expression has no such condition.
fn volume_needed(expr: &str) -> u64 {
    let Some(at) = expr.find("increase(orchestration_workflow_runs_finished_total") else {
        return 1;
    };
    let rest = &expr[at..];
    let Some(cmp) = rest.find('>') else { return 1 };
    let (strict, num) = match rest[cmp + 1..].strip_prefix('=') {
        Some(n) => (false, n),
        None => (true, &rest[cmp + 1..]),
    };
    let num: String = num
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    match num.parse::<f64>() {
        Ok(n) if strict => n.floor() as u64 + 1,
        Ok(n) => n.ceil() as u64,
        Err(_) => 1,
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus and AlertManager, with what a failure report needs.
// ---------------------------------------------------------------------------------------------

struct Monitoring {
    client: Client,
    prom_base: String,
    am_base: String,
    // Dropping the Monitoring kills both (Proc's Drop).
    alertmanager: Proc,
    prometheus: Proc,
}

impl Monitoring {
    /// The result vector of an instant query.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let resp = self
            .client
            .get(format!("{}/api/v1/query", self.prom_base))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| format!("query {promql}: {e}"))?;
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("query {promql}: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("query {promql}: {body}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Everything that explains a failure: Prometheus's view of alerts, rules and targets,
    /// AlertManager's alerts, and every process's output.
    async fn report(&mut self, app: &TestApp) -> String {
        let c = &self.client;
        format!(
            "--- prometheus /api/v1/alerts ---\n{}\n\
             --- prometheus /api/v1/rules ---\n{}\n\
             --- prometheus /api/v1/targets ---\n{}\n\
             --- alertmanager /api/v2/alerts ---\n{}\n\
             --- api GET /api/alerts ---\n{}\n\
             --- alertmanager (alive: {}) ---\n{}\n\
             --- prometheus (alive: {}) ---\n{}\n\
             {}",
            fetch_text(c, &format!("{}/api/v1/alerts", self.prom_base)).await,
            fetch_text(c, &format!("{}/api/v1/rules", self.prom_base)).await,
            fetch_text(c, &format!("{}/api/v1/targets", self.prom_base)).await,
            fetch_text(c, &format!("{}/api/v2/alerts", self.am_base)).await,
            fetch_text(c, &format!("{}/api/alerts", app.base)).await,
            self.alertmanager.is_alive(),
            self.alertmanager.dump(),
            self.prometheus.is_alive(),
            self.prometheus.dump(),
            app.dump_logs(),
        )
    }
}

/// `assert!` that appends the monitoring stack's report (fetched only on failure).
macro_rules! check {
    ($mon:expr, $app:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            let msg = format!($($fmt)+);
            let report = $mon.report(&$app).await;
            panic!("{msg}\n{report}");
        }
    };
}

fn sample_value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Waits (like `TestApp::wait_for_run`) for a run to end, with the monitoring report on timeout.
async fn finished_run(mon: &mut Monitoring, app: &TestApp, run_id: &str) -> Value {
    let limit = Duration::from_secs(30);
    // wait_for_run's own (longer) timeout never fires first; ours reports Prometheus too.
    match tokio::time::timeout(limit, app.wait_for_run(run_id, limit * 2)).await {
        Ok(run) => run,
        Err(_) => {
            let report = mon.report(app).await;
            panic!(
                "run {run_id} did not finish in {limit:?}: {:#}\n{report}",
                app.run(run_id).await
            )
        }
    }
}

#[tokio::test]
async fn a_failing_workflow_raises_an_alert_that_comes_back_as_a_workflow() {
    let test_started = Instant::now();
    let (Some(prometheus_bin), Some(alertmanager_bin)) = (
        find_binary("prometheus"),
        find_binary("prometheus-alertmanager"),
    ) else {
        eprintln!(
            "SKIPPED a_failing_workflow_raises_an_alert_that_comes_back_as_a_workflow: the \
             `prometheus` and `prometheus-alertmanager` binaries are not installed (run \
             scripts/install-test-deps.sh)"
        );
        return;
    };

    // 1. The orchestrator: the API and one worker, each with its own /metrics.
    let mut app = TestApp::processes(1, &[("ORCH_ALERTMANAGER_TOKEN", AM_TOKEN)]).await;
    eprintln!("orchestrator up after {:?}", test_started.elapsed());
    let worker_metrics = app.worker_metrics_addr(0);
    let api_target = app
        .base
        .strip_prefix("http://")
        .expect("API base is http://host:port")
        .to_string();

    // The project's rule file (written alongside this test; wait for it to appear).
    let rules_path = repo_root().join("deploy/prometheus/rules/orchestration.rules.yml");
    let deadline = Instant::now() + Duration::from_secs(120);
    let production_rules = loop {
        if let Ok(text) = std::fs::read_to_string(&rules_path)
            && text.contains(&format!("alert: {ALERT}"))
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "{} does not define the alert {ALERT}",
            rules_path.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The production rule looks at [5m] windows and waits `for: 2m` (and other rules use
    // [10m]/[15m]): right for production, far too slow for a test. The windows become [1m]
    // (still 60 samples at the 1 s scrape interval, and the alert stays true for about a
    // minute after the last failure, plenty for AlertManager's 1 s group_wait) and `for` becomes
    // 0s; the expression's logic, thresholds, labels and annotations are the production ones.
    let rule = extract_rule(&production_rules, ALERT)
        .unwrap_or_else(|e| panic!("reading {ALERT} from {}: {e}", rules_path.display()));
    // The rule only counts workflows with enough finished runs in the window (>= 5 when this
    // test was written). `increase()` cannot see a counter's first value (Prometheus 2.x has
    // no created-timestamp handling), so one warm-up run first makes the series exist, and
    // only the runs after it count toward the volume.
    let volume = volume_needed(&rule.expr);
    let counted_runs = volume.max(5);
    assert!(
        counted_runs <= 50,
        "{ALERT} needs {volume} finished runs in its window; too many for this test"
    );
    eprintln!(
        "{ALERT}: production expr (for: {:?})\n{}\ntest expr (for: 0s; needs {volume} runs, \
         producing {counted_runs} after a warm-up run)\n{}",
        rule.original_for, rule.original_expr, rule.expr
    );

    // Declared before the processes so it is removed after they are killed.
    let scratch = ScratchDir::new("orch-observation-e2e");
    let am_port = free_port();
    let prom_port = free_port();
    let client = app.client.clone();

    // 2. AlertManager: one webhook receiver, the API.
    let am_config = scratch.write(
        "alertmanager.yml",
        &format!(
            "route:
  receiver: orchestrator
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: orchestrator
    webhook_configs:
      - url: '{}/api/webhooks/alertmanager'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: '{AM_TOKEN}'
",
            app.base
        ),
    );
    let mut am_cmd = Command::new(&alertmanager_bin);
    am_cmd.args([
        format!("--config.file={}", am_config.display()),
        format!(
            "--storage.path={}",
            scratch.path().join("alertmanager").display()
        ),
        format!("--web.listen-address=127.0.0.1:{am_port}"),
        // Empty: no cluster (gossip) listener, so no peer settling and no port 9094.
        "--cluster.listen-address=".to_string(),
    ]);
    let mut alertmanager = orchestration_e2e::spawn("alertmanager", am_cmd);
    let am_base = format!("http://127.0.0.1:{am_port}");
    wait_ready(&client, &mut alertmanager, &format!("{am_base}/-/ready")).await;

    // 3. Prometheus: scrapes the API and the worker every second, evaluates the test rule.
    let rules_file = scratch.write(
        "rules.yml",
        &format!(
            "# {ALERT} from {}, windows shortened to [1m] and `for` set to 0s.\n\
             groups:\n  - name: orchestration.workflows.e2e\n    rules:\n{}\n",
            rules_path.display(),
            rule.yaml
        ),
    );
    if let Some(promtool) = find_binary("promtool") {
        let out = Command::new(promtool)
            .arg("check")
            .arg("rules")
            .arg(&rules_file)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool rejects the test rule file:\n{}\n{}{}",
            std::fs::read_to_string(&rules_file).unwrap_or_default(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let prom_config = scratch.write(
        "prometheus.yml",
        &format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - '{}'
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
scrape_configs:
  - job_name: api
    metrics_path: /metrics
    static_configs:
      - targets: ['{api_target}']
  - job_name: worker
    metrics_path: /metrics
    static_configs:
      - targets: ['{worker_metrics}']
",
            rules_file.display()
        ),
    );
    let mut prom_cmd = Command::new(&prometheus_bin);
    prom_cmd.args([
        format!("--config.file={}", prom_config.display()),
        format!(
            "--storage.tsdb.path={}",
            scratch.path().join("prometheus").display()
        ),
        format!("--web.listen-address=127.0.0.1:{prom_port}"),
        // A notification sent before Prometheus has discovered the AlertManager is dropped;
        // with the default 1m delay the next try is a minute later. Resend every second.
        "--rules.alert.resend-delay=1s".to_string(),
    ]);
    let mut prometheus = orchestration_e2e::spawn("prometheus", prom_cmd);
    let prom_base = format!("http://127.0.0.1:{prom_port}");
    wait_ready(&client, &mut prometheus, &format!("{prom_base}/-/ready")).await;
    let mut mon = Monitoring {
        client,
        prom_base,
        am_base,
        alertmanager,
        prometheus,
    };

    // 4. The remediation workflow, subscribed to every alert, and the workflow that fails.
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let remediation = app
        .create_workflow(json!({
            "name": "remediation",
            "trigger": {"type": "event", "pattern": "alert.>"},
            "nodes": [{"id": "remediate", "agentId": echo, "action": "echo",
                       "inputsJson": {"alert": "{{ context.alert.labels.alertname }}"}}]}))
        .await;
    let fail = app
        .create_agent(
            "fail",
            "testing/fail",
            &["explode"],
            json!({"retry": {"maxAttempts": 1}}),
        )
        .await;
    let doomed = app
        .create_workflow(json!({
            "name": "doomed",
            "nodes": [{"id": "boom", "agentId": fail, "action": "explode"}]}))
        .await;

    // The warm-up run, until Prometheus has scraped its series.
    let run_id = app.trigger(&doomed, json!({})).await;
    let run = finished_run(&mut mon, &app, &run_id).await;
    check!(mon, app, run["status"] == "FAILED", "warm-up run: {run:#}");
    let finished_query =
        r#"orchestration_workflow_runs_finished_total{workflow="doomed",status="FAILED"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let series = mon.query(finished_query).await;
        if series
            .as_ref()
            .is_ok_and(|s| s.iter().map(sample_value).sum::<f64>() >= 1.0)
        {
            break;
        }
        check!(
            mon,
            app,
            Instant::now() < deadline,
            "Prometheus did not scrape the warm-up run's {finished_query}: {series:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let failures_started = Instant::now();
    for i in 0..counted_runs {
        let run_id = app.trigger(&doomed, json!({})).await;
        let run = finished_run(&mut mon, &app, &run_id).await;
        check!(
            mon,
            app,
            run["status"] == "FAILED",
            "run {i} of doomed: {run:#}"
        );
    }
    let total_runs = counted_runs + 1;
    eprintln!(
        "{counted_runs} more runs of doomed FAILED in {:?}",
        failures_started.elapsed()
    );

    // 5. Prometheus has scraped every series the rule and the dashboards rely on, with the
    //    labels they select on.
    let trigger_query =
        r#"http_server_request_duration_seconds_count{route="/api/workflows/{id}/trigger"}"#;
    let executions_query = r#"orchestration_node_executions_total{agent="fail",status="FAILED"}"#;
    let up_query = r#"up{job="worker"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let finished = mon.query(finished_query).await;
        let executions = mon.query(executions_query).await;
        let triggers = mon.query(trigger_query).await;
        let up = mon.query(up_query).await;
        let finished_ok = finished.as_ref().is_ok_and(|s| {
            !s.is_empty()
                && s.iter().all(|x| {
                    x["metric"]["workflow"] == "doomed"
                        && x["metric"]["status"] == "FAILED"
                        && (x["metric"]["job"] == "api" || x["metric"]["job"] == "worker")
                })
                && s.iter().map(sample_value).sum::<f64>() >= total_runs as f64
        });
        let executions_ok = executions.as_ref().is_ok_and(|s| {
            s.iter().any(|x| {
                x["metric"]["job"] == "worker"
                    && x["metric"]["instance"] == worker_metrics.as_str()
                    && x["metric"]["agent"] == "fail"
                    && x["metric"]["action"] == "explode"
                    && x["metric"]["status"] == "FAILED"
                    && sample_value(x) >= total_runs as f64
            })
        });
        let triggers_ok = triggers.as_ref().is_ok_and(|s| {
            s.iter().any(|x| {
                x["metric"]["job"] == "api"
                    && x["metric"]["instance"] == api_target.as_str()
                    && x["metric"]["method"] == "POST"
                    && x["metric"]["status"] == "202"
                    && sample_value(x) >= total_runs as f64
            })
        });
        let up_ok = up.as_ref().is_ok_and(|s| {
            s.len() == 1
                && s[0]["metric"]["instance"] == worker_metrics.as_str()
                && sample_value(&s[0]) == 1.0
        });
        if finished_ok && executions_ok && triggers_ok && up_ok {
            let jobs: Vec<&Value> = finished
                .as_ref()
                .unwrap()
                .iter()
                .map(|x| &x["metric"]["job"])
                .collect();
            eprintln!("runs-finished series scraped from job(s) {jobs:?}");
            break;
        }
        check!(
            mon,
            app,
            Instant::now() < deadline,
            "series missing or wrong after {:?}:\n\
             {finished_query} (ok: {finished_ok}) -> {finished:?}\n\
             {executions_query} (ok: {executions_ok}) -> {executions:?}\n\
             {trigger_query} (ok: {triggers_ok}) -> {triggers:?}\n\
             {up_query} (ok: {up_ok}) -> {up:?}",
            failures_started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 6. Prometheus fires, AlertManager delivers, the API stores the alert...
    let alert_wait = Instant::now();
    let timeout = Duration::from_secs(90);
    let alert = loop {
        let (status, body) = app.get("/api/alerts?status=firing").await;
        if status.is_success()
            && let Some(found) = body["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|a| a["labels"]["alertname"] == ALERT)
                    .cloned()
            })
        {
            break found;
        }
        let alive = mon.alertmanager.is_alive() && mon.prometheus.is_alive();
        check!(
            mon,
            app,
            alert_wait.elapsed() < timeout && alive,
            "no stored firing {ALERT} after {:?} (monitoring alive: {alive}); last GET \
             /api/alerts?status=firing: {status} {body}\ntest expr now: {:?}",
            alert_wait.elapsed(),
            mon.query(&rule.expr).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "{ALERT} stored {:?} after the scraped series were checked",
        alert_wait.elapsed()
    );
    check!(mon, app, alert["status"] == "firing", "{alert:#}");
    check!(
        mon,
        app,
        alert["labels"]["workflow"] == "doomed",
        "the alert names the failing workflow: {alert:#}"
    );
    for (k, v) in &rule.labels {
        check!(
            mon,
            app,
            alert["labels"][k] == v.as_str(),
            "label {k}={v} of the rule: {alert:#}"
        );
    }
    check!(
        mon,
        app,
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && !s.contains("{{")),
        "the summary annotation is rendered: {alert:#}"
    );

    // ... and the alert started the remediation workflow, which completed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let remediation_run = loop {
        let (status, runs) = app.get(&format!("/api/workflows/{remediation}/runs")).await;
        let found = runs["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|r| r["context"]["alert"]["labels"]["alertname"] == ALERT)
                .cloned()
        });
        if let Some(run) = found {
            break run;
        }
        check!(
            mon,
            app,
            Instant::now() < deadline,
            "no run of the remediation workflow for {ALERT}: {status} {runs:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run_id = remediation_run["id"].as_str().expect("run id").to_string();
    let run = finished_run(&mut mon, &app, &run_id).await;
    check!(
        mon,
        app,
        run["status"] == "COMPLETED",
        "remediation run: {run:#}"
    );
    check!(
        mon,
        app,
        run["trigger"] == "alert",
        "remediation run: {run:#}"
    );
    check!(
        mon,
        app,
        run["context"]["alert"]["labels"]["workflow"] == "doomed",
        "remediation run: {run:#}"
    );
    check!(
        mon,
        app,
        node(&run, "remediate")["output"]["inputs"] == json!({"alert": ALERT}),
        "the remediation node saw the alert's name: {run:#}"
    );
    eprintln!(
        "observation loop closed in {:?} (test total)",
        test_started.elapsed()
    );
}

#[test]
fn the_rule_extraction_rewrites_windows_and_for() {
    let yaml = "groups:
  - name: g
    rules:
      - alert: Other
        expr: up == 0
        for: 1m
      - alert: WorkflowFailureRateHigh
        # comment
        expr: |
          sum by (workflow) (rate(x{status=\"FAILED\"}[5m])) > 0.2
          and sum by (workflow) (increase(orchestration_workflow_runs_finished_total[10m])) >= 5
        for: 2m
        labels:
          severity: warning
          service: \"orchestration\"
        annotations:
          summary: \"Workflow {{ $labels.workflow }} fails\"

  - name: h
    rules: []
";
    let rule = extract_rule(yaml, ALERT).unwrap();
    assert_eq!(rule.original_for.as_deref(), Some("2m"));
    assert!(
        rule.original_expr.contains("[5m]"),
        "{}",
        rule.original_expr
    );
    assert!(!rule.expr.contains("[5m]") && !rule.expr.contains("[10m]"));
    assert_eq!(rule.expr.matches("[1m]").count(), 2, "{}", rule.expr);
    assert_eq!(volume_needed(&rule.expr), 5);
    assert_eq!(
        rule.labels,
        vec![
            ("severity".to_string(), "warning".to_string()),
            ("service".to_string(), "orchestration".to_string())
        ]
    );
    assert!(
        rule.yaml
            .starts_with("      - alert: WorkflowFailureRateHigh\n")
    );
    assert!(rule.yaml.contains("\n        for: 0s\n"), "{}", rule.yaml);
    assert!(!rule.yaml.contains("Other") && !rule.yaml.contains("name: h"));
    assert!(rule.yaml.contains("{{ $labels.workflow }}"));
    assert_eq!(
        shorten_windows("a[1h30m:30s] b{x=~\"[a-z]\"}"),
        "a[1m:30s] b{x=~\"[a-z]\"}"
    );
    assert_eq!(volume_needed("rate(x[1m]) > 0"), 1);
}
