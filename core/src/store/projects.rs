//! `projects`: they scope agents, workflows, runs, approvals, tokens and subscriptions.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::error::{Error, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(db: impl PgExecutor<'_>, name: &str) -> Result<Project> {
    sqlx::query_as::<_, Project>(
        "INSERT INTO projects (name) VALUES ($1) RETURNING id, name, created_at",
    )
    .bind(name)
    .fetch_one(db)
    .await
    .map_err(|e| {
        super::unique_violation(e, || format!("a project named \"{name}\" exists already"))
    })
}

pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Project>> {
    Ok(
        sqlx::query_as::<_, Project>("SELECT id, name, created_at FROM projects ORDER BY id")
            .fetch_all(db)
            .await?,
    )
}

/// Ok when project `id` exists; `NotFound("project")` when it does not.
pub async fn require(db: impl PgExecutor<'_>, id: i64) -> Result<()> {
    sqlx::query_scalar::<_, i32>("SELECT 1 FROM projects WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .map(|_| ())
        .ok_or(Error::NotFound("project"))
}
