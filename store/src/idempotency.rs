//! Idempotency keys: the first response to a key is stored in the same transaction as the
//! command's events, so a repeat either finds it or runs the command itself, never both. A
//! command's read claims its key (in a transaction) or looks it up (`write_path`); its append
//! stores the answer (`keel_append`).

/// How long a key is remembered.
pub const RETENTION_HOURS: i32 = 24;
