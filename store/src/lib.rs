//! The only crate that speaks SQL: the event log, tenant-scoped transactions, inline and read tables.

pub mod access;
pub mod analyst;
pub mod archive;
pub mod audit;
pub mod breaker;
pub mod checkpoint;
pub mod crypto;
mod db;
pub mod dead_letter;
mod error;
pub mod event_store;
pub mod footprint;
pub mod hash;
pub mod idempotency;
pub mod inline;
#[cfg(feature = "kurrentdb")]
pub mod kurrent;
pub mod log;
pub mod ops;
pub mod placement;
pub mod read;
pub mod rebuild;
pub mod relocate;
pub mod snapshot;
pub mod usage;
pub mod webhook_delivery;
pub mod webhooks;
pub mod write_path;

pub use crypto::MasterKey;
pub use db::{
    ACQUIRE_SECONDS, CommitOutcome, MIGRATOR, Pool, PoolSizes, PoolTimeouts, RolePool, Store, TenantTx, Unit, Witness,
    migrate, migrations_current,
};
pub use error::StoreError;
pub use log::{Appended, EventMetadata, LogPosition, RecordedEvent};

/// The channel every append notifies at commit; projection workers LISTEN on it.
pub const EVENTS_CHANNEL: &str = "keel_events";

/// The channel projection workers notify after applying a batch (payload: projection, tenant,
/// streams); the query service LISTENs on it for subscriptions.
pub const PROJECTED_CHANNEL: &str = "keel_projected";

/// Notifies `PROJECTED_CHANNEL` at the commit of the caller's transaction.
pub async fn notify_projected(conn: &mut sqlx::PgConnection, payload: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(PROJECTED_CHANNEL).bind(payload).execute(conn).await?;
    Ok(())
}

/// A LISTEN connection of its own on `channel` (outside the pools, which it would otherwise hold
/// forever), past the transaction pooler when there is one (`Store::listen_options`): LISTEN
/// needs a session.
pub async fn listen(store: &Store, channel: &str) -> Result<sqlx::postgres::PgListener, StoreError> {
    // A pool of one of its own: the listener reconnects through it when its connection drops.
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_lazy_with(store.listen_options());
    let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
    l.listen(channel).await?;
    Ok(l)
}
