//! The store's errors, with lost races and other named constraints told apart by constraint name.

use keel_domain::event::DecodeError;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream moved since it was read.
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    Conflict { stream_id: Uuid, expected: i64, actual: i64 },
    /// A named unique constraint other than the stream version (a reservation).
    #[error("unique constraint {0} violated")]
    Unique(String),
    #[error("event at position {position} cannot be decoded: {source}")]
    Decode { position: i64, source: DecodeError },
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Transient failures worth another try: lost races, serialization failures, deadlocks,
    /// dropped connections. A decode error or a constraint is not transient.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Conflict { .. } => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
                _ => false,
            },
            StoreError::Unique(_) | StoreError::Decode { .. } | StoreError::Invalid(_) => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error()
            && db.is_unique_violation()
            && let Some(c) = db.constraint()
        {
            return StoreError::Unique(c.to_owned());
        }
        StoreError::Database(e)
    }
}
