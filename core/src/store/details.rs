//! A run with everything that happened in it, as `GET /api/runs/{id}` shows it.

use sqlx::PgConnection;
use uuid::Uuid;

use super::approvals::{self, Approval};
use super::attempts::{self, Attempt};
use super::nodes::{self, NodeState};
use super::runs::{self, Run};
use crate::error::Result;

pub struct RunDetail {
    pub run: Run,
    pub nodes: Vec<NodeState>,
    pub attempts: Vec<Attempt>,
    pub approvals: Vec<Approval>,
}

/// Run `run_id` of `project_id` with its nodes, attempts and approvals.
pub async fn run(conn: &mut PgConnection, project_id: i64, run_id: Uuid) -> Result<RunDetail> {
    let run = runs::get(&mut *conn, project_id, run_id).await?;
    Ok(RunDetail {
        run,
        nodes: nodes::list_for_run(&mut *conn, run_id).await?,
        attempts: attempts::list_for_run(&mut *conn, run_id).await?,
        approvals: approvals::list_for_run(&mut *conn, run_id).await?,
    })
}
