//! Snapshots: the latest state of a stream's aggregate, so that a long stream loads from it plus
//! the events after it. Only a cache: a missing, deleted or unreadable snapshot means the stream
//! is loaded from its first event, and the answer is the same.

use crate::db::TenantTx;
use crate::error::StoreError;
use crate::log::{COLUMNS, LogPosition, RecordedEvent, reveal};
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

/// A stream's aggregate is snapshotted again once this many events were appended after its
/// latest snapshot (or its start): a load never reads many more than this.
pub const EVERY: i64 = 100;

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: i64,
    pub last: LogPosition,
    pub last_hash: Vec<u8>,
    pub state: Value,
}

impl Snapshot {
    /// The snapshot in a row's `snap_*` columns (`None` when they are null: no usable snapshot).
    pub(crate) fn from_row(r: &sqlx::postgres::PgRow) -> Result<Option<Snapshot>, StoreError> {
        let Some(version) = r.try_get::<Option<i64>, _>("snap_version")? else { return Ok(None) };
        let xid: String = r.try_get("snap_xid")?;
        Ok(Some(Snapshot {
            version,
            last: LogPosition {
                xid: xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?,
                position: r.try_get("snap_position")?,
            },
            last_hash: r.try_get("snap_hash")?,
            state: r.try_get("snap_state")?,
        }))
    }
}

/// A stream as a command loads it: its latest usable snapshot (of this stream type and state
/// format) and the events after it, revealed, in version order. One statement.
pub async fn load(
    tx: &mut TenantTx,
    stream_id: Uuid,
    stream_type: &str,
    state_version: i32,
) -> Result<(Option<Snapshot>, Vec<RecordedEvent>), StoreError> {
    let tenant = tx.tenant();
    let sql = format!(
        "SELECT s.snap_version, s.snap_xid, s.snap_position, s.snap_hash, s.snap_state, e.*
           FROM (SELECT 1) AS one
           LEFT JOIN (SELECT version AS snap_version, last_xid::text AS snap_xid, last_position AS snap_position,
                             last_hash AS snap_hash, state AS snap_state
                        FROM snapshots
                       WHERE tenant_id = $1 AND stream_id = $2 AND stream_type = $3 AND state_version = $4) AS s ON true
           LEFT JOIN LATERAL (SELECT {COLUMNS} FROM events
                               WHERE tenant_id = $1 AND stream_id = $2 AND stream_version > COALESCE(s.snap_version, 0)) AS e ON true
          ORDER BY e.stream_version"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(stream_id)
        .bind(stream_type)
        .bind(state_version)
        .fetch_all(tx.conn())
        .await?;
    let snapshot = rows.first().map(Snapshot::from_row).transpose()?.flatten();
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        if r.try_get::<Option<i64>, _>("position")?.is_some() {
            events.push(RecordedEvent::from_row(r)?);
        }
    }
    let master = tx.master_handle();
    reveal(tx.conn(), master.as_deref(), &mut events).await?;
    Ok((snapshot, events))
}
