//! Load generation: keeps `concurrency` runs in flight (a closed loop) until the run count or
//! the duration is reached. Completion is noticed by one poller listing the workflow's active
//! runs, so the observation itself adds little load; latencies are taken afterwards from the
//! server's own timestamps, so polling does not blur them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::client::Api;

#[derive(Debug, Clone)]
pub struct Load {
    /// Stop after this many runs (ignored when `duration` is set).
    pub runs: usize,
    pub concurrency: usize,
    /// Keep triggering for this long instead of a fixed count.
    pub duration: Option<Duration>,
    pub poll: Duration,
    /// Give up waiting for in-flight runs after this long past the last trigger.
    pub drain_timeout: Duration,
}

#[derive(Debug, Default)]
pub struct Driven {
    /// Runs started, in trigger order.
    pub run_ids: Vec<String>,
    /// Runs still active when the drain timeout ran out.
    pub unfinished: Vec<String>,
    pub trigger_errors: Vec<String>,
    pub started: Option<Instant>,
    pub elapsed: Duration,
}

struct Shared {
    /// Active runs: when their trigger answered, and who waits for them.
    waiting: Mutex<HashMap<String, (Instant, oneshot::Sender<()>)>>,
    remaining: AtomicUsize,
    stop: AtomicBool,
    triggered: AtomicUsize,
    completed: AtomicUsize,
    run_ids: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
}

pub async fn drive(api: &Api, workflow_id: &str, context: &Value, load: &Load) -> Driven {
    let shared = Arc::new(Shared {
        waiting: Mutex::new(HashMap::new()),
        remaining: AtomicUsize::new(if load.duration.is_some() {
            usize::MAX
        } else {
            load.runs
        }),
        stop: AtomicBool::new(false),
        triggered: AtomicUsize::new(0),
        completed: AtomicUsize::new(0),
        run_ids: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let poller = tokio::spawn(poll(
        api.clone(),
        workflow_id.to_string(),
        shared.clone(),
        load.poll,
    ));
    let progress = tokio::spawn(progress(shared.clone(), started));
    let deadline = load.duration.map(|d| started + d);
    let drivers: Vec<_> = (0..load.concurrency.max(1))
        .map(|_| {
            let api = api.clone();
            let shared = shared.clone();
            let workflow_id = workflow_id.to_string();
            let context = context.clone();
            tokio::spawn(async move {
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return;
                    }
                    if shared
                        .remaining
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_err()
                    {
                        return;
                    }
                    match api.trigger(&workflow_id, &context).await {
                        Ok(Ok(run_id)) => {
                            let (tx, rx) = oneshot::channel();
                            shared
                                .waiting
                                .lock()
                                .expect("lock")
                                .insert(run_id.clone(), (Instant::now(), tx));
                            shared.run_ids.lock().expect("lock").push(run_id);
                            shared.triggered.fetch_add(1, Ordering::Relaxed);
                            // Dropped sender (drain timeout) ends the wait too.
                            let _ = rx.await;
                        }
                        Ok(Err(refusal)) => {
                            shared.errors.lock().expect("lock").push(refusal);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => {
                            shared.errors.lock().expect("lock").push(e.to_string());
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect();
    // Drivers finish when their last run finished; a stuck run must not hang the harness.
    let drained = async {
        for d in drivers {
            let _ = d.await;
        }
    };
    let timeout = load.duration.unwrap_or(Duration::ZERO)
        + load.drain_timeout
        + if load.duration.is_none() {
            // A count-bounded load has no known length: allow generous time per run.
            Duration::from_millis(200) * load.runs as u32
        } else {
            Duration::ZERO
        };
    let _ = tokio::time::timeout(timeout, drained).await;
    shared.stop.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let _ = poller.await;
    progress.abort();
    let unfinished: Vec<String> = shared
        .waiting
        .lock()
        .expect("lock")
        .drain()
        .map(|(id, _)| id)
        .collect();
    eprintln!(
        "[{:>5.1}s] done: {} runs triggered, {} finished, {} unfinished, {} trigger errors",
        elapsed.as_secs_f64(),
        shared.triggered.load(Ordering::Relaxed),
        shared.completed.load(Ordering::Relaxed),
        unfinished.len(),
        shared.errors.lock().expect("lock").len()
    );
    Driven {
        run_ids: std::mem::take(&mut *shared.run_ids.lock().expect("lock")),
        unfinished,
        trigger_errors: std::mem::take(&mut *shared.errors.lock().expect("lock")),
        started: Some(started),
        elapsed,
    }
}

/// Marks runs finished when they leave the workflow's list of active runs. A run only counts
/// once its trigger had answered before the listing was asked for.
async fn poll(api: Api, workflow_id: String, shared: Arc<Shared>, every: Duration) {
    let mut failures = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let asked = Instant::now();
        match api.active_runs(&workflow_id).await {
            Ok(active) => {
                failures = 0;
                let mut waiting = shared.waiting.lock().expect("lock");
                let done: Vec<String> = waiting
                    .iter()
                    .filter(|(id, (at, _))| *at < asked && !active.contains(*id))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in done {
                    if let Some((_, tx)) = waiting.remove(&id) {
                        let _ = tx.send(());
                        shared.completed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures % 50 == 1 {
                    eprintln!("listing active runs failed: {e}");
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn progress(shared: Arc<Shared>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let completed = shared.completed.load(Ordering::Relaxed);
        let in_flight = shared.waiting.lock().expect("lock").len();
        eprintln!(
            "[{:>5.1}s] triggered {:>7}  finished {:>7}  in flight {:>5}  {:>6} runs/s",
            started.elapsed().as_secs_f64(),
            shared.triggered.load(Ordering::Relaxed),
            completed,
            in_flight,
            completed - last
        );
        last = completed;
    }
}
