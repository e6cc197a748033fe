//! Test harness: a deployment of the API and workers on a database of its own (the load-test
//! harness's, `orchestration_loadtest::deployment`), with helpers that read like the scenario a
//! test checks. [`TestApp::spawn`] starts everything inside the test process, each part on a
//! runtime of its own and on port 0; [`TestApp::processes`] starts the real binaries, for the
//! tests that kill, signal or read the output of a process. The database is dropped when the
//! [`TestApp`] goes away.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use orchestration_loadtest::deployment::{
    self, Config, InProcess, ProcessConfig, Processes, captured_logs,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub mod monitoring;
pub mod nats;
pub mod pg;
pub mod receiver;

pub use orchestration_loadtest::deployment::Proc;
pub use reqwest;
pub use serde_json;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn agents_dir() -> PathBuf {
    repo_root().join("agents")
}

pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// Server holding the test databases; `ORCH_TEST_PG` overrides.
fn pg_base() -> String {
    std::env::var("ORCH_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

static BUILD: Once = Once::new();

/// Directory of the binaries, built on first use so a plain `cargo nextest run` never tests
/// stale binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target profile dir")
        .to_path_buf();
    BUILD.call_once(|| {
        if std::env::var_os("ORCH_TEST_SKIP_BUILD").is_some() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root()).args([
            "build",
            "--quiet",
            "-p",
            "orchestration-api",
            "-p",
            "orchestration-worker",
            "-p",
            "orchestration-loadtest",
        ]);
        if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo build runs");
        assert!(status.success(), "building the binaries failed");
    });
    dir
}

/// Starts `cmd` as a child process whose whole output is kept; panics if it cannot start.
pub fn spawn(name: &str, cmd: Command) -> Proc {
    Proc::spawn(name, cmd, None).unwrap_or_else(|e| panic!("{e:#}"))
}

/// An HTTP client that sends `Authorization: Bearer <token>` unless a request says otherwise.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = format!("Bearer {token}").parse() {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client builds")
}

/// Where the deployment runs.
enum Deployment {
    InProcess(InProcess),
    Processes(Processes),
}

pub struct TestApp {
    pub base: String,
    /// Sends the deployment-wide admin token with every request.
    pub client: reqwest::Client,
    /// The admin token's secret (ORCH_ADMIN_TOKEN).
    pub token: String,
    pub db_name: String,
    pub database_url: String,
    deployment: Deployment,
}

