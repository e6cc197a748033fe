//! AlertManager's webhook (version 4): each alert is stored once per fingerprint and start,
//! a resolved delivery updates it, and a newly firing alert becomes the event
//! `alert.<alertname>` with `context.alert` = the alert.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::engine::Engine;
use crate::engine::change::Change;
use crate::error::{Invalid, Result};
use crate::ingest::{self, IncomingEvent, Source};
use crate::store::alerts::{self, AlertWrite};
use crate::telemetry::names;

/// The parts of AlertManager's webhook body we use; other fields are accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub version: String,
    #[serde(default)]
    pub receiver: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
    pub fingerprint: String,
}

/// Most alerts one delivery may carry (AlertManager's own max_alerts is unlimited by default;
/// this bounds the work one request can cause).
pub const MAX_ALERTS: usize = 1000;

impl Webhook {
    /// Checks what serde cannot: the version, statuses, alert names, fingerprints.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.version != "4" {
            return Err(Invalid::new(format!(
                "unsupported webhook version {:?}; AlertManager sends version \"4\"",
                self.version
            )));
        }
        if self.alerts.len() > MAX_ALERTS {
            return Err(Invalid::new(format!(
                "at most {MAX_ALERTS} alerts per delivery"
            )));
        }
        for (i, a) in self.alerts.iter().enumerate() {
            if a.status != "firing" && a.status != "resolved" {
                return Err(Invalid::new(format!(
                    "alerts[{i}].status must be \"firing\" or \"resolved\", got {:?}",
                    a.status
                )));
            }
            if a.fingerprint.trim().is_empty() || a.fingerprint.len() > 128 {
                return Err(Invalid::new(format!(
                    "alerts[{i}].fingerprint must be 1 to 128 characters"
                )));
            }
            match a.labels.get("alertname") {
                Some(name) if !name.trim().is_empty() && name.len() <= 256 => {}
                _ => {
                    return Err(Invalid::new(format!(
                        "alerts[{i}].labels.alertname is required"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The event subject of an alert: dots, wildcards and spaces in the name become `_`, so that
/// the name stays one subject token.
pub fn alert_subject(alertname: &str) -> String {
    let token: String = alertname
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("alert.{token}")
}

#[derive(Debug, Default)]
pub struct Received {
    pub received: usize,
    pub triggered_runs: Vec<Uuid>,
}

/// Stores every alert of a delivery and starts the workflows of the newly firing ones, in one
/// transaction.
pub async fn webhook_ingest(engine: &Engine, hook: &Webhook) -> Result<Received> {
    hook.validate()?;
    let mut change = Change::begin(engine).await?;
    let (conn, effects) = change.parts();
    let mut out = Received::default();
    let mut counts = Vec::new();
    for a in &hook.alerts {
        let alertname = a
            .labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or_default();
        let labels = json!(a.labels);
        let annotations = json!(a.annotations);
        // AlertManager writes the zero time for "not ended yet".
        let ends_at = a.ends_at.filter(|t| t.timestamp() > 0);
        let (alert, inserted) = alerts::upsert(
            &mut *conn,
            &AlertWrite {
                fingerprint: &a.fingerprint,
                status: &a.status,
                alertname,
                labels: &labels,
                annotations: &annotations,
                starts_at: a.starts_at,
                ends_at,
                generator_url: a.generator_url.as_deref(),
                receiver: hook.receiver.as_deref(),
            },
        )
        .await?;
        counts.push((alertname.to_string(), a.status.clone()));
        out.received += 1;
        if inserted && a.status == "firing" {
            let alert_json: Value = serde_json::to_value(&alert).unwrap_or(Value::Null);
            let event = IncomingEvent {
                key: format!("alert:{}:{}", a.fingerprint, a.starts_at.to_rfc3339()),
                id: alert.id.to_string(),
                source: Source::Alertmanager,
                subject: alert_subject(alertname),
                payload: json!({ "alert": alert_json }),
                received_at: Utc::now(),
                project_id: None,
            };
            let ingested = ingest::ingest_in(&mut *conn, effects, &event).await?;
            out.triggered_runs.extend(ingested.runs);
        }
    }
    change.commit(engine).await?;
    for (alertname, status) in counts {
        metrics::counter!(names::ALERTS_RECEIVED, "alertname" => alertname, "status" => status)
            .increment(1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        include_str!("../../tests/fixtures/alertmanager/alertmanager-webhook-sample.json");

    #[test]
    fn parses_alertmanagers_sample() {
        let hook: Webhook = serde_json::from_str(SAMPLE).unwrap();
        hook.validate().unwrap();
        assert_eq!(hook.alerts.len(), 1);
        let a = &hook.alerts[0];
        assert_eq!(a.labels["alertname"], "AlwaysFiring");
        assert_eq!(a.fingerprint, "de7889b2804c8e35");
        assert!(
            a.ends_at.unwrap().timestamp() <= 0,
            "the zero time means not ended"
        );
        assert!(
            a.generator_url
                .as_deref()
                .unwrap()
                .starts_with("http://prometheus")
        );
    }

    #[test]
    fn rejects_what_is_not_an_alertmanager_v4_body() {
        let mut hook: Webhook = serde_json::from_str(SAMPLE).unwrap();
        hook.version = "3".into();
        assert!(hook.validate().unwrap_err().message.contains("version"));
        let mut hook: Webhook = serde_json::from_str(SAMPLE).unwrap();
        hook.alerts[0].labels.remove("alertname");
        assert!(hook.validate().unwrap_err().message.contains("alertname"));
        let mut hook: Webhook = serde_json::from_str(SAMPLE).unwrap();
        hook.alerts[0].status = "pending".into();
        assert!(hook.validate().unwrap_err().message.contains("status"));
    }

    #[test]
    fn alert_names_stay_one_subject_token() {
        assert_eq!(alert_subject("AlwaysFiring"), "alert.AlwaysFiring");
        assert_eq!(alert_subject("disk.full *now*"), "alert.disk_full__now_");
    }
}
