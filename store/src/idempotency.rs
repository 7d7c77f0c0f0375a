//! Idempotency keys: the first response to a key is stored in the same transaction as the
//! command's events, so a repeat either finds it or runs the command itself, never both.

use crate::db::TenantTx;
use crate::error::StoreError;
use sqlx::Row;

/// How long a key is remembered.
pub const RETENTION_HOURS: i32 = 24;

#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// This transaction holds the key: run the command, then `complete`. `xid` is the
    /// transaction's id (`pg_current_xact_id`), for asking after a lost `COMMIT` answer.
    Fresh { xid: u64 },
    /// The key was used for this same request: answer what was answered then.
    Replay { status: u16, response: serde_json::Value },
    /// The key was used for a different request.
    Mismatch,
}

/// Claims `key` for this request. A concurrent holder of the same key makes this wait until it
/// commits (then this is a replay) or rolls back (then this holds the key).
pub async fn reserve(tx: &mut TenantTx, key: &str, request_hash: &[u8]) -> Result<Reservation, StoreError> {
    let tenant = tx.tenant().0;
    // A key older than the retention is taken over as if new.
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, status = NULL, response = NULL, created_at = now()
             WHERE idempotency_keys.created_at < now() - make_interval(hours => $4)
         RETURNING pg_current_xact_id()::text",
    )
    .bind(tenant)
    .bind(key)
    .bind(request_hash)
    .bind(RETENTION_HOURS)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(row) = claimed {
        let xid: String = row.try_get(0)?;
        let xid = xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?;
        return Ok(Reservation::Fresh { xid });
    }
    let row =
        sqlx::query("SELECT request_hash, status, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_one(tx.conn())
            .await?;
    let hash: Vec<u8> = row.try_get("request_hash")?;
    if hash != request_hash {
        return Ok(Reservation::Mismatch);
    }
    let status: Option<i32> = row.try_get("status")?;
    let response: Option<serde_json::Value> = row.try_get("response")?;
    match (status, response) {
        (Some(s), Some(r)) => Ok(Reservation::Replay { status: s as u16, response: r }),
        _ => Err(StoreError::NoStoredResponse(key.to_string())),
    }
}

/// Stores the response of the request that holds `key`.
pub async fn complete(
    tx: &mut TenantTx,
    key: &str,
    status: u16,
    response: &serde_json::Value,
) -> Result<(), StoreError> {
    let tenant = tx.tenant().0;
    sqlx::query("UPDATE idempotency_keys SET status = $3, response = $4 WHERE tenant_id = $1 AND key = $2")
        .bind(tenant)
        .bind(key)
        .bind(i32::from(status))
        .bind(response)
        .execute(tx.conn())
        .await?;
    Ok(())
}
