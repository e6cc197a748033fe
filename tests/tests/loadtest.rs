//! The load-test harness as CI runs it: small `seed` and `throughput` runs against a
//! deployment the harness starts itself. These check that every run completes exactly once
//! and that the reports are written; timings are for BENCHMARKS.md, not for assertions.

use std::process::Command;

use orchestration_e2e::serde_json::{self, Value};
use orchestration_e2e::{bin_dir, repo_root};

fn loadtest(args: &[&str]) -> Value {
    let out = tempdir();
    let output = Command::new(bin_dir().join("orchestration-loadtest"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .current_dir(repo_root())
        .env("RUST_LOG", "info")
        .output()
        .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "orchestration-loadtest {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("PASSED"), "{md}");
    let svg = std::fs::read_to_string(out.join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
    std::fs::remove_dir_all(&out).unwrap();
    report
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("orch-loadtest-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn seed_runs_scan_and_notify_ten_at_a_time_with_the_real_agents() {
    let report = loadtest(&["--scenario", "seed"]);
    assert_eq!(report["agent"], "SCRIPT");
    let checks = &report["checks"];
    assert_eq!(checks["passed"], true, "{report:#}");
    assert_eq!(checks["runsCompleted"], 10);
    assert_eq!(checks["nodesCompletedOnce"], 20);
    // Where the time went: agent processes versus the engine around them.
    let lat = &report["latenciesMs"];
    assert_eq!(lat["agent"]["count"], 20);
    assert_eq!(lat["engineOverhead"]["count"], 10);
    assert!(lat["agent"]["p50"].as_f64().unwrap() > 0.0, "{lat:#}");
}

#[test]
fn throughput_with_builtin_agents_completes_every_run_once() {
    let report = loadtest(&[
        "--scenario",
        "throughput",
        "--runs",
        "300",
        "--concurrency",
        "32",
        "--nodes",
        "2",
    ]);
    assert_eq!(report["agent"], "BUILTIN");
    let checks = &report["checks"];
    assert_eq!(checks["passed"], true, "{report:#}");
    assert_eq!(checks["runsCompleted"], 300);
    assert_eq!(checks["nodesCompletedOnce"], 600);
    assert_eq!(report["latenciesMs"]["stepToStep"]["count"], 300);
    assert!(report["throughput"]["nodesPerSecond"].as_f64().unwrap() > 0.0);
}

#[test]
fn fanout_schedules_every_branch_and_joins_once() {
    let report = loadtest(&["--scenario", "fanout", "--runs", "2", "--width", "200"]);
    let checks = &report["checks"];
    assert_eq!(checks["passed"], true, "{report:#}");
    assert_eq!(checks["nodesCompletedOnce"], 2 * 202);
    assert_eq!(report["fanout"]["width"], 200);
    assert_eq!(report["fanout"]["lastBranchStartMs"]["count"], 2);
}

#[test]
fn chaos_kills_workers_under_load_and_every_run_still_completes_once() {
    let report = loadtest(&[
        "--scenario",
        "chain",
        "--nodes",
        "3",
        "--concurrency",
        "16",
        "--duration",
        "8",
        "--chaos",
        "2.5",
        "--lease-ms",
        "2000",
    ]);
    let checks = &report["checks"];
    assert_eq!(checks["passed"], true, "{report:#}");
    let kills = report["chaos"]["kills"].as_array().unwrap();
    assert!(kills.len() >= 2, "{report:#}");
}
