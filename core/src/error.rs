//! The error type of the library boundary. The API maps each variant to an HTTP status in one
//! place (`orchestration_api::error`); nothing here knows about HTTP.

/// Input that can never succeed as sent: the message tells the user what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub message: String,
}

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// A concurrent trigger with the same idempotency key committed first; the engine answers
    /// with that trigger's run.
    #[error("idempotency key taken by a concurrent trigger")]
    IdempotencyKeyTaken,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
