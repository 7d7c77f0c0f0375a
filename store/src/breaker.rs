//! The database's availability as this process sees it: a circuit breaker that opens when the
//! database cannot be reached, so requests are refused at once (`StoreError::Unavailable`, a
//! 503) instead of each waiting out its pool's acquire timeout, and closes again as soon as a
//! probe in the background gets an answer.
//!
//! One probe task per `Store` keeps one connection of its own (as the `DATABASE_URL` user, no
//! service role: it only runs `SELECT 1`). It asks every `healthy_interval` while the breaker is
//! closed, every `open_interval` while it is open, and at once when a request reports a lost
//! connection or has waited `SLOW_ACQUIRE` for one. A probe that gets an error (connection refused
//! or cut) opens the breaker at once; one left unanswered opens it only after `SILENT_PROBES`
//! probe timeouts, since a loaded machine answers late and late is not away (its question goes
//! on across probes meanwhile). The first answer closes it. Pool acquires that are waiting when
//! it opens are answered `Unavailable` at that moment.

use crate::error::StoreError;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How long a request waits for a connection before it asks the probe to look at once.
const SLOW_ACQUIRE: Duration = Duration::from_millis(100);

/// How the breaker probes (part of `PoolTimeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Between probes while the database answers.
    pub healthy_interval: Duration,
    /// Between probes while it does not: the most that recovery lags the database's return.
    pub open_interval: Duration,
    /// How long one probe waits for its answer (reconnect and `SELECT 1`). A database silent for
    /// `SILENT_PROBES` of these is taken to be away; an error is at once.
    pub timeout: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            healthy_interval: Duration::from_secs(1),
            open_interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
        }
    }
}

/// The hosts of a multi-host `DATABASE_URL` (`postgres://u@h1:5432,h2:5432/db`), one of which is
/// the writable primary. The probe asks the current one whether it still is
/// (`pg_is_in_recovery()`); when it is not, or cannot be reached, the probe asks the others, and
/// the first that is writable becomes current: the pools that follow it connect there from then
/// on (connections to the old host fail and are replaced). Until one is found, the breaker is
/// open and requests get a 503.
#[derive(Debug)]
pub(crate) struct Hosts {
    candidates: Vec<PgConnectOptions>,
    current: std::sync::atomic::AtomicUsize,
    followers: std::sync::Mutex<Vec<PgPool>>,
}

impl Hosts {
    /// The hosts of `options`, with the writable one (found now) current.
    pub(crate) async fn find(candidates: Vec<PgConnectOptions>, timeout: Duration) -> Result<Hosts, StoreError> {
        for (i, c) in candidates.iter().enumerate() {
            if tokio::time::timeout(timeout, writable(c)).await.unwrap_or(false) {
                return Ok(Hosts {
                    candidates,
                    current: std::sync::atomic::AtomicUsize::new(i),
                    followers: std::sync::Mutex::default(),
                });
            }
        }
        Err(StoreError::Config(format!("none of the {} hosts of DATABASE_URL is a writable primary", candidates.len())))
    }

    pub(crate) fn current(&self) -> PgConnectOptions {
        self.candidates[self.current.load(std::sync::atomic::Ordering::Relaxed)].clone()
    }

    /// `pool` connects to whichever host is the primary from now on.
    pub(crate) fn follow(&self, pool: &PgPool) {
        self.followers.lock().expect("not poisoned").push(pool.clone());
    }

    fn move_to(&self, i: usize) {
        self.current.store(i, std::sync::atomic::Ordering::Relaxed);
        let c = &self.candidates[i];
        tracing::warn!(host = c.get_host(), port = c.get_port(), "a new primary: the pools connect there now");
        for pool in self.followers.lock().expect("not poisoned").iter() {
            let moved = pool.connect_options().as_ref().clone().host(c.get_host()).port(c.get_port());
            pool.set_connect_options(moved);
        }
    }

    /// Looks for a writable host other than the current one; moves there when found.
    async fn relocate(&self, timeout: Duration) -> bool {
        let now = self.current.load(std::sync::atomic::Ordering::Relaxed);
        for (i, c) in self.candidates.iter().enumerate().filter(|(i, _)| *i != now) {
            if tokio::time::timeout(timeout, writable(c)).await.unwrap_or(false) {
                self.move_to(i);
                return true;
            }
        }
        false
    }
}

