//! All SQL of the orchestrator's own tables, one file per table family. Functions are named
//! noun-then-verb and take the connection or transaction they run in, so callers decide what
//! one transaction covers.

// SQL fragments that several statements must spell identically, as macros so they can be
// `concat!`ed into static query strings.

/// Node states from which a node may still make progress. Spelled as in the predicate of
/// `node_states_open_idx`, so the planner can use that index.
macro_rules! open_node_statuses {
    () => {
        "('PENDING', 'READY', 'RUNNING', 'WAITING_APPROVAL')"
    };
}

/// Run statuses of a run still going, as the partial index `workflow_runs_active_idx` spells them.
macro_rules! active_run_statuses {
    () => {
        "('PENDING', 'RUNNING', 'WAITING_APPROVAL')"
    };
}

/// Run statuses after which a run no longer changes: a statement ending a run leaves runs in
/// them alone.
macro_rules! ended_run_statuses {
    () => {
        "('COMPLETED', 'FAILED', 'CANCELLED')"
    };
}

/// What a statement ending a run returns about it, as `runs::RunEnded::from_row` reads it.
macro_rules! run_ended_columns {
    () => {
        "status, coalesce(started_at, created_at) AS started_at, finished_at, workflow_name"
    };
}

/// The error a FAILED run reports, from its first failed node, as `error` (no row: no node
/// of run `$1` failed).
macro_rules! run_failure {
    () => {
        "SELECT format('node \"%s\" failed: %s', node_id, coalesce(error, 'failed')) AS error
         FROM node_states
         WHERE run_id = $1 AND status = 'FAILED' ORDER BY finished_at, node_id LIMIT 1"
    };
}

pub mod agents;
pub mod alerts;
pub mod approvals;
pub mod cost;
pub mod events;
pub mod nodes;
pub mod projects;
pub mod queue;
pub mod runs;
pub mod tokens;
pub mod workflows;

use crate::error::Error;

/// Maps a unique violation to a conflict with `message`; other errors pass through.
pub(crate) fn unique_violation(e: sqlx::Error, message: impl FnOnce() -> String) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Error::Conflict(message())
        }
        _ => Error::Database(e),
    }
}

/// Column values arrive as text; a value outside the CHECK constraint cannot exist, but a
/// corrupt row must still surface as an error rather than a panic.
pub(crate) fn decode<T>(value: Option<T>, what: &str, raw: &str) -> Result<T, Error> {
    value.ok_or_else(|| {
        Error::Database(sqlx::Error::Decode(
            format!("unexpected {what} value {raw:?} in database").into(),
        ))
    })
}
