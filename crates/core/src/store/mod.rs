//! All SQL of the orchestrator's own tables, one file per table family. Functions are named
//! noun-then-verb and take the connection or transaction they run in, so callers decide what
//! one transaction covers.

pub mod agents;
pub mod alerts;
pub mod approvals;
pub mod cost;
pub mod events;
pub mod nodes;
pub mod projects;
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
