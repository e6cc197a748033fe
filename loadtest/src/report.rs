//! The report: JSON for machines, a short Markdown summary for people, and an SVG chart
//! (latency distribution and throughput over time) that opens in any browser.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::analysis::{Chaos, Checks, Fanout, Latencies, Percentiles, Throughput};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub scenario: &'static str,
    pub agent: &'static str,
    pub target: String,
    pub machine: String,
    pub started_at: String,
    pub runs: usize,
    pub concurrency: usize,
    pub workers: Option<usize>,
    pub worker_concurrency: Option<u32>,
    pub nodes_per_run: usize,
    pub duration_seconds: Option<f64>,
    pub elapsed_seconds: f64,
    pub throughput: Throughput,
    pub latencies_ms: Latencies,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<Fanout>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Chaos>,
    pub checks: Checks,
    pub trigger_error_samples: Vec<String>,
    #[serde(skip)]
    pub run_latencies: Vec<f64>,
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpus} CPUs ({model}), {mem_gib:.0} GiB")
}

pub fn write(report: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    std::fs::write(dir.join("report.svg"), svg(report))?;
    Ok(())
}

fn row(name: &str, p: &Percentiles) -> String {
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        p.count, p.p50, p.p95, p.p99, p.max
    )
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let verdict = if r.checks.passed { "PASSED" } else { "FAILED" };
    let _ = writeln!(
        s,
        "# Load test: {} ({} agents) — {verdict}\n",
        r.scenario, r.agent
    );
    let _ = writeln!(
        s,
        "{} runs × {} nodes, {} in flight, against {}{}; {}. Started {}.\n",
        r.runs,
        r.nodes_per_run,
        r.concurrency,
        r.target,
        match (r.workers, r.worker_concurrency) {
            (Some(w), Some(c)) => format!(" ({w} worker processes × concurrency {c})"),
            _ => String::new(),
        },
        r.machine,
        r.started_at
    );
    let t = &r.throughput;
    // The steady median leaves out the first and last seconds: a shorter run has none.
    let steady = if t.nodes_timeline.len() > 4 {
        format!("steady median {:.0} nodes/s", t.steady_nodes_per_second)
    } else {
        "too short for a steady median".to_string()
    };
    let _ = writeln!(
        s,
        "**Throughput:** {:.1} runs/s, {:.1} nodes/s over {:.2} s ({steady}).\n",
        t.runs_per_second, t.nodes_per_second, t.window_seconds
    );
    s.push_str("| latency (ms) | n | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|\n");
    let l = &r.latencies_ms;
    s.push_str(&row("trigger → run complete", &l.run));
    s.push_str(&row("trigger → first node start", &l.first_node_start));
    s.push_str(&row(
        "node → next node start (step-to-step)",
        &l.step_to_step,
    ));
    s.push_str(&row("queue wait (READY → started)", &l.queue_wait));
    s.push_str(&row("attempt (claimed → recorded)", &l.agent));
    s.push_str(&row("engine overhead per run", &l.engine_overhead));
    if let Some(f) = &r.fanout {
        let _ = writeln!(
            s,
            "\n**Fan-out ({} branches):** last branch READY {:.1} ms and started {:.1} ms after the root finished (median over runs).",
            f.width, f.last_branch_ready_ms.p50, f.last_branch_start_ms.p50
        );
    }
    if let Some(c) = &r.chaos {
        let _ = writeln!(
            s,
            "\n**Chaos:** {} worker kills, {} failed attempts re-run; recovery (kill → lost nodes started elsewhere) p50 {:.0} ms, max {:.0} ms.",
            c.kills.len(),
            c.failed_attempts,
            c.recovery_ms.p50,
            c.recovery_ms.max
        );
    }
    let c = &r.checks;
    let _ = writeln!(
        s,
        "\n**Checks:** {}/{} runs COMPLETED, {}/{} nodes completed exactly once, {} trigger errors, {} runs unfinished.",
        c.runs_completed,
        c.runs_expected,
        c.nodes_completed_once,
        c.nodes_expected,
        c.trigger_errors,
        c.unfinished_runs
    );
    for v in &c.node_violations {
        let _ = writeln!(s, "- {v}");
    }
    for (status, n) in &c.runs_not_completed {
        let _ = writeln!(s, "- {n} runs ended {status}");
    }
    s
}

