//! Events start workflows: a NATS message, a `POST /api/events`, or a firing alert becomes one
//! [`IncomingEvent`]; every ACTIVE workflow whose subject pattern matches gets a run, all in
//! one transaction with the record of the event, so a redelivered event starts nothing new.
//! (The JetStream consumer that feeds NATS messages in is the API's `triggers`.)

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::effects::Effects;
use crate::engine::Engine;
use crate::engine::change::Change;
use crate::engine::trigger::{self, TriggerRequest};
use crate::error::{Error, Result};
use crate::store::{events, workflows};
use crate::telemetry::names;

/// Where an event came from (the `source` label of the events metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Nats,
    Api,
    Alertmanager,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Nats => "nats",
            Source::Api => "api",
            Source::Alertmanager => "alertmanager",
        }
    }
}

#[derive(Debug, Clone)]
pub struct IncomingEvent {
    /// Unique per event across deliveries: `Nats-Msg-Id`, the stream sequence, the caller's id.
    pub key: String,
    pub id: String,
    pub source: Source,
    pub subject: String,
    pub payload: Value,
    pub received_at: DateTime<Utc>,
    /// Only workflows of this project (REST); `None` for all projects (NATS, alerts).
    pub project_id: Option<i64>,
}

/// What an event did.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    pub runs: Vec<Uuid>,
    /// The event was seen before; `runs` are the ones its first delivery started.
    pub duplicate: bool,
}

/// Does `subject` match the NATS-style `pattern` (`*` one token, `>` the rest)?
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The context a run started by `event` gets: the payload's fields (a non-object payload goes
/// under `payload`) plus `event: {subject, receivedAt, id}`.
pub fn run_context(event: &IncomingEvent) -> Value {
    let mut context = match &event.payload {
        Value::Object(map) => Value::Object(map.clone()),
        other => json!({ "payload": other }),
    };
    context["event"] = json!({
        "subject": event.subject,
        "receivedAt": event.received_at,
        "id": event.id,
    });
    context
}

/// Starts the runs `event` asks for, once.
pub async fn ingest(engine: &Engine, event: &IncomingEvent) -> Result<Ingested> {
    let mut change = Change::begin(engine).await?;
    let (conn, effects) = change.parts();
    let ingested = ingest_in(conn, effects, event).await?;
    change.commit(engine).await?;
    if !ingested.duplicate {
        tracing::info!(subject = %event.subject, event_id = %event.id, runs = ?ingested.runs, "event ingested");
    }
    Ok(ingested)
}

fn trigger_name(source: Source) -> &'static str {
    match source {
        Source::Alertmanager => "alert",
        _ => "event",
    }
}

/// [`ingest`] inside the caller's change.
pub async fn ingest_in(
    conn: &mut PgConnection,
    effects: &mut Effects,
    event: &IncomingEvent,
) -> Result<Ingested> {
    let trigger = trigger_name(event.source);
    if !events::insert(
        &mut *conn,
        &event.key,
        event.source.as_str(),
        &event.subject,
        &event.payload,
    )
    .await?
    {
        count(event.source, "duplicate");
        return Ok(Ingested {
            runs: events::runs(&mut *conn, &event.key).await?,
            duplicate: true,
        });
    }
    let context = run_context(event);
    let mut runs = Vec::new();
    for found in workflows::event_triggers(&mut *conn, event.project_id).await? {
        if !subject_matches(&found.pattern, &event.subject) {
            continue;
        }
        let workflow_id = found.workflow_id;
        let req = TriggerRequest {
            project_id: found.project_id,
            workflow_id,
            context: context.clone(),
            trigger,
            idempotency_key: None,
            actor: None,
        };
        // Each workflow in a savepoint of its own: one that cannot start leaves the others'
        // runs standing.
        let mark = effects.events.len();
        let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
        match trigger::run_create(&mut savepoint, effects, &req).await {
            Ok(run) => {
                savepoint.commit().await?;
                runs.push(run.id);
            }
            // A workflow that can no longer run is that workflow's problem, not the event's.
            Err(e @ (Error::Conflict(_) | Error::Invalid(_) | Error::NotFound(_))) => {
                savepoint.rollback().await?;
                effects.events.truncate(mark);
                tracing::warn!(workflow_id = %workflow_id, subject = %event.subject, error = %e, "event matched a workflow that cannot start");
            }
            Err(e) => return Err(e),
        }
    }
    events::set_runs(&mut *conn, &event.key, &runs).await?;
    count(
        event.source,
        if runs.is_empty() {
            "unmatched"
        } else {
            "triggered"
        },
    );
    Ok(Ingested {
        runs,
        duplicate: false,
    })
}

fn count(source: Source, status: &'static str) {
    metrics::counter!(names::EVENTS_RECEIVED, "source" => source.as_str(), "status" => status)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_patterns_follow_nats_rules() {
        assert!(subject_matches("graph.file.updated", "graph.file.updated"));
        assert!(!subject_matches("graph.file.updated", "graph.file.deleted"));
        assert!(subject_matches("graph.*.updated", "graph.file.updated"));
        assert!(!subject_matches("graph.*", "graph.file.updated"));
        assert!(subject_matches("graph.>", "graph.file.updated"));
        assert!(!subject_matches("graph.>", "graph"));
        assert!(subject_matches("alert.>", "alert.AlwaysFiring"));
        assert!(subject_matches(">", "anything.at.all"));
        assert!(!subject_matches("graph.file", "graph.file.updated"));
    }

    #[test]
    fn context_carries_the_payload_and_the_event() {
        let event = IncomingEvent {
            key: "k".into(),
            id: "e1".into(),
            source: Source::Api,
            subject: "graph.file.updated".into(),
            payload: json!({"repositoryPath": "/r"}),
            received_at: Utc::now(),
            project_id: None,
        };
        let ctx = run_context(&event);
        assert_eq!(ctx["repositoryPath"], "/r");
        assert_eq!(ctx["event"]["subject"], "graph.file.updated");
        assert_eq!(ctx["event"]["id"], "e1");
        let list = IncomingEvent {
            payload: json!([1, 2]),
            ..event
        };
        assert_eq!(run_context(&list)["payload"], json!([1, 2]));
    }
}
