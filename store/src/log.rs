//! The event log: append with optimistic concurrency and a hash chain, read a stream, and read
//! all events in an order that never skips an event that commits late.

use crate::db::TenantTx;
use crate::error::StoreError;
use crate::hash::{HashedFields, canonical_bytes, chain_hash};
use crate::inline;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use keel_domain::{Event, TenantId, event::DecodeError};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use std::fmt;
use uuid::Uuid;

/// A point in the gap-safe order of the log: (committing transaction id, position). Its text
/// form is the opaque consistency token that commands return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    pub xid: u64,
    pub position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition { xid: 0, position: 0 };

    pub fn parse(token: &str) -> Option<LogPosition> {
        let (x, p) = token.trim().split_once('.')?;
        Some(LogPosition { xid: x.parse().ok()?, position: p.parse().ok()? })
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.xid, self.position)
    }
}

/// Who caused an event and in answer to what; stored with every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// `user:<sub>` or `platform:<sub>`.
    pub actor: String,
    pub correlation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Demo data written by the seeder (`keel demo seed`), whose times may lie in the past.
    /// Stored only when true, so every other event's metadata (and hash) is as before; the hash
    /// covers it like any other field, so `keel audit verify` recomputes it from the row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub demo: bool,
}

/// One row of the log as stored.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub position: i64,
    pub xid: u64,
    pub tenant_id: TenantId,
    pub stream_type: String,
    pub stream_id: Uuid,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Vec<u8>,
}

impl RecordedEvent {
    pub fn log_position(&self) -> LogPosition {
        LogPosition { xid: self.xid, position: self.position }
    }

    pub fn decode(&self) -> Result<Event, StoreError> {
        Event::decode(&self.event_type, self.schema_version, self.payload.clone())
            .map_err(|source: DecodeError| StoreError::Decode { position: self.position, source })
    }

    /// Recomputes this event's hash from its stored fields and the previous hash it names.
    pub fn recompute_hash(&self) -> [u8; 32] {
        let canonical = canonical_bytes(&HashedFields {
            tenant_id: self.tenant_id.0,
            stream_type: &self.stream_type,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            payload: &self.payload,
            metadata: &self.metadata,
        });
        chain_hash(self.prev_hash.as_deref(), &canonical)
    }

    pub(crate) fn from_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
        let xid: String = row.try_get("xid")?;
        Ok(RecordedEvent {
            position: row.try_get("position")?,
            xid: xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?,
            tenant_id: TenantId(row.try_get("tenant_id")?),
            stream_type: row.try_get("stream_type")?,
            stream_id: row.try_get("stream_id")?,
            stream_version: row.try_get("stream_version")?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            recorded_at: row.try_get("recorded_at")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }
}

pub(crate) const COLUMNS: &str = "position, transaction_id::text AS xid, tenant_id, stream_type, stream_id, stream_version, \
     event_id, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash";

/// What an append wrote: the version each stream is now at, and the position of its last event.
#[derive(Debug, Clone)]
pub struct Appended {
    pub last: LogPosition,
    pub versions: Vec<(Uuid, i64)>,
    /// Where each stream now stands (its last event's version and hash).
    pub heads: Vec<StreamHead>,
}

impl Appended {
    pub fn version_of(&self, stream: Uuid) -> Option<i64> {
        self.versions.iter().find(|(s, _)| *s == stream).map(|(_, v)| *v)
    }
}

/// Where a stream stands: its version and the hash of its last event (`None` for a new stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub stream_id: Uuid,
    pub version: i64,
    pub hash: Option<Vec<u8>>,
}

