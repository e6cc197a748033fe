//! `subscriptions`: a project's webhooks, and which lifecycle events each wants.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub project_id: i64,
    pub url: String,
    /// Event kinds (`run.failed`), `<machine>.*`, or `*` for all.
    pub events: Vec<String>,
    /// Signs each delivery (HMAC-SHA256); never shown again once stored.
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
}

impl Subscription {
    /// Whether the subscription wants events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        wants(&self.events, kind)
    }
}

/// Whether a subscription to `events` wants events of `kind` (`run.failed`).
pub fn wants(events: &[String], kind: &str) -> bool {
    events.iter().any(|e| {
        e == "*"
            || e == kind
            || e.strip_suffix(".*")
                .is_some_and(|machine| kind.split('.').next() == Some(machine))
    })
}

/// The columns a [`Subscription`] is read from.
macro_rules! columns {
    () => {
        "id, project_id, url, events, secret, created_at, created_by"
    };
}

/// Writes a subscription and tells every process (see `outbox::Outbox::watch`).
pub async fn insert(
    db: impl PgExecutor<'_>,
    project_id: i64,
    url: &str,
    events: &[String],
    secret: Option<&str>,
    created_by: Option<&str>,
) -> Result<Subscription> {
    Ok(sqlx::query_as::<_, Subscription>(concat!(
        "WITH inserted AS (
             INSERT INTO subscriptions (id, project_id, url, events, secret, created_by)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        columns!(),
        ")
         SELECT *, pg_notify('orchestration_subscriptions', project_id::text) FROM inserted"
    ))
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(url)
    .bind(events)
    .bind(secret)
    .bind(created_by)
    .fetch_one(db)
    .await?)
}

pub async fn list(db: impl PgExecutor<'_>, project_id: i64) -> Result<Vec<Subscription>> {
    Ok(sqlx::query_as::<_, Subscription>(concat!(
        "SELECT ",
        columns!(),
        " FROM subscriptions WHERE project_id = $1 ORDER BY created_at, id"
    ))
    .bind(project_id)
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<Subscription> {
    sqlx::query_as::<_, Subscription>(concat!(
        "SELECT ",
        columns!(),
        " FROM subscriptions WHERE project_id = $1 AND id = $2"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("subscription"))
}

/// A subscription by id, whatever its project (for delivering); `None` once deleted.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Subscription>> {
    Ok(sqlx::query_as::<_, Subscription>(concat!(
        "SELECT ",
        columns!(),
        " FROM subscriptions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Deletes a subscription (and its delivery records) and tells every process.
pub async fn delete(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<()> {
    sqlx::query_scalar::<_, Uuid>(
        "WITH deleted AS (DELETE FROM subscriptions WHERE project_id = $1 AND id = $2 RETURNING id, project_id)
         SELECT id FROM deleted, LATERAL (SELECT pg_notify('orchestration_subscriptions', project_id::text)) AS n",
    )
    .bind(project_id)
    .bind(id)
    .fetch_optional(db)
    .await?
    .map(|_| ())
    .ok_or(Error::NotFound("subscription"))
}

/// The subscriptions of a project, to fan an event out to.
pub async fn for_project(db: impl PgExecutor<'_>, project_id: i64) -> Result<Vec<Subscription>> {
    list(db, project_id).await
}

/// Projects with at least one subscription.
pub async fn projects(db: impl PgExecutor<'_>) -> Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT project_id FROM subscriptions")
            .fetch_all(db)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::wants;

    #[test]
    fn subscriptions_match_kinds_machines_and_everything() {
        let s = |events: &[&str]| events.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert!(wants(&s(&["*"]), "run.failed"));
        assert!(wants(&s(&["run.failed"]), "run.failed"));
        assert!(!wants(&s(&["run.failed"]), "run.completed"));
        assert!(wants(&s(&["approval.*"]), "approval.requested"));
        assert!(!wants(&s(&["approval.*"]), "run.failed"));
        assert!(!wants(&s(&[]), "run.failed"));
    }
}
