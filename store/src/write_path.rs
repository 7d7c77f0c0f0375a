//! The write path in two round trips (docs/performance.md "The write path"): a command reads what
//! it decides on with one call (`keel_command_read`), decides, and appends with another
//! (`keel_append`), each its own transaction. The append checks again, under the tenant row's
//! share lock, everything the decision read that another writer could change (`ReadGuard`), so
//! the outcome is the one a single transaction holding those locks would have had; what it
//! cannot check that way (inline tables, sealing, plan limits counted under the tenant row's
//! update lock) stays on the transaction path (`TenantTx`).

use crate::access::TenantRow;
use crate::crypto::DataKeys;
use crate::db::TenantTx;
use crate::db::{ACQUIRE_SECONDS, CommitOutcome, Pool, Store};
use crate::error::StoreError;
use crate::log::{
    Appended, EventMetadata, Inline, KeyToStore, LogPosition, Prepared, ReadGuard, RecordedEvent, SnapshotDue,
    StreamHead,
};
use crate::snapshot::Snapshot;
use chrono::NaiveDate;
use chrono::{DateTime, Utc};
use keel_domain::{Event, Role, TenantId};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Row};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// One writer connection held for a command's two calls.
pub struct WriteConn {
    conn: Option<PoolConnection<Postgres>>,
    store: Store,
    /// The server process behind the connection (from `read`): an append whose answer is lost is
    /// resolved once that process has gone.
    pid: Option<i32>,
}

/// A stream to read: id, stream type and the aggregate's state format (for its snapshot).
#[derive(Debug, Clone, Copy)]
pub struct StreamToRead {
    pub id: Uuid,
    pub stream_type: &'static str,
    pub state_version: i32,
}

/// What a command decides on.
#[derive(Debug, Default, Clone)]
pub struct ReadRequest<'a> {
    /// The caller, whose active role is read.
    pub user: Option<&'a str>,
    pub streams: Vec<StreamToRead>,
    /// A stream named by a field of the first stream's first event (a task's `project_id`).
    pub follow: Option<(&'static str, StreamToRead)>,
    pub members: Vec<Uuid>,
    /// How the tenant row is locked, in a transaction (`read_in`); the two-call path locks
    /// nothing when it reads.
    pub lock: Option<TenantLock>,
    /// The idempotency key and the request's hash: claimed in a transaction, looked up otherwise.
    pub key: Option<(&'a str, &'a [u8])>,
    /// Count the tenant's active owners.
    pub owners: bool,
    /// Count the tenant's webhook endpoints.
    pub endpoints: bool,
    /// Usage months whose units are read (their counters locked, in a transaction).
    pub months: Vec<NaiveDate>,
    /// Usage record ids to look for.
    pub usage_ids: Vec<&'a str>,
}

/// How a command's transaction locks the tenant row as it reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantLock {
    /// For update: the command counts against a plan limit or moves the counters.
    Update,
    /// For share: a suspension or erasure waits for the command.
    Share,
}

/// An idempotency key as the read found it.
#[derive(Debug, Clone)]
pub enum KeyRead {
    /// Claimed by this transaction, whose id is `xid` (what is asked after a lost `COMMIT`).
    Claimed { xid: u64 },
    /// Held by an earlier request: its hash and, once it completed, its answer.
    Held { request_hash: Vec<u8>, status: Option<u16>, response: Option<serde_json::Value> },
}

/// A stream as read: its usable snapshot and the events after it (revealed), in version order.
#[derive(Debug, Clone)]
pub struct StreamRead {
    pub snapshot: Option<Snapshot>,
    pub events: Vec<RecordedEvent>,
}

/// What `WriteConn::read` found.
#[derive(Debug, Clone, Default)]
pub struct ReadSet {
    /// The caller's active role; `None` when not an active member.
    pub role: Option<Role>,
    pub tenant: Option<TenantRow>,
    /// The tenant row's status as stored (what `ReadGuard::tenant_status` checks).
    pub tenant_status: Option<String>,
    pub streams: Vec<(Uuid, StreamRead)>,
    /// Members asked for that exist: id, role, active.
    pub members: Vec<(Uuid, Role, bool)>,
    /// The idempotency key, when one was asked for and is claimed or held.
    pub key: Option<KeyRead>,
    pub owners: u64,
    pub endpoints: u64,
    /// Units recorded in each month asked for (a month never recorded is absent).
    pub months: BTreeMap<NaiveDate, u64>,
    /// The usage record ids asked for that were recorded before.
    pub recorded: HashSet<String>,
    /// When every one was: the batch that recorded them whose last event comes last in the log,
    /// as (batch id, its version, that event's position). A call that repeats recorded usage
    /// answers with it, so its consistency token covers the records.
    pub recording: Option<(Uuid, i64, LogPosition)>,
    /// The data keys of the streams read (members' and endpoints'): what seals and reveals their
    /// fields without another query.
    pub data_keys: DataKeys,
}