/// Appends `events` in the tenant's transaction. Each stream must be at the version `expected`
/// gives for it (a stream not listed must be new); a stream that moved is a `Conflict`, and so is
/// a concurrent append that wins the race to the same version (the unique constraint on
/// (tenant, stream, version) decides). Inline projections are applied in the same transaction.
/// After committing, call `Store::events_appended` to wake the projection workers.
pub async fn append(
    tx: &mut TenantTx,
    expected: &[(Uuid, i64)],
    events: &[Event],
    metadata: &EventMetadata,
    now: DateTime<Utc>,
) -> Result<Appended, StoreError> {
    let mut heads = Vec::with_capacity(expected.len());
    for &(stream, want) in expected {
        if want == 0 {
            continue; // must be new: the unique constraint refuses version 1 of an existing stream
        }
        let head = sqlx::query(
            "SELECT stream_version, hash FROM events WHERE tenant_id = $1 AND stream_id = $2 \
             ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(tx.tenant().0)
        .bind(stream)
        .fetch_optional(tx.conn())
        .await?;
        let (actual, hash) = match head {
            Some(r) => (r.try_get::<i64, _>(0)?, Some(r.try_get::<Vec<u8>, _>(1)?)),
            None => (0, None),
        };
        if actual != want {
            return Err(StoreError::Conflict { stream_id: stream, expected: want, actual });
        }
        heads.push(StreamHead { stream_id: stream, version: actual, hash });
    }
    append_at(tx, &heads, events, metadata, now).await
}

/// `append` for a caller that read the heads of the streams it appends to in this transaction
/// (a command that loaded its aggregate): no statement looks them up again. A stream not listed
/// must be new. A head that is stale is still a `Conflict`: the version after it exists, and the
/// unique constraint on (tenant, stream, version) refuses a second one, so an event is only ever
/// chained to the event it was decided on.
pub async fn append_at(
    tx: &mut TenantTx,
    known: &[StreamHead],
    events: &[Event],
    metadata: &EventMetadata,
    now: DateTime<Utc>,
) -> Result<Appended, StoreError> {
    if events.is_empty() {
        return Err(StoreError::NothingToAppend);
    }
    let tenant = tx.tenant();
    let recorded_at = now.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(now);
    let metadata = serde_json::to_value(metadata).map_err(|e| StoreError::Encode(e.to_string()))?;

    // Streams in order of first appearance, each with its head (version, hash).
    let mut heads: Vec<(Uuid, i64, Option<Vec<u8>>)> = Vec::new();
    for e in events {
        let (_, stream) = e.stream();
        if heads.iter().any(|(s, _, _)| *s == stream) {
            continue;
        }
        match known.iter().find(|h| h.stream_id == stream) {
            Some(h) => heads.push((stream, h.version, h.hash.clone())),
            None => heads.push((stream, 0, None)),
        }
    }

    // Personal data is sealed before it is hashed: the chain covers what is stored, so it still
    // verifies after a member's data key is erased.
    let mut sealed: Vec<serde_json::Value> = events.iter().map(Event::payload).collect();
    let master = tx.master_handle();
    crate::crypto::seal(tx.conn(), master.as_deref(), tenant.0, events, &mut sealed).await?;
    let mut sealed = sealed.into_iter();

    let starts: Vec<(Uuid, i64)> = heads.iter().map(|(s, v, _)| (*s, *v)).collect();
    let n = events.len();
    let mut stream_types = Vec::with_capacity(n);
    let mut stream_ids = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut event_ids = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut schema_versions = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut prev_hashes: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    for e in events {
        let (stream_type, stream) = e.stream();
        let head = heads.iter_mut().find(|(s, _, _)| *s == stream).expect("every stream has a head");
        let version = head.1 + 1;
        let event_id = Uuid::now_v7();
        let payload = sealed.next().expect("one payload per event");
        let canonical = canonical_bytes(&HashedFields {
            tenant_id: tenant.0,
            stream_type: stream_type.as_str(),
            stream_id: stream,
            stream_version: version,
            event_id,
            event_type: e.event_type(),
            schema_version: e.schema_version(),
            recorded_at,
            payload: &payload,
            metadata: &metadata,
        });
        let hash = chain_hash(head.2.as_deref(), &canonical).to_vec();
        prev_hashes.push(head.2.replace(hash.clone()));
        head.1 = version;
        stream_types.push(stream_type.as_str());
        stream_ids.push(stream);
        versions.push(version);
        event_ids.push(event_id);
        event_types.push(e.event_type());
        schema_versions.push(e.schema_version());
        payloads.push(payload);
        hashes.push(hash);
    }

    // The tenant's counters move in the same statement as the insert (one round trip fewer),
    // except when the append creates the tenant's row itself (provisioning).
    let fold = !events.iter().any(|e| matches!(e, Event::TenantProvisioned(_)));
    let (seats, projects) = if fold { inline::counter_deltas(events) } else { (0, 0) };

    let rows = sqlx::query(
        "WITH ins AS (
           INSERT INTO events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, \
                               schema_version, payload, metadata, recorded_at, prev_hash, hash)
           SELECT $1, t.stream_type, t.stream_id, t.stream_version, t.event_id, t.event_type, t.schema_version,
                  t.payload, $2, $3, t.prev_hash, t.hash
           FROM UNNEST($4::text[], $5::uuid[], $6::int8[], $7::uuid[], $8::text[], $9::int4[], $10::jsonb[], \
                       $11::bytea[], $12::bytea[])
                WITH ORDINALITY AS t(stream_type, stream_id, stream_version, event_id, event_type, schema_version, \
                                     payload, prev_hash, hash, ord)
           ORDER BY t.ord
           RETURNING position, transaction_id),
         adj AS (
           UPDATE tenants SET seats_used = seats_used + $13, active_projects = active_projects + $14
            WHERE tenant_id = $1 AND ($13 <> 0 OR $14 <> 0)
            RETURNING 1)
         SELECT position, transaction_id::text AS xid, (SELECT count(*) FROM adj) AS adjusted FROM ins",
    )
    .bind(tenant.0)
    .bind(&metadata)
    .bind(recorded_at)
    .bind(&stream_types)
    .bind(&stream_ids)
    .bind(&versions)
    .bind(&event_ids)
    .bind(&event_types)
    .bind(&schema_versions)
    .bind(&payloads)
    .bind(&prev_hashes)
    .bind(&hashes)
    .bind(seats)
    .bind(projects)
    .fetch_all(tx.conn())
    .await
    .map_err(|e| match StoreError::from(e) {
        // A concurrent append took the same version first; which stream is not reported, so
        // name the first (the aggregate the command loaded).
        StoreError::Unique(c) if c == "events_stream_version_key" => {
            let (stream, v) = starts[0];
            StoreError::Conflict { stream_id: stream, expected: v, actual: v + 1 }
        }
        other => other,
    })?;

    let mut last = LogPosition::START;
    for r in &rows {
        let xid: String = r.try_get("xid")?;
        let p = LogPosition {
            xid: xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?,
            position: r.try_get("position")?,
        };
        last = last.max(p);
    }

    if (seats, projects) != (0, 0) && rows.first().map(|r| r.try_get::<i64, _>("adjusted")).transpose()? != Some(1) {
        return Err(StoreError::NoControlPlaneRow(tenant.to_string()));
    }
    // The inline tables get what the log holds: an event with a secret as stored (sealed), so
    // the secret is in clear in no table, and a rebuild from the log writes the same rows.
    let stored: Vec<std::borrow::Cow<'_, Event>> = events
        .iter()
        .zip(&payloads)
        .map(|(e, p)| {
            if crate::crypto::has_secrets(e.event_type()) {
                Event::decode(e.event_type(), e.schema_version(), p.clone())
                    .map(std::borrow::Cow::Owned)
                    .map_err(|err| StoreError::Encode(err.to_string()))
            } else {
                Ok(std::borrow::Cow::Borrowed(e))
            }
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Event> = stored.iter().map(|e| e.as_ref()).collect();
    inline::apply(tx.conn(), tenant, &refs, fold).await?;

    Ok(Appended {
        last,
        versions: heads.iter().map(|(s, v, _)| (*s, *v)).collect(),
        heads: heads.into_iter().map(|(stream_id, version, hash)| StreamHead { stream_id, version, hash }).collect(),
    })
}

/// Opens the personal data in `events`' payloads in place (erased data reads
/// `crypto::ERASED`). A revealed event is for reading: its payload is no longer what its hash covers.
pub async fn reveal(
    conn: &mut PgConnection,
    master: Option<&crate::MasterKey>,
    events: &mut [RecordedEvent],
) -> Result<(), StoreError> {
    let mut items: Vec<crate::crypto::Sealed<'_>> = events
        .iter_mut()
        .map(|e| crate::crypto::Sealed { tenant_id: e.tenant_id.0, event_type: &e.event_type, payload: &mut e.payload })
        .collect();
    crate::crypto::reveal(conn, master, &mut items).await
}

async fn reveal_in(tx: &mut TenantTx, events: &mut [RecordedEvent]) -> Result<(), StoreError> {
    let master = tx.master_handle();
    reveal(tx.conn(), master.as_deref(), events).await
}

/// The events of one stream of the transaction's tenant, in version order, revealed.
pub async fn read_stream(tx: &mut TenantTx, stream_id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
    read_stream_after(tx, stream_id, 0).await
}

/// The events of one stream after `version` (a snapshot's), in version order, revealed.
pub async fn read_stream_after(
    tx: &mut TenantTx,
    stream_id: Uuid,
    version: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let tenant = tx.tenant();
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE tenant_id = $1 AND stream_id = $2 AND stream_version > $3 ORDER BY stream_version"
    );
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant.0).bind(stream_id).bind(version).fetch_all(tx.conn()).await?;
    let mut events = rows.iter().map(RecordedEvent::from_row).collect::<Result<Vec<_>, _>>()?;
    reveal_in(tx, &mut events).await?;
    Ok(events)
}

