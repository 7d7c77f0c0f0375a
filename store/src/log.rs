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

/// The runs of events that came into this database by import or move (`imported_events`) and
/// overlap positions `from..=to`: (tenant, first position, last position).
pub async fn imported_between(
    conn: &mut PgConnection,
    from: i64,
    to: i64,
) -> Result<Vec<(Uuid, i64, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, first_position, last_position FROM imported_events
          WHERE first_position <= $2 AND last_position >= $1",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?)
}

/// Whether `e` lies in one of `runs` (from `imported_between`).
pub fn is_imported(e: &RecordedEvent, runs: &[(Uuid, i64, i64)]) -> bool {
    runs.iter().any(|(t, first, last)| *t == e.tenant_id.0 && (*first..=*last).contains(&e.position))
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
    append_in(tx, known, events, metadata, now, None, None).await
}

/// `append_at` that also stores `snapshot` (a state after the append) and `key` (the command's
/// idempotency key with its answer) in the same call. With a key, `events` may be empty (a
/// command that changed nothing stores its answer all the same).
pub async fn append_in(
    tx: &mut TenantTx,
    known: &[StreamHead],
    events: &[Event],
    metadata: &EventMetadata,
    now: DateTime<Utc>,
    snapshot: Option<&SnapshotDue<'_>>,
    key: Option<&KeyToStore<'_>>,
) -> Result<Appended, StoreError> {
    if events.is_empty() && key.is_none() {
        return Err(StoreError::NothingToAppend);
    }
    let tenant = tx.tenant();
    // Personal data is sealed before it is hashed: the chain covers what is stored, so it still
    // verifies after a member's data key is erased.
    let mut sealed: Vec<serde_json::Value> = events.iter().map(Event::payload).collect();
    let master = tx.master_handle();
    let keys = tx.data_keys.take();
    let new_keys =
        crate::crypto::seal(tx.conn(), master.as_deref(), tenant.0, events, &mut sealed, keys.as_ref()).await?;
    let prepared = Prepared::new(tenant, known, events, sealed, metadata, now)?;

    // The inline tables get what the log holds: an event with a secret as stored (sealed), so
    // the secret is in clear in no table, and a rebuild from the log writes the same rows.
    let stored: Vec<std::borrow::Cow<'_, Event>> = events
        .iter()
        .zip(&prepared.payloads)
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
    let inline = Inline {
        ops: inline::ops(stored.iter().map(|e| e.as_ref()))?,
        counters: inline::counter_deltas(events),
        master_key_id: master.as_ref().map(|m| m.id().to_owned()),
        new_keys,
    };
    let last = prepared.call(tx.conn(), &inline, &ReadGuard::default(), snapshot, key).await?;
    if tx.witness.event_id.is_none() {
        tx.witness.event_id = prepared.first_event_id();
    }
    if let Some(k) = key {
        tx.witness.key = Some(k.key.to_owned());
    }
    Ok(prepared.appended(last))
}

/// What an append changes besides the log, in its call: the inline tables' operations
/// (`inline::ops`), the tenant's counters (`inline::counter_deltas`) and new data keys.
pub(crate) struct Inline {
    pub(crate) ops: Option<serde_json::Value>,
    pub(crate) counters: (i32, i32),
    /// Data keys made for new members or endpoints (`crypto::seal`), wrapped under this master key.
    pub(crate) new_keys: Vec<(Uuid, Vec<u8>)>,
    pub(crate) master_key_id: Option<String>,
}

/// An idempotency key stored with the command's answer in the append's call. `response` is the
/// answer's body; its `position` is set to the last appended event's by the call.
pub struct KeyToStore<'a> {
    pub key: &'a str,
    pub request_hash: &'a [u8],
    pub status: u16,
    pub response: &'a serde_json::Value,
}

/// A snapshot due after an append: the aggregate's state after it, stored in the append's
/// transaction at the stream's new version (`snapshot`).
pub struct SnapshotDue<'a> {
    pub stream_id: Uuid,
    pub stream_type: &'a str,
    pub state_version: i32,
    pub state: &'a serde_json::Value,
}

/// What an appending command read in an earlier transaction, checked again in the append's
/// (`keel_append`): each item that no longer holds is `ReadSetChanged`, and nothing is written.
#[derive(Debug, Default, Clone)]
pub struct ReadGuard {
    /// The tenant row's status as read (`active`, ...); it is share-locked until the commit.
    pub tenant_status: Option<String>,
    /// The tenant's plan as read (what a limit was decided under).
    pub tenant_plan: Option<String>,
    /// The monthly usage limit the usage was decided under: every month the append adds units to
    /// stays within it.
    pub month_limit: Option<u64>,
    /// The caller (user id) and the role it was authorised with.
    pub caller: Option<(String, String)>,
    /// Other streams decided on, each still at the version read (0: did not exist).
    pub streams: Vec<(Uuid, i64)>,
    /// Members named by the command, still active.
    pub active_members: Vec<Uuid>,
}

