//! What a state change causes besides the rows it writes: lifecycle events for the world
//! outside, metrics and log lines for operators, idle workers to wake. A transition adds them
//! to its change's [`Effects`] as values; the engine writes the events to the outbox inside
//! the same transaction (see `outbox`) and applies the rest in one place, [`Effects::apply`],
//! after the commit. A change that rolls back causes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::lifecycle::{
    ApprovalStatus, Machine, Node, NodeEvent, NodeStatus, Run, RunEvent, RunStatus,
};
use crate::store::runs::RunRef;
use crate::telemetry::names;

/// The effects of one change, in the order they happened.
#[derive(Debug, Default)]
#[must_use = "effects are applied by the engine's commit"]
pub struct Effects {
    pub events: Vec<Event>,
    /// A node became READY and no statement has woken the workers for it yet.
    pub wake: bool,
}

impl Effects {
    pub fn push(&mut self, run: &RunRef, what: What) {
        self.events.push(Event {
            id: Uuid::now_v7(),
            at: Utc::now(),
            run: run.clone(),
            what,
        });
    }

    /// Node `node_id` of `run` moved by `event`.
    pub fn node(&mut self, run: &RunRef, node_id: &str, event: NodeEvent, detail: NodeDetail) {
        self.push(
            run,
            What::Node {
                node_id: node_id.to_string(),
                event: Some(event),
                status: Node::target(event),
                detail,
            },
        );
    }

    /// Each of `node_ids` moved by `event`.
    pub fn nodes<'a>(
        &mut self,
        run: &RunRef,
        node_ids: impl IntoIterator<Item = &'a String>,
        event: NodeEvent,
    ) {
        for id in node_ids {
            self.node(run, id, event, NodeDetail::default());
        }
    }

    /// `run` moved by `event` (or was created: `None`).
    pub fn run(
        &mut self,
        run: &RunRef,
        event: Option<RunEvent>,
        status: RunStatus,
        detail: RunDetail,
    ) {
        self.push(
            run,
            What::Run {
                event,
                status,
                detail,
            },
        );
    }

    /// Counts, logs: what operators see of the change, once it is committed.
    pub fn apply(self) {
        for event in &self.events {
            event.count_and_log();
        }
    }
}

/// One lifecycle event: a run, node or approval changed.
#[derive(Debug, Clone)]
pub struct Event {
    /// Time-ordered and unique: a follower drops what it has seen (NATS' `Nats-Msg-Id`).
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub run: RunRef,
    pub what: What,
}

#[derive(Debug, Clone)]
pub enum What {
    Run {
        /// `None`: the run was created.
        event: Option<RunEvent>,
        status: RunStatus,
        detail: RunDetail,
    },
    Node {
        node_id: String,
        /// `None`: the node was created in this status (a root READY at trigger).
        event: Option<NodeEvent>,
        status: NodeStatus,
        detail: NodeDetail,
    },
    ApprovalRequested {
        approval_id: Uuid,
        node_id: String,
        agent: String,
        action: String,
        expires_at: DateTime<Utc>,
    },
    ApprovalDecided {
        approval_id: Uuid,
        node_id: String,
        status: ApprovalStatus,
        decided_by: Option<String>,
        comment: Option<String>,
        waited: Duration,
    },
}

#[derive(Debug, Clone, Default)]
pub struct RunDetail {
    pub trigger: Option<String>,
    pub error: Option<String>,
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct NodeDetail {
    pub attempt: Option<i32>,
    pub agent: Option<String>,
    pub error: Option<String>,
    pub duration: Option<Duration>,
}

impl Event {
    /// What happened, as subscriptions name it and the NATS subject ends:
    /// `run.completed`, `node.retrying`, `approval.requested`, ...
    pub fn kind(&self) -> String {
        match &self.what {
            What::Run { status, .. } => format!("run.{}", status.as_str().to_ascii_lowercase()),
            What::Node {
                event: Some(NodeEvent::Retry),
                ..
            } => "node.retrying".to_string(),
            What::Node { status, .. } => {
                format!("node.{}", status.as_str().to_ascii_lowercase())
            }
            What::ApprovalRequested { .. } => "approval.requested".to_string(),
            What::ApprovalDecided { .. } => "approval.decided".to_string(),
        }
    }