/// The transaction's tenant's events after `after` in (transaction id, position) order (all of
/// them committed or this transaction's own: for rebuilding that tenant's inline tables), revealed.
pub async fn read_tenant_after(
    tx: &mut TenantTx,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let tenant = tx.tenant();
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE tenant_id = $1 AND (transaction_id, position) > ($2::text::xid8, $3)
         ORDER BY transaction_id, position
         LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(after.xid.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?;
    let mut events = rows.iter().map(RecordedEvent::from_row).collect::<Result<Vec<_>, _>>()?;
    reveal_in(tx, &mut events).await?;
    Ok(events)
}

/// Up to `limit` events after `after` in (transaction id, position) order, never past the oldest
/// transaction still running: an event whose transaction commits late has a transaction id below
/// that horizon until it commits, so it is read after it commits, never skipped.
pub async fn read_all_after(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE (transaction_id, position) > ($1::text::xid8, $2)
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY transaction_id, position
         LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after.xid.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(RecordedEvent::from_row).collect()
}

/// The event at `position` (any tenant's: run it as the projector), not yet revealed.
pub async fn read_at(conn: &mut PgConnection, position: i64) -> Result<Option<RecordedEvent>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE position = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(position).fetch_optional(conn).await?;
    row.as_ref().map(RecordedEvent::from_row).transpose()
}

