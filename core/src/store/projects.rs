use sqlx::{PgExecutor, Row};

use crate::domain::Project;
use crate::error::{Error, Result};

pub async fn project_insert(db: impl PgExecutor<'_>, name: &str) -> Result<Project> {
    let row = sqlx::query("INSERT INTO projects (name) VALUES ($1) RETURNING id, name, created_at")
        .bind(name)
        .fetch_one(db)
        .await
        .map_err(|e| {
            super::unique_violation(e, || format!("a project named \"{name}\" exists already"))
        })?;
    Ok(Project {
        id: row.get("id"),
        name: row.get("name"),
        created_at: row.get("created_at"),
    })
}

pub async fn project_list(db: impl PgExecutor<'_>) -> Result<Vec<Project>> {
    let rows = sqlx::query("SELECT id, name, created_at FROM projects ORDER BY id")
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| Project {
            id: row.get("id"),
            name: row.get("name"),
            created_at: row.get("created_at"),
        })
        .collect())
}

pub async fn project_exists(db: impl PgExecutor<'_>, id: i64) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM projects WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .is_some())
}

pub async fn project_require(db: impl PgExecutor<'_>, id: i64) -> Result<()> {
    if project_exists(db, id).await? {
        Ok(())
    } else {
        Err(Error::NotFound("project"))
    }
}
