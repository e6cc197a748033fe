use std::collections::HashMap;

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::domain::{Agent, AgentInput, AgentType, RiskLevel};
use crate::error::{Error, Result};

const COLUMNS: &str = "id, project_id, name, type, risk_level, entrypoint, args, url, capabilities, timeout_seconds, retry, cost_per_minute, created_at, updated_at";

fn from_row(row: &PgRow) -> Result<Agent> {
    let kind: String = row.get("type");
    let risk: String = row.get("risk_level");
    let timeout: Option<i32> = row.get("timeout_seconds");
    Ok(Agent {
        id: row.get("id"),
        project_id: row.get("project_id"),
        name: row.get("name"),
        agent_type: super::decode(AgentType::parse(&kind), "agent type", &kind)?,
        risk_level: super::decode(RiskLevel::parse(&risk), "risk level", &risk)?,
        entrypoint: row.get("entrypoint"),
        args: row.get::<Json<Vec<String>>, _>("args").0,
        url: row.get("url"),
        capabilities: row.get::<Json<_>, _>("capabilities").0,
        timeout_seconds: timeout.map(|t| t as u32),
        retry: row.get::<Option<Json<_>>, _>("retry").map(|j| j.0),
        cost_per_minute: row.get("cost_per_minute"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

fn duplicate(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("an agent named \"{name}\" exists already in this project")
}

pub async fn agent_insert(
    db: impl PgExecutor<'_>,
    project_id: i64,
    input: &AgentInput,
) -> Result<Agent> {
    let sql = format!(
        "INSERT INTO agents (id, project_id, name, type, risk_level, entrypoint, args, url, capabilities, timeout_seconds, retry, cost_per_minute)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(project_id)
        .bind(&input.name)
        .bind(input.agent_type.as_str())
        .bind(input.risk_level.as_str())
        .bind(&input.entrypoint)
        .bind(Json(&input.args))
        .bind(&input.url)
        .bind(Json(&input.capabilities))
        .bind(input.timeout_seconds.map(|t| t as i32))
        .bind(input.retry.as_ref().map(Json))
        .bind(input.cost_per_minute)
        .fetch_one(db)
        .await
        .map_err(|e| super::unique_violation(e, duplicate(&input.name)))?;
    from_row(&row)
}

pub async fn agent_update(
    db: impl PgExecutor<'_>,
    project_id: i64,
    id: Uuid,
    input: &AgentInput,
) -> Result<Agent> {
    let sql = format!(
        "UPDATE agents SET name = $3, type = $4, risk_level = $5, entrypoint = $6, args = $7, url = $8,
                capabilities = $9, timeout_seconds = $10, retry = $11, cost_per_minute = $12, updated_at = now()
         WHERE project_id = $1 AND id = $2 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .bind(&input.name)
        .bind(input.agent_type.as_str())
        .bind(input.risk_level.as_str())
        .bind(&input.entrypoint)
        .bind(Json(&input.args))
        .bind(&input.url)
        .bind(Json(&input.capabilities))
        .bind(input.timeout_seconds.map(|t| t as i32))
        .bind(input.retry.as_ref().map(Json))
        .bind(input.cost_per_minute)
        .fetch_optional(db)
        .await
        .map_err(|e| super::unique_violation(e, duplicate(&input.name)))?;
    match row {
        Some(row) => from_row(&row),
        None => Err(Error::NotFound("agent")),
    }
}

pub async fn agent_get(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<Agent> {
    let sql = format!("SELECT {COLUMNS} FROM agents WHERE project_id = $1 AND id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    match row {
        Some(row) => from_row(&row),
        None => Err(Error::NotFound("agent")),
    }
}

pub async fn agent_list(db: impl PgExecutor<'_>, project_id: i64) -> Result<Vec<Agent>> {
    let sql = format!("SELECT {COLUMNS} FROM agents WHERE project_id = $1 ORDER BY name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The agents that `refs` name (by id or by name), keyed by each reference as written, locked
/// against deletion until the caller's transaction ends.
pub async fn agent_resolve_many(
    conn: &mut PgConnection,
    project_id: i64,
    refs: &[String],
) -> Result<HashMap<String, Agent>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM agents WHERE project_id = $1 AND (id::text = ANY($2) OR name = ANY($2)) FOR SHARE"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(refs)
        .fetch_all(&mut *conn)
        .await?;
    let mut by_ref = HashMap::new();
    for row in &rows {
        let agent = from_row(row)?;
        by_ref.insert(agent.name.clone(), agent.clone());
        by_ref.insert(agent.id.to_string(), agent);
    }
    Ok(by_ref)
}

/// Deletes an agent unless an ACTIVE workflow uses it.
pub async fn agent_delete(conn: &mut PgConnection, project_id: i64, id: Uuid) -> Result<()> {
    let agent = sqlx::query("SELECT name FROM agents WHERE project_id = $1 AND id = $2 FOR UPDATE")
        .bind(project_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(agent) = agent else {
        return Err(Error::NotFound("agent"));
    };
    let name: String = agent.get("name");
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