/// An append's rows, hashed: what `keel_append` inserts.
pub(crate) struct Prepared {
    tenant: TenantId,
    metadata: serde_json::Value,
    recorded_at: DateTime<Utc>,
    stream_types: Vec<&'static str>,
    stream_ids: Vec<Uuid>,
    versions: Vec<i64>,
    pub(crate) event_ids: Vec<Uuid>,
    event_types: Vec<&'static str>,
    schema_versions: Vec<i32>,
    pub(crate) payloads: Vec<serde_json::Value>,
    prev_hashes: Vec<Option<Vec<u8>>>,
    hashes: Vec<Vec<u8>>,
    /// Streams in order of first appearance, each with its head before and after.
    starts: Vec<(Uuid, i64)>,
    heads: Vec<(Uuid, i64, Option<Vec<u8>>)>,
}

impl Prepared {
    /// Numbers and hashes `events` (with `payloads` as they will be stored) after `known` heads.
    pub(crate) fn new(
        tenant: TenantId,
        known: &[StreamHead],
        events: &[Event],
        payloads: Vec<serde_json::Value>,
        metadata: &EventMetadata,
        now: DateTime<Utc>,
    ) -> Result<Prepared, StoreError> {
        let recorded_at = now.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(now);
        let metadata = serde_json::to_value(metadata).map_err(|e| StoreError::Encode(e.to_string()))?;
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
        let starts: Vec<(Uuid, i64)> = heads.iter().map(|(s, v, _)| (*s, *v)).collect();
        let n = events.len();
        let mut p = Prepared {
            tenant,
            recorded_at,
            stream_types: Vec::with_capacity(n),
            stream_ids: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            prev_hashes: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
            starts,
            heads: Vec::new(),
            metadata,
        };
        for (e, payload) in events.iter().zip(payloads) {
            let (stream_type, stream) = e.stream();
            let head = heads.iter_mut().find(|(s, _, _)| *s == stream).expect("every stream has a head");
            let version = head.1 + 1;
            let event_id = Uuid::now_v7();
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
                metadata: &p.metadata,
            });
            let hash = chain_hash(head.2.as_deref(), &canonical).to_vec();
            p.prev_hashes.push(head.2.replace(hash.clone()));
            head.1 = version;
            p.stream_types.push(stream_type.as_str());
            p.stream_ids.push(stream);
            p.versions.push(version);
            p.event_ids.push(event_id);
            p.event_types.push(e.event_type());
            p.schema_versions.push(e.schema_version());
            p.payloads.push(payload);
            p.hashes.push(hash);
        }
        p.heads = heads;
        Ok(p)
    }

    /// The id of the first event: what tells whether an append whose answer was lost landed.
    pub(crate) fn first_event_id(&self) -> Option<Uuid> {
        self.event_ids.first().copied()
    }

    /// Inserts the rows, applies `inline`, stores `snapshot` and `key`, after checking `guard`:
    /// one call (`keel_append`), in the connection's transaction or as its own. Returns the
    /// position of the last event (`LogPosition::START` when there was none).
    pub(crate) async fn call(
        &self,
        conn: &mut PgConnection,
        inline: &Inline,
        guard: &ReadGuard,
        snapshot: Option<&SnapshotDue<'_>>,
        key: Option<&KeyToStore<'_>>,
    ) -> Result<LogPosition, StoreError> {
        let (deps, dep_versions): (Vec<Uuid>, Vec<i64>) = guard.streams.iter().copied().unzip();
        let rows = sqlx::query(
            "SELECT position, xid FROM keel_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                                   $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, \
                                   $31, $32, $33, $34, $35)",
        )
        .bind(self.tenant.0)
        .bind(&self.metadata)
        .bind(self.recorded_at)
        .bind(&self.stream_types)
        .bind(&self.stream_ids)
        .bind(&self.versions)
        .bind(&self.event_ids)
        .bind(&self.event_types)
        .bind(&self.schema_versions)
        .bind(&self.payloads)
        .bind(&self.prev_hashes)
        .bind(&self.hashes)
        .bind(inline.counters.0)
        .bind(inline.counters.1)
        .bind(&inline.ops)
        .bind(guard.tenant_status.as_deref())
        .bind(guard.caller.as_ref().map(|(u, _)| u.as_str()))
        .bind(guard.caller.as_ref().map(|(_, r)| r.as_str()))
        .bind(&deps)
        .bind(&dep_versions)
        .bind(&guard.active_members)
        .bind(snapshot.map(|s| s.stream_id))
        .bind(snapshot.map(|s| s.stream_type))
        .bind(snapshot.map(|s| s.state_version))
        .bind(snapshot.map(|s| s.state))
        .bind(key.map(|k| k.key))
        .bind(key.map(|k| k.request_hash))
        .bind(key.map(|k| i32::from(k.status)))
        .bind(key.map(|k| k.response))
        .bind(crate::idempotency::RETENTION_HOURS)
        .bind(inline.new_keys.iter().map(|(o, _)| *o).collect::<Vec<Uuid>>())
        .bind(inline.new_keys.iter().map(|(_, w)| w.as_slice()).collect::<Vec<&[u8]>>())
        .bind(inline.master_key_id.as_deref())
        .bind(guard.tenant_plan.as_deref())
        .bind(guard.month_limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)))
        .fetch_all(conn)
        .await
        .map_err(|e| self.error(e))?;
        let mut last = LogPosition::START;
        for r in &rows {
            let xid: String = r.try_get("xid")?;
            let p = LogPosition {
                xid: xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?,
                position: r.try_get("position")?,
            };
            last = last.max(p);
        }
        Ok(last)
    }

    fn error(&self, e: sqlx::Error) -> StoreError {
        let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        match code.as_deref() {
            Some("KL001") => return StoreError::ReadSetChanged(e.to_string()),
            Some("KL002") => return StoreError::NoControlPlaneRow(self.tenant.to_string()),
            _ => {}
        }
        match StoreError::from(e) {
            // A concurrent append took the same version first; which stream is not reported, so
            // name the first (the aggregate the command loaded).
            StoreError::Unique(c) if c == "events_stream_version_key" => {
                let (stream, v) = self.starts[0];
                StoreError::Conflict { stream_id: stream, expected: v, actual: v + 1 }
            }
            other => other,
        }
    }

    /// What was appended, once `last` is known.
    pub(crate) fn appended(&self, last: LogPosition) -> Appended {
        Appended {
            last,
            versions: self.heads.iter().map(|(s, v, _)| (*s, *v)).collect(),
            heads: self
                .heads
                .iter()
                .map(|(stream_id, version, hash)| StreamHead {
                    stream_id: *stream_id,
                    version: *version,
                    hash: hash.clone(),
                })
                .collect(),
        }
    }
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

