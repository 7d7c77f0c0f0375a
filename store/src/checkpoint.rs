//! Projection checkpoints: saved in the same transaction as the batch they follow.

use crate::error::StoreError;
use crate::log::LogPosition;
use sqlx::{PgConnection, PgPool, Row};

/// The checkpoint of `name`, locked until the caller's transaction ends so that two workers
/// never apply the same batch.
pub async fn load(conn: &mut PgConnection, name: &str) -> Result<LogPosition, StoreError> {
    sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let r = sqlx::query(
        "SELECT last_xid::text AS xid, last_position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_one(conn)
    .await?;
    to_position(&r)
}

pub async fn save(conn: &mut PgConnection, name: &str, at: LogPosition) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE projection_checkpoints SET last_xid = $2::text::xid8, last_position = $3, updated_at = now()
         WHERE name = $1",
    )
    .bind(name)
    .bind(at.xid.to_string())
    .bind(at.position)
    .execute(conn)
    .await?;
    Ok(())
}

/// The checkpoint as readers see it; `START` before the projection ever ran.
pub async fn read(pool: &PgPool, name: &str) -> Result<LogPosition, StoreError> {
    let r = sqlx::query("SELECT last_xid::text AS xid, last_position FROM projection_checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    match r {
        Some(r) => to_position(&r),
        None => Ok(LogPosition::START),
    }
}

fn to_position(r: &sqlx::postgres::PgRow) -> Result<LogPosition, StoreError> {
    let xid: String = r.try_get("xid")?;
    Ok(LogPosition {
        xid: xid.parse().map_err(|_| StoreError::Invalid(format!("bad xid8 {xid}")))?,
        position: r.try_get("last_position")?,
    })
}
