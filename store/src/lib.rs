//! The only crate that speaks SQL: the event log, tenant-scoped transactions, inline and read tables.

pub mod access;
pub mod checkpoint;
mod db;
mod error;
pub mod hash;
pub mod idempotency;
pub mod inline;
pub mod log;
pub mod read;
pub mod rebuild;
pub mod usage;

pub use db::{MIGRATOR, PoolSizes, Store, TenantTx, migrate, migrations_current};
pub use error::StoreError;
pub use log::{Appended, EventMetadata, LogPosition, RecordedEvent};

/// The channel every append notifies at commit; projection workers LISTEN on it.
pub const EVENTS_CHANNEL: &str = "keel_events";