fn config(pg: &str, workers: usize, env: &[(&str, &str)]) -> Config {
    let mut all: Vec<(String, String)> = vec![
        ("ORCH_DB_MAX_CONNECTIONS".into(), "10".into()),
        ("ORCH_POLL_INTERVAL_MS".into(), "100".into()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config {
        pg: pg.to_string(),
        agents_dir: agents_dir(),
        workers,
        env: all,
        db_prefix: "orch_test".into(),
    }
}

impl TestApp {
    /// API plus `workers` workers inside this process, on a fresh database.
    pub async fn spawn(workers: usize) -> TestApp {
        Self::spawn_with(workers, &[]).await
    }

    /// Like [`TestApp::spawn`], with settings given as the binaries' environment variables.
    pub async fn spawn_with(workers: usize, env: &[(&str, &str)]) -> TestApp {
        Self::spawn_on(&pg_base(), workers, env).await
    }

    /// Like [`TestApp::spawn_with`], on the PostgreSQL server at `pg` (a base URL without
    /// database).
    pub async fn spawn_on(pg: &str, workers: usize, env: &[(&str, &str)]) -> TestApp {
        let started = InProcess::start(config(pg, workers, env))
            .await
            .unwrap_or_else(|e| panic!("starting the deployment: {e:#}\n{}", captured_logs()));
        let database = started.database.clone();
        TestApp::new(
            started.base.clone(),
            started.token.clone(),
            &database,
            Deployment::InProcess(started),
        )
    }

    /// API plus `workers` worker processes: the real binaries, for tests that kill, signal or
    /// read a process.
    pub async fn processes(workers: usize, env: &[(&str, &str)]) -> TestApp {
        Self::processes_on(&pg_base(), workers, env).await
    }

    /// Like [`TestApp::processes`], on the PostgreSQL server at `pg`.
    pub async fn processes_on(pg: &str, workers: usize, env: &[(&str, &str)]) -> TestApp {
        let mut config = config(pg, workers, env);
        config.env.push(("RUST_LOG".into(), "info".into()));
        let started = Processes::start(ProcessConfig {
            config,
            bin_dir: bin_dir(),
            keep_lines: None,
            keep_db: false,
        })
        .await
        .unwrap_or_else(|e| panic!("starting the deployment: {e:#}"));
        let database = started.database.clone();
        TestApp::new(
            started.base.clone(),
            started.token.clone(),
            &database,
            Deployment::Processes(started),
        )
    }

    fn new(
        base: String,
        token: String,
        database: &deployment::Database,
        deployment: Deployment,
    ) -> TestApp {
        TestApp {
            base,
            client: client_with_token(&token),
            token,
            db_name: database.name.clone(),
            database_url: database.url.clone(),
            deployment,
        }
    }

    /// The processes of a deployment started by [`TestApp::processes`].
    pub fn procs(&mut self) -> &mut Processes {
        match &mut self.deployment {
            Deployment::Processes(p) => p,
            Deployment::InProcess(_) => {
                panic!("this test needs processes: start it with TestApp::processes")
            }
        }
    }

    /// Kills worker `i` on the spot: SIGKILL for a process, its runtime shut down in process.
    pub fn kill_worker(&mut self, i: usize) {
        match &mut self.deployment {
            Deployment::Processes(p) => p.kill_worker(i),
            Deployment::InProcess(d) => d.kill_worker(i),
        }
    }

    /// Starts a fresh worker in slot `i` (killing what was there) and waits until it takes
    /// jobs.
    pub async fn restart_worker(&mut self, i: usize) {
        let restarted = match &mut self.deployment {
            Deployment::Processes(p) => p.restart_worker(i).map(|_| ()),
            Deployment::InProcess(d) => d.restart_worker(i).await,
        };
        restarted.unwrap_or_else(|e| panic!("restarting worker {i}: {e:#}"));
    }

    /// Adds one more worker; returns its slot.
    pub async fn add_worker(&mut self) -> usize {
        let added = match &mut self.deployment {
            Deployment::Processes(p) => p.add_worker(),
            Deployment::InProcess(d) => d.add_worker().await,
        };
        added.unwrap_or_else(|e| panic!("adding a worker: {e:#}"))
    }

    /// Starts another API on the same database (a replica); returns its base URL.
    pub async fn add_api(&mut self) -> String {
        let added = match &mut self.deployment {
            Deployment::Processes(p) => p.add_api(),
            Deployment::InProcess(d) => d.add_api().await,
        };
        added.unwrap_or_else(|e| panic!("adding an API: {e:#}"))
    }

    /// Kills the API on the spot.
    pub fn kill_api(&mut self) {
        match &mut self.deployment {
            Deployment::Processes(p) => p.api.kill(),
            Deployment::InProcess(d) => d.kill_api(),
        }
    }

    /// Whether the API still runs and answers.
    pub async fn api_is_alive(&mut self) -> bool {
        let running = match &mut self.deployment {
            Deployment::Processes(p) => p.api.is_alive(),
            Deployment::InProcess(d) => d.api_is_running(),
        };
        running && self.get("/api/health").await.0 == StatusCode::OK
    }

    /// Kills the API and starts it again (on a new port).
    pub async fn restart_api(&mut self) {
        let base = match &mut self.deployment {
            Deployment::Processes(p) => p.restart_api().map(|_| p.base.clone()),
            Deployment::InProcess(d) => d.restart_api().await.map(|_| d.base.clone()),
        };
        self.base = base.unwrap_or_else(|e| panic!("restarting the API: {e:#}"));
    }

    /// The address worker `i` serves `/metrics` on.
    pub fn worker_metrics_addr(&mut self, i: usize) -> String {
        match &mut self.deployment {
            Deployment::Processes(p) => {
                p.worker_metrics_addr(i).unwrap_or_else(|e| panic!("{e:#}"))
            }
            Deployment::InProcess(d) => d.worker_metrics_addr(i),
        }
    }

    /// The API's `/metrics` text.
    pub async fn api_metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("API /metrics answers")
            .text()
            .await
            .expect("API /metrics has a body")
    }

    /// Worker `i`'s `/metrics` text.
    pub async fn worker_metrics(&mut self, i: usize) -> String {
        let addr = self.worker_metrics_addr(i);
        self.client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("worker /metrics answers")
            .text()
            .await
            .expect("worker /metrics has a body")
    }

    /// Index of the live worker process whose pid appears in `worker_name`.
    pub fn worker_index_by_name(&mut self, worker_name: &str) -> Option<usize> {
        self.procs().worker_index_by_name(worker_name)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request is sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{path} answered non-JSON ({status}): {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// Registers a SCRIPT agent offering `actions`; returns its id.
    pub async fn create_agent(
        &self,
        name: &str,
        entrypoint: &str,
        actions: &[&str],
        extra: Value,
    ) -> String {
        let body = json!({"type": "SCRIPT", "entrypoint": entrypoint});
        self.create_agent_with(name, actions, body, extra).await
    }

    /// Creates an in-process BUILTIN agent offering `actions` (`noop`, `echo`, `sleep`,
    /// `fail`); `extra` adds or overrides fields (e.g. `retry`). Returns its id.
    pub async fn create_builtin_agent(&self, name: &str, actions: &[&str], extra: Value) -> String {
        self.create_agent_with(name, actions, json!({"type": "BUILTIN"}), extra)
            .await
    }

    async fn create_agent_with(
        &self,
        name: &str,
        actions: &[&str],
        mut body: Value,
        extra: Value,
    ) -> String {
        body["name"] = json!(name);
        body["capabilities"] = actions.iter().map(|a| json!({"name": a})).collect();
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (status, agent) = self.post("/api/agents", body).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "creating agent {name}: {agent}"
        );
        agent["id"].as_str().unwrap().to_string()
    }

    /// Creates an API token with `role` in `project`; returns its secret.
    pub async fn create_token(&self, project: &str, role: &str, name: &str) -> String {
        let (status, body) = self
            .post(
                "/api/tokens",
                json!({"projectId": project, "role": role, "name": name}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "creating token {name}: {body}");
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn create_workflow(&self, body: Value) -> String {
        let (status, wf) = self.post("/api/workflows", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "creating workflow {body}: {wf}"
        );
        wf["id"].as_str().unwrap().to_string()
    }

    pub async fn trigger(&self, workflow_id: &str, context: Value) -> String {
        let (status, run) = self
            .post(
                &format!("/api/workflows/{workflow_id}/trigger"),
                json!({ "context": context }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "trigger: {run}");
        run["runId"].as_str().unwrap().to_string()
    }

    pub async fn run(&self, run_id: &str) -> Value {
        let (status, run) = self.get(&format!("/api/runs/{run_id}")).await;
        assert_eq!(status, StatusCode::OK, "get run: {run}");
        run
    }

    /// Polls the run until it is COMPLETED, FAILED or CANCELLED.
    pub async fn wait_for_run(&self, run_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.run(run_id).await;
            if matches!(
                run["status"].as_str(),
                Some("COMPLETED" | "FAILED" | "CANCELLED")
            ) {
                return run;
            }
            if Instant::now() > deadline {
                panic!(
                    "run {run_id} did not finish in {timeout:?}: {run:#}\n{}",
                    self.dump_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the deployment logged: each process's output, or this process's captured logs.
    pub fn dump_logs(&self) -> String {
        match &self.deployment {
            Deployment::Processes(p) => p.dump_logs(),
            Deployment::InProcess(_) => format!("--- logs ---\n{}", captured_logs()),
        }
    }

    /// A connection to this app's database, for assertions the API does not expose.
    pub async fn db(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.database_url)
            .await
            .expect("connect to test database")
    }
}

/// The node entry of a run by id.
pub fn node<'a>(run: &'a Value, node_id: &str) -> &'a Value {
    run["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["nodeId"] == node_id))
        .unwrap_or_else(|| panic!("run has no node {node_id}: {run:#}"))
}

/// The agent runs of one node, in attempt order.
pub fn agent_runs<'a>(run: &'a Value, node_id: &str) -> Vec<&'a Value> {
    let mut runs: Vec<&Value> = run["agentRuns"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["nodeId"] == node_id).collect())
        .unwrap_or_default();
    runs.sort_by_key(|r| r["attempt"].as_i64());
    runs
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("TEST_LOG").is_some() {
            eprintln!("{}", self.dump_logs());
        }
    }
}

/// The value of the first line of a Prometheus text exposition that starts with `name` (a
/// metric name with any labels exactly as exposed, e.g. `x_bucket{le="0"}`); panics, showing
/// the exposition, when there is none.
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
}