    /// The event as JSON: the fields of its kind next to the run's.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("id".into(), json!(self.id));
        body.insert("kind".into(), json!(self.kind()));
        body.insert("at".into(), json!(self.at));
        body.insert("projectId".into(), json!(self.run.project_id.to_string()));
        body.insert("runId".into(), json!(self.run.run_id));
        body.insert("workflowId".into(), json!(self.run.workflow_id));
        body.insert("workflowName".into(), json!(self.run.workflow_name));
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                body.insert(key.to_string(), value);
            }
        };
        match &self.what {
            What::Run { status, detail, .. } => {
                put("status", json!(status));
                put("trigger", json!(detail.trigger));
                put("error", json!(detail.error));
                put("durationMs", json!(detail.duration.map(millis)));
            }
            What::Node {
                node_id,
                event,
                status,
                detail,
            } => {
                put("nodeId", json!(node_id));
                let shown = match event {
                    Some(NodeEvent::Retry) => "RETRYING",
                    _ => status.as_str(),
                };
                put("status", json!(shown));
                put("attempt", json!(detail.attempt));
                put("agent", json!(detail.agent));
                put("error", json!(detail.error));
                put("durationMs", json!(detail.duration.map(millis)));
            }
            What::ApprovalRequested {
                approval_id,
                node_id,
                agent,
                action,
                expires_at,
            } => {
                put("approvalId", json!(approval_id));
                put("nodeId", json!(node_id));
                put("agent", json!(agent));
                put("action", json!(action));
                put("expiresAt", json!(expires_at));
            }
            What::ApprovalDecided {
                approval_id,
                node_id,
                status,
                decided_by,
                comment,
                waited,
            } => {
                put("approvalId", json!(approval_id));
                put("nodeId", json!(node_id));
                put("status", json!(status));
                put("decidedBy", json!(decided_by));
                put("comment", json!(comment));
                put("waitedMs", json!(millis(*waited)));
            }
        }
        Value::Object(body)
    }

    fn count_and_log(&self) {
        let workflow = &self.run.workflow_name;
        match &self.what {
            What::Run {
                event: None,
                detail,
                ..
            } => {
                let trigger = detail.trigger.clone().unwrap_or_default();
                tracing::info!(run_id = %self.run.run_id, workflow = %workflow, trigger = %trigger, "run started");
                metrics::counter!(names::RUNS_STARTED, "workflow" => workflow.clone(), "trigger" => trigger)
                    .increment(1);
            }
            What::Run {
                event: Some(RunEvent::Complete | RunEvent::Fail | RunEvent::Cancel),
                status,
                detail,
            } => {
                let duration = detail.duration.unwrap_or_default();
                tracing::info!(run_id = %self.run.run_id, status = %status, duration_ms = millis(duration), "run finished");
                metrics::counter!(names::RUNS_FINISHED, "workflow" => workflow.clone(), "status" => status.as_str())
                    .increment(1);
                metrics::histogram!(names::RUN_DURATION, "workflow" => workflow.clone(), "status" => status.as_str())
                    .record(duration.as_secs_f64());
            }
            What::Run {
                event: Some(RunEvent::Retry),
                ..
            } => tracing::info!(run_id = %self.run.run_id, "run retried"),
            What::Node {
                event: Some(NodeEvent::Retry),
                detail,
                ..
            } => {
                let agent = detail.agent.clone().unwrap_or_default();
                metrics::counter!(names::NODE_RETRIES, "agent" => agent).increment(1);
            }
            What::Node {
                node_id,
                event: Some(NodeEvent::AwaitApproval),
                ..
            } => {
                tracing::info!(run_id = %self.run.run_id, node_id = %node_id, "node waits for approval")
            }
            What::ApprovalDecided {
                node_id,
                status,
                decided_by,
                waited,
                ..
            } => {
                tracing::info!(run_id = %self.run.run_id, node_id = %node_id, status = %status, by = ?decided_by, "approval decided");
                metrics::histogram!(names::APPROVAL_WAIT, "status" => status.as_str())
                    .record(waited.as_secs_f64());
            }
            _ => {}
        }
    }
}

/// Every kind an event can have, as subscriptions name them: a run or node reaching each
/// status the lifecycle tables lead to (or create it in), a node's retry, and approvals.
pub fn kinds() -> Vec<String> {
    let runs = Run::INITIAL
        .iter()
        .chain(Run::TABLE.iter().map(|(_, _, to)| to))
        .map(|s| format!("run.{}", s.as_str().to_ascii_lowercase()));
    let nodes = Node::INITIAL
        .iter()
        .chain(Node::TABLE.iter().map(|(_, _, to)| to))
        .map(|s| format!("node.{}", s.as_str().to_ascii_lowercase()));
    let mut kinds: Vec<String> = runs
        .chain(nodes)
        .chain(
            ["node.retrying", "approval.requested", "approval.decided"]
                .into_iter()
                .map(String::from),
        )
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunRef {
        RunRef {
            run_id: Uuid::nil(),
            project_id: 7,
            workflow_id: Uuid::nil(),
            workflow_name: "wf".into(),
        }
    }

    #[test]
    fn events_are_named_after_the_status_they_reach() {
        let mut effects = Effects::default();
        effects.run(&run(), None, RunStatus::Running, RunDetail::default());
        effects.node(&run(), "a", NodeEvent::Claim, NodeDetail::default());
        effects.node(&run(), "a", NodeEvent::Retry, NodeDetail::default());
        effects.node(&run(), "a", NodeEvent::Complete, NodeDetail::default());
        effects.run(
            &run(),
            Some(RunEvent::Complete),
            RunStatus::Completed,
            RunDetail::default(),
        );
        let kinds: Vec<String> = effects.events.iter().map(Event::kind).collect();
        assert!(
            kinds.iter().all(|k| super::kinds().contains(k)),
            "{kinds:?}"
        );
        assert_eq!(
            kinds,
            [
                "run.running",
                "node.running",
                "node.retrying",
                "node.completed",
                "run.completed"
            ]
        );
        let body = effects.events[2].body();
        assert_eq!(body["status"], "RETRYING");
        assert_eq!(body["projectId"], "7");
        assert_eq!(body["workflowName"], "wf");
        assert!(body.get("error").is_none());
        effects.apply();
    }
}