/// Asks whether a server is the primary: not a standby, and not made read-only meanwhile (a
/// failover manager does so while it promotes or demotes). A simple query: no statement to
/// prepare on each probe.
const IS_PRIMARY: &str = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'";

async fn is_primary(c: &mut PgConnection) -> bool {
    use sqlx::Executor;
    match c.fetch_optional(IS_PRIMARY).await {
        Ok(Some(row)) => sqlx::Row::try_get::<bool, _>(&row, 0).unwrap_or(false),
        _ => false,
    }
}

/// Whether the server at `options` answers and accepts writes (a connection of its own).
async fn writable(options: &PgConnectOptions) -> bool {
    let Ok(mut c) = PgConnection::connect_with(options).await else { return false };
    let primary = is_primary(&mut c).await;
    let _ = c.close().await;
    primary
}

/// `writable` on the kept connection, or on a new one when it is gone or the host changed.
async fn check_writable(conn: &mut Option<PgConnection>, options: &PgConnectOptions) -> bool {
    if let Some(c) = conn.as_mut()
        && is_primary(c).await
    {
        return true;
    }
    *conn = None;
    match PgConnection::connect_with(options).await {
        Ok(mut c) => {
            let ok = is_primary(&mut c).await;
            if ok {
                *conn = Some(c);
            }
            ok
        }
        Err(_) => false,
    }
}

/// Shared by a `Store`'s clones and its probe task.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// `true` while the database is known to be unreachable.
    open: watch::Sender<bool>,
    /// A request saw a failure: probe now.
    wake: Notify,
    /// The store was closed: the probe ends and drops its connection.
    stopped: std::sync::atomic::AtomicBool,
}

