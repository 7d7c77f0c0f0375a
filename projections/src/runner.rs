//! The runner: reads the log gap-safely from the checkpoint, applies a batch and saves the
//! checkpoint in one transaction, then waits for a notification or the poll interval.

use keel_domain::Event;
use keel_store::{RecordedEvent, Store, StoreError, checkpoint, log};
use sqlx::PgConnection;
use sqlx::postgres::PgListener;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub trait Projection: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The event types this projection reads; others only move its checkpoint.
    fn handles(&self, event_type: &str) -> bool;

    fn apply(
        &self,
        conn: &mut PgConnection,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub struct RunnerConfig {
    pub batch_size: i64,
    /// How often to look for new events when no notification arrives; a lost notification
    /// delays a projection by at most this much.
    pub poll_interval: Duration,
    /// LISTEN for append notifications (off only to prove the polling fallback).
    pub listen: bool,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig { batch_size: 500, poll_interval: Duration::from_millis(500), listen: true }
    }
}

pub struct Runner<P> {
    store: Store,
    projection: P,
    config: RunnerConfig,
}

impl<P: Projection> Runner<P> {
    pub fn new(store: Store, projection: P, config: RunnerConfig) -> Self {
        Runner { store, projection, config }
    }

    /// Applies one batch with its checkpoint; returns how many events it read (0: caught up, or
    /// held back by an older transaction still running; see `held_back`).
    pub async fn step(&self) -> Result<usize, StoreError> {
        let started = Instant::now();
        let name = self.projection.name();
        let mut tx = self.store.projector().begin().await?;
        let from = checkpoint::load(&mut tx, name).await?;
        let batch = log::read_all_after(&mut tx, from, self.config.batch_size).await?;
        let Some(last) = batch.last().map(RecordedEvent::log_position) else {
            tx.rollback().await?;
            return Ok(0);
        };
        for recorded in &batch {
            if self.projection.handles(&recorded.event_type) {
                let event = recorded.decode()?;
                self.projection.apply(&mut tx, recorded, &event).await?;
            }
        }
        checkpoint::save(&mut tx, name, last).await?;
        tx.commit().await?;
        metrics::counter!("keel_projection_events_total", "projection" => name).increment(batch.len() as u64);
        metrics::gauge!("keel_projection_checkpoint", "projection" => name).set(last.position as f64);
        metrics::histogram!("keel_projection_batch_seconds", "projection" => name)
            .record(started.elapsed().as_secs_f64());
        Ok(batch.len())
    }

    /// Applies batches until the log (below the gap-safe horizon) is exhausted.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.step().await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// True when committed events wait behind the gap-safe horizon (an older transaction is still
    /// open): worth looking again shortly rather than at the next poll.
    pub async fn held_back(&self) -> Result<bool, StoreError> {
        let mut conn = self.store.projector().acquire().await?;
        let at = checkpoint::read(self.store.projector(), self.projection.name()).await?;
        log::has_events_after(&mut conn, at).await
    }

    /// Catches up, then follows the log until `shutdown` turns true. Errors are logged and
    /// retried with backoff; the checkpoint only moves with a committed batch.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let name = self.projection.name();
        let mut listener = if self.config.listen { self.listen().await } else { None };
        let mut backoff = Duration::from_millis(100);
        let mut recheck = Duration::from_millis(2);
        tracing::info!(projection = name, "projection started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = match self.run_once().await {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    // A notified event may still sit behind an older open transaction: look
                    // again soon (2 ms, doubling) instead of waiting for the next poll.
                    if self.held_back().await.unwrap_or(false) {
                        let w = recheck;
                        recheck = (recheck * 2).min(Duration::from_millis(100)).min(self.config.poll_interval);
                        w
                    } else {
                        recheck = Duration::from_millis(2);
                        self.config.poll_interval
                    }
                }
                Err(e) => {
                    tracing::error!(projection = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "projection batch failed");
                    let b = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    b
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                n = recv(&mut listener) => {
                    if let Err(e) = n {
                        tracing::warn!(projection = name, error = %e, "notification listener lost; polling until it is back");
                        listener = None;
                    }
                }
            }
            if listener.is_none() && self.config.listen {
                listener = self.listen().await;
            }
        }
        tracing::info!(projection = name, "projection stopped");
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut l = match PgListener::connect_with(self.store.projector()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN; polling only");
                return None;
            }
        };
        match l.listen(keel_store::EVENTS_CHANNEL).await {
            Ok(()) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN; polling only");
                None
            }
        }
    }
}

async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => l.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}
