//! Event triggers over NATS: a JetStream durable consumer feeds each message into
//! `ingest::ingest`, and acknowledges it only after its runs are committed; a database failure
//! asks for redelivery, so an event is never lost. Several API replicas share one durable
//! consumer, and the event key (`Nats-Msg-Id`, else stream and sequence) stops a redelivery
//! from starting a second run. The consumer reads only the trigger subjects, also when the
//! stream keeps the lifecycle events too (as it does by default).

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use chrono::Utc;
use futures::StreamExt;
use orchestration_core::engine::Engine;
use orchestration_core::ingest::{IncomingEvent, Source, ingest};
use orchestration_core::telemetry::names;
use orchestration_worker::nats::{async_nats, ensure_stream};
use orchestration_worker::settings::NatsSettings;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Consumes the event stream until `stop` fires, starting over after any error (NATS away,
/// stream deleted): consumption resumes by itself.
pub async fn consume(
    client: async_nats::Client,
    engine: Engine,
    settings: NatsSettings,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            result = consume_once(&client, &engine, &settings, &stop) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "event consumer stopped; restarting shortly");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn consume_once(
    client: &async_nats::Client,
    engine: &Engine,
    settings: &NatsSettings,
    stop: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let js = jetstream::new(client.clone());
    let stream = ensure_stream(&js, &settings.stream, &settings.subjects).await?;
    let consumer = stream
        .get_or_create_consumer(
            &settings.consumer,
            pull::Config {
                durable_name: Some(settings.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                filter_subjects: settings.subjects.clone(),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    tracing::info!(stream = %settings.stream, consumer = %settings.consumer, "consuming events");
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let Some(message) = message else {
            return Ok(());
        };
        handle(engine, &settings.stream, message?).await;
    }
}

async fn handle(engine: &Engine, stream: &str, message: jetstream::Message) {
    let (sequence, delivered) = message
        .info()
        .map(|i| (i.stream_sequence, i.delivered))
        .unwrap_or((0, 1));
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_string());
    let subject = message.subject.to_string();
    // A consumer made before the stream kept lifecycle events too reads those as well:
    // they start nothing.
    if subject.starts_with("orchestration.") {
        let _ = message.ack().await;
        return;
    }
    let payload: Value = match serde_json::from_slice(&message.payload) {
        Ok(v) => v,
        Err(e) => {
            // Retrying cannot make it JSON: acknowledge, count, and move on.
            metrics::counter!(names::EVENTS_RECEIVED, "source" => "nats", "status" => "invalid")
                .increment(1);
            tracing::warn!(subject = %subject, sequence, error = %e, "event payload is not JSON; dropped");
            let _ = message.ack().await;
            return;
        }
    };
    let id = msg_id
        .clone()
        .unwrap_or_else(|| format!("{stream}:{sequence}"));
    let event = IncomingEvent {
        key: match &msg_id {
            Some(id) => format!("nats-msg:{id}"),
            None => format!("nats-seq:{stream}:{sequence}"),
        },
        id,
        source: Source::Nats,
        subject: subject.clone(),
        payload,
        received_at: Utc::now(),
        project_id: None,
    };
    let span = tracing::info_span!("event.ingest", otel.kind = "consumer", subject = %subject, event_id = %event.id);
    if let Some(parent) = message.headers.as_ref().and_then(|h| h.get("traceparent")) {
        orchestration_core::telemetry::set_parent(&span, parent.as_str());
    }
    match ingest(engine, &event).instrument(span).await {
        Ok(_) => {
            if let Err(e) = message.ack().await {
                // The runs are committed; a redelivery will find the event and do nothing.
                tracing::warn!(subject = %subject, error = %e, "ack failed after commit");
            }
        }
        Err(e) if delivered >= 100 => {
            metrics::counter!(names::EVENTS_RECEIVED, "source" => "nats", "status" => "error")
                .increment(1);
            tracing::error!(subject = %subject, sequence, delivered, error = %e, "event failed 100 deliveries; dropped");
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            tracing::warn!(subject = %subject, sequence, error = %e, "event not ingested; asking for redelivery");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}
