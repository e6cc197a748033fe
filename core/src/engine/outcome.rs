//! What follows from a transition beyond the row it moved, for every path that moves nodes: a
//! new run announces itself and its READY roots, a failed node skips what depends on it, and a
//! run in which no node can move any more ends. And what a node runs with, for its claim and
//! its approval request alike.

use serde_json::Value;
use sqlx::PgConnection;

use crate::domain::RunPlan;
use crate::effects::{Effects, NodeDetail, RunDetail, What};
use crate::error::Result;
use crate::lifecycle::{NodeEvent, NodeStatus, RunEvent, RunStatus};
use crate::store::nodes::{self, NodeToRun};
use crate::store::runs::{self, Ended, Ending, Run, RunRef};
use crate::template::{self, Scope};

/// The input a node runs with, rendered from its run's context and the outputs its templates
/// read, or why it cannot be.
pub fn input_of(to_run: &NodeToRun) -> std::result::Result<Value, String> {
    template::render(
        &to_run.node.inputs,
        &Scope {
            context: &to_run.context,
            nodes: &to_run.outputs,
        },
    )
    .map_err(|e| e.to_string())
}

/// A run was created RUNNING, with `roots` READY.
pub fn run_started(effects: &mut Effects, run: &Run, roots: &[String]) {
    let reference = run.reference();
    effects.run(
        &reference,
        None,
        RunStatus::Running,
        RunDetail {
            trigger: Some(run.trigger.clone()),
            ..RunDetail::default()
        },
    );
    for root in roots {
        effects.push(
            &reference,
            What::Node {
                node_id: root.clone(),
                event: None,
                status: NodeStatus::Ready,
                detail: NodeDetail::default(),
            },
        );
    }
}

/// Node `node_id` failed for good: what depends on it can never run, and is skipped.
pub async fn skip_descendants(
    conn: &mut PgConnection,
    effects: &mut Effects,
    run: &RunRef,
    plan: &RunPlan,
    node_id: &str,
) -> Result<Vec<String>> {
    let descendants = plan.descendants(node_id);
    let cause = format!("skipped: upstream node \"{node_id}\" failed");
    let skipped = nodes::skip_many(&mut *conn, run.run_id, &descendants, &cause).await?;
    effects.nodes(run, &skipped, NodeEvent::Skip);
    Ok(skipped)
}

/// Ends the run when no node of it can move any more: FAILED when one failed, else
/// COMPLETED. The caller holds the run lock.
pub async fn finish_if_done(
    conn: &mut PgConnection,
    effects: &mut Effects,
    run: &RunRef,
) -> Result<Option<Ended>> {
    let progress = nodes::progress(&mut *conn, run.run_id).await?;
    if progress.open {
        return Ok(None);
    }
    let ending = match progress.failure {
        Some(_) => Ending::Fail,
        None => Ending::Complete,
    };
    let ended = runs::finish(&mut *conn, run.run_id, ending, progress.failure.as_deref()).await?;
    if let Some(ended) = &ended {
        run_ended(effects, run, ended);
    }
    Ok(ended)
}

/// `run` ended as `ended` says.
pub fn run_ended(effects: &mut Effects, run: &RunRef, ended: &Ended) {
    let event = match ended.status {
        RunStatus::Failed => RunEvent::Fail,
        RunStatus::Cancelled => RunEvent::Cancel,
        _ => RunEvent::Complete,
    };
    effects.run(
        run,
        Some(event),
        ended.status,
        RunDetail {
            trigger: None,
            error: ended.error.clone(),
            duration: Some(ended.duration()),
        },
    );
}
