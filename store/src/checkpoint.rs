//! Projection checkpoints, leases and state: saved in the same transaction as the batch they
//! follow, so a crash at any point neither loses nor doubles an event.

use crate::error::StoreError;
use crate::log::LogPosition;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use std::time::Duration;

/// Creates the checkpoint row of `name` when missing.
pub async fn ensure(pool: &crate::RolePool, name: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Takes or renews the lease of `name` for `holder` when it is free, expired, or already
/// `holder`'s. Returns whether `holder` holds it now. Expiry is judged by the database's clock,
/// the same for every worker.
pub async fn acquire_lease(
    pool: &crate::RolePool,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    ensure(pool, name).await?;
    let row = sqlx::query(
        "UPDATE projection_checkpoints
            SET lease_holder = $2, lease_expires_at = now() + make_interval(secs => $3)
          WHERE name = $1 AND (lease_holder IS NULL OR lease_holder = $2 OR lease_expires_at < now())
          RETURNING 1",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

pub async fn release_lease(pool: &crate::RolePool, name: &str, holder: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE projection_checkpoints SET lease_holder = NULL, lease_expires_at = NULL WHERE name = $1 AND lease_holder = $2",
    )
    .bind(name)
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(())
}

/// The checkpoint of `name`, locked until the caller's transaction ends so that no two
/// transactions apply the same batch. With `holder`, `None` unless `holder` holds a live lease:
/// a worker that lost its lease cannot commit a batch.
pub async fn lock(
    conn: &mut PgConnection,
    name: &str,
    holder: Option<&str>,
) -> Result<Option<LogPosition>, StoreError> {
    sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let r = sqlx::query(
        "SELECT last_xid::text AS xid, last_position FROM projection_checkpoints
          WHERE name = $1 AND ($2::text IS NULL OR (lease_holder = $2 AND lease_expires_at > now()))
          FOR UPDATE",
    )
    .bind(name)
    .bind(holder)
    .fetch_optional(conn)
    .await?;
    r.as_ref().map(to_position).transpose()
}

pub async fn save(conn: &mut PgConnection, name: &str, at: LogPosition, state: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE projection_checkpoints
            SET last_xid = $2::text::xid8, last_position = $3, state = $4, last_error = NULL, updated_at = now()
          WHERE name = $1",
    )
    .bind(name)
    .bind(at.xid.to_string())
    .bind(at.position)
    .bind(state)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records why projection `name` stopped (its failure policy), after `save` cleared the error.
pub async fn record_stop(conn: &mut PgConnection, name: &str, error: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE projection_checkpoints SET last_error = $2 WHERE name = $1")
        .bind(name)
        .bind(error)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks the start of a batch in the caller's transaction, so that a failing batch can be undone
/// (`rollback_batch`) and applied again event by event in the same transaction.
pub async fn begin_batch(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SAVEPOINT keel_batch").execute(conn).await?;
    Ok(())
}

/// Undoes everything since `begin_batch`; the transaction goes on.
pub async fn rollback_batch(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("ROLLBACK TO SAVEPOINT keel_batch").execute(conn).await?;
    Ok(())
}

/// The checkpoints of rebuilds in progress or left behind (`NAME@rebuild`), by name.
pub async fn rebuild_names(pool: &crate::RolePool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT name FROM projection_checkpoints WHERE name LIKE '%@rebuild' ORDER BY name")
        .fetch_all(pool)
        .await?)
}

pub async fn set_state(pool: &crate::RolePool, name: &str, state: &str, error: Option<&str>) -> Result<(), StoreError> {
    ensure(pool, name).await?;
    sqlx::query("UPDATE projection_checkpoints SET state = $2, last_error = $3, updated_at = now() WHERE name = $1")
        .bind(name)
        .bind(state)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes checkpoint `name` (a rebuild's, when it is discarded or starts over).
pub async fn remove(conn: &mut PgConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(name).execute(conn).await?;
    Ok(())
}

/// Moves the checkpoint (and state) of `from` onto `to` and removes `from` (the end of a rebuild).
pub async fn replace(conn: &mut PgConnection, to: &str, from: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE projection_checkpoints t SET last_xid = f.last_xid, last_position = f.last_position,
                state = 'running', last_error = NULL, updated_at = now()
           FROM projection_checkpoints f WHERE t.name = $1 AND f.name = $2",
    )
    .bind(to)
    .bind(from)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(from).execute(conn).await?;
    Ok(())
}

/// The checkpoint as readers see it; `START` before the projection ever ran.
pub async fn read(pool: &crate::RolePool, name: &str) -> Result<LogPosition, StoreError> {
    let r = sqlx::query("SELECT last_xid::text AS xid, last_position FROM projection_checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    match r {
        Some(r) => to_position(&r),
        None => Ok(LogPosition::START),
    }
}

/// The furthest any consumer has applied. On a replica: every event up to it has been replayed
/// there, with what its append wrote in the same transaction (a checkpoint commits after the
/// events it applied, and a standby replays commits in order).
pub async fn highest(pool: &crate::RolePool) -> Result<LogPosition, StoreError> {
    let rows =
        sqlx::query("SELECT last_xid::text AS xid, last_position FROM projection_checkpoints").fetch_all(pool).await?;
    let mut top = LogPosition::START;
    for r in &rows {
        top = top.max(to_position(r)?);
    }
    Ok(top)
}

/// Whether any committed event lies after checkpoint `name`, ignoring the gap-safe horizon: true
/// while an older transaction still holds back events that have already committed. One statement.
pub async fn has_events_after_checkpoint(pool: &crate::RolePool, name: &str) -> Result<bool, StoreError> {
    // An ordered LIMIT 1 walks the (transaction_id, position) index from the checkpoint.
    let row = sqlx::query(
        "SELECT 1 FROM events e
          WHERE (e.transaction_id, e.position) >
                (SELECT coalesce((SELECT c.last_xid FROM projection_checkpoints c WHERE c.name = $1), '0'::xid8),
                        coalesce((SELECT c.last_position FROM projection_checkpoints c WHERE c.name = $1), 0))
          ORDER BY e.transaction_id, e.position LIMIT 1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

fn to_position(r: &sqlx::postgres::PgRow) -> Result<LogPosition, StoreError> {
    let xid: String = r.try_get("xid")?;
    Ok(LogPosition {
        xid: xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?,
        position: r.try_get("last_position")?,
    })
}

/// Where a projection stands, for `keel projections status` and metrics.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub checkpoint: LogPosition,
    pub state: String,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Events after the checkpoint.
    pub lag_events: i64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub lag_seconds: f64,
    /// Parked events not acknowledged (`keel projections dead-letters skip` acknowledges one).
    pub dead_letters: i64,
    /// Parked events an operator acknowledged, kept for the record.
    pub acknowledged: i64,
}

/// The status of `name` (as the projector, which sees every tenant's events).
pub async fn status(pool: &crate::RolePool, name: &str) -> Result<Status, StoreError> {
    ensure(pool, name).await?;
    let r = sqlx::query(
        "SELECT c.last_xid::text AS xid, c.last_position, c.state, c.lease_holder,
                CASE WHEN c.lease_expires_at > now() THEN c.lease_expires_at END AS lease_expires_at, c.last_error,
                (SELECT count(*) FROM (SELECT 1 FROM events e
                  WHERE (e.transaction_id, e.position) > (c.last_xid, c.last_position)
                  ORDER BY e.transaction_id, e.position LIMIT 100000000) behind) AS lag_events,
                COALESCE(EXTRACT(EPOCH FROM now() - (
                    SELECT e.recorded_at FROM events e
                     WHERE (e.transaction_id, e.position) > (c.last_xid, c.last_position)
                     ORDER BY e.transaction_id, e.position LIMIT 1))::float8, 0) AS lag_seconds,
                (SELECT count(*) FROM projection_dead_letters d
                  WHERE d.projection = c.name AND d.acknowledged_at IS NULL) AS dead_letters,
                (SELECT count(*) FROM projection_dead_letters d
                  WHERE d.projection = c.name AND d.acknowledged_at IS NOT NULL) AS acknowledged
           FROM projection_checkpoints c WHERE c.name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await?;
    let holder: Option<String> = r.try_get("lease_holder")?;
    let expires: Option<DateTime<Utc>> = r.try_get("lease_expires_at")?;
    Ok(Status {
        name: name.to_owned(),
        checkpoint: to_position(&r)?,
        state: r.try_get("state")?,
        lease_holder: holder.filter(|_| expires.is_some()),
        lease_expires_at: expires,
        last_error: r.try_get("last_error")?,
        lag_events: r.try_get("lag_events")?,
        lag_seconds: r.try_get::<f64, _>("lag_seconds")?.max(0.0),
        dead_letters: r.try_get("dead_letters")?,
        acknowledged: r.try_get("acknowledged")?,
    })
}

/// Parks an event a projection could not apply; one parked and acknowledged before is active again.
pub async fn park(
    conn: &mut PgConnection,
    projection: &str,
    event: &crate::log::RecordedEvent,
    error: &str,
    attempts: u32,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO projection_dead_letters (projection, position, xid, tenant_id, event_id, event_type, error, attempts)
         VALUES ($1, $2, $3::text::xid8, $4, $5, $6, $7, $8)
         ON CONFLICT (projection, event_id) DO UPDATE SET error = EXCLUDED.error, attempts = EXCLUDED.attempts, parked_at = now(),
                       acknowledged_at = NULL, acknowledged_by = NULL",
    )
    .bind(projection)
    .bind(event.position)
    .bind(event.xid.to_string())
    .bind(event.tenant_id.0)
    .bind(event.event_id)
    .bind(&event.event_type)
    .bind(error)
    .bind(attempts as i32)
    .execute(conn)
    .await?;
    Ok(())
}
