//! Saving workflow definitions: each save validates the node list against the project's agents
//! inside the transaction that writes it, so a workflow in the table is always a valid DAG.

use sqlx::PgPool;
use uuid::Uuid;

use crate::dag::Dag;
use crate::domain::{Trigger, Workflow, WorkflowInput, validate_name};
use crate::error::{Invalid, Result};
use crate::store::{agents, workflows};

/// Checks a NATS-style subject pattern: dot-separated tokens, `*` for one token, `>` for the
/// rest (last token only).
pub fn validate_trigger(trigger: &Trigger) -> Result<(), Invalid> {
    let Trigger::Event { pattern } = trigger else {
        return Ok(());
    };
    if pattern.is_empty() || pattern.len() > 256 {
        return Err(Invalid::new("trigger.pattern must be 1 to 256 characters"));
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        let ok = match *t {
            "" => false,
            ">" => i == tokens.len() - 1,
            "*" => true,
            t => t
                .chars()
                .all(|c| !c.is_whitespace() && c != '*' && c != '>'),
        };
        if !ok {
            return Err(Invalid::new(format!(
                "trigger.pattern {pattern:?} is not a valid subject pattern (dot-separated tokens, '*' for one token, '>' last for the rest)"
            )));
        }
    }
    Ok(())
}

/// Creates (`id` None) or replaces a workflow.
pub async fn workflow_save(
    pool: &PgPool,
    project_id: i64,
    id: Option<Uuid>,
    input: WorkflowInput,
) -> Result<Workflow> {
    validate_name("name", &input.name)?;
    validate_trigger(&input.trigger)?;
    let mut tx = pool.begin().await?;
    let refs: Vec<String> = input.nodes.iter().map(|n| n.agent_id.clone()).collect();
    let known = agents::resolve_many(&mut tx, project_id, &refs).await?;
    let dag = Dag::parse(input.nodes, &known)?;
    let write = workflows::WorkflowWrite {
        name: input.name.trim(),
        trigger: &input.trigger,
        status: input.status,
        nodes: dag.nodes(),
    };
    let workflow = match id {
        None => workflows::insert(&mut tx, project_id, &write).await?,
        Some(id) => workflows::update(&mut tx, project_id, id, &write).await?,
    };
    tx.commit().await?;
    Ok(workflow)
}
