//! Chaos: many runs while worker processes are SIGKILLed and restarted over and over. Every
//! run must complete and every node must complete exactly once. `ORCH_CHAOS_RUNS` (default
//! 200) and `ORCH_CHAOS_KILL_EVERY_MS` (default 1500) make it longer or harsher.

use std::time::{Duration, Instant};

use orchestration_e2e::TestApp;
use orchestration_e2e::serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn runs_survive_workers_being_killed_and_restarted() {
    let runs = env_or("ORCH_CHAOS_RUNS", 200) as usize;
    let kill_every = Duration::from_millis(env_or("ORCH_CHAOS_KILL_EVERY_MS", 1500));
    let mut app = TestApp::processes(
        3,
        &[
            ("ORCH_LEASE_TTL_MS", "1500"),
            ("ORCH_RESCUE_INTERVAL_MS", "250"),
            ("ORCH_RESCUE_READY_AFTER_MS", "3000"),
        ],
    )
    .await;
    let echo = app
        .create_agent(
            "echo",
            "testing/echo",
            &["echo"],
            json!({"retry": {"maxAttempts": 10, "initialBackoffMs": 50}}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "chain3", "nodes": [
            {"id": "one", "agentId": echo, "action": "echo", "inputsJson": {"n": "{{ context.n }}"}},
            {"id": "two", "agentId": echo, "action": "echo", "dependsOn": ["one"],
             "inputsJson": {"n": "{{ nodes.one.output.inputs.n }}"}},
            {"id": "three", "agentId": echo, "action": "echo", "dependsOn": ["two"],
             "inputsJson": {"n": "{{ nodes.two.output.inputs.n }}"}}]}))
        .await;

    let started = Instant::now();
    let mut run_ids = Vec::with_capacity(runs);
    for chunk in (0..runs).collect::<Vec<_>>().chunks(20) {
        let triggers = chunk.iter().map(|n| app.trigger(&wf, json!({"n": n})));
        run_ids.extend(futures::future::join_all(triggers).await);
    }

    let mut conn = app.db().await;
    let mut kills = 0;
    let mut victim = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_runs WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} runs still open after 300 s\n{}",
            app.dump_logs()
        );
        tokio::time::sleep(kill_every).await;
        app.kill_worker(victim);
        kills += 1;
        app.restart_worker(victim).await;
        victim = (victim + 1) % app.procs().workers.len();
    }
    let elapsed = started.elapsed();

    let not_completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_runs WHERE status <> 'COMPLETED'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(not_completed, 0, "every run COMPLETED");
    let nodes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM node_states WHERE status = 'COMPLETED'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(nodes as usize, runs * 3);
    let not_once: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT run_id, node_id FROM agent_runs GROUP BY 1, 2
                               HAVING count(*) FILTER (WHERE status = 'COMPLETED') <> 1) x",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(not_once, 0, "every node completed exactly once");
    let lost: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agent_runs WHERE error LIKE 'worker lost%'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    // Outputs flowed through the chain intact.
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflow_runs r JOIN node_states n ON n.run_id = r.id AND n.node_id = 'three'
         WHERE n.output->'inputs'->'n' <> r.context->'n'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
    eprintln!(
        "chaos: {runs} runs ({} nodes) completed in {elapsed:?} with {kills} worker kills; {lost} attempts were lost with their worker and re-run",
        runs * 3
    );
    assert!(kills > 0, "the test killed at least one worker");
}
