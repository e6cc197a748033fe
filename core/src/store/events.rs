//! `events`: every event that may start workflows, recorded once by its key, with the runs it
//! started, so a redelivered event starts nothing new.

use serde_json::Value;
use sqlx::PgExecutor;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::Result;

/// Records an event once. False when its key was seen before (a redelivery).
pub async fn insert(
    db: impl PgExecutor<'_>,
    key: &str,
    source: &str,
    subject: &str,
    payload: &Value,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO events (event_key, source, subject, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_key) DO NOTHING",
    )
    .bind(key)
    .bind(source)
    .bind(subject)
    .bind(Json(payload))
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The runs an earlier delivery of the event started.
pub async fn runs(db: impl PgExecutor<'_>, key: &str) -> Result<Vec<Uuid>> {
    let runs: Option<Vec<Uuid>> =
        sqlx::query_scalar("SELECT triggered_runs FROM events WHERE event_key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?;
    Ok(runs.unwrap_or_default())
}

pub async fn set_runs(db: impl PgExecutor<'_>, key: &str, runs: &[Uuid]) -> Result<()> {
    sqlx::query("UPDATE events SET triggered_runs = $2 WHERE event_key = $1")
        .bind(key)
        .bind(runs)
        .execute(db)
        .await?;
    Ok(())
}