impl Breaker {
    /// A closed breaker and its probe, which runs until `stop` or until the breaker is dropped.
    pub(crate) fn start(options: PgConnectOptions, settings: ProbeSettings, hosts: Option<Arc<Hosts>>) -> Arc<Breaker> {
        let breaker = Arc::new(Breaker {
            open: watch::Sender::new(false),
            wake: Notify::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(probe(Arc::downgrade(&breaker), options, settings, hosts));
        breaker
    }

    /// Ends the probe (the store is closing).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Resolves when the breaker is closed (at once when it is).
    pub(crate) async fn until_closed(&self) {
        let _ = self.open.subscribe().wait_for(|open| !*open).await;
    }

    /// Asks the probe to look now (a request lost its connection).
    pub(crate) fn suspect(&self) {
        self.wake.notify_one();
    }

    /// Runs `work` (a pool acquire and `BEGIN`) unless the database is known to be away; gives
    /// up with `Unavailable` the moment the breaker opens while it waits.
    pub(crate) async fn guard<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let mut open = self.open.subscribe();
        if *open.borrow_and_update() {
            return Err(StoreError::Unavailable);
        }
        let mut work = std::pin::pin!(work);
        let mut slow = std::pin::pin!(tokio::time::sleep(SLOW_ACQUIRE));
        let mut asked = false;
        loop {
            tokio::select! {
                r = &mut work => {
                    if let Err(e) = &r && (e.is_connection_lost() || e.is_pool_timeout()) {
                        self.suspect();
                    }
                    return r;
                }
                _ = open.wait_for(|o| *o) => return Err(StoreError::Unavailable),
                _ = &mut slow, if !asked => {
                    asked = true;
                    self.suspect();
                }
            }
        }
    }

    fn set(&self, open: bool) {
        self.open.send_if_modified(|o| {
            let changed = *o != open;
            *o = open;
            changed
        });
    }
}

async fn probe(
    breaker: std::sync::Weak<Breaker>,
    options: PgConnectOptions,
    settings: ProbeSettings,
    hosts: Option<Arc<Hosts>>,
) {
    let mut conn: Option<PgConnection> = None;
    // The question under way (a ping on the kept connection, or a connect and a ping): one that
    // outlasts a probe's timeout goes on into the next, since a loaded machine answers late and
    // starting over (a SCRAM login) would never finish.
    let mut asking: Option<Asking> = None;
    loop {
        let Some(b) = breaker.upgrade() else { return };
        if b.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut ok = match &hosts {
            None => match tokio::time::timeout(settings.timeout, ask(&mut conn, &mut asking, &options)).await {
                Ok(ok) => ok,
                Err(_) => {
                    let silent = asking.as_ref().map(|a| a.silent_since.elapsed()).unwrap_or_default();
                    tracing::debug!(
                        timeout_ms = settings.timeout.as_millis() as u64,
                        silent_ms = silent.as_millis() as u64,
                        "the availability probe has no answer yet"
                    );
                    // Late is not away: on a starved machine the database answers, after a while.
                    // The breaker opens once it has been silent for `SILENT_PROBES` timeouts
                    // (an error opens it at once), and stays open until it answers.
                    !b.is_open() && silent < settings.timeout * SILENT_PROBES
                }
            },
            // The current host must still be the primary: a standby answers `SELECT 1` too.
            Some(h) => {
                tokio::time::timeout(settings.timeout, check_writable(&mut conn, &h.current())).await.unwrap_or(false)
            }
        };
        if !ok {
            conn = None;
            if let Some(h) = &hosts {
                ok = h.relocate(settings.timeout).await;
            }
        }
        let was_open = b.is_open();
        if was_open == ok {
            let (port, database) = (options.get_port(), options.get_database().unwrap_or_default());
            if ok {
                tracing::info!(port, database, "the database answers again: requests go through");
            } else {
                tracing::warn!(
                    port,
                    database,
                    "the database is unreachable: requests are answered 503 until it answers"
                );
            }
        }
        b.set(!ok);
        metrics::gauge!(AVAILABLE).set(if ok { 1.0 } else { 0.0 });
        let wait = if ok { settings.healthy_interval } else { settings.open_interval };
        let _ = tokio::time::timeout(wait, b.wake.notified()).await;
    }
}

/// A question under way: since when the database has been silent (kept when a stale question is
/// asked again), when this one was asked, and its answer to come.
struct Asking {
    silent_since: std::time::Instant,
    asked: std::time::Instant,
    answer: std::pin::Pin<Box<dyn Future<Output = Result<PgConnection, sqlx::Error>> + Send>>,
}

/// A database that leaves the probe unanswered for this many probe timeouts is taken to be away
/// (one that answers with an error is at once).
const SILENT_PROBES: u32 = 3;

/// How long a question may go on across probes before it is given up and asked again (a server
/// that accepted and went silent).
const STALE_QUESTION: Duration = Duration::from_secs(10);

/// `SELECT 1` on the kept connection, or on a new one when it fails; the question under way, if
/// an earlier probe asked one that is not answered yet.
async fn ask(conn: &mut Option<PgConnection>, asking: &mut Option<Asking>, options: &PgConnectOptions) -> bool {
    // A question that has hung for long (a server that accepted and went silent) is asked again;
    // the silence goes on counting.
    let mut silent_since = std::time::Instant::now();
    if let Some(a) = asking.as_ref()
        && a.asked.elapsed() > STALE_QUESTION
    {
        silent_since = a.silent_since;
        *asking = None;
    }
    let Asking { answer: pending, .. } = asking.get_or_insert_with(|| {
        let (kept, options) = (conn.take(), options.clone());
        Asking {
            silent_since,
            asked: std::time::Instant::now(),
            answer: Box::pin(async move {
                if let Some(mut c) = kept {
                    match c.ping().await {
                        Ok(()) => return Ok(c),
                        Err(e) => tracing::debug!(error = %e, "the availability probe's connection failed its ping"),
                    }
                }
                let mut c = PgConnection::connect_with(&options).await?;
                c.ping().await?;
                Ok(c)
            }),
        }
    });
    let answer = pending.await;
    *asking = None;
    match answer {
        Ok(c) => {
            *conn = Some(c);
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "the availability probe cannot reach the database");
            false
        }
    }
}

/// 1 while the database answers this process's probe, 0 while it does not.
pub const AVAILABLE: &str = "keel_db_available";
