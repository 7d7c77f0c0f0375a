//! The runner: the one mechanism by which anything follows the log. It holds a consumer's
//! lease, reads the log gap-safely from the consumer's checkpoint, hands it a batch and saves the
//! checkpoint in the same transaction, retries a failing event with backoff and then parks it
//! (a dead letter), and waits for a notification or the poll interval. Projections are its
//! first consumers; webhook deliverers and publishers plug in the same way (see
//! `ARCHITECTURE.md`, "Consumers of the log").

pub mod dead_letters;

use keel_domain::Event;
use keel_store::{LogPosition, Pool, RecordedEvent, Store, StoreError, checkpoint, log};
use sqlx::PgConnection;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// Retries and skips of dead letters by projection, action and outcome (`/metrics`).
pub const DEAD_LETTER_ACTIONS: &str = "keel_projection_dead_letter_actions_total";

/// What to do with an event that still fails after its retries (it is parked either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Go on with the next event.
    Skip,
    /// Stop before it until the process restarts (after a fix).
    Stop,
}

/// Why a consumer did not take an event. A consumer that writes only to PostgreSQL fails with
/// the store's errors (retried or parked as `StoreError::is_retryable` says); one that hands
/// events to a system outside Keel (a broker, a webhook receiver) can also fail downstream,
/// which says nothing about the event: it is retried with backoff for as long as it takes and
/// never parked, and the consumer's checkpoint row shows it (`state = failing`, `last_error`).
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The destination did not take it (unreachable, timed out, refused).
    #[error("{target}: {message}")]
    Downstream { target: &'static str, message: String },
}

/// Anything that follows the log from a checkpoint of its own: a projection, a webhook
/// deliverer, a publisher. Everything it does with a batch happens in the transaction that saves
/// its checkpoint, so a batch is taken exactly once or not at all.
pub trait Consumer: Send + Sync + 'static {
    /// Its checkpoint, lease, dead letters and metrics label; unique among consumers.
    fn name(&self) -> &'static str;

    /// The service role it works as (its checkpoint and lease as well as its own writes).
    fn pool(&self) -> Pool {
        Pool::Projector
    }

    /// Whether it reads events stored with this type name; the others only move its checkpoint.
    fn wants(&self, event_type: &str) -> bool;

    fn on_failure(&self) -> FailurePolicy {
        FailurePolicy::Skip
    }

    /// Takes one event.
    fn consume(
        &self,
        conn: &mut PgConnection,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> impl Future<Output = Result<(), ConsumeError>> + Send;

    /// Takes a run of decoded events, in order, with the same effect as `consume` on each. A
    /// consumer that can write a run of similar events with one statement overrides it.
    fn consume_batch(
        &self,
        conn: &mut PgConnection,
        items: &[keel_store::read::Item<'_>],
    ) -> impl Future<Output = Result<(), ConsumeError>> + Send {
        async move {
            for (recorded, event) in items {
                self.consume(conn, recorded, event).await?;
            }
            Ok(())
        }
    }

    /// True for a consumer that hands events to a system outside Keel (`deliver`): the runner
    /// then calls `deliver` with no transaction open and saves the checkpoint in a short
    /// transaction after it returns. A transaction that holds an id holds back the gap-safe
    /// horizon (`pg_snapshot_xmin`) of every reader of the log in the cluster, so a destination
    /// that takes seconds to answer must not be waited for inside one.
    const DELIVERS: bool = false;

    /// True for a consumer that sends events out of Keel: it skips events that came into this
    /// database by an import or a move (`imported_events`), which the database they came from
    /// sent already; its checkpoint moves past them all the same.
    const SKIPS_IMPORTED: bool = false;

    /// Hands a run of decoded events, in order, to the destination (only when `DELIVERS`); the
    /// checkpoint moves past them only after this returns `Ok`.
    fn deliver(&self, _items: &[keel_store::read::Item<'_>]) -> impl Future<Output = Result<(), ConsumeError>> + Send {
        async { Ok(()) }
    }

    /// Runs after a batch was taken, just before its commit (not during a rebuild): a projection
    /// tells subscribers here which tenants changed.
    fn before_commit(
        &self,
        _conn: &mut PgConnection,
        _batch: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub batch_size: i64,
    /// How often to look for new events when no notification arrives; a lost notification
    /// delays a projection by at most this much.
    pub poll_interval: Duration,
    /// LISTEN for append notifications (off only to prove the polling fallback).
    pub listen: bool,
    /// How long a lease lasts without renewal: a crashed worker's projection passes to another
    /// within about this long.
    pub lease_ttl: Duration,
    /// Tries of an event that fails for a reason other than a transient database error.
    pub max_attempts: u32,
    /// This worker's name in leases.
    pub holder: String,
    /// Batches that catch up (a consumer behind by more than a batch) running at once among the
    /// runners made from this config: each holds its batch in memory, so when every projection
    /// starts far behind (a new deployment, a restart after a burst of large events) the process
    /// holds two batches, not one per projection. A consumer that is caught up takes none.
    pub catch_up_slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            listen: true,
            lease_ttl: Duration::from_secs(5),
            max_attempts: 3,
            holder: default_holder(),
            catch_up_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(CATCH_UP_SLOTS)),
        }
    }
}

