//! Crash safety and run control, proven by killing things: the real binaries, SIGKILL and
//! SIGTERM, and assertions through the API and the database that nothing was lost or done twice.

use std::time::{Duration, Instant};

use orchestration_e2e::reqwest::{Method, StatusCode};
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{TestApp, agent_runs, node};

/// Settings that make crash recovery quick enough for tests (the default lease is 8 s).
const FAST: &[(&str, &str)] = &[
    ("ORCH_LEASE_TTL_MS", "1500"),
    ("ORCH_RESCUE_INTERVAL_MS", "250"),
    ("ORCH_RESCUE_READY_AFTER_MS", "3000"),
];

/// Pids of live processes whose command line contains `marker`.
fn pids_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .map(|r| r.trim_start().starts_with('Z'))
            .unwrap_or(false);
        if !zombie && String::from_utf8_lossy(&cmd).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

fn marker() -> String {
    format!("marker-{}", uuid::Uuid::new_v4().simple())
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `node_id` of `run_id` to have a RUNNING attempt; returns that agent run.
async fn running_attempt(app: &TestApp, run_id: &str, node_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = app.run(run_id).await;
        if let Some(a) = agent_runs(&run, node_id)
            .into_iter()
            .find(|a| a["status"] == "RUNNING")
        {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{node_id} never started: {run:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sleep_then_echo(app: &TestApp, seconds: f64, marker: &str) -> String {
    let sleeper = app
        .create_agent(
            "sleeper",
            "testing/sleep",
            &["sleep"],
            json!({"args": [marker], "timeoutSeconds": 120}),
        )
        .await;
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    app.create_workflow(json!({"name": "slow", "nodes": [
        {"id": "slow", "agentId": sleeper, "action": "sleep", "inputsJson": {"seconds": seconds}},
        {"id": "after", "agentId": echo, "action": "echo", "dependsOn": ["slow"],
         "inputsJson": {"slept": "{{ nodes.slow.output.slept }}"}}]}))
        .await
}

fn completed_once(run: &Value, node_id: &str) {
    let completed = agent_runs(run, node_id)
        .iter()
        .filter(|a| a["status"] == "COMPLETED")
        .count();
    assert_eq!(
        completed, 1,
        "{node_id} completed {completed} times: {run:#}"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_node_loses_nothing_and_its_agent_dies_with_it() {
    // Default lease and rescuer settings: the recovery target (15 s) must hold as shipped.
    let mut app = TestApp::processes(2, &[]).await;
    let m = marker();
    let wf = sleep_then_echo(&app, 3.0, &m).await;
    let run_id = app.trigger(&wf, json!({})).await;
    let attempt = running_attempt(&app, &run_id, "slow").await;
    let holder = app
        .worker_index_by_name(attempt["worker"].as_str().unwrap())
        .expect("the attempt runs in one of our workers");
    wait_until("the agent process", Duration::from_secs(10), || async {
        !pids_with(&m).is_empty()
    })
    .await;

    let killed_at = Instant::now();
    app.kill_worker(holder);
    // The kernel takes the agent down with its worker: no orphan keeps working.
    wait_until(
        "the orphaned agent to die",
        Duration::from_secs(2),
        || async { pids_with(&m).is_empty() },
    )
    .await;

    let second = loop {
        let run = app.run(&run_id).await;
        if let Some(a) = agent_runs(&run, "slow")
            .into_iter()
            .find(|a| a["attempt"] == 2)
        {
            break a.clone();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "no second attempt: {run:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovery = killed_at.elapsed();
    assert!(
        recovery <= Duration::from_secs(15),
        "node re-ran after {recovery:?}"
    );
    eprintln!("node re-ran {recovery:?} after its worker was killed");
    assert_ne!(second["worker"], attempt["worker"]);

    let run = app.wait_for_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let slow = agent_runs(&run, "slow");
    assert_eq!(slow.len(), 2, "{run:#}");
    assert_eq!(slow[0]["status"], "FAILED");
    assert!(
        slow[0]["error"].as_str().unwrap().contains("worker lost"),
        "{:#}",
        slow[0]
    );
    completed_once(&run, "slow");
    completed_once(&run, "after");
    assert_eq!(node(&run, "after")["output"]["inputs"]["slept"], 3.0);
}

#[tokio::test]
async fn a_poison_node_that_kills_every_worker_fails_after_max_attempts() {
    let mut app = TestApp::processes(2, FAST).await;
    let poison = app
        .create_agent("poison", "testing/kill-worker", &["run"],
            json!({"retry": {"maxAttempts": 2, "initialBackoffMs": 10, "multiplier": 1.0, "maxBackoffMs": 10}}))
        .await;
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "poison", "nodes": [
            {"id": "poison", "agentId": poison, "action": "run"},
            {"id": "after", "agentId": echo, "action": "echo", "dependsOn": ["poison"]}]}))
        .await;
    let run_id = app.trigger(&wf, json!({})).await;

    // Play supervisor: restart workers as the poison kills them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut restarts = 0;
    let run = loop {
        for i in 0..app.procs().workers.len() {
            if !app.procs().workers[i].is_alive() {
                app.restart_worker(i).await;
                restarts += 1;
            }
        }
        let run = app.run(&run_id).await;
        if matches!(
            run["status"].as_str(),
            Some("FAILED" | "COMPLETED" | "CANCELLED")
        ) {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "poison run did not end: {run:#}\n{}",
            app.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["status"], "FAILED", "{run:#}");
    // A restart blocks this loop for seconds, so the last victim may die
    // and its run fail before the loop looks at it again: count it too.
    let deaths = restarts
        + app
            .procs()
            .workers
            .iter_mut()
            .map(|w| w.is_alive())
            .filter(|alive| !alive)
            .count();
    assert!(
        deaths >= 2,
        "each attempt killed a worker (deaths: {deaths})"
    );
    let attempts = agent_runs(&run, "poison");
    assert_eq!(attempts.len(), 2, "{run:#}");
    for a in &attempts {
        assert_eq!(a["status"], "FAILED");
        assert!(
            a["error"].as_str().unwrap().contains("worker lost"),
            "{a:#}"
        );
    }
    assert_eq!(node(&run, "poison")["status"], "FAILED");
    assert_eq!(node(&run, "after")["status"], "SKIPPED");
    assert!(run["finishedAt"].is_string());
}

#[tokio::test]
async fn cancel_kills_the_running_agent_and_starts_nothing_more() {
    let app = TestApp::spawn_with(2, FAST).await;
    let m = marker();
    let wf = sleep_then_echo(&app, 60.0, &m).await;
    let run_id = app.trigger(&wf, json!({})).await;
    running_attempt(&app, &run_id, "slow").await;
    wait_until("the agent process", Duration::from_secs(10), || async {
        !pids_with(&m).is_empty()
    })
    .await;

    let (status, run) = app
        .post(&format!("/api/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "CANCELLED");
    assert!(run["finishedAt"].is_string());
    let cancelled_at = Instant::now();
    wait_until("the agent to be killed", Duration::from_secs(5), || async {
        pids_with(&m).is_empty()
    })
    .await;
    eprintln!("agent killed {:?} after cancel", cancelled_at.elapsed());

    tokio::time::sleep(Duration::from_secs(2)).await;
    let run = app.run(&run_id).await;
    assert_eq!(run["status"], "CANCELLED");
    assert_eq!(node(&run, "slow")["status"], "CANCELLED");
    assert_eq!(node(&run, "after")["status"], "CANCELLED");
    assert!(
        agent_runs(&run, "after").is_empty(),
        "no node starts after cancel: {run:#}"
    );
    let slow = agent_runs(&run, "slow");
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0]["status"], "FAILED");

    let (status, body) = app
        .post(&format!("/api/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = app
        .post(
            "/api/runs/00000000-0000-0000-0000-000000000000/cancel",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn retry_from_failure_reuses_completed_outputs() {
    let app = TestApp::spawn_with(2, FAST).await;
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let flaky = app
        .create_agent(
            "flaky",
            "testing/flaky",
            &["work"],
            json!({"retry": {"maxAttempts": 1}}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "retryable", "nodes": [
            {"id": "upstream", "agentId": echo, "action": "echo", "inputsJson": {"token": "{{ context.token }}"}},
            {"id": "shaky", "agentId": flaky, "action": "work", "dependsOn": ["upstream"],
             "inputsJson": {"failTimes": "{{ context.failTimes }}", "token": "{{ nodes.upstream.output.inputs.token }}"}},
            {"id": "last", "agentId": echo, "action": "echo", "dependsOn": ["shaky"]}]}))
        .await;
    let run_id = app
        .trigger(&wf, json!({"token": "abc", "failTimes": 5}))
        .await;
    let failed = app.wait_for_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(failed["status"], "FAILED", "{failed:#}");
    assert_eq!(node(&failed, "last")["status"], "SKIPPED");
    let upstream_output = node(&failed, "upstream")["output"].clone();

    let (status, body) = app
        .post(
            &format!("/api/runs/{run_id}/retry"),
            json!({"context": {"failTimes": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], run_id.as_str(), "retry keeps the run id");
    let run = app.wait_for_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert!(run["error"].is_null());
    assert_eq!(run["context"], json!({"token": "abc", "failTimes": 0}));
    // The completed upstream node was not executed again; its output fed the retried node.
    assert_eq!(agent_runs(&run, "upstream").len(), 1);
    assert_eq!(node(&run, "upstream")["output"], upstream_output);
    let shaky = agent_runs(&run, "shaky");
    assert_eq!(shaky.len(), 2);
    assert_eq!(shaky[1]["status"], "COMPLETED");
    assert_eq!(shaky[1]["input"]["token"], "abc");
    completed_once(&run, "last");

    let (status, _) = app
        .post(&format!("/api/runs/{run_id}/retry"), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a COMPLETED run cannot be retried"
    );
}

#[tokio::test]
async fn retry_of_a_cancelled_run_and_conflicts_for_active_runs() {
    let app = TestApp::spawn_with(1, FAST).await;
    let m = marker();
    let sleeper = app
        .create_agent("sleeper", "testing/sleep", &["sleep"], json!({"args": [m]}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "nap", "nodes": [
            {"id": "nap", "agentId": sleeper, "action": "sleep", "inputsJson": {"seconds": "{{ context.seconds }}"}}]}))
        .await;
    let run_id = app.trigger(&wf, json!({"seconds": 60})).await;
    running_attempt(&app, &run_id, "nap").await;
    let (status, _) = app
        .post(&format!("/api/runs/{run_id}/retry"), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an active run cannot be retried"
    );
    let (status, _) = app
        .post(&format!("/api/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .post(
            &format!("/api/runs/{run_id}/retry"),
            json!({"context": {"seconds": 0.1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "RUNNING");
    let run = app.wait_for_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let naps = agent_runs(&run, "nap");
    assert_eq!(naps.len(), 2);
    assert_eq!(naps[0]["status"], "FAILED");
    assert_eq!(naps[1]["status"], "COMPLETED");
    assert_eq!(node(&run, "nap")["output"]["slept"], 0.1);
}

#[tokio::test]
async fn concurrent_triggers_with_one_idempotency_key_start_one_run() {
    let app = TestApp::spawn(0).await;
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let wf = app
        .create_workflow(
            json!({"name": "once", "nodes": [{"id": "a", "agentId": echo, "action": "echo"}]}),
        )
        .await;
    let url = format!("{}/api/workflows/{wf}/trigger", app.base);
    let requests = (0..20).map(|_| {
        app.client
            .post(&url)
            .header("Idempotency-Key", "deploy-2026-11-28")
            .json(&json!({"context": {"n": 1}}))
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for r in responses {
        let r = r.unwrap();
        let status = r.status();
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::OK,
            "{status}"
        );
        if status == StatusCode::ACCEPTED {
            created += 1;
        }
        let body: Value = r.json().await.unwrap();
        ids.insert(body["runId"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "one run for one key: {ids:?}");
    assert_eq!(created, 1);
    let mut conn = app.db().await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_runs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, 1);
    // Another key starts another run.
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/api/workflows/{wf}/trigger"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_api_killed_during_triggers_leaves_whole_runs_or_nothing() {
    let mut app = TestApp::processes(0, FAST).await;
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "burst", "nodes": [
            {"id": "a", "agentId": echo, "action": "echo"},
            {"id": "b", "agentId": echo, "action": "echo"},
            {"id": "c", "agentId": echo, "action": "echo", "dependsOn": ["a", "b"]}]}))
        .await;
    let url = format!("{}/api/workflows/{wf}/trigger", app.base);
    let client = app.client.clone();
    let burst = tokio::spawn(async move {
        let requests = (0..200).map(|_| client.post(&url).json(&json!({})).send());
        futures::future::join_all(requests).await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.procs().api.kill();
    let answers = burst.await.unwrap();
    let accepted = answers
        .iter()
        .filter(|r| matches!(r, Ok(r) if r.status() == StatusCode::ACCEPTED))
        .count();
    eprintln!("{accepted} of 200 triggers were answered before the kill");

    // Every run that exists is whole: three node states, the two roots READY (their jobs).
    let mut conn = app.db().await;
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflow_runs r
         WHERE (SELECT count(*) FROM node_states n WHERE n.run_id = r.id) <> 3
            OR (SELECT count(*) FROM node_states n WHERE n.run_id = r.id AND n.status = 'READY') <> 2",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(broken, 0);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_runs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(
        runs as usize >= accepted,
        "every accepted trigger has its run"
    );

    // And they all complete once the system is back.
    app.restart_api().await;
    app.add_worker().await;
    app.add_worker().await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM workflow_runs")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    for id in ids {
        let run = app.wait_for_run(&id, Duration::from_secs(120)).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
    }
}

#[tokio::test]
async fn sigterm_lets_the_running_attempt_finish_and_exits_zero() {
    let mut app = TestApp::processes(2, FAST).await;
    let m = marker();
    let wf = sleep_then_echo(&app, 2.0, &m).await;
    let run_id = app.trigger(&wf, json!({})).await;
    let attempt = running_attempt(&app, &run_id, "slow").await;
    let holder = app
        .worker_index_by_name(attempt["worker"].as_str().unwrap())
        .unwrap();
    let status = app.procs().workers[holder]
        .signal_and_wait(15, Duration::from_secs(20))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "worker exit status {status}");
    let run = app.wait_for_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    let slow = agent_runs(&run, "slow");
    assert_eq!(
        slow.len(),
        1,
        "the attempt finished in the stopping worker: {run:#}"
    );
    assert_eq!(slow[0]["status"], "COMPLETED");
}

#[tokio::test]
async fn sigterm_past_the_grace_period_hands_the_attempt_back() {
    let mut env = FAST.to_vec();
    env.push(("ORCH_SHUTDOWN_GRACE_SECONDS", "1"));
    let mut app = TestApp::processes(2, &env).await;
    let m = marker();
    let wf = sleep_then_echo(&app, 60.0, &m).await;
    let run_id = app.trigger(&wf, json!({})).await;
    let attempt = running_attempt(&app, &run_id, "slow").await;
    let holder = app
        .worker_index_by_name(attempt["worker"].as_str().unwrap())
        .unwrap();
    let stopped = Instant::now();
    let status = app.procs().workers[holder]
        .signal_and_wait(15, Duration::from_secs(20))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "worker exit status {status}");
    assert!(stopped.elapsed() < Duration::from_secs(15));
    // The interrupted attempt was recorded and a new one started in the other worker.
    let second = running_attempt(&app, &run_id, "slow").await;
    assert_eq!(second["attempt"], 2);
    let run = app.run(&run_id).await;
    let first = &agent_runs(&run, "slow")[0];
    assert_eq!(first["status"], "FAILED");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("worker shut down"),
        "{first:#}"
    );
    let (status, _) = app
        .post(&format!("/api/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_postgres_restart_during_twenty_runs_loses_nothing() {
    let Some(pg) = orchestration_e2e::pg::PrivatePostgres::start() else {
        eprintln!("skipped: no private PostgreSQL could be started here");
        return;
    };
    let app = TestApp::processes_on(&pg.url(), 2, &[]).await;
    let m = marker();
    let wf = sleep_then_echo(&app, 1.0, &m).await;
    let mut run_ids = Vec::new();
    for _ in 0..20 {
        run_ids.push(app.trigger(&wf, json!({})).await);
    }
    wait_until("agents to be running", Duration::from_secs(20), || async {
        !pids_with(&m).is_empty()
    })
    .await;

    pg.stop();
    let down_at = Instant::now();
    // The API says so while the database is away.
    let (status, health) = app.get("/api/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["database"], false);
    assert_eq!(health["status"], "degraded");
    let (status, body) = app.get(&format!("/api/runs/{}", run_ids[0])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down_at.elapsed())).await;
    pg.start_again();

    wait_until(
        "the API to see the database again",
        Duration::from_secs(30),
        || async { app.get("/api/health").await.0 == StatusCode::OK },
    )
    .await;
    for run_id in &run_ids {
        let run = app.wait_for_run(run_id, Duration::from_secs(120)).await;
        assert_eq!(run["status"], "COMPLETED", "{run:#}\n{}", pg.log());
        completed_once(&run, "slow");
        completed_once(&run, "after");
    }
    let mut app = app;
    for w in &mut app.procs().workers {
        assert!(w.is_alive(), "no worker exits for good during an outage");
    }
    assert!(app.procs().api.is_alive());
}

#[tokio::test]
async fn the_rescuer_repairs_stalled_and_unfinished_runs_and_counts_it() {
    let mut app = TestApp::spawn_with(0, FAST).await;
    let echo = app
        .create_agent("echo", "testing/echo", &["echo"], json!({}))
        .await;
    let wf = app
        .create_workflow(json!({"name": "pair", "nodes": [
            {"id": "a", "agentId": echo, "action": "echo"},
            {"id": "b", "agentId": echo, "action": "echo", "dependsOn": ["a"]}]}))
        .await;
    let mut conn = app.db().await;
    // A run whose root completed but whose dependent was never released.
    let stalled = app.trigger(&wf, json!({})).await;
    sqlx::query(
        "UPDATE node_states SET status = 'COMPLETED', output = '{}', finished_at = now()
         WHERE run_id = $1::uuid AND node_id = 'a'",
    )
    .bind(&stalled)
    .execute(&mut conn)
    .await
    .unwrap();
    // A run whose nodes all finished but which was never closed.
    let unfinished = app.trigger(&wf, json!({})).await;
    sqlx::query(
        "UPDATE node_states SET status = 'COMPLETED', output = '{}', finished_at = now() WHERE run_id = $1::uuid",
    )
    .bind(&unfinished)
    .execute(&mut conn)
    .await
    .unwrap();

    let w = app.add_worker().await;
    let moved = app.wait_for_run(&stalled, Duration::from_secs(30)).await;
    assert_eq!(moved["status"], "COMPLETED", "{moved:#}");
    completed_once(&moved, "b");
    let closed = app.wait_for_run(&unfinished, Duration::from_secs(30)).await;
    assert_eq!(closed["status"], "COMPLETED", "{closed:#}");

    let metrics = app.worker_metrics(w).await;
    for kind in ["stalled_run", "unfinalized_run"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("orchestration_rescuer_repairs_total") && l.contains(kind)),
            "no {kind} repair counted:\n{metrics}"
        );
    }
}
