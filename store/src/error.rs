//! The store's errors, with lost races and other named constraints told apart by constraint name.

use keel_domain::event::DecodeError;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream moved since it was read.
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    Conflict { stream_id: Uuid, expected: i64, actual: i64 },
    /// Something a command read in an earlier transaction changed before its append (the tenant's
    /// status, the caller's role, another stream it decided on, a member it named): nothing was
    /// written, and the command is decided again on fresh state.
    #[error("what the command read has changed: {0}")]
    ReadSetChanged(String),
    /// An append made as its own transaction lost its connection, and whether it committed could
    /// not be learned within the resolve window.
    #[error("the append's outcome is unknown: its connection was lost and the database could not be asked")]
    OutcomeUnknown,
    /// A named unique constraint other than the stream version (a reservation).
    #[error("unique constraint {0} violated")]
    Unique(String),
    #[error("event at position {position} cannot be decoded: {source}")]
    Decode { position: i64, source: DecodeError },
    /// A stored value this binary cannot read: an unknown enum name, a malformed `xid8`.
    #[error("{0}")]
    Corrupt(String),
    /// A pagination cursor that does not decode to a position in the listing asked for.
    #[error("bad cursor")]
    BadCursor,
    /// An operator's request to the analyst commands that cannot be carried out.
    #[error("{0}")]
    Analyst(String),
    /// A setting the store cannot work with: `DATABASE_URL`, the master key, a service role.
    #[error("{0}")]
    Config(String),
    /// A tenant archive refused on import (`archive`): broken chain, tampering, truncation.
    #[error("the archive is refused: {0}")]
    Archive(String),
    /// Bridge tenancy (`placement`): an unknown database, a tenant placed twice, a move that
    /// cannot go on.
    #[error("{0}")]
    Placement(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A member's wrapped data key that does not open with the configured master key.
    #[error("{0}")]
    Key(String),
    /// A value that does not serialize to JSON for storing (metadata, a snapshot).
    #[error("{0}")]
    Encode(String),
    #[error("nothing to append")]
    NothingToAppend,
    #[error("tenant {0} has no control-plane row")]
    NoControlPlaneRow(String),
    #[error("usage units overflow a bigint (adding {0})")]
    UsageOverflow(u64),
    #[error("idempotency key {0} has no stored response")]
    NoStoredResponse(String),
    /// The database is known to be unreachable (the availability breaker is open): nothing was
    /// tried, nothing was written.
    #[error("the database is unreachable")]
    Unavailable,
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Another event store behind `EventStore` (KurrentDB) failed or refused the call.
    #[error("event store: {0}")]
    Backend(String),
}

impl StoreError {
    /// Transient failures worth another try: lost races, serialization failures, deadlocks,
    /// dropped connections, a pool that had no connection, a database known to be away. A decode
    /// error or a constraint is not transient.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Conflict { .. } | StoreError::ReadSetChanged(_) | StoreError::Unavailable => true,
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")) => true,
                _ => self.is_connection_lost(),
            },
            StoreError::Unique(_)
            | StoreError::Decode { .. }
            | StoreError::Corrupt(_)
            | StoreError::BadCursor
            | StoreError::Analyst(_)
            | StoreError::Config(_)
            | StoreError::Migration(_)
            | StoreError::Key(_)
            | StoreError::Encode(_)
            | StoreError::Archive(_)
            | StoreError::Placement(_)
            | StoreError::NothingToAppend
            | StoreError::NoControlPlaneRow(_)
            | StoreError::UsageOverflow(_)
            | StoreError::Backend(_)
            | StoreError::NoStoredResponse(_)
            | StoreError::OutcomeUnknown => false,
        }
    }
}

impl StoreError {
    /// The connection a statement ran on is gone: cut (reset, EOF), or its backend was ended by
    /// the server (`pg_terminate_backend`, a shutdown, a crash: SQLSTATE 57P01–57P03, class 08).
    /// sqlx reports a socket closed mid-message as I/O (`UnexpectedEof`).
    /// What that statement did is undone unless it was the `COMMIT` itself, whose outcome is then
    /// unknown until asked (`Store::transaction_status`).
    pub fn is_connection_lost(&self) -> bool {
        match self {
            StoreError::Database(e) => connection_lost(e),
            _ => false,
        }
    }

    /// PostgreSQL cancelled a statement at its role's `statement_timeout` (SQLSTATE 57014).
    pub fn is_statement_timeout(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014"))
    }

    /// The tenant moved to another database (SQLSTATE KL020 from the write fence): the write
    /// goes where the directory now says.
    pub fn is_tenant_moved(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("KL020"))
    }

    /// No connection came free in the pool within its acquire timeout.
    pub fn is_pool_timeout(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::PoolTimedOut))
    }
}

/// See `StoreError::is_connection_lost`.
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // 25006: the server refuses writes — a standby, or a primary a failover manager is
            // promoting or demoting (pg_auto_failover sets `default_transaction_read_only`
            // meanwhile). Nothing was written, and the primary is elsewhere or not yet there.
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
        }
        _ => false,
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
