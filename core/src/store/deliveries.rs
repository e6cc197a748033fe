//! `subscription_deliveries`: one row per subscription and event, linking it to the apalis job
//! (`apalis.jobs`) that delivers it, so a subscription's deliveries can be listed with the
//! job's status and attempts.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::Result;

/// Records that `event_id` goes to `subscription_id` by job `job_id`. False when it was
/// recorded before (a batch fanned out twice): then no second job is pushed.
pub async fn insert(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
    event_id: Uuid,
    event_kind: &str,
    job_id: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO subscription_deliveries (subscription_id, event_id, event_kind, job_id)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(subscription_id)
    .bind(event_id)
    .bind(event_kind)
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps the error of a failed attempt, which the job's own result loses once a later
/// attempt succeeds.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
    event_id: Uuid,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE subscription_deliveries SET last_error = $3, last_attempt_at = now()
         WHERE subscription_id = $1 AND event_id = $2",
    )
    .bind(subscription_id)
    .bind(event_id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// A delivery with its job's state (the job may be gone once cleaned up).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub job_id: String,
    pub event_id: Uuid,
    pub event_kind: String,
    pub created_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// apalis' status: Pending, Queued, Running, Done, Failed, Killed.
    pub job_status: Option<String>,
    pub attempts: Option<i32>,
    pub max_attempts: Option<i32>,
    /// When the next attempt is due.
    pub run_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
}

/// The deliveries of a subscription, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as::<_, Delivery>(
        "SELECT d.job_id, d.event_id, d.event_kind, d.created_at, d.last_error,
                j.status AS job_status, j.attempts, j.max_attempts, j.run_at, j.done_at
         FROM subscription_deliveries d LEFT JOIN apalis.jobs j ON j.id = d.job_id
         WHERE d.subscription_id = $1
         ORDER BY d.created_at DESC, d.event_id DESC LIMIT $2",
    )
    .bind(subscription_id)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Puts off the next attempt of outbox job `job_id` by `delay` (apalis itself would fetch a
/// failed job again at once).
pub async fn job_delay(
    db: impl PgExecutor<'_>,
    job_id: &str,
    delay: std::time::Duration,
) -> Result<()> {
    sqlx::query("UPDATE apalis.jobs SET run_at = now() + make_interval(secs => $2) WHERE id = $1")
        .bind(job_id)
        .bind(delay.as_secs_f64())
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes delivered outbox jobs older than `age` (and the delivery records that point at
/// them); returns how many.
pub async fn jobs_clean(db: impl PgExecutor<'_>, age: std::time::Duration) -> Result<u64> {
    let done = sqlx::query(
        "WITH old AS (
             DELETE FROM apalis.jobs
             WHERE job_type LIKE 'orchestration.%' AND status = 'Done'
               AND done_at < now() - make_interval(secs => $1)
             RETURNING id),
         records AS (DELETE FROM subscription_deliveries d USING old WHERE d.job_id = old.id)
         SELECT count(*) FROM old",
    )
    .bind(age.as_secs_f64())
    .fetch_one(db)
    .await?;
    Ok(sqlx::Row::try_get::<i64, _>(&done, 0)? as u64)
}

/// Outbox jobs not delivered yet, by queue.
pub async fn jobs_pending(db: impl PgExecutor<'_>) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT job_type, count(*) FROM apalis.jobs
         WHERE job_type LIKE 'orchestration.%'
           AND (status IN ('Pending', 'Queued', 'Running') OR (status = 'Failed' AND attempts < max_attempts))
         GROUP BY job_type",
    )
    .fetch_all(db)
    .await?)
}