/// Two panels: the distribution of run latencies (histogram, with p50/p95/p99 marks) and
/// node completions per second over time.
pub fn svg(r: &Report) -> String {
    const W: f64 = 960.0;
    const H: f64 = 360.0;
    const PAD: f64 = 50.0;
    let panel_w = (W - 3.0 * PAD) / 2.0;
    let panel_h = H - 2.0 * PAD - 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{PAD}" y="22" font-size="14" font-weight="bold">{} · {} agents · {:.0} nodes/s · run p50 {:.1} ms · {}</text>"#,
        r.scenario,
        r.agent,
        r.throughput.nodes_per_second,
        r.latencies_ms.run.p50,
        if r.checks.passed {
            "checks passed"
        } else {
            "CHECKS FAILED"
        }
    );

    // Panel 1: histogram of run latency.
    let (x0, y0) = (PAD, PAD + 10.0);
    axes(
        &mut s,
        x0,
        y0,
        panel_w,
        panel_h,
        "trigger → run complete (ms)",
        "runs",
    );
    let lat = &r.run_latencies;
    if !lat.is_empty() {
        let max = r
            .latencies_ms
            .run
            .p99
            .max(r.latencies_ms.run.p50 * 2.0)
            .max(1e-3);
        let bins = 40usize;
        let mut counts = vec![0u64; bins];
        for v in lat {
            let i = ((v / max) * bins as f64) as usize;
            counts[i.min(bins - 1)] += 1;
        }
        let top = *counts.iter().max().unwrap_or(&1) as f64;
        let bw = panel_w / bins as f64;
        for (i, c) in counts.iter().enumerate() {
            let h = (*c as f64 / top) * panel_h;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4e79a7"/>"##,
                x0 + i as f64 * bw,
                y0 + panel_h - h,
                (bw - 1.0).max(0.5),
                h
            );
        }
        for (name, v, color) in [
            ("p50", r.latencies_ms.run.p50, "#59a14f"),
            ("p95", r.latencies_ms.run.p95, "#f28e2b"),
            ("p99", r.latencies_ms.run.p99, "#e15759"),
        ] {
            let x = x0 + (v / max).min(1.0) * panel_w;
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="{color}">{name} {v:.1}</text>"#,
                y0 + panel_h,
                x + 3.0,
                y0 + 12.0
                    + if name == "p95" {
                        12.0
                    } else if name == "p99" {
                        24.0
                    } else {
                        0.0
                    }
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{max:.1}+</text>"#,
            x0 + panel_w,
            y0 + panel_h + 14.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{top}</text>"#,
            x0 - 4.0,
            y0 + 10.0
        );
    }

    // Panel 2: node completions per second.
    let x1 = PAD * 2.0 + panel_w;
    axes(
        &mut s,
        x1,
        y0,
        panel_w,
        panel_h,
        "seconds since first trigger",
        "nodes completed / s",
    );
    let tl = &r.throughput.nodes_timeline;
    if !tl.is_empty() {
        let top = (*tl.iter().max().unwrap_or(&1)).max(1) as f64;
        let n = tl.len().max(2) as f64 - 1.0;
        let points: Vec<String> = tl
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{:.1},{:.1}",
                    x1 + i as f64 / n * panel_w,
                    y0 + panel_h - (*c as f64 / top) * panel_h
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#e15759" stroke-width="2"/>"##,
            points.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{top}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x1 - 4.0,
            y0 + 10.0,
            x1 + panel_w,
            y0 + panel_h + 14.0,
            tl.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, x: f64, y: f64, w: f64, h: f64, xlabel: &str, ylabel: &str) {
    let _ = writeln!(
        s,
        r##"<path d="M{x},{y} V{:.1} H{:.1}" fill="none" stroke="#333"/>"##,
        y + h,
        x + w
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{xlabel}</text>"#,
        x + w / 2.0,
        y + h + 28.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{ylabel}</text>"#,
        x - 30.0,
        y + h / 2.0,
        x - 30.0,
        y + h / 2.0
    );
}