/// How many events of `tenant`'s stream `stream_id` after `version` lie at or before `upto` in
/// log order: the ones a consumer at checkpoint `upto` has already read (any tenant's: run it as
/// the projector).
pub async fn later_in_stream(
    conn: &mut PgConnection,
    tenant: TenantId,
    stream_id: Uuid,
    version: i64,
    upto: LogPosition,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE tenant_id = $1 AND stream_id = $2 AND stream_version > $3
            AND (transaction_id, position) <= ($4::text::xid8, $5)",
    )
    .bind(tenant.0)
    .bind(stream_id)
    .bind(version)
    .bind(upto.xid.to_string())
    .bind(upto.position)
    .fetch_one(conn)
    .await?)
}

/// How many events the log holds (every tenant's: run it as the projector).
pub async fn count_all(pool: &sqlx::PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?)
}

/// Whether any committed event lies after `after`, ignoring the gap-safe horizon: true while an
/// older transaction still holds back events that have already committed.
pub async fn has_events_after(conn: &mut PgConnection, after: LogPosition) -> Result<bool, StoreError> {
    // An ordered LIMIT 1 (not EXISTS, whose plan may scan the whole log when nothing is there)
    // walks the (transaction_id, position) index.
    let row = sqlx::query(
        "SELECT 1 FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2)
          ORDER BY transaction_id, position LIMIT 1",
    )
    .bind(after.xid.to_string())
    .bind(after.position)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// The newest position in the log visible to this connection, ignoring the gap-safe horizon
/// (for lag reporting).
pub async fn head_position(conn: &mut PgConnection) -> Result<Option<LogPosition>, StoreError> {
    let row = sqlx::query("SELECT transaction_id::text AS xid, position FROM events ORDER BY position DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let xid: String = r.try_get("xid")?;
            Ok(Some(LogPosition {
                xid: xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?,
                position: r.try_get("position")?,
            }))
        }
    }
}
