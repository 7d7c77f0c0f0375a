//! The write path in two round trips (docs/performance.md "The write path"): a command reads what
//! it decides on with one call (`keel_command_read`), decides, and appends with another
//! (`keel_append`), each its own transaction. The append checks again, under the tenant row's
//! share lock, everything the decision read that another writer could change (`ReadGuard`), so
//! the outcome is the one a single transaction holding those locks would have had; what it
//! cannot check that way (inline tables, sealing, plan limits counted under the tenant row's
//! update lock) stays on the transaction path (`TenantTx`).

use crate::access::TenantRow;
use crate::db::{ACQUIRE_SECONDS, CommitOutcome, Pool, Store};
use crate::error::StoreError;
use crate::log::{Appended, EventMetadata, LogPosition, Prepared, ReadGuard, RecordedEvent, SnapshotDue, StreamHead};
use crate::snapshot::Snapshot;
use chrono::{DateTime, Utc};
use keel_domain::{Event, Role, TenantId};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};
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
        let conn = self.guarded(async { Ok(self.writer().acquire().await?) }).await;
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

    /// Reads the caller's role, the tenant row, the streams and the members of `req` in one call.
    pub async fn read(&mut self, tenant: TenantId, req: &ReadRequest<'_>) -> Result<ReadSet, StoreError> {
        let ids: Vec<Uuid> = req.streams.iter().map(|s| s.id).collect();
        let types: Vec<&str> = req.streams.iter().map(|s| s.stream_type).collect();
        let versions: Vec<i32> = req.streams.iter().map(|s| s.state_version).collect();
        let rows = sqlx::query("SELECT * FROM keel_command_read($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(tenant.0)
            .bind(req.user)
            .bind(&ids)
            .bind(&types)
            .bind(&versions)
            .bind(req.follow.map(|(f, _)| f))
            .bind(req.follow.map(|(_, s)| s.stream_type))
            .bind(req.follow.map(|(_, s)| s.state_version))
            .bind(&req.members)
            .fetch_all(&mut **self.conn()?)
            .await?;
        let mut set = ReadSet::default();
        let mut wanted: Vec<Uuid> = ids;
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            match kind.as_str() {
                "access" => {
                    self.pid = r.try_get("backend_pid")?;
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
                "member" => {
                    let role: String = r.try_get("m_role")?;
                    let status: String = r.try_get("m_status")?;
                    set.members.push((r.try_get("member_id")?, parse_role(&role)?, status == "active"));
                }
                other => return Err(StoreError::Corrupt(format!("keel_command_read row of kind {other}"))),
            }
        }
        // Streams asked for that have nothing read as empty (they do not exist yet).
        for id in wanted {
            stream_entry(&mut set, id);
        }
        let conn = self.conn.as_mut().ok_or(StoreError::Unavailable)?;
        for (_, s) in &mut set.streams {
            crate::log::reveal(conn, self.store.master_key(), &mut s.events).await?;
        }
        Ok(set)
    }

    /// Appends `events` after `known` heads (a stream not listed must be new) as one call, its own
    /// transaction, after checking `guard`; stores `snapshot` when one is due. Only events that
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
    ) -> Result<Appended, StoreError> {
        if !crate::inline::in_one_call(events) {
            return Err(StoreError::Config(
                "these events need the append transaction (inline tables or sealing)".into(),
            ));
        }
        let payloads = events.iter().map(Event::payload).collect();
        let prepared = Prepared::new(tenant, known, events, payloads, metadata, now)?;
        let counters = crate::inline::counter_deltas(events);
        let called = prepared.call(&mut **self.conn()?, counters, guard, snapshot).await;
        match called {
            Ok(last) => Ok(prepared.appended(last)),
            Err(e) if e.is_connection_lost() => {
                // Close the socket, so the server process notices its client has gone.
                if let Some(c) = self.conn.take() {
                    let _ = c.close().await;
                }
                self.store.connection_lost();
                tracing::warn!(pid = ?self.pid, error = %e, "the connection was lost during an append; asking whether it landed");
                match self.store.append_outcome(self.pid, prepared.first_event_id()).await {
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
