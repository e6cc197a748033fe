//! `alerts`: AlertManager's alerts, one row per fingerprint and start.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::error::Result;

/// An alert as stored. Serialized as the run context of the workflows it starts
/// (`{{ context.alert.labels.severity }}`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: Uuid,
    pub fingerprint: String,
    pub status: String,
    pub alertname: String,
    #[sqlx(json)]
    pub labels: Value,
    #[sqlx(json)]
    pub annotations: Value,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<String>,
    pub receiver: Option<String>,
    pub first_received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
}

/// The columns an [`Alert`] is read from.
macro_rules! columns {
    () => {
        "id, fingerprint, status, alertname, labels, annotations, starts_at, ends_at, generator_url, receiver, first_received_at, last_received_at"
    };
}

pub struct AlertWrite<'a> {
    pub fingerprint: &'a str,
    pub status: &'a str,
    pub alertname: &'a str,
    pub labels: &'a Value,
    pub annotations: &'a Value,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<&'a str>,
    pub receiver: Option<&'a str>,
}

/// Stores an alert, or updates the one with the same fingerprint and start; returns it and
/// whether this delivery created it.
pub async fn upsert(db: impl PgExecutor<'_>, a: &AlertWrite<'_>) -> Result<(Alert, bool)> {
    let row = sqlx::query(concat!(
        "INSERT INTO alerts (id, fingerprint, status, alertname, labels, annotations, starts_at, ends_at, generator_url, receiver)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (fingerprint, starts_at) DO UPDATE SET
             status = EXCLUDED.status, labels = EXCLUDED.labels, annotations = EXCLUDED.annotations,
             ends_at = EXCLUDED.ends_at, generator_url = EXCLUDED.generator_url,
             receiver = EXCLUDED.receiver, last_received_at = now()
         RETURNING ",
        columns!(),
        ", (xmax = 0) AS inserted"
    ))
        .bind(Uuid::now_v7())
        .bind(a.fingerprint)
        .bind(a.status)
        .bind(a.alertname)
        .bind(Json(a.labels))
        .bind(Json(a.annotations))
        .bind(a.starts_at)
        .bind(a.ends_at)
        .bind(a.generator_url)
        .bind(a.receiver)
        .fetch_one(db)
        .await?;
    Ok((
        <Alert as sqlx::FromRow<_>>::from_row(&row)?,
        row.try_get("inserted")?,
    ))
}

pub async fn list(db: impl PgExecutor<'_>, status: Option<&str>, limit: i64) -> Result<Vec<Alert>> {
    Ok(sqlx::query_as::<_, Alert>(concat!(
        "SELECT ",
        columns!(),
        " FROM alerts WHERE ($1::text IS NULL OR status = $1)
         ORDER BY last_received_at DESC, id DESC LIMIT $2"
    ))
    .bind(status)
    .bind(limit)
    .fetch_all(db)
    .await?)
}
