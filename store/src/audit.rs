//! Audit reads of the log: a tenant's events filtered and paged, and the hash-chain check.

use crate::db::TenantTx;
use crate::error::StoreError;
use crate::log::{COLUMNS, RecordedEvent, reveal};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// What an audit reader asks the log for; every condition is optional.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub stream_id: Option<Uuid>,
    pub stream_type: Option<String>,
    pub event_type: Option<String>,
    /// `user:<sub>` or `platform:<sub>`, as stored in the metadata.
    pub actor: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// The conditions of `EventFilter` ($3..$8) on the tenant's ($1) events after a position ($2).
const MATCHES: &str = "tenant_id = $1 AND position > $2
    AND ($3::uuid IS NULL OR stream_id = $3)
    AND ($4::text IS NULL OR stream_type = $4)
    AND ($5::text IS NULL OR event_type = $5)
    AND ($6::text IS NULL OR metadata->>'actor' = $6)
    AND ($7::timestamptz IS NULL OR recorded_at >= $7)
    AND ($8::timestamptz IS NULL OR recorded_at < $8)";

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `filter` as $3..$8 of `MATCHES`.
fn bind_filter<'q>(q: Query<'q>, filter: &'q EventFilter) -> Query<'q> {
    q.bind(filter.stream_id)
        .bind(filter.stream_type.as_deref())
        .bind(filter.event_type.as_deref())
        .bind(filter.actor.as_deref())
        .bind(filter.from)
        .bind(filter.to)
}

/// How many of the transaction's tenant's events match `filter`.
/// How many of the tenant's events match `filter`, counted up to `COUNT_CAP`.
pub async fn count(tx: &mut TenantTx, filter: &EventFilter) -> Result<crate::read::Count, StoreError> {
    let tenant = tx.tenant();
    let sql = crate::read::capped_sql(&format!("SELECT 1 FROM events WHERE {MATCHES}"));
    let row = bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant.0).bind(0i64), filter)
        .fetch_one(tx.conn())
        .await?;
    Ok(crate::read::Count::from_limited(row.try_get(0)?))
}

/// Up to `limit` of the transaction's tenant's events after `after` (a position), in position
/// order, matching `filter`, with personal data opened (or reading as erased).
pub async fn events(
    tx: &mut TenantTx,
    filter: &EventFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let tenant = tx.tenant();
    let sql = format!("SELECT {COLUMNS} FROM events WHERE {MATCHES} ORDER BY position LIMIT $9");
    let rows = bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant.0).bind(after), filter)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?;
    let mut events = rows.iter().map(RecordedEvent::from_row).collect::<Result<Vec<_>, _>>()?;
    let master = tx.master_handle();
    reveal(tx.conn(), master.as_deref(), &mut events).await?;
    Ok(events)
}

/// The first place a hash chain does not hold.
#[derive(Debug, Clone)]
pub struct Break {
    pub tenant_id: Uuid,
    pub stream_id: Uuid,
    pub stream_version: i64,
    pub position: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Verified {
    pub events: u64,
    pub streams: u64,
    pub tenants: u64,
    pub first_break: Option<Break>,
}

/// Walks every stream (of `tenant`, or of all tenants) in version order, a page at a time, and
/// checks each event: versions from 1 without gaps, `prev_hash` equal to the previous event's
/// hash (none for the first), and the stored hash equal to the one recomputed from the stored
/// fields. Stops at the first break. Needs a connection that sees every tenant's events (the
/// projector's); memory stays constant however long the log.
pub async fn verify(
    conn: &mut PgConnection,
    tenant: Option<Uuid>,
    mut progress: impl FnMut(u64),
) -> Result<Verified, StoreError> {
    let mut out = Verified::default();
    let mut cursor: (Uuid, Uuid, i64) = (Uuid::nil(), Uuid::nil(), 0);
    let mut prev: Option<RecordedEvent> = None;
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE (tenant_id, stream_id, stream_version) > ($1, $2, $3) AND ($4::uuid IS NULL OR tenant_id = $4)
          ORDER BY tenant_id, stream_id, stream_version
          LIMIT 5000"
    );
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(cursor.0)
            .bind(cursor.1)
            .bind(cursor.2)
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
        if rows.is_empty() {
            return Ok(out);
        }
        for row in &rows {
            let e = RecordedEvent::from_row(row)?;
            let same_stream = prev.as_ref().is_some_and(|p| p.tenant_id == e.tenant_id && p.stream_id == e.stream_id);
            if prev.as_ref().is_none_or(|p| p.tenant_id != e.tenant_id) {
                out.tenants += 1;
            }
            if !same_stream {
                out.streams += 1;
            }
            let (want_version, want_prev) = match (&prev, same_stream) {
                (Some(p), true) => (p.stream_version + 1, Some(p.hash.clone())),
                _ => (1, None),
            };
            let reason = if e.stream_version != want_version {
                Some(format!("version {} follows version {}", e.stream_version, want_version - 1))
            } else if e.prev_hash != want_prev {
                Some("prev_hash is not the hash of the previous event".to_owned())
            } else if e.recompute_hash().as_slice() != e.hash.as_slice() {
                Some("the stored hash does not match the event's contents".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                out.first_break = Some(Break {
                    tenant_id: e.tenant_id.0,
                    stream_id: e.stream_id,
                    stream_version: e.stream_version,
                    position: e.position,
                    reason,
                });
                return Ok(out);
            }
            out.events += 1;
            cursor = (e.tenant_id.0, e.stream_id, e.stream_version);
            prev = Some(e);
        }
        progress(out.events);
    }
}