impl ReadSet {
    /// A stream that was asked for (`None` when it was not); a stream that does not exist reads
    /// as empty.
    pub fn stream(&self, id: Uuid) -> Option<&StreamRead> {
        self.streams.iter().find(|(s, _)| *s == id).map(|(_, r)| r)
    }

    /// `stream`, taken out of the set (a command loads each stream once; no copy of its events).
    pub fn take_stream(&mut self, id: Uuid) -> Option<StreamRead> {
        let i = self.streams.iter().position(|(s, _)| *s == id)?;
        Some(self.streams.swap_remove(i).1)
    }
}

impl Store {
    /// A writer connection for a command's calls (`WriteConn`); its wait is recorded as the
    /// writer pool's acquire time.
    pub async fn write_conn(&self) -> Result<WriteConn, StoreError> {
        let started = std::time::Instant::now();
        // Two calls as two transactions of their own need a session between them: behind a
        // transaction pooler commands take the one-transaction path instead.
        debug_assert!(!self.pooled(), "the two-call path needs a direct connection");
        let conn = self.guarded(async { Ok(self.writer().raw().acquire().await?) }).await;
        metrics::histogram!(ACQUIRE_SECONDS, "pool" => Pool::Writer.name()).record(started.elapsed().as_secs_f64());
        Ok(WriteConn { conn: Some(conn?), store: self.clone(), pid: None })
    }

    /// Whether an append made as its own transaction (`WriteConn::append`) committed, after its
    /// answer was lost with its connection: once server process `pid` has gone (it finishes or
    /// aborts the statement, then notices that its client left), the log holds `event_id` or not.
    /// Asked until known or the commit-resolve window has passed; without a pid, only a landed
    /// append can be told.
    pub async fn append_outcome(&self, pid: Option<i32>, event_id: Uuid) -> CommitOutcome {
        let deadline = tokio::time::Instant::now() + self.commit_resolve;
        loop {
            let asked = self
                .guarded(async {
                    let row = sqlx::query(
                        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1) AS running,
                                EXISTS (SELECT 1 FROM events WHERE event_id = $2) AS landed",
                    )
                    .bind(pid)
                    .bind(event_id)
                    .fetch_one(self.projector())
                    .await?;
                    Ok((row.try_get::<bool, _>("running")?, row.try_get::<bool, _>("landed")?))
                })
                .await;
            match asked {
                Ok((_, true)) => return CommitOutcome::Committed,
                Ok((false, false)) if pid.is_some() => return CommitOutcome::Aborted,
                Ok(_) => tracing::debug!(?pid, "the lost append's server process is still there"),
                Err(e) => tracing::debug!(error = %e, "cannot ask about a lost append yet"),
            }
            if tokio::time::Instant::now() >= deadline {
                return CommitOutcome::Unknown;
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_millis(50))).await;
        }
    }
}

impl WriteConn {
    fn conn(&mut self) -> Result<&mut PoolConnection<Postgres>, StoreError> {
        self.conn.as_mut().ok_or(StoreError::Unavailable)
    }

    /// Reads what `req` asks for in one call, as its own transaction (nothing locked or written).
    pub async fn read(&mut self, tenant: TenantId, req: &ReadRequest<'_>) -> Result<ReadSet, StoreError> {
        debug_assert!(req.lock.is_none(), "the two-call path locks nothing when it reads");
        let conn = self.conn.as_mut().ok_or(StoreError::Unavailable)?;
        let (set, pid) = read_on(conn, self.store.master_key(), tenant, req, false).await?;
        self.pid = pid;
        Ok(set)
    }

