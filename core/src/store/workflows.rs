use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::domain::{NodeSpec, Trigger, Workflow, WorkflowStatus};
use crate::error::{Error, Result};

/// The columns a [`Workflow`] is read from.
macro_rules! columns {
    () => {
        "id, project_id, name, trigger, status, version, nodes, created_at, updated_at"
    };
}

impl<'r> sqlx::FromRow<'r, PgRow> for Workflow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(Workflow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            trigger: row.try_get::<Json<Trigger>, _>("trigger")?.0,
            status: row.try_get("status")?,
            version: row.try_get("version")?,
            nodes: row.try_get::<Json<Vec<NodeSpec>>, _>("nodes")?.0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
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

pub async fn insert(
    conn: &mut PgConnection,
    project_id: i64,
    w: &WorkflowWrite<'_>,
) -> Result<Workflow> {
    let workflow = sqlx::query_as::<_, Workflow>(concat!(
        "INSERT INTO workflows (id, project_id, name, trigger, status, version, nodes)
         VALUES ($1, $2, $3, $4, $5, 1, $6) RETURNING ",
        columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(w.name)
    .bind(Json(w.trigger))
    .bind(w.status)
    .bind(Json(w.nodes))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| super::unique_violation(e, duplicate(w.name)))?;
    version_insert(conn, &workflow).await?;
    Ok(workflow)
}

pub async fn update(
    conn: &mut PgConnection,
    project_id: i64,
    id: Uuid,
    w: &WorkflowWrite<'_>,
) -> Result<Workflow> {
    let workflow = sqlx::query_as::<_, Workflow>(concat!(
        "UPDATE workflows SET name = $3, trigger = $4, status = $5, nodes = $6,
                version = version + 1, updated_at = now()
         WHERE project_id = $1 AND id = $2 RETURNING ",
        columns!()
    ))
    .bind(project_id)
    .bind(id)
    .bind(w.name)
    .bind(Json(w.trigger))
    .bind(w.status)
    .bind(Json(w.nodes))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| super::unique_violation(e, duplicate(w.name)))?
    .ok_or(Error::NotFound("workflow"))?;
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

pub async fn get(db: impl PgExecutor<'_>, project_id: i64, id: Uuid) -> Result<Workflow> {
    sqlx::query_as::<_, Workflow>(concat!(
        "SELECT ",
        columns!(),
        " FROM workflows WHERE project_id = $1 AND id = $2"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("workflow"))
}

/// Reads a workflow for triggering; the share lock keeps it from being edited or deleted
/// before the run is committed.
pub async fn get_for_trigger(
    conn: &mut PgConnection,
    project_id: i64,
    id: Uuid,
) -> Result<Workflow> {
    sqlx::query_as::<_, Workflow>(concat!(
        "SELECT ",
        columns!(),
        " FROM workflows WHERE project_id = $1 AND id = $2 FOR SHARE"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("workflow"))
}

pub async fn list(db: impl PgExecutor<'_>, project_id: i64) -> Result<Vec<Workflow>> {
    Ok(sqlx::query_as::<_, Workflow>(concat!(
        "SELECT ",
        columns!(),
        " FROM workflows WHERE project_id = $1 ORDER BY name"
    ))
    .bind(project_id)
    .fetch_all(db)
    .await?)
}

/// Deletes a workflow and its finished runs; refused while a run is still active.
pub async fn delete(conn: &mut PgConnection, project_id: i64, id: Uuid) -> Result<()> {
    let found = sqlx::query("SELECT 1 FROM workflows WHERE project_id = $1 AND id = $2 FOR UPDATE")
        .bind(project_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Err(Error::NotFound("workflow"));
    }
    let active: i64 = sqlx::query_scalar(spelled!(
        "SELECT count(*) FROM workflow_runs WHERE workflow_id = $1 AND status IN {run.active}"
    ))
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

/// An ACTIVE workflow started by events whose subject matches `pattern`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventTrigger {
    pub workflow_id: Uuid,
    pub project_id: i64,
    pub pattern: String,
}

/// The event triggers of ACTIVE workflows (in `project_id`, or in every project).
pub async fn event_triggers(
    db: impl PgExecutor<'_>,
    project_id: Option<i64>,
) -> Result<Vec<EventTrigger>> {
    Ok(sqlx::query_as::<_, EventTrigger>(
        "SELECT id AS workflow_id, project_id, coalesce(trigger->>'pattern', '') AS pattern FROM workflows
         WHERE status = $2 AND trigger->>'type' = 'event' AND ($1::bigint IS NULL OR project_id = $1)",
    )
    .bind(project_id)
    .bind(WorkflowStatus::Active)
    .fetch_all(db)
    .await?)
}
