use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::domain::{NodeSpec, Trigger, Workflow, WorkflowStatus};
use crate::error::{Error, Result};

const COLUMNS: &str =
    "id, project_id, name, trigger, status, version, nodes, created_at, updated_at";

fn from_row(row: &PgRow) -> Result<Workflow> {
    let status: String = row.get("status");
    Ok(Workflow {
        id: row.get("id"),
        project_id: row.get("project_id"),
        name: row.get("name"),
        trigger: row.get::<Json<Trigger>, _>("trigger").0,
        status: super::decode(WorkflowStatus::parse(&status), "workflow status", &status)?,
        version: row.get("version"),
        nodes: row.get::<Json<Vec<NodeSpec>>, _>("nodes").0,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

pub struct WorkflowWrite<'a> {
    pub name: &'a str,
    pub trigger: &'a Trigger,
    pub status: WorkflowStatus,
    pub nodes: &'a [NodeSpec],
}

fn duplicate(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("a workflow named \"{name}\" exists already in this project")
}

pub async fn workflow_insert(
    conn: &mut PgConnection,
    project_id: i64,
    w: &WorkflowWrite<'_>,
) -> Result<Workflow> {
    let sql = format!(
        "INSERT INTO workflows (id, project_id, name, trigger, status, version, nodes)
         VALUES ($1, $2, $3, $4, $5, 1, $6) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(project_id)
        .bind(w.name)
        .bind(Json(w.trigger))
        .bind(w.status.as_str())
        .bind(Json(w.nodes))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| super::unique_violation(e, duplicate(w.name)))?;
    let workflow = from_row(&row)?;
    version_insert(conn, &workflow).await?;
    Ok(workflow)
}

pub async fn workflow_update(
    conn: &mut PgConnection,
    project_id: i64,
    id: Uuid,
    w: &WorkflowWrite<'_>,
) -> Result<Workflow> {
    let sql = format!(
        "UPDATE workflows SET name = $3, trigger = $4, status = $5, nodes = $6,
                version = version + 1, updated_at = now()
         WHERE project_id = $1 AND id = $2 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .bind(w.name)
        .bind(Json(w.trigger))
        .bind(w.status.as_str())
        .bind(Json(w.nodes))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| super::unique_violation(e, duplicate(w.name)))?;
    let Some(row) = row else {
        return Err(Error::NotFound("workflow"));
    };
    let workflow = from_row(&row)?;
    version_insert(conn, &workflow).await?;
    Ok(workflow)
}

async fn version_insert(conn: &mut PgConnection, w: &Workflow) -> Result<()> {
    sqlx::query("INSERT INTO workflow_versions (workflow_id, version, trigger, nodes) VALUES ($1, $2, $3, $4)")
        .bind(w.id)
        .bind(w.version)
        .bind(Json(&w.trigger))
        .bind(Json(&w.nodes))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn workflow_get(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<Workflow> {
    let sql = format!("SELECT {COLUMNS} FROM workflows WHERE project_id = $1 AND id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    match row {
        Some(row) => from_row(&row),
        None => Err(Error::NotFound("workflow")),
    }
}

/// Reads a workflow for triggering; the share lock keeps it from being edited or deleted
/// before the run is committed.
pub async fn workflow_get_for_trigger(
    conn: &mut PgConnection,
    project_id: i64,
    id: Uuid,
) -> Result<Workflow> {
    let sql =
        format!("SELECT {COLUMNS} FROM workflows WHERE project_id = $1 AND id = $2 FOR SHARE");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(row) => from_row(&row),
        None => Err(Error::NotFound("workflow")),
    }
}

pub async fn workflow_list(db: impl PgExecutor<'_>, project_id: i64) -> Result<Vec<Workflow>> {
    let sql = format!("SELECT {COLUMNS} FROM workflows WHERE project_id = $1 ORDER BY name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Deletes a workflow and its finished runs; refused while a run is still active.
pub async fn workflow_delete(conn: &mut PgConnection, project_id: i64, id: Uuid) -> Result<()> {
    let found = sqlx::query("SELECT 1 FROM workflows WHERE project_id = $1 AND id = $2 FOR UPDATE")
        .bind(project_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Err(Error::NotFound("workflow"));
    }
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflow_runs WHERE workflow_id = $1 AND status IN ('PENDING', 'RUNNING', 'WAITING_APPROVAL')",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if active > 0 {
        return Err(Error::conflict(format!(
            "the workflow has {active} active run(s); cancel them or wait for them to finish"
        )));
    }
    sqlx::query("DELETE FROM workflows WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// ACTIVE workflows started by events (in `project_id`, or in every project): id, project and
/// subject pattern.
pub async fn workflow_event_triggers(
    db: impl PgExecutor<'_>,
    project_id: Option<i64>,
) -> Result<Vec<(Uuid, i64, String)>> {
    let rows = sqlx::query(
        "SELECT id, project_id, trigger->>'pattern' AS pattern FROM workflows
         WHERE status = 'ACTIVE' AND trigger->>'type' = 'event' AND ($1::bigint IS NULL OR project_id = $1)",
    )
    .bind(project_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get("id"),
                r.get("project_id"),
                r.get::<Option<String>, _>("pattern").unwrap_or_default(),
            )
        })
        .collect())
}