/// How many batches catch up at once per set of runners (`RunnerConfig::catch_up_slots`): the
/// machine's two cores are busy with two.
pub const CATCH_UP_SLOTS: usize = 2;

/// `host:pid:random`, unique per process.
pub fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    format!("{}:{}:{}", host.trim(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("this worker does not hold the lease")]
    LeaseLost,
    #[error("stopped at event {position}: {error}")]
    Stopped { position: i64, error: String },
    /// A consumer's destination did not take a batch (see `ConsumeError::Downstream`): nothing
    /// was committed; `run` tries again with backoff.
    #[error("{0}")]
    Downstream(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RunError {
    fn from(e: sqlx::Error) -> Self {
        RunError::Store(e.into())
    }
}

pub struct Runner<C> {
    store: Store,
    consumer: C,
    config: RunnerConfig,
    /// Attempts of events that failed deterministically, by event id.
    attempts: Mutex<HashMap<uuid::Uuid, u32>>,
    /// The checkpoint table row this runner writes (`name`, or `name@rebuild`).
    checkpoint_name: String,
    /// Set during a rebuild: batches write into the `keel_rebuild` schema's tables.
    rebuild: bool,
    /// Append notifications from the process's one listener (see `wake_on_appends`).
    wake: Option<watch::Receiver<u64>>,
    /// Behind by more than a batch as far as this runner knows (so at first): its next batch
    /// takes a catch-up slot.
    behind: std::sync::atomic::AtomicBool,
}

enum Failed {
    At(usize, ConsumeError),
}

impl<C: Consumer> Runner<C> {
    pub fn new(store: Store, consumer: C, config: RunnerConfig) -> Self {
        let checkpoint_name = consumer.name().to_owned();
        Runner {
            store,
            consumer,
            config,
            attempts: Mutex::new(HashMap::new()),
            checkpoint_name,
            rebuild: false,
            wake: None,
            behind: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// A runner that replays into the `keel_rebuild` schema under its own checkpoint.
    pub fn for_rebuild(store: Store, consumer: C, config: RunnerConfig) -> Self {
        let checkpoint_name = format!("{}@rebuild", consumer.name());
        Runner { checkpoint_name, rebuild: true, ..Runner::new(store, consumer, config) }
    }

    /// Wakes on this channel's changes instead of a LISTEN connection of its own.
    pub fn with_wake(mut self, wake: watch::Receiver<u64>) -> Self {
        self.wake = Some(wake);
        self
    }

    pub fn consumer(&self) -> &C {
        &self.consumer
    }

    fn pool(&self) -> &keel_store::RolePool {
        self.store.pool(self.consumer.pool())
    }

    pub fn checkpoint_name(&self) -> &str {
        &self.checkpoint_name
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.store.begin_derived(self.consumer.pool()).await?;
        if self.rebuild {
            keel_store::rebuild::use_rebuild_tables(&mut tx).await?;
        }
        Ok(tx)
    }

    /// Applies one batch with its checkpoint in one transaction; returns how many events it
    /// read (0: caught up, or held back by an older transaction still running).
    pub async fn step(&self) -> Result<usize, RunError> {
        self.step_as(None).await
    }

    async fn step_as(&self, holder: Option<&str>) -> Result<usize, RunError> {
        self.step_read(holder).await.map(|(n, _)| n)
    }

    /// `step_as`, and whether the step applied everything it read and read less than a batch:
    /// then it read all there was (or all the gap-safe horizon let through).
    async fn step_read(&self, holder: Option<&str>) -> Result<(usize, bool), RunError> {
        if C::DELIVERS && !self.rebuild {
            return self.deliver_step(holder).await;
        }
        let started = Instant::now();
        let name = self.consumer.name();
        let mut tx = self.begin().await?;
        let Some(from) = checkpoint::lock(&mut tx, &self.checkpoint_name, holder).await? else {
            return Err(RunError::LeaseLost);
        };
        let log::Batch { events: mut batch, more } =
            log::read_batch_after(&mut tx, from, self.config.batch_size).await?;
        log::reveal(&mut tx, self.store.master_key(), &mut batch).await?;
        let Some(last) = batch.last().map(RecordedEvent::log_position) else {
            tx.rollback().await?;
            return Ok((0, true));
        };
        if C::SKIPS_IMPORTED {
            let runs = imported_runs(&mut tx, &batch).await?;
            batch.retain(|e| !log::is_imported(e, &runs));
        }
        let short = !more;
        // One span per batch that has events (empty polls make none), for traces.
        let span =
            tracing::info_span!("projection_batch", projection = name, events = batch.len(), after = from.position);
        async move {
            match self.apply_all(&mut tx, &batch).await {
                Ok(()) => {
                    if !self.rebuild {
                        self.consumer.before_commit(&mut tx, &batch).await?;
                    }
                    let state = if more { "catching_up" } else { "running" };
                    let state = if self.rebuild { "rebuilding" } else { state };
                    checkpoint::save(&mut tx, &self.checkpoint_name, last, state).await?;
                    tx.commit().await?;
                    self.store.checkpoint_moved();
                    self.attempts.lock().expect("not poisoned").clear();
                    metrics::counter!("keel_projection_events_total", "projection" => name)
                        .increment(batch.len() as u64);
                    metrics::gauge!("keel_projection_checkpoint", "projection" => name).set(last.position as f64);
                    metrics::histogram!("keel_projection_batch_seconds", "projection" => name)
                        .record(started.elapsed().as_secs_f64());
                    Ok((batch.len(), short))
                }
                Err(Failed::At(_, ConsumeError::Downstream { target, message })) => {
                    tx.rollback().await?;
                    Err(RunError::Downstream(format!("{target}: {message}")))
                }
                Err(Failed::At(i, ConsumeError::Store(e))) => {
                    tx.rollback().await?;
                    // Parked mid-batch: the events after it are read again by the next step.
                    self.failed(holder, from, &batch, i, e).await.map(|n| (n, false))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// `step` for a consumer that delivers outside Keel: read the batch with no transaction
    /// holding an id, deliver it, then lock the checkpoint (and the lease) and save it if it has
    /// not moved meanwhile. A crash, or a lease lost, between the delivery and the commit
    /// delivers the batch again (the destination deduplicates by event id).
    async fn deliver_step(&self, holder: Option<&str>) -> Result<(usize, bool), RunError> {
        let started = Instant::now();
        let name = self.consumer.name();
        let from = checkpoint::read(self.pool(), &self.checkpoint_name).await?;
        let batch = {
            let mut conn = self.pool().unit().await?;
            let log::Batch { events: mut batch, more } =
                log::read_batch_after(&mut conn, from, self.config.batch_size).await?;
            log::reveal(&mut conn, self.store.master_key(), &mut batch).await?;
            let runs = if C::SKIPS_IMPORTED { imported_runs(&mut conn, &batch).await? } else { Vec::new() };
            conn.done().await?;
            (batch, more, runs)
        };
        let (batch, more, runs) = (batch.0, batch.1, batch.2);
        let Some(last) = batch.last().map(RecordedEvent::log_position) else { return Ok((0, true)) };
        let span =
            tracing::info_span!("projection_batch", projection = name, events = batch.len(), after = from.position);
        async move {
            let wanted: Vec<&RecordedEvent> =
                batch.iter().filter(|r| self.consumer.wants(&r.event_type) && !log::is_imported(r, &runs)).collect();
            let mut items = Vec::with_capacity(wanted.len());
            for r in wanted {
                match r.decode() {
                    Ok(e) => items.push((r, e)),
                    Err(e) => {
                        // An event Keel cannot read: what comes before it goes first, then it is
                        // retried and parked like any consumer's.
                        let i = batch.iter().position(|b| b.position == r.position).unwrap_or(0);
                        return self.failed(holder, from, &batch, i, e).await.map(|n| (n, false));
                    }
                }
            }
            match self.consumer.deliver(&items).await {
                Ok(()) => {}
                Err(ConsumeError::Downstream { target, message }) => {
                    return Err(RunError::Downstream(format!("{target}: {message}")));
                }
                Err(ConsumeError::Store(e)) => return Err(e.into()),
            }
            let mut tx = self.begin().await?;
            let Some(now) = checkpoint::lock(&mut tx, &self.checkpoint_name, holder).await? else {
                return Err(RunError::LeaseLost);
            };
            if now != from {
                // Another worker moved it meanwhile (this one's lease had lapsed).
                tx.rollback().await?;
                return Err(RunError::LeaseLost);
            }
            let state = if more { "catching_up" } else { "running" };
            checkpoint::save(&mut tx, &self.checkpoint_name, last, state).await?;
            tx.commit().await?;
            self.store.checkpoint_moved();
            self.attempts.lock().expect("not poisoned").clear();
            metrics::counter!("keel_projection_events_total", "projection" => name).increment(batch.len() as u64);
            metrics::gauge!("keel_projection_checkpoint", "projection" => name).set(last.position as f64);
            metrics::histogram!("keel_projection_batch_seconds", "projection" => name)
                .record(started.elapsed().as_secs_f64());
            Ok((batch.len(), !more))
        }
        .instrument(span)
        .await
    }

    async fn apply_all(&self, conn: &mut PgConnection, batch: &[RecordedEvent]) -> Result<(), Failed> {
        // The batch as a whole first (one statement per run of similar events), inside a
        // savepoint; if anything in it fails, event by event to find the one that does.
        let handled: Vec<&RecordedEvent> = batch.iter().filter(|r| self.consumer.wants(&r.event_type)).collect();
        if handled.len() > 1
            && let Ok(items) = handled.iter().map(|r| r.decode().map(|e| (*r, e))).collect::<Result<Vec<_>, _>>()
        {
            let fail = |e: StoreError| Failed::At(0, e.into());
            checkpoint::begin_batch(conn).await.map_err(fail)?;
            match self.consumer.consume_batch(conn, &items).await {
                Ok(()) => return Ok(()),
                // Event by event would not find a culprit: the destination is what failed.
                Err(e @ ConsumeError::Downstream { .. }) => return Err(Failed::At(0, e)),
                Err(e) => {
                    tracing::debug!(projection = self.consumer.name(), error = %e, "batch failed; applying event by event");
                    checkpoint::rollback_batch(conn).await.map_err(fail)?;
                }
            }
        }
        for (i, recorded) in batch.iter().enumerate() {
            if self.consumer.wants(&recorded.event_type) {
                let result = match recorded.decode() {
                    Ok(event) => self.consumer.consume(conn, recorded, &event).await,
                    Err(e) => Err(e.into()),
                };
                result.map_err(|e| Failed::At(i, e))?;
            }
        }
        Ok(())
    }

    /// Event `i` of `batch` failed. Transient errors are the caller's to retry; any other is
    /// counted, retried by the caller until `max_attempts`, then parked with the events before
    /// it applied, and the projection goes on or stops per its policy.
    async fn failed(
        &self,
        holder: Option<&str>,
        from: LogPosition,
        batch: &[RecordedEvent],
        i: usize,
        error: StoreError,
    ) -> Result<usize, RunError> {
        let event = &batch[i];
        if error.is_retryable() {
            return Err(error.into());
        }
        let attempts = {
            let mut a = self.attempts.lock().expect("not poisoned");
            let n = a.entry(event.event_id).or_insert(0);
            *n += 1;
            *n
        };
        if attempts < self.config.max_attempts {
            return Err(error.into());
        }
        let name = self.consumer.name();
        let message = error.to_string();
        tracing::error!(projection = name, position = event.position, event_type = %event.event_type, attempts, error = %message, "parking an event the projection cannot apply");
        let mut tx = self.begin().await?;
        if checkpoint::lock(&mut tx, &self.checkpoint_name, holder).await?.is_none() {
            return Err(RunError::LeaseLost);
        }
        if self.apply_all(&mut tx, &batch[..i]).await.is_err() {
            return Err(error.into());
        }
        checkpoint::park(&mut tx, name, event, &message, attempts).await?;
        let stop = self.consumer.on_failure() == FailurePolicy::Stop;
        let (at, state) = if stop {
            (if i == 0 { from } else { batch[i - 1].log_position() }, "stopped")
        } else {
            (event.log_position(), if self.rebuild { "rebuilding" } else { "running" })
        };
        checkpoint::save(&mut tx, &self.checkpoint_name, at, state).await?;
        if stop {
            checkpoint::record_stop(&mut tx, &self.checkpoint_name, &message).await?;
        }
        tx.commit().await?;
        self.store.checkpoint_moved();
        self.attempts.lock().expect("not poisoned").remove(&event.event_id);
        metrics::counter!("keel_projection_dead_letters_total", "projection" => name).increment(1);
        if stop {
            return Err(RunError::Stopped { position: event.position, error: message });
        }
        Ok(i + 1)
    }

    /// Catches this runner's checkpoint up inside the caller's transaction (the end of a rebuild,
    /// where the swap must see exactly what was applied). A failing event aborts it.
    pub async fn catch_up_on(&self, conn: &mut PgConnection) -> Result<usize, RunError> {
        let mut total = 0;
        loop {
            let Some(from) = checkpoint::lock(conn, &self.checkpoint_name, None).await? else {
                return Err(RunError::LeaseLost);
            };
            let mut batch = log::read_batch_after(conn, from, self.config.batch_size).await?.events;
            log::reveal(conn, self.store.master_key(), &mut batch).await?;
            let Some(last) = batch.last().map(RecordedEvent::log_position) else { return Ok(total) };
            match self.apply_all(conn, &batch).await {
                Ok(()) => {}
                Err(Failed::At(_, ConsumeError::Store(e))) => return Err(e.into()),
                Err(Failed::At(_, ConsumeError::Downstream { target, message })) => {
                    return Err(RunError::Downstream(format!("{target}: {message}")));
                }
            }
            checkpoint::save(conn, &self.checkpoint_name, last, "rebuilding").await?;
            total += batch.len();
        }
    }

    /// Applies batches until the log (below the gap-safe horizon) is exhausted, retrying a
    /// failing event with backoff until it is parked. Without a lease (tests, rebuilds).
    pub async fn run_once(&self) -> Result<usize, RunError> {
        self.run_once_as(None).await
    }

    async fn run_once_as(&self, holder: Option<&str>) -> Result<usize, RunError> {
        let mut total = 0;
        let mut backoff = Duration::from_millis(20);
        loop {
            let _slot = match self.behind.load(Ordering::Relaxed) {
                true => Some(self.config.catch_up_slots.acquire().await.expect("the slots are never closed")),
                false => None,
            };
            match self.step_read(holder).await {
                Ok((0, _)) => {
                    self.behind.store(false, Ordering::Relaxed);
                    return Ok(total);
                }
                // A short batch applied whole read everything there was (or all the horizon let
                // through, which `held_back` rechecks): no empty step to learn that.
                Ok((n, true)) => {
                    self.behind.store(false, Ordering::Relaxed);
                    return Ok(total + n);
                }
                Ok((n, false)) => {
                    self.behind.store(true, Ordering::Relaxed);
                    total += n;
                    backoff = Duration::from_millis(20);
                }
                Err(RunError::Store(StoreError::Unavailable)) => {
                    // The database is away (the breaker logs that once): go on the moment it
                    // answers again, so projections catch up as soon as commands go through.
                    let _ = tokio::time::timeout(backoff, self.store.until_available()).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(RunError::Store(e)) if self.attempts_pending() || e.is_retryable() => {
                    tracing::warn!(projection = self.consumer.name(), error = %e, retry_in_ms = backoff.as_millis() as u64, "batch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// An event failed to apply and has tries left before it is parked.
    pub fn attempts_pending(&self) -> bool {
        !self.attempts.lock().expect("not poisoned").is_empty()
    }

    /// True when committed events wait behind the gap-safe horizon (an older transaction is
    /// still open): worth looking again shortly rather than at the next poll.
    pub async fn held_back(&self) -> Result<bool, StoreError> {
        checkpoint::has_events_after_checkpoint(self.pool(), &self.checkpoint_name).await
    }

    /// Holds the lease, catches up, then follows the log until `shutdown` turns true; releases
    /// the lease on the way out. Without the lease it waits as a standby.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let name = self.consumer.name();
        let holder = self.config.holder.clone();
        let mut wake = self.wake.take();
        let own_listener = self.config.listen && wake.is_none();
        let mut listener = if own_listener { listen(&self.store).await } else { None };
        let mut recheck = Duration::from_millis(2);
        let mut leased_until: Option<Instant> = None;
        let mut stopped = false;
        let mut last_lag = Instant::now() - Duration::from_secs(10);
        // Grows while a consumer's destination keeps failing (capped by the lease renewal).
        let mut downstream_backoff = Duration::from_millis(100);
        let mut failing = false;
        tracing::info!(projection = name, holder = %holder, "projection worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Renew when a third of the lease is gone; a standby tries every poll.
            let renew = leased_until
                .is_none_or(|t| t.saturating_duration_since(Instant::now()) < self.config.lease_ttl * 2 / 3);
            if renew {
                let requested = Instant::now();
                match checkpoint::acquire_lease(self.pool(), name, &holder, self.config.lease_ttl).await {
                    Ok(true) => {
                        if leased_until.is_none() {
                            tracing::info!(projection = name, holder = %holder, "lease acquired");
                        }
                        leased_until = Some(requested + self.config.lease_ttl);
                    }
                    Ok(false) => {
                        if leased_until.take().is_some() {
                            tracing::warn!(projection = name, "lease lost to another worker");
                        }
                    }
                    Err(e) => tracing::warn!(projection = name, error = %e, "cannot reach the lease"),
                }
            }
            let mut wait = self.config.poll_interval.min(Duration::from_secs(1));
            if leased_until.is_some() && !stopped {
                match self.run_once_as(Some(&holder)).await {
                    Ok(_) => {
                        if failing {
                            failing = false;
                            downstream_backoff = Duration::from_millis(100);
                            tracing::info!(projection = name, "destination reachable again; caught up");
                        }
                        wait = self.config.poll_interval;
                        if self.held_back().await.unwrap_or(false) {
                            wait = recheck;
                            recheck = (recheck * 2).min(Duration::from_millis(100)).min(self.config.poll_interval);
                        } else {
                            recheck = Duration::from_millis(2);
                        }
                    }
                    Err(RunError::LeaseLost) => leased_until = None,
                    Err(RunError::Stopped { position, error }) => {
                        tracing::error!(projection = name, position, error = %error, "projection stopped by its failure policy; restart after a fix");
                        stopped = true;
                    }
                    Err(RunError::Downstream(error)) => {
                        // Never parked: the event is fine, its destination is not. The row says
                        // so until the next batch commits (which clears `last_error`).
                        if !failing {
                            tracing::warn!(projection = name, error = %error, "destination failed; retrying with backoff");
                        }
                        failing = true;
                        let _ = checkpoint::set_state(self.pool(), name, "failing", Some(&error)).await;
                        wait = downstream_backoff;
                        downstream_backoff = (downstream_backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(RunError::Store(e)) => {
                        tracing::error!(projection = name, error = %e, "projection batch failed");
                        wait = Duration::from_secs(1);
                    }
                }
                wait = wait.min(self.config.lease_ttl / 3);
            }
            if last_lag.elapsed() >= Duration::from_secs(1) {
                last_lag = Instant::now();
                if let Ok(s) = checkpoint::status(self.pool(), name).await {
                    metrics::gauge!("keel_projection_lag_events", "projection" => name).set(s.lag_events as f64);
                    metrics::gauge!("keel_projection_lag_seconds", "projection" => name).set(s.lag_seconds);
                    metrics::gauge!("keel_projection_dead_letters", "projection" => name).set(s.dead_letters as f64);
                    metrics::gauge!("keel_projection_dead_letters_acknowledged", "projection" => name)
                        .set(s.acknowledged as f64);
                    metrics::gauge!("keel_projection_checkpoint", "projection" => name)
                        .set(s.checkpoint.position as f64);
                }
                // Operators' retries and skips, from their records (every process's, any time).
                if let Ok(counts) = keel_store::dead_letter::action_counts(self.pool(), name).await {
                    for (action, outcome, n) in counts {
                        metrics::counter!(DEAD_LETTER_ACTIONS, "projection" => name, "action" => action, "outcome" => outcome)
                            .absolute(n.max(0) as u64);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                n = recv(&mut listener) => {
                    if let Err(e) = n {
                        tracing::warn!(projection = name, error = %e, "notification listener lost; polling until it is back");
                        listener = None;
                    }
                }
                _ = changed(&mut wake) => {}
            }
            if listener.is_none() && own_listener {
                listener = listen(&self.store).await;
            }
        }
        if leased_until.is_some() {
            let _ = checkpoint::release_lease(self.pool(), name, &holder).await;
        }
        tracing::info!(projection = name, "projection worker stopped");
    }
}

/// One LISTEN connection for every runner of the process: each append notification bumps the
/// returned channel, which runners follow through `Runner::with_wake`. The task reconnects when
/// the connection is lost and ends with `shutdown`.
pub fn wake_on_appends(
    store: &Store,
    shutdown: &watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<u64>) {
    let (wake_tx, wake) = watch::channel(0u64);
    let (store, mut stop) = (store.clone(), shutdown.clone());
    let task = tokio::spawn(async move {
        loop {
            let Some(mut l) = listen(&store).await else {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    n = l.recv() => match n {
                        Ok(_) => { wake_tx.send_modify(|n| *n += 1); }
                        Err(e) => {
                            tracing::warn!(error = %e, "notification listener lost; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    });
    (task, wake)
}

/// A LISTEN connection of its own (outside the pool, which it would otherwise hold forever).
async fn listen(store: &Store) -> Option<PgListener> {
    match keel_store::listen(store, keel_store::EVENTS_CHANNEL).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "cannot LISTEN; polling only");
            None
        }
    }
}

async fn changed(wake: &mut Option<watch::Receiver<u64>>) {
    match wake {
        Some(w) => {
            if w.changed().await.is_err() {
                // The listener task is gone: poll from now on.
                *wake = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => l.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

/// The imported runs overlapping `batch` (none for an empty batch).
async fn imported_runs(
    conn: &mut PgConnection,
    batch: &[RecordedEvent],
) -> Result<Vec<(uuid::Uuid, i64, i64)>, StoreError> {
    let (Some(from), Some(to)) = (batch.iter().map(|e| e.position).min(), batch.iter().map(|e| e.position).max())
    else {
        return Ok(Vec::new());
    };
    log::imported_between(conn, from, to).await
}
