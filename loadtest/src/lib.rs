//! `orchestration-loadtest`: sizes a deployment. It drives the REST API (of a deployment at
//! `--url`, or of one it starts itself on a fresh database), measures throughput and latency
//! percentiles from the server's own timestamps, verifies that every run COMPLETED with every
//! node completed exactly once, and writes a JSON report, a Markdown summary and an SVG chart.
//! Exit status: 0 when the checks pass, 1 when they fail, 2 when the harness could not run.
//!
//! ## Layout
//! - [`deployment`]: deployments the harness starts itself (real processes, or in this
//!   process), which the end-to-end tests use too.
//! - [`scenario`]: the workflows each scenario registers; [`drive`]: triggering them at the
//!   asked concurrency and waiting for the runs; [`client`]: the REST calls.
//! - [`analysis`]: throughput, latency percentiles and the exactly-once checks from the
//!   server's own timestamps; [`report`]: JSON, Markdown and SVG.

pub mod analysis;
pub mod client;
pub mod deployment;
pub mod drive;
pub mod report;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;

use crate::analysis::KillEvent;
use crate::client::Api;
use crate::deployment::{Config, ProcessConfig, Processes};
use crate::scenario::{AgentKind, Kind};

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

#[derive(Parser, Debug, Clone)]
#[command(name = "orchestration-loadtest", version, about)]
pub struct Args {
    /// What to run.
    #[arg(long, value_enum, default_value_t = Kind::Seed)]
    pub scenario: Kind,
    /// A running deployment's base URL. Without it, the harness starts the API and
    /// `--workers` worker processes itself on a database it creates (and drops afterwards).
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token for the API.
    #[arg(long, env = "ORCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Runs to start (default: seed 10, chain 100, fanout 3, throughput 2000).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Runs kept in flight at once (default: seed 10, chain 1, fanout 1, throughput 64).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: Option<u32>,
    /// Keep triggering for this many seconds instead of a fixed number of runs.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Worker processes to start (local mode).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// ORCH_WORKER_CONCURRENCY of each worker (local mode).
    #[arg(long, default_value_t = 16)]
    pub worker_concurrency: u32,
    /// BUILTIN (in-process no-op agents) or SCRIPT (a process per node). Default: script for
    /// seed, builtin for the others.
    #[arg(long, value_enum)]
    pub agent: Option<AgentKind>,
    /// Nodes per run for chain (default 2) and throughput (default 1).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Parallel branches of fanout.
    #[arg(long, default_value_t = 100)]
    pub width: usize,
    /// Kill a worker (SIGKILL) every this many seconds and start a new one (local mode).
    #[arg(long)]
    pub chaos: Option<f64>,
    /// ORCH_DB_MAX_CONNECTIONS of each process (local mode). On a 2-core machine a small pool
    /// is faster: 60 backends for 2 cores spend their time switching.
    #[arg(long, default_value_t = 8)]
    pub db_connections: u32,
    /// ORCH_LEASE_TTL_MS of the workers (local mode): how soon a killed worker's nodes move.
    #[arg(long, default_value_t = 8000)]
    pub lease_ms: u64,
    /// How often the harness looks for finished runs.
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// How long to wait for runs still in flight after the last trigger.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout: u64,
    /// Where report.json, report.md and report.svg go.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// PostgreSQL server for the local deployment: a URL without database, options after `?`.
    /// The default spares TLS, which on a loopback connection only costs CPU (about a sixth of
    /// the throughput on a 2-core machine).
    #[arg(
        long,
        env = "ORCH_LOADTEST_PG",
        default_value = "postgres://postgres@127.0.0.1:5432?sslmode=disable"
    )]
    pub pg: String,
    /// Directory holding orchestration-api and orchestration-worker (default: beside this
    /// binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Agents directory of the local workers.
    #[arg(long)]
    pub agents_dir: Option<PathBuf>,
    /// Repository the seed scenario's scanner scans.
    #[arg(long)]
    pub repository: Option<PathBuf>,
    /// Keep the local database afterwards (for digging into it).
    #[arg(long)]
    pub keep_db: bool,
}

