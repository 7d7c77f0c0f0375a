//! `keel projections rebuild NAME`: replay the log into fresh copies of a read model's tables
//! while the old ones keep serving, then swap them in one transaction.

use crate::models::{Projection, tables};
use keel_runner::{Consumer, RunError, Runner, RunnerConfig};
use keel_store::{Store, StoreError, checkpoint};
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub per_second: f64,
    pub remaining: Option<Duration>,
    pub swapped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection named {0}")]
    Unknown(String),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RebuildError {
    fn from(e: sqlx::Error) -> Self {
        RebuildError::Store(e.into())
    }
}

/// Rebuilds projection `name`; `admin_url` is the owner's connection (DDL), `progress` is
/// called about once a second and at the end. Returns the events replayed.
pub async fn rebuild(
    store: &Store,
    admin_url: &str,
    name: &str,
    config: RunnerConfig,
    progress: impl FnMut(&Progress),
) -> Result<u64, RebuildError> {
    let projection = Projection::named(name).ok_or_else(|| RebuildError::Unknown(name.to_owned()))?;
    run(store, admin_url, projection, config, progress).await
}

async fn run(
    store: &Store,
    admin_url: &str,
    projection: Projection,
    config: RunnerConfig,
    mut progress: impl FnMut(&Progress),
) -> Result<u64, RebuildError> {
    let name = projection.name();
    let tables = projection.model().tables;
    let mut admin = PgConnection::connect(admin_url).await?;
    let runner = Runner::for_rebuild(store.clone(), projection, config);
    match replay_and_swap(store, &mut admin, &runner, tables, &mut progress).await {
        Ok(done) => {
            keel_store::rebuild::drop_retired(&mut admin, tables).await?;
            admin.close().await?;
            tracing::info!(projection = name, events = done, "rebuild swapped in");
            Ok(done)
        }
        Err(e) => {
            // Nothing of a failed rebuild stays behind: not its tables, not its checkpoint.
            drop(admin);
            if let Err(cleanup) = discard(admin_url, name).await {
                tracing::warn!(projection = name, error = %cleanup, "cannot remove the failed rebuild");
            }
            Err(e)
        }
    }
}

/// Removes what a rebuild of `name` that failed or was interrupted left behind: the copies of
/// its tables in `keel_rebuild` and its `NAME@rebuild` checkpoint. The live projection is not
/// touched. A rebuild that already swapped leaves nothing to remove.
pub async fn discard(admin_url: &str, name: &str) -> Result<(), RebuildError> {
    let tables = tables(name).ok_or_else(|| RebuildError::Unknown(name.to_owned()))?;
    let mut admin = PgConnection::connect(admin_url).await?;
    keel_store::rebuild::discard(&mut admin, tables).await?;
    checkpoint::remove(&mut admin, &format!("{name}@rebuild")).await?;
    admin.close().await?;
    Ok(())
}

/// The rebuild up to and including the swap's commit.
async fn replay_and_swap(
    store: &Store,
    admin: &mut PgConnection,
    runner: &Runner<Projection>,
    tables: &[&str],
    progress: &mut impl FnMut(&Progress),
) -> Result<u64, RebuildError> {
    let name = runner.consumer().name();
    let rebuild_name = runner.checkpoint_name().to_owned();
    // A stale rebuild (a process killed mid-way) is replaced: its tables are recreated empty
    // and its checkpoint starts over.
    keel_store::rebuild::prepare(&mut *admin, tables).await?;
    checkpoint::remove(&mut *admin, &rebuild_name).await?;
    checkpoint::set_state(store.projector(), &rebuild_name, "rebuilding", None).await?;

    let total = keel_store::log::count_all(store.projector()).await?.max(0) as u64;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut done = 0u64;
    let report = |done: u64, swapped: bool| {
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let per_second = done as f64 / secs;
        let remaining =
            (per_second > 0.0).then(|| Duration::from_secs_f64(total.saturating_sub(done) as f64 / per_second));
        Progress { done, total: total.max(done), per_second, remaining, swapped }
    };

    // Replay while the old tables serve and the live worker keeps them current.
    let mut backoff = Duration::from_millis(20);
    loop {
        match runner.step().await {
            Ok(0) => break,
            Ok(n) => {
                done += n as u64;
                backoff = Duration::from_millis(20);
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    progress(&report(done, false));
                }
            }
            // Retried: a transient database error, or an event that failed to apply and is
            // tried again until the runner parks it. Anything else (no master key, a key that
            // opens nothing) fails the same way every time: the rebuild stops with it.
            Err(RunError::Store(e)) if e.is_retryable() || runner.attempts_pending() => {
                tracing::warn!(projection = name, error = %e, "rebuild batch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }

    // The swap: hold the live checkpoint (the live worker waits), apply what arrived since,
    // move the tables, hand the rebuilt checkpoint to the live projection. One transaction.
    let mut tx = Connection::begin(&mut *admin).await?;
    keel_store::rebuild::act_as_projector(&mut tx).await?;
    checkpoint::lock(&mut tx, name, None).await?;
    keel_store::rebuild::use_rebuild_tables(&mut tx).await?;
    done += runner.catch_up_on(&mut tx).await? as u64;
    keel_store::rebuild::back_to_owner(&mut tx).await?;
    keel_store::rebuild::swap(&mut tx, tables).await?;
    checkpoint::replace(&mut tx, name, &rebuild_name).await?;
    tx.commit().await?;
    progress(&report(done, true));
    Ok(done)
}
