//! All SQL of the orchestrator's own tables, one file per table family. Functions are named
//! verb (or noun-verb) within their module (`runs::insert`, `nodes::complete_attempt`) and
//! take the connection or transaction they run in, so callers decide what one transaction
//! covers. Rows decode with `FromRow`/`try_get`: a corrupt row is an error, never a panic.
//! Nothing here counts metrics or publishes: that is the engine's, after the commit.
//!
//! Every status a statement writes or filters on is spelled from the lifecycle tables with
//! [`spelled!`]: `{node.Retry.from}` is the list of statuses the `Retry` event leaves,
//! `{node.Retry.to}` the status it leads to, `{node.open}`/`{run.active}`/`{run.ended}` the
//! open node and active/ended run statuses (as the partial indexes spell them), and
//! `{node.COMPLETED}` one status. So a statement cannot move a row in a way the table does
//! not allow.

use crate::error::Error;
use crate::lifecycle::{self, Approval, Attempt, Machine, Node, Run};

/// A statement whose `{machine.…}` placeholders are filled from the lifecycle tables, once.
macro_rules! spelled {
    ($template:expr) => {{
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| $crate::store::spell($template));
        SQL.as_str()
    }};
}

/// The channel a transaction that makes a node READY notifies, so idle workers wake at once.
macro_rules! ready_channel {
    () => {
        "orchestration_node_ready"
    };
}

/// What a statement ending a run returns about it, as `runs::Ended` reads it.
macro_rules! run_ended_columns {
    () => {
        "status, error, coalesce(started_at, created_at) AS started_at, finished_at"
    };
}

/// The error a FAILED run reports, from its first failed node, as `error` (no row: no node
/// of run `$1` failed).
macro_rules! run_failure {
    () => {
        "SELECT format('node \"%s\" failed: %s', node_id, coalesce(error, 'failed')) AS error
         FROM node_states
         WHERE run_id = $1 AND status = {node.FAILED} ORDER BY finished_at, node_id LIMIT 1"
    };
}

/// Closes attempt `$3` of node `$2` of run `$1` by the attempt `$event` if it is still open,
/// with the output, error, exit code and rate that `nodes::bind_attempt_end` binds as `$4`..`$7`.
macro_rules! attempt_finish {
    ($event:literal) => {
        concat!(
            "UPDATE agent_runs
             SET status = {attempt.", $event, ".to}, output = $4, error = $5, exit_code = $6,
                 finished_at = clock_timestamp(),
                 duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint,
                 cost = extract(epoch FROM clock_timestamp() - started_at) / 60.0 * $7
             WHERE run_id = $1 AND node_id = $2 AND attempt = $3 AND status IN {attempt.", $event, ".from}"
        )
    };
}

/// See [`ready_channel!`].
pub const READY_CHANNEL: &str = ready_channel!();

pub mod agents;
pub mod alerts;
pub mod approvals;
pub mod attempts;
pub mod cost;
pub mod deliveries;
pub mod details;
pub mod events;
pub mod nodes;
pub mod projects;
pub mod queue;
pub mod runs;
pub mod subscriptions;
pub mod tokens;
pub mod workflows;

/// Fills the placeholders of a statement template (see the module doc). An unknown
/// placeholder is a programming error that the first execution of the statement reports.
pub(crate) fn spell(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').map(|close| (&after[..close], close)) {
            Some((name, close)) if is_placeholder(name) => {
                out.push_str(&fill(name));
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_placeholder(name: &str) -> bool {
    matches!(
        name.split('.').next(),
        Some("run" | "node" | "attempt" | "approval")
    ) && name.contains('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
}

fn fill(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let filled = match parts[0] {
        "run" => fill_in::<Run>(&parts[1..], |s| match s {
            "active" => Some(lifecycle::sql_list(active_runs())),
            "ended" => Some(lifecycle::sql_list(
                lifecycle::RunStatus::ALL.iter().filter(|s| s.is_terminal()),
            )),
            _ => None,
        }),
        "node" => fill_in::<Node>(&parts[1..], |s| match s {
            "open" => Some(lifecycle::sql_list(
                lifecycle::NodeStatus::ALL.iter().filter(|s| s.is_open()),
            )),
            _ => None,
        }),
        "attempt" => fill_in::<Attempt>(&parts[1..], |_| None),
        "approval" => fill_in::<Approval>(&parts[1..], |_| None),
        _ => None,
    };
    filled.unwrap_or_else(|| panic!("unknown status placeholder {{{name}}} in a statement"))
}

/// Runs that are still going: the statuses a run can be cancelled in.
fn active_runs() -> Vec<lifecycle::RunStatus> {
    Run::sources(lifecycle::RunEvent::Cancel)
}

fn fill_in<M: Machine>(parts: &[&str], special: impl Fn(&str) -> Option<String>) -> Option<String>
where
    M::Event: 'static,
{
    match parts {
        [one] => special(one).or_else(|| {
            M::STATUSES
                .iter()
                .find(|s| s.to_string() == *one)
                .map(|s| format!("'{s}'"))
        }),
        [event, side] => {
            let event = M::EVENTS
                .iter()
                .copied()
                .find(|e| format!("{e:?}") == *event)?;
            match *side {
                "from" => Some(lifecycle::sql_list(M::sources(event))),
                "to" => Some(format!("'{}'", M::target(event))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Maps a unique violation to a conflict with `message`; other errors pass through.
pub(crate) fn unique_violation(e: sqlx::Error, message: impl FnOnce() -> String) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Error::Conflict(message())
        }
        _ => Error::Database(e),
    }
}

#[cfg(test)]
mod tests {
    use super::spell;

    #[test]
    fn statements_spell_statuses_from_the_lifecycle_tables() {
        assert_eq!(
            spell("UPDATE n SET status = {node.Retry.to} WHERE status IN {node.Retry.from}"),
            "UPDATE n SET status = 'READY' WHERE status IN ('RUNNING')"
        );
        assert_eq!(
            spell("{node.open} {run.active} {run.ended} {node.COMPLETED}"),
            "('PENDING', 'READY', 'RUNNING', 'WAITING_APPROVAL') ('PENDING', 'RUNNING', 'WAITING_APPROVAL') ('COMPLETED', 'FAILED', 'CANCELLED') 'COMPLETED'"
        );
        // JSON and format braces are left alone.
        assert_eq!(
            spell("coalesce($2, '{}'::jsonb)"),
            "coalesce($2, '{}'::jsonb)"
        );
        assert_eq!(
            spell("format('node \"%s\"', x)"),
            "format('node \"%s\"', x)"
        );
    }

    #[test]
    #[should_panic(expected = "unknown status placeholder")]
    fn a_misspelled_placeholder_is_caught() {
        spell("{node.Retyr.to}");
    }
}
