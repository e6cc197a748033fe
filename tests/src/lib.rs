//! Test harness: starts the real `orchestration-api` and `orchestration-worker` binaries on
//! port 0 against a database of their own, and offers helpers that read like the scenario a
//! test checks. The database is dropped when the [`TestApp`] goes away.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

pub mod monitoring;
pub mod nats;
pub mod pg;

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

/// A child process whose output is kept for the failure report, killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A stand-in until the real process is started.
    fn placeholder() -> Proc {
        Proc::spawn("placeholder", Command::new("true"))
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn is_alive_inner(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.child.id())).exists()
    }

    /// Waits for a JSON log line whose `message` is `message`, and returns it.
    pub fn wait_for_log(&mut self, message: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == message)
            {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before logging {message:?}:\n{}",
                    self.name,
                    self.dump()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {message:?} in time:\n{}",
                self.name,
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn dump(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: i32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        unsafe {
            libc_kill(self.child.id() as i32, signal);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that sends `Authorization: Bearer <token>` unless a request says otherwise.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .expect("token is a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client builds")
}

pub struct TestApp {
    pub base: String,
    /// Sends the deployment-wide admin token with every request.
    pub client: reqwest::Client,
    /// The admin token's secret (ORCH_ADMIN_TOKEN).
    pub token: String,
    pub db_name: String,
    pub database_url: String,
    pub api: Proc,
    pub workers: Vec<Proc>,
    env: Vec<(String, String)>,
    /// Processes replaced by restarts, kept for the failure report.
    retired: Vec<Proc>,
}

impl TestApp {
    /// API plus `workers` separate worker processes on a fresh database.
    pub async fn spawn(workers: usize) -> TestApp {
        Self::spawn_with(workers, &[]).await
    }

    /// Like [`TestApp::spawn`], with extra environment for every process.
    pub async fn spawn_with(workers: usize, env: &[(&str, &str)]) -> TestApp {
        Self::spawn_on(&pg_base(), workers, env).await
    }

    /// Like [`TestApp::spawn_with`], on the PostgreSQL server at `pg` (a base URL without
    /// database).
    pub async fn spawn_on(pg: &str, workers: usize, env: &[(&str, &str)]) -> TestApp {
        let db_name = format!("orch_test_{}", uuid::Uuid::new_v4().simple());
        let database_url = format!("{pg}/{db_name}");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let token = match env.iter().find(|(k, _)| k == "ORCH_ADMIN_TOKEN") {
            Some((_, v)) => v.clone(),
            None => {
                let t = format!("test-admin-{}", uuid::Uuid::new_v4().simple());
                env.push(("ORCH_ADMIN_TOKEN".into(), t.clone()));
                t
            }
        };
        let mut app = TestApp {
            base: String::new(),
            client: client_with_token(&token),
            token,
            db_name,
            database_url,
            api: Proc::placeholder(),
            workers: Vec::new(),
            env,
            retired: Vec::new(),
        };
        // Start everything at once: migrations must be safe to run concurrently.
        let mut api = app.api_proc();
        let mut procs: Vec<Proc> = (0..workers).map(|i| app.worker_proc(i)).collect();
        let line = api.wait_for_log("listening", Duration::from_secs(60));
        app.base = format!(
            "http://{}",
            line["addr"].as_str().expect("listening line has addr")
        );
        app.api = api;
        for w in &mut procs {
            w.wait_for_log("worker started", Duration::from_secs(60));
        }
        app.workers = procs;
        app
    }

    fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(bin_dir().join(binary));
        cmd.env("DATABASE_URL", &self.database_url)
            .env("ORCH_DB_MAX_CONNECTIONS", "10")
            .env("ORCH_LOG_FORMAT", "json")
            .env("ORCH_AGENTS_DIR", agents_dir())
            .env("ORCH_POLL_INTERVAL_MS", "100")
            .env("RUST_LOG", "info")
            .current_dir(repo_root());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn api_proc(&self) -> Proc {
        let mut cmd = self.command("orchestration-api");
        cmd.env("ORCH_LISTEN", "127.0.0.1:0");
        Proc::spawn("api", cmd)
    }

    fn worker_proc(&self, i: usize) -> Proc {
        let mut cmd = self.command("orchestration-worker");
        cmd.env("ORCH_METRICS_LISTEN", "127.0.0.1:0");
        Proc::spawn(&format!("worker-{i}"), cmd)
    }

    /// SIGKILLs worker `i` (no chance to clean up).
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].kill();
    }

    /// Starts a fresh process in worker slot `i` (killing what was there) and waits until it
    /// takes jobs.
    pub fn restart_worker(&mut self, i: usize) {
        let mut fresh = self.worker_proc(i);
        fresh.wait_for_log("worker started", Duration::from_secs(60));
        let mut old = std::mem::replace(&mut self.workers[i], fresh);
        old.kill();
        self.retired.push(old);
    }

    /// The address worker `i` serves `/metrics` on.
    pub fn worker_metrics_addr(&mut self, i: usize) -> String {
        self.workers[i].wait_for_log("worker metrics listening", Duration::from_secs(5))
            ["metrics_addr"]
            .as_str()
            .expect("worker metrics line has metrics_addr")
            .to_string()
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

    /// Adds one more worker process.
    pub fn add_worker(&mut self) -> usize {
        let i = self.workers.len();
        let mut w = self.worker_proc(i);
        w.wait_for_log("worker started", Duration::from_secs(60));
        self.workers.push(w);
        i
    }

    /// Starts another API process on the same database (a replica); returns its base URL.
    pub fn add_api(&mut self) -> String {
        let mut api = self.api_proc();
        let line = api.wait_for_log("listening", Duration::from_secs(60));
        let base = format!("http://{}", line["addr"].as_str().unwrap());
        self.retired.push(api);
        base
    }

    /// SIGKILLs the API and starts it again (on a new port).
    pub fn restart_api(&mut self) {
        self.api.kill();
        let mut fresh = self.api_proc();
        let line = fresh.wait_for_log("listening", Duration::from_secs(60));
        self.base = format!("http://{}", line["addr"].as_str().unwrap());
        let old = std::mem::replace(&mut self.api, fresh);
        self.retired.push(old);
    }

    /// Index of the live worker process whose pid appears in `worker_name`.
    pub fn worker_index_by_name(&self, worker_name: &str) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| w.is_alive_inner() && worker_name.contains(&format!("-{}-", w.pid())))
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

    pub fn dump_logs(&self) -> String {
        let mut out = format!("--- api ---\n{}\n", self.api.dump());
        for w in self.retired.iter().chain(&self.workers) {
            out.push_str(&format!("--- {} ---\n{}\n", w.name, w.dump()));
        }
        out
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
        self.api.kill();
        for w in &mut self.workers {
            w.kill();
        }
        let admin = format!("{}/postgres", pg_base());
        let db = self.db_name.clone();
        // Drop runs outside any runtime guarantee; use a private one on a plain thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
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
