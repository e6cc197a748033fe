//! Turns the runs as the API reports them into the figures of the report, and checks what must
//! hold whatever the load: every run COMPLETED, every node completed exactly once.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::scenario::Prepared;

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(|a, b| a.total_cmp(b));
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let rank = |p: f64| {
            let i = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[i.clamp(1, values.len()) - 1]
        };
        Percentiles {
            count: values.len(),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: *values.last().expect("not empty"),
            mean: values.iter().sum::<f64>() / values.len() as f64,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latencies {
    /// Trigger (the run's creation) → run finished.
    pub run: Percentiles,
    /// Trigger → the first node's agent started.
    pub first_node_start: Percentiles,
    /// A node's last dependency recorded as finished → the node claimed by a worker (server
    /// clock). When the finishing worker takes the node over itself, both happen in one
    /// transaction and the node's agent starts one commit later.
    pub step_to_step: Percentiles,
    /// A node became READY → a worker started it.
    pub queue_wait: Percentiles,
    /// Per successful attempt, claimed → result recorded: the agent's own time plus the
    /// worker's bookkeeping around it (for SCRIPT agents, process start-up).
    pub agent: Percentiles,
    /// Per run: run latency minus the agents' time along the critical path (what the engine
    /// itself cost: transactions, queue, wake-ups, process start-up for SCRIPT agents counts
    /// as agent time).
    pub engine_overhead: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checks {
    pub runs_expected: usize,
    pub runs_completed: usize,
    pub runs_not_completed: BTreeMap<String, usize>,
    pub nodes_expected: usize,
    pub nodes_completed_once: usize,
    /// Nodes with no COMPLETED attempt, or with more than one.
    pub node_violations: Vec<String>,
    pub trigger_errors: usize,
    pub unfinished_runs: usize,
    pub fetch_errors: usize,
    pub passed: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    /// From the first trigger to the last run finished.
    pub window_seconds: f64,
    pub runs_per_second: f64,
    pub nodes_per_second: f64,
    /// Median of the per-second node completion counts, leaving out the first and last
    /// seconds (ramp-up and drain); 0 when the run lasted under five seconds.
    pub steady_nodes_per_second: f64,
    /// Node completions per second since the first trigger.
    pub nodes_timeline: Vec<u64>,
    pub runs_timeline: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fanout {
    pub width: usize,
    /// Root finished → the last branch became READY.
    pub last_branch_ready_ms: Percentiles,
    /// Root finished → the last branch's agent started.
    pub last_branch_start_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kill {
    /// Seconds since the load started.
    pub at_seconds: f64,
    pub pid: u32,
    /// Attempts that were running in the killed worker.
    pub lost_attempts: usize,
    /// Kill → the last of those nodes started again elsewhere.
    pub recovery_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Chaos {
    pub kills: Vec<Kill>,
    pub recovery_ms: Percentiles,
    /// Failed attempts across all runs (lost to kills, mostly).
    pub failed_attempts: usize,
}

pub struct Analysis {
    pub latencies: Latencies,
    pub checks: Checks,
    pub throughput: Throughput,
    pub fanout: Option<Fanout>,
    pub chaos: Option<Chaos>,
    /// Run latencies in trigger order, for the chart.
    pub run_latencies: Vec<f64>,
}

fn ts(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// A kill: when (as a timestamp) and which process.
pub struct KillEvent {
    pub at: DateTime<Utc>,
    pub pid: u32,
}

pub fn analyse(
    prepared: &Prepared,
    runs: &[Value],
    expected_runs: usize,
    trigger_errors: usize,
    unfinished: usize,
    fetch_errors: usize,
    kills: Option<&[KillEvent]>,
) -> Analysis {
    let mut checks = Checks {
        runs_expected: expected_runs,
        nodes_expected: expected_runs * prepared.nodes_per_run(),
        trigger_errors,
        unfinished_runs: unfinished,
        fetch_errors,
        ..Default::default()
    };
    let mut lat_run = Vec::new();
    let mut lat_first = Vec::new();
    let mut lat_step = Vec::new();
    let mut lat_queue = Vec::new();
    let mut lat_agent = Vec::new();
    let mut overhead = Vec::new();
    let mut fan_ready = Vec::new();
    let mut fan_start = Vec::new();
    let mut node_done: Vec<DateTime<Utc>> = Vec::new();
    let mut run_done: Vec<DateTime<Utc>> = Vec::new();
    let mut first_created: Option<DateTime<Utc>> = None;
    let mut last_finished: Option<DateTime<Utc>> = None;
    let mut failed_attempts = 0;
    // Every attempt, with the index of its run.
    let mut all_attempts: Vec<(usize, &Value)> = Vec::new();

    for (run_index, run) in runs.iter().enumerate() {
        let status = run["status"].as_str().unwrap_or("?");
        let created = ts(&run["createdAt"]);
        if let Some(c) = created {
            first_created = Some(first_created.map_or(c, |f| f.min(c)));
        }
        if status != "COMPLETED" {
            *checks
                .runs_not_completed
                .entry(status.to_string())
                .or_default() += 1;
        } else {
            checks.runs_completed += 1;
        }
        let finished = ts(&run["finishedAt"]);
        if let (Some(c), Some(f)) = (created, finished) {
            last_finished = Some(last_finished.map_or(f, |l| l.max(f)));
            run_done.push(f);
            if status == "COMPLETED" {
                lat_run.push(ms(c, f));
            }
        }
        let attempts: Vec<&Value> = run["agentRuns"].as_array().into_iter().flatten().collect();
        failed_attempts += attempts.iter().filter(|a| a["status"] == "FAILED").count();
        all_attempts.extend(attempts.iter().map(|a| (run_index, *a)));
        // The successful attempt of each node, and the node states.
        let mut done: HashMap<&str, &Value> = HashMap::new();
        let mut done_count: HashMap<&str, usize> = HashMap::new();
        for a in &attempts {
            if a["status"] == "COMPLETED" {
                let id = a["nodeId"].as_str().unwrap_or_default();
                *done_count.entry(id).or_default() += 1;
                done.insert(id, a);
                if let Some(f) = ts(&a["finishedAt"]) {
                    node_done.push(f);
                }
            }
        }
        let states: HashMap<&str, &Value> = run["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| (n["nodeId"].as_str().unwrap_or_default(), n))
            .collect();
        for node in prepared.parents.keys() {
            match done_count.get(node.as_str()) {
                Some(1) => checks.nodes_completed_once += 1,
                other => {
                    if checks.node_violations.len() < 20 {
                        checks.node_violations.push(format!(
                            "run {} node {node}: {} completed attempts (status {})",
                            run["id"].as_str().unwrap_or("?"),
                            other.copied().unwrap_or(0),
                            states
                                .get(node.as_str())
                                .and_then(|s| s["status"].as_str())
                                .unwrap_or("?")
                        ));
                    }
                }
            }
        }
        if let Some(c) = created
            && let Some(first) = attempts.iter().filter_map(|a| ts(&a["startedAt"])).min()
        {
            lat_first.push(ms(c, first));
        }
        // Per node: step-to-step, queue wait, agent time; per run: the critical path.
        let mut path_ms: HashMap<&str, f64> = HashMap::new();
        for (node, parents) in &prepared.parents {
            let Some(a) = done.get(node.as_str()) else {
                continue;
            };
            let started = ts(&a["startedAt"]);
            let agent_ms = match (started, ts(&a["finishedAt"])) {
                (Some(s), Some(f)) => ms(s, f),
                _ => 0.0,
            };
            lat_agent.push(agent_ms);
            if let (Some(s), Some(ready)) = (
                started,
                states.get(node.as_str()).and_then(|n| ts(&n["readyAt"])),
            ) {
                lat_queue.push(ms(ready, s));
            }
            let last_parent = parents
                .iter()
                .filter_map(|p| done.get(p.as_str()).and_then(|a| ts(&a["finishedAt"])))
                .max();
            if let (Some(s), Some(p)) = (started, last_parent) {
                lat_step.push(ms(p, s));
            }
            // Parents come before children in BTreeMap order only by accident; compute the
            // critical path after the loop instead.
            path_ms.insert(node.as_str(), agent_ms);
        }
        if status == "COMPLETED"
            && let (Some(c), Some(f)) = (created, finished)
        {
            let critical = critical_path(&prepared.parents, &path_ms);
            overhead.push(ms(c, f) - critical);
        }
        if prepared.parents.contains_key("root") && prepared.parents.contains_key("join") {
            let root_done = done.get("root").and_then(|a| ts(&a["finishedAt"]));
            let branches: Vec<&str> = prepared
                .parents
                .iter()
                .filter(|(_, p)| p.len() == 1 && p[0] == "root")
                .map(|(id, _)| id.as_str())
                .collect();
            if let Some(r) = root_done {
                let last_ready = branches
                    .iter()
                    .filter_map(|b| states.get(b).and_then(|n| ts(&n["readyAt"])))
                    .max();
                let last_start = branches
                    .iter()
                    .filter_map(|b| done.get(b).and_then(|a| ts(&a["startedAt"])))
                    .max();
                if let Some(l) = last_ready {
                    fan_ready.push(ms(r, l));
                }
                if let Some(l) = last_start {
                    fan_start.push(ms(r, l));
                }
            }
        }
    }
    checks.passed = checks.runs_completed == expected_runs
        && expected_runs > 0
        && checks.nodes_completed_once == checks.nodes_expected
        && checks.trigger_errors == 0
        && checks.unfinished_runs == 0
        && checks.fetch_errors == 0;

    let mut throughput = Throughput::default();
    if let (Some(first), Some(last)) = (first_created, last_finished) {
        let window = ms(first, last) / 1000.0;
        throughput.window_seconds = window;
        if window > 0.0 {
            throughput.runs_per_second = checks.runs_completed as f64 / window;
            throughput.nodes_per_second = node_done.len() as f64 / window;
        }
        let bucket = |t: &DateTime<Utc>| (ms(first, *t) / 1000.0).max(0.0) as usize;
        let len = bucket(&last) + 1;
        let mut nodes = vec![0u64; len];
        for t in &node_done {
            nodes[bucket(t).min(len - 1)] += 1;
        }
        let mut runs_t = vec![0u64; len];
        for t in &run_done {
            runs_t[bucket(t).min(len - 1)] += 1;
        }
        let inner: Vec<f64> = if nodes.len() > 4 {
            nodes[1..nodes.len() - 2]
                .iter()
                .map(|&n| n as f64)
                .collect()
        } else {
            Vec::new()
        };
        throughput.steady_nodes_per_second = Percentiles::of(inner).p50;
        throughput.nodes_timeline = nodes;
        throughput.runs_timeline = runs_t;
    }

    let fanout = (!fan_start.is_empty()).then(|| Fanout {
        width: prepared.nodes_per_run().saturating_sub(2),
        last_branch_ready_ms: Percentiles::of(fan_ready),
        last_branch_start_ms: Percentiles::of(fan_start),
    });

    let chaos = kills.map(|kills| {
        let first = first_created.unwrap_or_else(Utc::now);
        let mut recoveries = Vec::new();
        let kills = kills
            .iter()
            .map(|k| {
                // Worker names carry the process id: worker-<host>-<pid>-<random>.
                let marker = format!("-{}-", k.pid);
                let lost: Vec<&(usize, &Value)> = all_attempts
                    .iter()
                    .filter(|(_, a)| {
                        a["status"] == "FAILED"
                            && a["worker"].as_str().is_some_and(|w| w.contains(&marker))
                    })
                    .collect();
                let restarts: Vec<f64> = lost
                    .iter()
                    .filter_map(|(run, a)| {
                        let (_, next) = all_attempts.iter().find(|(b_run, b)| {
                            b_run == run
                                && b["nodeId"] == a["nodeId"]
                                && b["attempt"].as_i64() == a["attempt"].as_i64().map(|n| n + 1)
                        })?;
                        ts(&next["startedAt"]).map(|s| ms(k.at, s))
                    })
                    .collect();
                let recovery = restarts.iter().copied().reduce(f64::max);
                if let Some(r) = recovery {
                    recoveries.push(r);
                }
                Kill {
                    at_seconds: ms(first, k.at) / 1000.0,
                    pid: k.pid,
                    lost_attempts: lost.len(),
                    recovery_ms: recovery,
                }
            })
            .collect();
        Chaos {
            kills,
            recovery_ms: Percentiles::of(recoveries),
            failed_attempts,
        }
    });

    Analysis {
        run_latencies: lat_run.clone(),
        latencies: Latencies {
            run: Percentiles::of(lat_run),
            first_node_start: Percentiles::of(lat_first),
            step_to_step: Percentiles::of(lat_step),
            queue_wait: Percentiles::of(lat_queue),
            agent: Percentiles::of(lat_agent),
            engine_overhead: Percentiles::of(overhead),
        },
        checks,
        throughput,
        fanout,
        chaos,
    }
}

/// Longest sum of agent time along any dependency path.
fn critical_path(parents: &BTreeMap<String, Vec<String>>, agent_ms: &HashMap<&str, f64>) -> f64 {
    fn longest<'a>(
        node: &'a str,
        parents: &'a BTreeMap<String, Vec<String>>,
        agent_ms: &HashMap<&str, f64>,
        memo: &mut HashMap<&'a str, f64>,
    ) -> f64 {
        if let Some(v) = memo.get(node) {
            return *v;
        }
        let before = parents
            .get(node)
            .into_iter()
            .flatten()
            .map(|p| longest(p, parents, agent_ms, memo))
            .fold(0.0, f64::max);
        let total = before + agent_ms.get(node).copied().unwrap_or(0.0);
        memo.insert(node, total);
        total
    }
    let mut memo = HashMap::new();
    parents
        .keys()
        .map(|n| longest(n, parents, agent_ms, &mut memo))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(vec![]).count, 0);
        assert_eq!(Percentiles::of(vec![7.0]).p99, 7.0);
    }

    #[test]
    fn critical_path_takes_the_longest_branch() {
        let parents: BTreeMap<String, Vec<String>> = [
            ("root", vec![]),
            ("a", vec!["root"]),
            ("b", vec!["root"]),
            ("join", vec!["a", "b"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        let ms = HashMap::from([("root", 1.0), ("a", 5.0), ("b", 2.0), ("join", 1.0)]);
        assert_eq!(critical_path(&parents, &ms), 7.0);
    }
}