/// Runs the load test; `Ok(true)` when every check passed.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    let kind = args.scenario;
    let agent = args.agent.unwrap_or(if kind == Kind::Seed {
        AgentKind::Script
    } else {
        AgentKind::Builtin
    });
    let runs = args.runs.unwrap_or(match kind {
        Kind::Seed => 10,
        Kind::Chain => 100,
        Kind::Fanout => 3,
        Kind::Throughput => 2000,
    });
    let concurrency = args.concurrency.map(|c| c as usize).unwrap_or(match kind {
        Kind::Seed => 10,
        Kind::Chain | Kind::Fanout => 1,
        Kind::Throughput => 64,
    });
    let nodes = args.nodes.unwrap_or(match kind {
        Kind::Throughput => 1,
        _ => 2,
    });
    if args.chaos.is_some() && args.url.is_some() {
        anyhow::bail!(
            "--chaos kills workers the harness started itself; it needs local mode (no --url)"
        );
    }
    let repo = repo_dir();
    let local = match &args.url {
        Some(_) => None,
        None => {
            let bin_dir = match &args.bin_dir {
                Some(d) => d.clone(),
                None => std::env::current_exe()?
                    .parent()
                    .context("binary directory")?
                    .to_path_buf(),
            };
            eprintln!(
                "starting the API and {} workers from {} on a fresh database",
                args.workers,
                bin_dir.display()
            );
            Some(
                Processes::start(ProcessConfig {
                    config: Config {
                        pg: args.pg.trim_end_matches('/').to_string(),
                        agents_dir: args
                            .agents_dir
                            .clone()
                            .unwrap_or_else(|| repo.join("agents")),
                        workers: args.workers,
                        env: vec![
                            (
                                "ORCH_DB_MAX_CONNECTIONS".into(),
                                args.db_connections.max(2).to_string(),
                            ),
                            ("ORCH_LEASE_TTL_MS".into(), args.lease_ms.to_string()),
                            (
                                "ORCH_WORKER_CONCURRENCY".into(),
                                args.worker_concurrency.to_string(),
                            ),
                        ],
                        db_prefix: "orch_loadtest".into(),
                    },
                    bin_dir,
                    keep_lines: Some(200),
                    keep_db: args.keep_db,
                })
                .await?,
            )
        }
    };
    let local = local.map(|l| Arc::new(Mutex::new(l)));
    let result = run_against(
        &args,
        kind,
        agent,
        runs,
        concurrency,
        nodes,
        &repo,
        local.clone(),
    )
    .await;
    if let Some(local) = local {
        let local = Arc::try_unwrap(local)
            .map_err(|_| anyhow::anyhow!("deployment still in use"))?
            .into_inner()
            .expect("deployment lock");
        if matches!(result, Ok(false)) {
            eprintln!("process output (last lines):\n{}", local.dump_logs());
        }
        if let Err(e) = local.shutdown().await {
            eprintln!("cleaning up the local deployment: {e:#}");
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_against(
    args: &Args,
    kind: Kind,
    agent: AgentKind,
    runs: usize,
    concurrency: usize,
    nodes: usize,
    repo: &Path,
    local: Option<Arc<Mutex<Processes>>>,
) -> anyhow::Result<bool> {
    let (base, token) = match (&args.url, &local) {
        (Some(url), _) => (url.clone(), args.token.clone()),
        (None, Some(l)) => {
            let l = l.lock().expect("deployment lock");
            (l.base.clone(), Some(l.token.clone()))
        }
        (None, None) => unreachable!("either a URL or a local deployment"),
    };
    let api = Api::new(&base, token);
    api.health().await?;
    let repository = args
        .repository
        .clone()
        .unwrap_or_else(|| repo.join("tests/fixtures/vulnerable-repo"));
    let prepared = scenario::prepare(&api, kind, agent, nodes, args.width, &repository).await?;
    eprintln!(
        "{}: {} nodes per run, {} agents, {} in flight, {}",
        scenario::kind_name(kind),
        prepared.nodes_per_run(),
        agent_name(agent),
        concurrency,
        match args.duration {
            Some(d) => format!("for {d} s"),
            None => format!("{runs} runs"),
        }
    );

    let kills: Arc<Mutex<Vec<KillEvent>>> = Arc::default();
    let chaos_stop = Arc::new(tokio::sync::Notify::new());
    let chaos = match (args.chaos, &local) {
        (Some(every), Some(local)) => {
            let local = local.clone();
            let kills = kills.clone();
            let stop = chaos_stop.clone();
            let every = Duration::from_secs_f64(every.max(0.1));
            Some(tokio::spawn(async move {
                let mut slot = 0usize;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.notified() => return,
                    }
                    let local = local.clone();
                    let at = chrono::Utc::now();
                    let killed = tokio::task::spawn_blocking(move || {
                        let mut l = local.lock().expect("deployment lock");
                        let n = l.workers.len();
                        l.restart_worker(slot % n)
                    })
                    .await;
                    match killed {
                        Ok(Ok(pid)) => {
                            eprintln!("chaos: killed worker pid {pid}, started a new one");
                            kills.lock().expect("lock").push(KillEvent { at, pid });
                        }
                        Ok(Err(e)) => eprintln!("chaos: restarting a worker failed: {e:#}"),
                        Err(e) => eprintln!("chaos: {e}"),
                    }
                    slot += 1;
                }
            }))
        }
        _ => None,
    };

    let started_at = chrono::Utc::now();
    let driven = drive::drive(
        &api,
        &prepared.workflow_id,
        &prepared.context,
        &drive::Load {
            runs,
            concurrency,
            duration: args.duration.map(Duration::from_secs_f64),
            poll: Duration::from_millis(args.poll_ms.max(1)),
            drain_timeout: Duration::from_secs(args.drain_timeout),
        },
    )
    .await;
    chaos_stop.notify_one();
    if let Some(c) = chaos {
        let _ = c.await;
    }

    eprintln!("fetching {} runs for analysis", driven.run_ids.len());
    let fetched: Vec<anyhow::Result<serde_json::Value>> =
        futures::stream::iter(driven.run_ids.iter().map(|id| {
            let api = api.clone();
            async move { api.run(id).await }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    let fetch_errors = fetched.iter().filter(|r| r.is_err()).count();
    let details: Vec<serde_json::Value> = fetched.into_iter().filter_map(Result::ok).collect();
    let kills = std::mem::take(&mut *kills.lock().expect("lock"));
    let expected = driven.run_ids.len() + driven.trigger_errors.len();
    let analysis = analysis::analyse(
        &prepared,
        &details,
        expected,
        driven.trigger_errors.len(),
        driven.unfinished.len(),
        fetch_errors,
        args.chaos.map(|_| kills.as_slice()),
    );
    let (workers, worker_concurrency) = if local.is_some() {
        (Some(args.workers), Some(args.worker_concurrency))
    } else {
        (None, None)
    };
    let report = report::Report {
        scenario: scenario::kind_name(kind),
        agent: agent_name(agent),
        target: if local.is_some() {
            format!("a local deployment at {base}")
        } else {
            base.clone()
        },
        machine: report::machine(),
        started_at: started_at.to_rfc3339(),
        runs: driven.run_ids.len(),
        concurrency,
        workers,
        worker_concurrency,
        nodes_per_run: prepared.nodes_per_run(),
        duration_seconds: args.duration,
        elapsed_seconds: driven.elapsed.as_secs_f64(),
        throughput: analysis.throughput,
        latencies_ms: analysis.latencies,
        fanout: analysis.fanout,
        chaos: analysis.chaos,
        checks: analysis.checks,
        trigger_error_samples: driven.trigger_errors.iter().take(5).cloned().collect(),
        run_latencies: analysis.run_latencies,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| repo.join("target/loadtest").join(scenario::kind_name(kind)));
    report::write(&report, &out)?;
    println!("{}", report::markdown(&report));
    eprintln!(
        "report: {}/report.json, report.md, report.svg",
        out.display()
    );
    Ok(report.checks.passed)
}

fn agent_name(agent: AgentKind) -> &'static str {
    match agent {
        AgentKind::Builtin => "BUILTIN",
        AgentKind::Script => "SCRIPT",
    }
}
