//! NATS: a JetStream durable consumer feeds events into [`super::event_ingest`], and a
//! publisher announces run and node lifecycle changes after they commit.
//!
//! A message is acknowledged only after its runs are committed; a database failure asks for
//! redelivery, so an event is never lost. Several API replicas share one durable consumer, and
//! the event key (`Nats-Msg-Id`, else stream and sequence) stops a redelivery from starting a
//! second run.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use async_nats;

use super::{IncomingEvent, Source, event_ingest};
use crate::telemetry::names;

#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server for event triggers and lifecycle events (optional).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream stream the event triggers read; created if missing.
    #[arg(long, env = "ORCH_NATS_STREAM", default_value = "ORCHESTRATION_EVENTS")]
    pub nats_stream: String,
    /// Subjects the stream captures (comma-separated).
    #[arg(
        long,
        env = "ORCH_NATS_SUBJECTS",
        default_value = "graph.>,events.>,alert.>",
        value_delimiter = ','
    )]
    pub nats_subjects: Vec<String>,
    /// Durable consumer shared by all API replicas.
    #[arg(
        long,
        env = "ORCH_NATS_CONSUMER",
        default_value = "orchestration-triggers"
    )]
    pub nats_consumer: String,
    #[arg(long, env = "ORCH_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "ORCH_NATS_PASSWORD")]
    pub nats_password: Option<String>,
    #[arg(long, env = "ORCH_NATS_TOKEN")]
    pub nats_token: Option<String>,
    #[arg(long, env = "ORCH_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<std::path::PathBuf>,
}

/// Connects without waiting: the client keeps (re)connecting in the background, so the service
/// starts and serves REST while NATS is away.
pub async fn connect(args: &NatsArgs) -> Result<Option<async_nats::Client>, String> {
    let Some(url) = &args.nats_url else {
        return Ok(None);
    };
    let mut options = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .name("orchestration")
        .connection_timeout(Duration::from_secs(3));
    if let (Some(user), Some(pass)) = (&args.nats_user, &args.nats_password) {
        options = options.user_and_password(user.clone(), pass.clone());
    }
    if let Some(token) = &args.nats_token {
        options = options.token(token.clone());
    }
    if let Some(path) = &args.nats_creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| format!("ORCH_NATS_CREDS_FILE {}: {e}", path.display()))?;
    }
    let client = options
        .connect(url.as_str())
        .await
        .map_err(|e| format!("NATS_URL {url}: {e}"))?;
    Ok(Some(client))
}

pub fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Consumes the event stream until `stop` fires, starting over after any error (NATS away,
/// stream deleted): consumption resumes by itself.
pub async fn consume(
    client: async_nats::Client,
    pool: PgPool,
    args: NatsArgs,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            result = consume_once(&client, &pool, &args, &stop) => {
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
    pool: &PgPool,
    args: &NatsArgs,
    stop: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: args.nats_stream.clone(),
            subjects: args.nats_subjects.clone(),
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .get_or_create_consumer(
            &args.nats_consumer,
            pull::Config {
                durable_name: Some(args.nats_consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    tracing::info!(stream = %args.nats_stream, consumer = %args.nats_consumer, "consuming events");
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let Some(message) = message else {
            return Ok(());
        };
        handle(pool, &args.nats_stream, message?).await;
    }
}

async fn handle(pool: &PgPool, stream: &str, message: jetstream::Message) {
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
        crate::telemetry::set_parent(&span, parent.as_str());
    }
    match event_ingest(pool, &event).instrument(span).await {
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

/// Announces lifecycle changes on `orchestration.run.<status>` and `orchestration.node.<status>`
/// after they commit. Without NATS it does nothing; a failed publish is logged, never retried:
/// followers that need certainty read the API.
#[derive(Clone, Default)]
pub struct Publisher {
    client: Option<async_nats::Client>,
}

impl Publisher {
    pub fn new(client: Option<async_nats::Client>) -> Self {
        Self { client }
    }

    pub async fn publish(&self, subject: String, body: Value) {
        let Some(client) = &self.client else { return };
        if let Err(e) = client
            .publish(subject.clone(), body.to_string().into())
            .await
        {
            tracing::debug!(subject, error = %e, "lifecycle event not published");
        }
    }

    pub async fn run(&self, status: &str, body: Value) {
        self.publish(
            format!("orchestration.run.{}", status.to_ascii_lowercase()),
            body,
        )
        .await;
    }

    pub async fn node(&self, status: &str, body: Value) {
        self.publish(
            format!("orchestration.node.{}", status.to_ascii_lowercase()),
            body,
        )
        .await;
    }
}

/// A lifecycle event body.
pub fn lifecycle(fields: Value) -> Value {
    let mut body = fields;
    body["at"] = json!(Utc::now());
    body
}
