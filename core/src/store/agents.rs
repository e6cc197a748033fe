use std::collections::HashMap;

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::domain::{Agent, AgentInput};
use crate::error::{Error, Result};

/// The columns an [`Agent`] is read from.
macro_rules! columns {
    () => {
        "id, project_id, name, type, risk_level, entrypoint, args, url, capabilities, timeout_seconds, retry, cost_per_minute, created_at, updated_at"
    };
}

impl<'r> sqlx::FromRow<'r, PgRow> for Agent {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        let timeout: Option<i32> = row.try_get("timeout_seconds")?;
        Ok(Agent {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            agent_type: row.try_get("type")?,
            risk_level: row.try_get("risk_level")?,
            entrypoint: row.try_get("entrypoint")?,
            args: row.try_get::<Json<Vec<String>>, _>("args")?.0,
            url: row.try_get("url")?,
            capabilities: row.try_get::<Json<_>, _>("capabilities")?.0,
            timeout_seconds: timeout.map(|t| t.max(0) as u32),
            retry: row.try_get::<Option<Json<_>>, _>("retry")?.map(|j| j.0),
            cost_per_minute: row.try_get("cost_per_minute")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

fn duplicate(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("an agent named \"{name}\" exists already in this project")
}

pub async fn insert(db: impl PgExecutor<'_>, project_id: i64, input: &AgentInput) -> Result<Agent> {
    sqlx::query_as::<_, Agent>(concat!(
        "INSERT INTO agents (id, project_id, name, type, risk_level, entrypoint, args, url, capabilities, timeout_seconds, retry, cost_per_minute)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING ",
        columns!()
    ))
        .bind(Uuid::now_v7())
        .bind(project_id)
        .bind(&input.name)
        .bind(input.agent_type)
        .bind(input.risk_level)
        .bind(&input.entrypoint)
        .bind(Json(&input.args))
        .bind(&input.url)
        .bind(Json(&input.capabilities))
        .bind(input.timeout_seconds.map(|t| t as i32))
        .bind(input.retry.as_ref().map(Json))
        .bind(input.cost_per_minute)
        .fetch_one(db)
        .await
        .map_err(|e| super::unique_violation(e, duplicate(&input.name)))
}

pub async fn update(
    db: impl PgExecutor<'_>,
    project_id: i64,
    id: Uuid,
    input: &AgentInput,
) -> Result<Agent> {
    sqlx::query_as::<_, Agent>(concat!(
        "UPDATE agents SET name = $3, type = $4, risk_level = $5, entrypoint = $6, args = $7, url = $8,
                capabilities = $9, timeout_seconds = $10, retry = $11, cost_per_minute = $12, updated_at = now()
         WHERE project_id = $1 AND id = $2 RETURNING ",
        columns!()
    ))
        .bind(project_id)
        .bind(id)
        .bind(&input.name)
        .bind(input.agent_type)
        .bind(input.risk_level)
        .bind(&input.entrypoint)
        .bind(Json(&input.args))
        .bind(&input.url)
        .bind(Json(&input.capabilities))
        .bind(input.timeout_seconds.map(|t| t as i32))
        .bind(input.retry.as_ref().map(Json))
        .bind(input.cost_per_minute)
        .fetch_optional(db)
        .await
        .map_err(|e| super::unique_violation(e, duplicate(&input.name)))?
        .ok_or(Error::NotFound("agent"))
}

pub async fn get(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<Agent> {
    sqlx::query_as::<_, Agent>(concat!(
        "SELECT ",
        columns!(),
        " FROM agents WHERE project_id = $1 AND id = $2"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("agent"))
}

pub async fn list(db: impl PgExecutor<'_>, project_id: i64) -> Result<Vec<Agent>> {
    Ok(sqlx::query_as::<_, Agent>(concat!(
        "SELECT ",
        columns!(),
        " FROM agents WHERE project_id = $1 ORDER BY name"
    ))
    .bind(project_id)
    .fetch_all(db)
    .await?)
}

/// The agents that `refs` name (by id or by name), keyed by each reference as written, locked
/// against deletion until the caller's transaction ends.
pub async fn resolve_many(
    conn: &mut PgConnection,
    project_id: i64,
    refs: &[String],
) -> Result<HashMap<String, Agent>> {
    let agents = sqlx::query_as::<_, Agent>(concat!(
        "SELECT ",
        columns!(),
        " FROM agents WHERE project_id = $1 AND (id::text = ANY($2) OR name = ANY($2)) FOR SHARE"
    ))
    .bind(project_id)
    .bind(refs)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_ref = HashMap::new();
    for agent in agents {
        by_ref.insert(agent.name.clone(), agent.clone());
        by_ref.insert(agent.id.to_string(), agent);
    }
    Ok(by_ref)
}

/// Deletes an agent unless an ACTIVE workflow uses it.
pub async fn delete(conn: &mut PgConnection, project_id: i64, id: Uuid) -> Result<()> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT name FROM agents WHERE project_id = $1 AND id = $2 FOR UPDATE")
            .bind(project_id)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(name) = name else {
        return Err(Error::NotFound("agent"));
    };
    let users: Vec<String> = sqlx::query_scalar(
        "SELECT w.name FROM workflows w
         WHERE w.project_id = $1 AND w.status = 'ACTIVE'
           AND EXISTS (SELECT 1 FROM jsonb_array_elements(w.nodes) n
                       WHERE n->>'agentId' = $2::text OR n->>'agentId' = $3)
         ORDER BY w.name",
    )
    .bind(project_id)
    .bind(id)
    .bind(&name)
    .fetch_all(&mut *conn)
    .await?;
    if !users.is_empty() {
        return Err(Error::conflict(format!(
            "agent \"{name}\" is used by active workflow(s): {}",
            users.join(", ")
        )));
    }
    sqlx::query("DELETE FROM agents WHERE project_id = $1 AND id = $2")
        .bind(project_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
