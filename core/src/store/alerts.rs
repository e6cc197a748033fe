use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::domain::Alert;
use crate::error::Result;

const COLUMNS: &str = "id, fingerprint, status, alertname, labels, annotations, starts_at, ends_at, generator_url, receiver, first_received_at, last_received_at";

fn from_row(r: &PgRow) -> Alert {
    Alert {
        id: r.get("id"),
        fingerprint: r.get("fingerprint"),
        status: r.get("status"),
        alertname: r.get("alertname"),
        labels: r.get::<Json<Value>, _>("labels").0,
        annotations: r.get::<Json<Value>, _>("annotations").0,
        starts_at: r.get("starts_at"),
        ends_at: r.get("ends_at"),
        generator_url: r.get("generator_url"),
        receiver: r.get("receiver"),
        first_received_at: r.get("first_received_at"),
        last_received_at: r.get("last_received_at"),
    }
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
pub async fn alert_upsert(db: impl PgExecutor<'_>, a: &AlertWrite<'_>) -> Result<(Alert, bool)> {
    let sql = format!(
        "INSERT INTO alerts (id, fingerprint, status, alertname, labels, annotations, starts_at, ends_at, generator_url, receiver)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (fingerprint, starts_at) DO UPDATE SET
             status = EXCLUDED.status, labels = EXCLUDED.labels, annotations = EXCLUDED.annotations,
             ends_at = EXCLUDED.ends_at, generator_url = EXCLUDED.generator_url,
             receiver = EXCLUDED.receiver, last_received_at = now()
         RETURNING {COLUMNS}, (xmax = 0) AS inserted"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
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
    Ok((from_row(&row), row.get("inserted")))
}

pub async fn alert_list(
    db: impl PgExecutor<'_>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Alert>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM alerts WHERE ($1::text IS NULL OR status = $1)
         ORDER BY last_received_at DESC, id DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(status)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.iter().map(from_row).collect())
}
