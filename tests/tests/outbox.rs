//! The durable outbox: lifecycle events written in the transaction of the change that caused
//! them and delivered by the workers' apalis deliverers to NATS JetStream and to webhook
//! subscriptions, through outages of NATS, of a worker and of PostgreSQL, and to receivers that
//! fail before they succeed. And the subscriptions API that registers those receivers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use orchestration_e2e::nats::PrivateNats;
use orchestration_e2e::pg::PrivatePostgres;
use orchestration_e2e::receiver::Receiver;
use orchestration_e2e::reqwest::StatusCode;
use orchestration_e2e::serde_json::{Value, json};
use orchestration_e2e::{TestApp, client_with_token};

fn nats() -> PrivateNats {
    PrivateNats::start().expect("these tests need nats-server (Debian's nats-server package)")
}

/// A two-node chain of BUILTIN echo agents: 8 lifecycle events a run (run RUNNING, for each
/// node READY, RUNNING, COMPLETED, run COMPLETED).
async fn chain(app: &TestApp) -> String {
    let echo = app.create_builtin_agent("echo", &["echo"], json!({})).await;
    app.create_workflow(json!({"name": "chain", "nodes": [
        {"id": "a", "agentId": echo, "action": "echo", "inputsJson": {"n": "{{ context.n }}"}},
        {"id": "b", "agentId": echo, "action": "echo", "dependsOn": ["a"]}]}))
        .await
}

const EVENTS_PER_CHAIN_RUN: usize = 8;

/// Subscribes `url` to `events` and gives every process a moment to hear of it (they do by
/// notification; a change committed before then is not the subscription's).
async fn subscribe(app: &TestApp, body: Value) -> Value {
    let (status, sub) = app.post("/api/subscriptions", body).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub
}

/// Every message of the lifecycle stream: (Nats-Msg-Id, subject, body).
async fn stream_messages(nats: &PrivateNats) -> Vec<(String, String, Value)> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    // Made by the first delivery.
    let Ok(stream) = js.get_stream("ORCHESTRATION_EVENTS").await else {
        return Vec::new();
    };
    // The API makes the stream for its triggers; the first delivery adds the lifecycle subjects.
    let Ok(consumer) = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subject: "orchestration.>".into(),
            ..Default::default()
        })
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            let body: Value = orchestration_e2e::serde_json::from_slice(&m.payload).unwrap();
            out.push((id, m.subject.to_string(), body));
            got += 1;
        }
        if got == 0 {
            return out;
        }
    }
}