/// `reveal` with the data keys a command's read found (`crypto::reveal_known`).
pub(crate) async fn reveal_known(
    conn: &mut PgConnection,
    master: Option<&crate::MasterKey>,
    events: &mut [RecordedEvent],
    known: Option<&crate::crypto::DataKeys>,
) -> Result<(), StoreError> {
    let mut items: Vec<crate::crypto::Sealed<'_>> = events
        .iter_mut()
        .map(|e| crate::crypto::Sealed { tenant_id: e.tenant_id.0, event_type: &e.event_type, payload: &mut e.payload })
        .collect();
    crate::crypto::reveal_known(conn, master, &mut items, known).await
}

pub(crate) async fn reveal_in(tx: &mut TenantTx, events: &mut [RecordedEvent]) -> Result<(), StoreError> {
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

/// The most a consumer's batch holds, in payload bytes (uncompressed): besides its count limit,
/// so that a log of large events (usage batches of 100 records) is read in smaller batches and a
/// batch stays small in memory (parsed, a payload takes several times its text). A compressed
/// payload is measured by its JSON text (similar records compress to a tenth), any other by its
/// stored size, which costs nothing to learn. A batch always holds at least one event.
pub const BATCH_BYTES: i64 = 1024 * 1024;

/// A consumer's batch: `read_all_after` bounded by `BATCH_BYTES` too.
pub struct Batch {
    pub events: Vec<RecordedEvent>,
    /// The batch was cut by a bound (count or bytes): more events may follow at once.
    pub more: bool,
}

/// `read_all_after`, at most `limit` events and about `BATCH_BYTES` of payload.
pub async fn read_batch_after(conn: &mut PgConnection, after: LogPosition, limit: i64) -> Result<Batch, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS}, inner_rows FROM (
             SELECT e.*, sum(e.bytes) OVER (ORDER BY e.transaction_id, e.position) AS run_bytes,
                    count(*) OVER () AS inner_rows
               FROM (SELECT *, CASE WHEN pg_column_compression(payload) IS NULL THEN pg_column_size(payload)
                                    ELSE octet_length(payload::text) END AS bytes
                       FROM events
                      WHERE (transaction_id, position) > ($1::text::xid8, $2)
                        AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                      ORDER BY transaction_id, position
                      LIMIT $3) AS e) AS b
          WHERE b.run_bytes - b.bytes < $4
          ORDER BY b.transaction_id, b.position"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after.xid.to_string())
        .bind(after.position)
        .bind(limit)
        .bind(BATCH_BYTES)
        .fetch_all(conn)
        .await?;
    let inner: i64 = match rows.first() {
        Some(r) => r.try_get("inner_rows")?,
        None => 0,
    };
    let events = rows.iter().map(RecordedEvent::from_row).collect::<Result<Vec<_>, _>>()?;
    let more = inner >= limit || (events.len() as i64) < inner;
    Ok(Batch { events, more })
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
pub async fn count_all(pool: &crate::RolePool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?)
}

/// The newest position in the log visible to this connection, in log order (transaction, then
/// position), ignoring the gap-safe horizon (for lag reporting and `EventStore::end`).
pub async fn head_position(conn: &mut PgConnection) -> Result<Option<LogPosition>, StoreError> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS xid, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1",
    )
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
