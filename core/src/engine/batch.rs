//! Concurrent triggers of one workflow share a statement and a commit. A trigger whose plan is
//! cached joins its workflow's queue; a task per busy workflow inserts whatever is queued in
//! one statement, then whatever queued meanwhile, until the queue is empty. An idle trigger
//! goes alone at once, so batching costs it nothing; under load a commit (and its WAL flush)
//! carries many runs instead of one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Engine;
use super::change::Change;
use super::outcome;
use super::plans::{CachedPlan, lock};
use crate::error::{Error, Result};
use crate::store::runs::{self, Run};

/// More runs than this wait for the next statement: a statement's arrays stay small and one
/// slow batch does not hold many triggers.
const MAX_BATCH: usize = 64;

/// A run a trigger asks for, owned so that it can wait in a queue.
pub(super) struct Wanted {
    pub id: Uuid,
    pub trigger: String,
    pub context: Value,
    pub idempotency_key: Option<String>,
    pub triggered_by: Option<String>,
    pub traceparent: Option<String>,
}

struct Waiting {
    plan: Arc<CachedPlan>,
    run: Wanted,
    /// The run, or `None` when the plan turned out to be out of date.
    answer: oneshot::Sender<Result<Option<Run>>>,
}

/// The queues of triggers by workflow. A workflow has an entry exactly while a task inserts
/// its runs.
#[derive(Clone, Default)]
pub(crate) struct Batches {
    queues: Arc<Mutex<HashMap<Uuid, Vec<Waiting>>>>,
}

impl Batches {
    /// Inserts `run` planned as `plan` (see [`runs::insert`]), with the other triggers of the
    /// workflow that wait at the same time.
    pub(super) async fn insert(
        &self,
        engine: &Engine,
        workflow_id: Uuid,
        plan: Arc<CachedPlan>,
        run: Wanted,
    ) -> Result<Option<Run>> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting { plan, run, answer };
        {
            let mut queues = lock(&self.queues);
            match queues.get_mut(&workflow_id) {
                Some(queue) => queue.push(waiting),
                None => {
                    queues.insert(workflow_id, vec![waiting]);
                    // The statement runs in a task of its own, so a request that goes away
                    // meanwhile cannot leave the queue without anyone to empty it.
                    tokio::spawn(drain(self.queues.clone(), workflow_id, engine.clone()));
                }
            }
        }
        answered
            .await
            .unwrap_or(Err(Error::Database(sqlx::Error::WorkerCrashed)))
    }
}

/// Inserts the workflow's queued runs until none wait, then removes its entry.
async fn drain(queues: Arc<Mutex<HashMap<Uuid, Vec<Waiting>>>>, workflow_id: Uuid, engine: Engine) {
    // Should inserting panic, the entry goes, so later triggers start a new task (and those
    // queued get an error, their answers dropped).
    struct OnPanic<'a>(&'a Mutex<HashMap<Uuid, Vec<Waiting>>>, Uuid);
    impl Drop for OnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                lock(self.0).remove(&self.1);
            }
        }
    }
    let _guard = OnPanic(&queues, workflow_id);
    loop {
        let taken = {
            let mut queues = lock(&queues);
            let queue = queues.entry(workflow_id).or_default();
            if queue.is_empty() {
                queues.remove(&workflow_id);
                return;
            }
            let rest = queue.split_off(queue.len().min(MAX_BATCH));
            std::mem::replace(queue, rest)
        };
        let mut taken = taken.into_iter().peekable();
        while let Some(first) = taken.next() {
            // Runs planned alike go together (a plan replaced meanwhile starts a new group).
            let mut group = vec![first];
            while let Some(next) = taken.next_if(|w| Arc::ptr_eq(&w.plan, &group[0].plan)) {
                group.push(next);
            }
            insert_group(&engine, group).await;
        }
    }
}

async fn insert_group(engine: &Engine, group: Vec<Waiting>) {
    let plan = group[0].plan.clone();
    let new_runs: Vec<runs::NewRun<'_>> = group.iter().map(|w| new_run(&plan, &w.run)).collect();
    metrics::histogram!(crate::telemetry::names::TRIGGER_BATCH_SIZE).record(new_runs.len() as f64);
    let answers: Vec<Result<Option<Run>>> = match insert_together(engine, &plan, &new_runs).await {
        Ok(Some(inserted)) if inserted.len() == new_runs.len() => {
            inserted.into_iter().map(|r| Ok(Some(r))).collect()
        }
        Ok(_) => new_runs.iter().map(|_| Ok(None)).collect(),
        Err(e) if new_runs.len() == 1 => vec![Err(e)],
        // A conflict of one (an idempotency key taken) fails the statement for all: each
        // goes again alone, to get its own answer.
        _ => {
            let mut answers = Vec::with_capacity(new_runs.len());
            for run in &new_runs {
                let alone = insert_together(engine, &plan, std::slice::from_ref(run));
                answers.push(alone.await.map(|r| r.and_then(|mut r| r.pop())));
            }
            answers
        }
    };
    drop(new_runs);
    for (waiting, answer) in group.into_iter().zip(answers) {
        // The trigger may have gone away (its client hung up): the run stays, as it would
        // had the request ended a moment later.
        let _ = waiting.answer.send(answer);
    }
}

/// Inserts `runs` planned as `plan` in one statement, if the plan is still current (`None`
/// otherwise), as one change.
async fn insert_together(
    engine: &Engine,
    plan: &CachedPlan,
    runs: &[runs::NewRun<'_>],
) -> Result<Option<Vec<Run>>> {
    let mut change = Change::single(engine, plan.project_id).await?;
    let (conn, effects) = change.parts();
    let from = runs::PlannedFrom {
        agents: &plan.agents,
    };
    let inserted = runs::insert(conn, runs, Some(&from)).await?;
    for run in inserted.iter().flatten() {
        outcome::run_started(effects, run, &plan.roots);
    }
    change.commit(engine).await?;
    Ok(inserted)
}

fn new_run<'a>(plan: &'a CachedPlan, run: &'a Wanted) -> runs::NewRun<'a> {
    runs::NewRun {
        id: run.id,
        project_id: plan.project_id,
        workflow_id: plan.workflow_id,
        workflow_version: plan.workflow_version,
        workflow_name: &plan.workflow_name,
        plan: &plan.plan,
        trigger: &run.trigger,
        context: &run.context,
        idempotency_key: run.idempotency_key.as_deref(),
        triggered_by: run.triggered_by.as_deref(),
        traceparent: run.traceparent.as_deref(),
    }
}