    /// Appends `events` after `known` heads (a stream not listed must be new) as one call, its own
    /// transaction, after checking `guard`; stores `snapshot` when one is due and `key` with the
    /// command's answer (a key another request completed meanwhile is `ReadSetChanged`). Only events that
    /// need no inline table and no sealing may be appended so (`inline::in_one_call`); the tenant
    /// counters they move are moved in the call. An answer lost with the connection is resolved
    /// by asking the database (`Store::append_outcome`): a landed append is returned as such, one
    /// that did not land is the lost connection's error (run the command again), and one that
    /// cannot be told is `OutcomeUnknown`.
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &mut self,
        tenant: TenantId,
        known: &[StreamHead],
        events: &[Event],
        metadata: &EventMetadata,
        now: DateTime<Utc>,
        guard: &ReadGuard,
        snapshot: Option<&SnapshotDue<'_>>,
        key: Option<&KeyToStore<'_>>,
    ) -> Result<Appended, StoreError> {
        if events.is_empty() && key.is_none() {
            return Err(StoreError::NothingToAppend);
        }
        if !crate::inline::in_one_call(events) {
            return Err(StoreError::Config(
                "these events need the append transaction (inline tables or sealing)".into(),
            ));
        }
        let payloads = events.iter().map(Event::payload).collect();
        let prepared = Prepared::new(tenant, known, events, payloads, metadata, now)?;
        let inline = Inline {
            ops: crate::inline::ops(events)?,
            counters: crate::inline::counter_deltas(events),
            new_keys: Vec::new(),
            master_key_id: None,
        };
        let called = prepared.call(&mut **self.conn()?, &inline, guard, snapshot, key).await;
        match called {
            Ok(last) => Ok(prepared.appended(last)),
            Err(e) if e.is_connection_lost() => {
                // Close the socket, so the server process notices its client has gone.
                if let Some(c) = self.conn.take() {
                    let _ = c.close().await;
                }
                self.store.connection_lost();
                // An append of no event (only a key) is simply run again: the read finds the key
                // if it landed.
                let Some(first) = prepared.first_event_id() else { return Err(e) };
                tracing::warn!(pid = ?self.pid, error = %e, "the connection was lost during an append; asking whether it landed");
                match self.store.append_outcome(self.pid, first).await {
                    CommitOutcome::Committed => {
                        let last = self.landed(&prepared).await?;
                        Ok(prepared.appended(last))
                    }
                    CommitOutcome::Aborted => Err(e),
                    CommitOutcome::Unknown => Err(StoreError::OutcomeUnknown),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The position of the last event of an append that landed although its answer was lost.
    async fn landed(&self, prepared: &Prepared) -> Result<LogPosition, StoreError> {
        let row = sqlx::query(
            "SELECT transaction_id::text AS xid, max(position) AS position FROM events
              WHERE event_id = ANY($1) GROUP BY transaction_id",
        )
        .bind(&prepared.event_ids)
        .fetch_one(self.store.projector())
        .await?;
        let xid: String = row.try_get("xid")?;
        Ok(LogPosition {
            xid: xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?,
            position: row.try_get("position")?,
        })
    }
}

/// What a command's transaction reads in one call (`read_on` with the locks and the key claim
/// of `req`).
pub async fn read_in(tx: &mut TenantTx, req: &ReadRequest<'_>) -> Result<ReadSet, StoreError> {
    let tenant = tx.tenant();
    let master = tx.master_handle();
    let (set, _) = read_on(tx.conn(), master.as_deref(), tenant, req, true).await?;
    tx.tenant_locked |= req.lock == Some(TenantLock::Update) && set.tenant.is_some();
    tx.data_keys = Some(set.data_keys.clone());
    Ok(set)
}

/// `keel_command_read`, its rows gathered into a `ReadSet`, with the server process's id.
async fn read_on(
    conn: &mut PgConnection,
    master: Option<&crate::MasterKey>,
    tenant: TenantId,
    req: &ReadRequest<'_>,
    in_tx: bool,
) -> Result<(ReadSet, Option<i32>), StoreError> {
    let ids: Vec<Uuid> = req.streams.iter().map(|s| s.id).collect();
    let types: Vec<&str> = req.streams.iter().map(|s| s.stream_type).collect();
    let versions: Vec<i32> = req.streams.iter().map(|s| s.state_version).collect();
    // Ids PostgreSQL cannot hold (a NUL) were never recorded and are not sent: this runs before
    // the domain refuses them, naming the field.
    let usage_ids: Vec<&str> = req.usage_ids.iter().copied().filter(|id| !id.contains('\0')).collect();
    let lock = req.lock.map(|l| match l {
        TenantLock::Update => "update",
        TenantLock::Share => "share",
    });
    let rows = sqlx::query(
        "SELECT * FROM keel_command_read($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(tenant.0)
    .bind(req.user)
    .bind(&ids)
    .bind(&types)
    .bind(&versions)
    .bind(req.follow.map(|(f, _)| f))
    .bind(req.follow.map(|(_, s)| s.stream_type))
    .bind(req.follow.map(|(_, s)| s.state_version))
    .bind(&req.members)
    .bind(in_tx)
    .bind(lock)
    .bind(req.key.map(|(k, _)| k))
    .bind(req.key.map(|(_, h)| h))
    .bind(crate::idempotency::RETENTION_HOURS)
    .bind(req.owners)
    .bind(req.endpoints)
    .bind(&req.months)
    .bind(&usage_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut set = ReadSet::default();
    let mut pid = None;
    let mut wanted: Vec<Uuid> = ids;
    for r in &rows {
        let kind: String = r.try_get("kind")?;
        match kind.as_str() {
            "access" => {
                pid = r.try_get("backend_pid")?;
                let role: Option<String> = r.try_get("role")?;
                set.role = role.as_deref().map(parse_role).transpose()?;
                let status: Option<String> = r.try_get("t_status")?;
                if let Some(status) = status {
                    set.tenant = Some(crate::access::tenant_row_from(
                        r.try_get("t_name")?,
                        r.try_get("t_slug")?,
                        r.try_get("t_plan")?,
                        status.clone(),
                        r.try_get("t_active_projects")?,
                        r.try_get("t_seats_used")?,
                    )?);
                    set.tenant_status = Some(status);
                }
            }
            "key" => {
                let claimed: Option<String> = r.try_get("x_text")?;
                set.key = Some(match claimed {
                    Some(xid) => KeyRead::Claimed {
                        xid: xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?,
                    },
                    None => KeyRead::Held {
                        request_hash: r.try_get("x_bytes")?,
                        status: r.try_get::<Option<i64>, _>("x_num")?.map(|s| s as u16),
                        response: r.try_get("x_json")?,
                    },
                });
            }
            "stream" => {
                let id: Uuid = r.try_get("snap_stream")?;
                if !wanted.contains(&id) {
                    wanted.push(id); // the followed stream
                }
                if let Some(snapshot) = Snapshot::from_row(r)? {
                    stream_entry(&mut set, id).snapshot = Some(snapshot);
                }
                if r.try_get::<Option<i64>, _>("position")?.is_some() {
                    stream_entry(&mut set, id).events.push(RecordedEvent::from_row(r)?);
                }
            }
            "datakey" => set.data_keys.wrapped.push((r.try_get("member_id")?, r.try_get("x_bytes")?)),
            "member" => {
                let role: String = r.try_get("m_role")?;
                let status: String = r.try_get("m_status")?;
                set.members.push((r.try_get("member_id")?, parse_role(&role)?, status == "active"));
            }
            "owners" => set.owners = r.try_get::<i64, _>("x_num")?.max(0) as u64,
            "endpoints" => set.endpoints = r.try_get::<i64, _>("x_num")?.max(0) as u64,
            "month" => {
                set.months.insert(r.try_get("x_date")?, r.try_get::<i64, _>("x_num")?.max(0) as u64);
            }
            "recorded" => {
                set.recorded.insert(r.try_get("x_text")?);
            }
            "recording" => {
                let xid: String = r.try_get("xid")?;
                let xid = xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?;
                set.recording = Some((
                    r.try_get("stream_id")?,
                    r.try_get("stream_version")?,
                    LogPosition { xid, position: r.try_get("position")? },
                ));
            }
            other => return Err(StoreError::Corrupt(format!("keel_command_read row of kind {other}"))),
        }
    }
    if matches!(set.key, Some(KeyRead::Held { .. })) {
        // The answer is known: nothing else was read.
        return Ok((set, pid));
    }
    // Streams asked for that have nothing read as empty (they do not exist yet).
    for id in &wanted {
        stream_entry(&mut set, *id);
    }
    set.data_keys.tenant = tenant.0;
    set.data_keys.asked = wanted;
    for (_, s) in &mut set.streams {
        crate::log::reveal_known(conn, master, &mut s.events, Some(&set.data_keys)).await?;
    }
    Ok((set, pid))
}

fn stream_entry(set: &mut ReadSet, id: Uuid) -> &mut StreamRead {
    let i = match set.streams.iter().position(|(s, _)| *s == id) {
        Some(i) => i,
        None => {
            set.streams.push((id, StreamRead { snapshot: None, events: Vec::new() }));
            set.streams.len() - 1
        }
    };
    &mut set.streams[i].1
}

fn parse_role(r: &str) -> Result<Role, StoreError> {
    Role::parse(r).ok_or_else(|| StoreError::Corrupt(format!("unknown role {r}")))
}
