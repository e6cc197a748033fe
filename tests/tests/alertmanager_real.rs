//! End to end with the real monitoring stack: a real Prometheus evaluates an always-firing rule,
//! a real AlertManager routes the alert to the API's webhook, and the API stores it.
//!
//! Needs Debian's `prometheus` and `prometheus-alertmanager` (scripts/install-test-deps.sh);
//! without them the test says why on stderr and passes without checking anything. Everything
//! listens on 127.0.0.1 only, on ports picked free at start.

use std::process::Command;
use std::time::{Duration, Instant};

/// What AlertManager sends as its bearer token (ORCH_ALERTMANAGER_TOKEN).
const AM_TOKEN: &str = "alertmanager-test-token-0123456789";

use orchestration_e2e::TestApp;

use orchestration_e2e::monitoring::{ScratchDir, fetch_text, find_binary, free_port, wait_ready};

#[tokio::test]
async fn a_real_alertmanager_delivers_a_firing_alert_that_is_stored() {
    let (Some(prometheus_bin), Some(alertmanager_bin)) = (
        find_binary("prometheus"),
        find_binary("prometheus-alertmanager"),
    ) else {
        eprintln!(
            "SKIPPED a_real_alertmanager_delivers_a_firing_alert_that_is_stored: the `prometheus` \
             and `prometheus-alertmanager` binaries are not installed (run \
             scripts/install-test-deps.sh)"
        );
        return;
    };

    let app = TestApp::spawn_with(0, &[("ORCH_ALERTMANAGER_TOKEN", AM_TOKEN)]).await;
    // Declared before the processes so it is removed after they are killed.
    let scratch = ScratchDir::new("orch-alertmanager-e2e");
    let am_port = free_port();
    let prom_port = free_port();
    let am_base = format!("http://127.0.0.1:{am_port}");
    let prom_base = format!("http://127.0.0.1:{prom_port}");

    // AlertManager: one webhook receiver, the API; short waits so the first notification goes
    // out about a second after the alert arrives.
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
    wait_ready(
        &app.client,
        &mut alertmanager,
        &format!("{am_base}/-/ready"),
    )
    .await;

    // Prometheus: one rule that is always true, evaluated every second, sent to AlertManager.
    let rules = scratch.write(
        "rules.yml",
        "groups:
  - name: orchestrator-e2e
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        for: 0s
        labels:
          severity: critical
          service: orchestrator
        annotations:
          summary: Always firing test alert
          description: Fires on every evaluation so the AlertManager webhook is exercised end to end.
",
    );
    let prom_config = scratch.write(
        "prometheus.yml",
        &format!(
            "global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - '{}'
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
",
            rules.display()
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
        // The first evaluation can fire before Prometheus has discovered the AlertManager, and
        // that notification is dropped; with the default 1m delay the next try is a minute
        // later. Resend every second instead.
        "--rules.alert.resend-delay=1s".to_string(),
    ]);
    let mut prometheus = orchestration_e2e::spawn("prometheus", prom_cmd);
    wait_ready(
        &app.client,
        &mut prometheus,
        &format!("{prom_base}/-/ready"),
    )
    .await;

    let started = Instant::now();
    let timeout = Duration::from_secs(60);
    let alert = loop {
        let (status, body) = app.get("/api/alerts?status=firing").await;
        if status.is_success()
            && let Some(found) = body["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|a| a["labels"]["alertname"] == "AlwaysFiring")
                    .cloned()
            })
        {
            break found;
        }
        if started.elapsed() > timeout || !alertmanager.is_alive() || !prometheus.is_alive() {
            panic!(
                "no stored AlwaysFiring alert after {:?}; last GET /api/alerts?status=firing: \
                 {:?} {}\n\
                 --- prometheus /api/v1/alerts ---\n{}\n\
                 --- alertmanager /api/v2/alerts ---\n{}\n\
                 --- alertmanager (alive: {}) ---\n{}\n\
                 --- prometheus (alive: {}) ---\n{}",
                started.elapsed(),
                status,
                body,
                fetch_text(&app.client, &format!("{prom_base}/api/v1/alerts")).await,
                fetch_text(&app.client, &format!("{am_base}/api/v2/alerts")).await,
                alertmanager.is_alive(),
                alertmanager.dump(),
                prometheus.is_alive(),
                prometheus.dump(),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "AlwaysFiring stored {:?} after Prometheus was ready",
        started.elapsed()
    );

    assert_eq!(alert["status"], "firing", "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert:#}");
    assert_eq!(alert["labels"]["service"], "orchestrator", "{alert:#}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "summary annotation missing: {alert:#}"
    );
    assert!(
        alert["fingerprint"].as_str().is_some_and(|s| !s.is_empty()),
        "fingerprint missing: {alert:#}"
    );
}
