//! The event log behind one interface (docs/scaling.md, "The log on KurrentDB"): append to a
//! stream with an expected version, read a stream, read everything in commit order from a
//! position, and follow the log from a position. `PgEventStore` is Keel's own log in
//! PostgreSQL (the default, and what every command uses); `kurrent::KurrentStore` keeps the
//! same log in KurrentDB behind the cargo feature `kurrentdb`. One conformance suite
//! (`tests/event_store.rs`) holds both to the same promises.
//!
//! Only the log moves: inline tables, read tables, checkpoints and Row-Level Security stay in
//! PostgreSQL, so what a command appends to KurrentDB reaches the read side through a consumer of
//! `subscribe`, never in the append's own transaction.

use crate::log::{self, EventMetadata, LogPosition};
use crate::{Pool, Store, StoreError};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use keel_domain::{Event, TenantId};
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

/// One event as a store gives it back, decoded (and upcast) to Keel's domain type.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent<P> {
    pub position: P,
    pub tenant_id: TenantId,
    pub stream_id: Uuid,
    /// 1 for a stream's first event.
    pub version: i64,
    pub event_id: Uuid,
    pub event: Event,
    pub recorded_at: DateTime<Utc>,
}

/// What both stores promise (the conformance suite checks each):
/// - an append lands whole or not at all, and only when the stream's last version is
///   `expected` (0: the stream must not exist); otherwise `StoreError::Conflict` with the version
///   found, and nothing is written; of two appends expecting the same version, one lands;
/// - a stream reads back in version order, and only under its own tenant;
/// - `read_all` and `subscribe` give every tenant's events once each, in the order they
///   committed, strictly after the position given; `subscribe` goes on with events appended
///   later.
pub trait EventStore: Send + Sync {
    /// A place in the whole log; later events have greater positions.
    type Position: Copy + Ord + Debug + Send + Sync + Unpin + 'static;

    /// Before the first event.
    fn start(&self) -> Self::Position;

    /// The position of the last event committed now (`start` when there is none): where a
    /// consumer that wants only what comes next begins. (A transaction still open may yet commit
    /// below it in PostgreSQL; consumers that must see everything keep a checkpoint instead.)
    fn end(&self) -> impl Future<Output = Result<Self::Position, StoreError>> + Send;

    /// Appends `events`, all of stream `stream_id`, when its last version is `expected`; returns
    /// the position of the last one.
    fn append(
        &self,
        tenant: TenantId,
        stream_id: Uuid,
        expected: i64,
        events: &[Event],
        metadata: &EventMetadata,
    ) -> impl Future<Output = Result<Self::Position, StoreError>> + Send;

    /// Every event of one of `tenant`'s streams, in version order (empty when it has none).
    fn read_stream(
        &self,
        tenant: TenantId,
        stream_id: Uuid,
    ) -> impl Future<Output = Result<Vec<StoredEvent<Self::Position>>, StoreError>> + Send;

    /// At most `max` events after `after`, of every tenant, in commit order.
    fn read_all(
        &self,
        after: Self::Position,
        max: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent<Self::Position>>, StoreError>> + Send;

    /// Every event after `after`, then each new one as it commits.
    fn subscribe(&self, after: Self::Position) -> BoxStream<'static, Result<StoredEvent<Self::Position>, StoreError>>;
}

/// Refuses an append that is empty or names another stream than `stream_id`.
pub(crate) fn one_stream(stream_id: Uuid, events: &[Event]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::NothingToAppend);
    }
    match events.iter().find(|e| e.stream().1 != stream_id) {
        Some(e) => Err(StoreError::Config(format!(
            "an append goes to one stream: {} belongs to stream {}, not {stream_id}",
            e.event_type(),
            e.stream().1
        ))),
        None => Ok(()),
    }
}

/// Keel's log in PostgreSQL (`log`), through the writer role for appends and reads of a stream
/// (under Row-Level Security, one tenant per transaction) and the projector role for the whole log.
#[derive(Clone)]
pub struct PgEventStore {
    store: Store,
    /// How often `subscribe` looks for new events once it has read all there were (the
    /// projection workers wake on `NOTIFY` instead; this interface is for other consumers).
    pub poll: Duration,
}

impl PgEventStore {
    pub fn new(store: Store) -> PgEventStore {
        PgEventStore { store, poll: Duration::from_millis(100) }
    }
}

fn stored(r: log::RecordedEvent) -> Result<StoredEvent<LogPosition>, StoreError> {
    Ok(StoredEvent {
        position: r.log_position(),
        tenant_id: r.tenant_id,
        stream_id: r.stream_id,
        version: r.stream_version,
        event_id: r.event_id,
        event: r.decode()?,
        recorded_at: r.recorded_at,
    })
}

impl EventStore for PgEventStore {
    type Position = LogPosition;

    fn start(&self) -> LogPosition {
        LogPosition::START
    }

    async fn end(&self) -> Result<LogPosition, StoreError> {
        let mut conn = self.store.pool(Pool::Projector).unit().await?;
        let head = log::head_position(&mut conn).await?;
        conn.done().await?;
        Ok(head.unwrap_or(LogPosition::START))
    }

    async fn append(
        &self,
        tenant: TenantId,
        stream_id: Uuid,
        expected: i64,
        events: &[Event],
        metadata: &EventMetadata,
    ) -> Result<LogPosition, StoreError> {
        one_stream(stream_id, events)?;
        let mut tx = self.store.begin_write(tenant).await?;
        match log::append(&mut tx, &[(stream_id, expected)], events, metadata, Utc::now()).await {
            Ok(appended) => {
                tx.commit().await?;
                self.store.events_appended();
                Ok(appended.last)
            }
            // A stream expected new is refused by the unique version, which names the version
            // that exists, not the head: say where the stream is.
            Err(StoreError::Conflict { .. }) => {
                drop(tx);
                let actual = self.read_stream(tenant, stream_id).await?.last().map_or(0, |e| e.version);
                Err(StoreError::Conflict { stream_id, expected, actual })
            }
            Err(e) => Err(e),
        }
    }

    async fn read_stream(
        &self,
        tenant: TenantId,
        stream_id: Uuid,
    ) -> Result<Vec<StoredEvent<LogPosition>>, StoreError> {
        let mut tx = self.store.begin_write(tenant).await?;
        let rows = log::read_stream(&mut tx, stream_id).await?;
        tx.commit().await?;
        rows.into_iter().map(stored).collect()
    }

    async fn read_all(&self, after: LogPosition, max: usize) -> Result<Vec<StoredEvent<LogPosition>>, StoreError> {
        let mut conn = self.store.pool(Pool::Projector).unit().await?;
        let mut batch = log::read_batch_after(&mut conn, after, max.max(1) as i64).await?.events;
        log::reveal(&mut conn, self.store.master_key(), &mut batch).await?;
        conn.done().await?;
        batch.into_iter().map(stored).collect()
    }

    fn subscribe(&self, after: LogPosition) -> BoxStream<'static, Result<StoredEvent<LogPosition>, StoreError>> {
        let this = self.clone();
        let pending = std::collections::VecDeque::new();
        Box::pin(futures::stream::unfold((this, after, pending), |(this, mut at, mut pending)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok(e), (this, at, pending)));
                }
                match this.read_all(at, 500).await {
                    Ok(batch) if batch.is_empty() => tokio::time::sleep(this.poll).await,
                    Ok(batch) => {
                        at = batch.last().expect("not empty").position;
                        pending.extend(batch);
                    }
                    Err(e) => return Some((Err(e), (this, at, pending))),
                }
            }
        }))
    }
}