/// Waits until the stream holds `n` lifecycle events of `runs`, and returns them.
async fn wait_for_stream(
    nats: &PrivateNats,
    runs: &[String],
    n: usize,
    timeout: Duration,
) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + timeout;
    loop {
        let messages: Vec<_> = stream_messages(nats)
            .await
            .into_iter()
            .filter(|(_, _, body)| runs.iter().any(|r| body["runId"] == r.as_str()))
            .collect();
        if messages.len() >= n || Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Each run's events in the stream are its 8, every message id once.
fn assert_every_event_once(messages: &[(String, String, Value)], runs: &[String]) {
    let ids: BTreeSet<&String> = messages.iter().map(|(id, _, _)| id).collect();
    assert_eq!(
        ids.len(),
        messages.len(),
        "a message id appears twice in the stream"
    );
    for (id, _, body) in messages {
        assert_eq!(body["id"], id.as_str(), "Nats-Msg-Id is the event's id");
    }
    for run in runs {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for (_, subject, body) in messages {
            if body["runId"] == run.as_str() {
                *kinds.entry(subject.clone()).or_default() += 1;
            }
        }
        let expected: BTreeMap<String, usize> = [
            ("orchestration.run.running", 1),
            ("orchestration.node.ready", 2),
            ("orchestration.node.running", 2),
            ("orchestration.node.completed", 2),
            ("orchestration.run.completed", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(kinds, expected, "events of run {run}");
    }
}

#[tokio::test]
async fn nats_away_for_ten_seconds_loses_no_event_and_duplicates_none() {
    let mut nats = nats();
    let url = nats.url();
    let mut app = TestApp::spawn_with(1, &[("NATS_URL", &url)]).await;
    let wf = chain(&app).await;
    let before = app.trigger(&wf, json!({"n": 0})).await;
    app.wait_for_run(&before, Duration::from_secs(30)).await;
    wait_for_stream(
        &nats,
        std::slice::from_ref(&before),
        EVENTS_PER_CHAIN_RUN,
        Duration::from_secs(30),
    )
    .await;

    nats.stop();
    let down = Instant::now();
    let mut during = Vec::new();
    for n in 1..=5 {
        during.push(app.trigger(&wf, json!({"n": n})).await);
    }
    for run in &during {
        let run = app.wait_for_run(run, Duration::from_secs(30)).await;
        assert_eq!(run["status"], "COMPLETED", "runs finish while NATS is away");
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    // Nothing could be delivered meanwhile: the batches wait in the outbox.
    let mut conn = app.db().await;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'orchestration.events' AND status <> 'Done'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        waiting > 0,
        "the events of the runs finished during the outage wait"
    );
    nats.start_again();

    let mut runs = during.clone();
    runs.push(before);
    let messages = wait_for_stream(
        &nats,
        &runs,
        runs.len() * EVENTS_PER_CHAIN_RUN,
        Duration::from_secs(60),
    )
    .await;
    assert_every_event_once(&messages, &runs);
    let metrics = app.worker_metrics(0).await;
    assert!(
        metrics.contains("orchestration_outbox_delivered_total{sink=\"nats\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_worker_killed_during_deliveries_loses_no_event() {
    let nats = nats();
    let url = nats.url();
    // The first deliveries hang, so the worker that takes them is in the middle of them when
    // it is killed.
    let hanging = Arc::new(AtomicUsize::new(3));
    let receiver = Receiver::start({
        let hanging = hanging.clone();
        move |_| {
            let pause = if hanging
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1))
                .is_ok()
            {
                // Within the deliverer's 10 s timeout: these deliveries succeed, late.
                Duration::from_secs(8)
            } else {
                Duration::ZERO
            };
            (StatusCode::OK, pause)
        }
    })
    .await;
    let mut app = TestApp::processes(
        2,
        &[
            ("NATS_URL", &url),
            ("ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE", "true"),
            ("ORCH_OUTBOX_HEARTBEAT_MS", "1000"),
        ],
    )
    .await;
    let sub = subscribe(
        &app,
        json!({"url": receiver.url, "events": ["run.completed"]}),
    )
    .await;
    let wf = chain(&app).await;
    let mut runs = Vec::new();
    for n in 0..10 {
        runs.push(app.trigger(&wf, json!({"n": n})).await);
    }
    receiver
        .wait_until("a delivery", Duration::from_secs(30), |r| !r.is_empty())
        .await;
    // Kill the worker that holds a hanging delivery.
    let mut conn = app.db().await;
    let holder: String = sqlx::query_scalar(
        "SELECT lock_by FROM apalis.jobs
         WHERE job_type = 'orchestration.webhooks' AND status IN ('Queued', 'Running') AND lock_by IS NOT NULL
         LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let victim = app
        .worker_index_by_name(&holder)
        .unwrap_or_else(|| panic!("{holder} is one of our workers"));
    app.kill_worker(victim);

    for run in &runs {
        let run = app.wait_for_run(run, Duration::from_secs(60)).await;
        assert_eq!(run["status"], "COMPLETED");
    }
    // Every run's completion reaches the receiver (at least once: a delivery cut off by the
    // kill goes again) and the stream (exactly once).
    let received = receiver
        .wait_until("every run's completion", Duration::from_secs(60), |r| {
            runs.iter()
                .all(|run| r.iter().any(|x| x.body["runId"] == run.as_str()))
        })
        .await;
    for r in &received {
        assert_eq!(r.body["kind"], "run.completed");
    }
    let messages = wait_for_stream(
        &nats,
        &runs,
        runs.len() * EVENTS_PER_CHAIN_RUN,
        Duration::from_secs(60),
    )
    .await;
    assert_every_event_once(&messages, &runs);
    let (_, deliveries) = app
        .get(&format!(
            "/api/subscriptions/{}/deliveries",
            sub["id"].as_str().unwrap()
        ))
        .await;
    let deliveries = deliveries["items"].as_array().unwrap();
    assert_eq!(deliveries.len(), runs.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, listed) = app
            .get(&format!(
                "/api/subscriptions/{}/deliveries",
                sub["id"].as_str().unwrap()
            ))
            .await;
        if listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "DELIVERED")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries not all DELIVERED: {listed:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_outbox_resumes_by_itself_after_postgres_restarts() {
    let pg = PrivatePostgres::start().expect("this test needs the PostgreSQL server binaries");
    let receiver = Receiver::ok().await;
    let app = TestApp::spawn_on(
        &pg.url(),
        1,
        &[
            ("ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE", "true"),
            ("ORCH_OUTBOX_HEARTBEAT_MS", "1000"),
        ],
    )
    .await;
    subscribe(
        &app,
        json!({"url": receiver.url, "events": ["run.completed"]}),
    )
    .await;
    let wf = chain(&app).await;
    let first = app.trigger(&wf, json!({"n": 1})).await;
    receiver
        .wait_until("the first run's completion", Duration::from_secs(30), |r| {
            r.iter().any(|x| x.body["runId"] == first.as_str())
        })
        .await;

    // Down for longer than a heartbeat: the deliverers' next heartbeat fails, which stops an
    // apalis worker for good; new ones must take over.
    pg.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.get("/api/health").await.0 != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the API never saw the database again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The deliverers lost their connections with the restart; new ones took over.
    let second = app.trigger(&wf, json!({"n": 2})).await;
    app.wait_for_run(&second, Duration::from_secs(60)).await;
    receiver
        .wait_until(
            "the second run's completion",
            Duration::from_secs(60),
            |r| r.iter().any(|x| x.body["runId"] == second.as_str()),
        )
        .await;
}

#[tokio::test]
async fn a_webhook_that_fails_three_times_gets_the_event_once_it_recovers() {
    let receiver = Receiver::start(|n| {
        if n < 3 {
            (StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO)
        } else {
            (StatusCode::OK, Duration::ZERO)
        }
    })
    .await;
    let app = TestApp::spawn_with(
        1,
        &[
            ("ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE", "true"),
            ("ORCH_WEBHOOK_BACKOFF_MS", "200"),
        ],
    )
    .await;
    let secret = "a-shared-secret";
    let sub = subscribe(
        &app,
        json!({"url": receiver.url, "events": ["run.completed"], "secret": secret}),
    )
    .await;
    assert_eq!(sub["signed"], true);
    assert!(sub.get("secret").is_none(), "the secret is never shown");
    let wf = chain(&app).await;
    let run = app.trigger(&wf, json!({"n": 1})).await;

    let received = receiver
        .wait_until("four attempts", Duration::from_secs(30), |r| r.len() >= 4)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 4, "nothing after the success");
    for r in &received {
        assert_eq!(r.body["kind"], "run.completed");
        assert_eq!(r.body["runId"], run.as_str());
        assert_eq!(r.body["status"], "COMPLETED");
        assert_eq!(
            r.body["id"], received[0].body["id"],
            "the same event each time"
        );
        assert_eq!(
            r.signature.as_deref(),
            Some(orchestration_worker::webhook::signature(secret, &r.raw).as_str()),
            "signed with the subscription's secret"
        );
    }
    let deliveries_path = format!(
        "/api/subscriptions/{}/deliveries",
        sub["id"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        let (status, listed) = app.get(&deliveries_path).await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        let d = listed["items"][0].clone();
        if d["status"] == "DELIVERED" {
            break d;
        }
        assert!(Instant::now() < deadline, "not delivered: {listed:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["attempts"], 4, "{delivery:#}");
    assert_eq!(delivery["event"], "run.completed");
    assert!(
        delivery["lastError"].as_str().unwrap().contains("HTTP 500"),
        "{delivery:#}"
    );
    assert!(delivery["deliveredAt"].is_string());
}

#[tokio::test]
async fn approvers_hear_that_an_approval_waits() {
    let receiver = Receiver::ok().await;
    let app = TestApp::spawn_with(1, &[("ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE", "true")]).await;
    subscribe(
        &app,
        json!({"url": receiver.url, "events": ["approval.*", "run.completed"]}),
    )
    .await;
    let risky = app
        .create_builtin_agent(
            "risky",
            &["echo"],
            json!({"riskLevel": "APPROVAL_REQUIRED"}),
        )
        .await;
    let wf = app
        .create_workflow(json!({"name": "guarded", "nodes": [
            {"id": "deploy", "agentId": risky, "action": "echo", "inputsJson": {"to": "prod"}}]}))
        .await;
    let run = app.trigger(&wf, json!({})).await;
    let requested = receiver
        .wait_until("approval.requested", Duration::from_secs(30), |r| {
            r.iter().any(|x| x.body["kind"] == "approval.requested")
        })
        .await;
    let request = &requested
        .iter()
        .find(|x| x.body["kind"] == "approval.requested")
        .unwrap()
        .body;
    assert_eq!(request["runId"], run.as_str());
    assert_eq!(request["nodeId"], "deploy");
    assert_eq!(request["agent"], "risky");
    let approval = request["approvalId"].as_str().unwrap();
    let approver = client_with_token(&app.create_token("1", "operator", "approver").await);
    let resp = approver
        .post(format!("{}/api/approvals/{approval}/approve", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let all = receiver
        .wait_until(
            "the decision and the run's end",
            Duration::from_secs(30),
            |r| r.iter().any(|x| x.body["kind"] == "run.completed"),
        )
        .await;
    let kinds: Vec<&str> = all
        .iter()
        .map(|x| x.body["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["approval.requested", "approval.decided", "run.completed"]
    );
    let decided = &all[1].body;
    assert_eq!(decided["status"], "APPROVED");
    assert_eq!(decided["decidedBy"], "token:approver");
}

#[tokio::test]
async fn without_nats_or_subscriptions_nothing_is_written_to_the_outbox() {
    let app = TestApp::spawn(1).await;
    let wf = chain(&app).await;
    for n in 0..5 {
        let run = app.trigger(&wf, json!({"n": n})).await;
        app.wait_for_run(&run, Duration::from_secs(30)).await;
    }
    let mut conn = app.db().await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}

#[tokio::test]
async fn subscriptions_are_checked_listed_scoped_and_deleted() {
    let app = TestApp::spawn(0).await;
    // No server-side request forgery by default.
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://10.0.0.1/",
    ] {
        let (status, body) = app.post("/api/subscriptions", json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE"),
            "{body}"
        );
    }
    for (body, needle) in [
        (json!({"url": "ftp://example.com/"}), "http"),
        (
            json!({"url": "https://93.184.216.34/", "events": ["run.exploded"]}),
            "unknown event kind",
        ),
        (
            json!({"url": "https://93.184.216.34/", "secret": ""}),
            "secret",
        ),
        (json!({"url": ""}), "url"),
    ] {
        let (status, answer) = app.post("/api/subscriptions", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{body}: {answer}"
        );
    }
    let (status, created) = app
        .post(
            "/api/subscriptions",
            json!({"url": "https://93.184.216.34/hook", "events": ["run.failed", "approval.requested"], "secret": "s"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["events"],
        json!(["approval.requested", "run.failed"])
    );
    assert_eq!(created["signed"], true);
    let id = created["id"].as_str().unwrap();
    let (_, all) = app
        .post(
            "/api/subscriptions",
            json!({"url": "https://93.184.216.34/all"}),
        )
        .await;
    assert_eq!(all["events"], json!(["*"]), "no events means every event");

    let (_, listed) = app.get("/api/subscriptions").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let (status, one) = app.get(&format!("/api/subscriptions/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["url"], "https://93.184.216.34/hook");
    let (status, deliveries) = app
        .get(&format!("/api/subscriptions/{id}/deliveries"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deliveries["items"], json!([]));

    // Another project sees none of them.
    let (status, project) = app.post("/api/projects", json!({"name": "other"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let other = client_with_token(
        &app.create_token(project["id"].as_str().unwrap(), "admin", "other-admin")
            .await,
    );
    let path = format!("{}/api/subscriptions/{id}", app.base);
    for request in [other.get(&path), other.delete(&path)] {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let listed: Value = other
        .get(format!("{}/api/subscriptions", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));
    // A viewer reads them, but may not add one.
    let viewer = client_with_token(&app.create_token("1", "viewer", "viewer").await);
    let resp = viewer
        .post(format!("{}/api/subscriptions", app.base))
        .json(&json!({"url": "https://93.184.216.34/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let resp = app
        .client
        .delete(format!("{}/api/subscriptions/{id}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/api/subscriptions/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
