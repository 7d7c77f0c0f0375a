//! The faults `keel chaos` injects, at seeded random moments: every kind once per cycle, in a
//! shuffled order, each after the last one recovered.

use super::check;
use super::cluster::{Cluster, Keel};
use crate::embedded::StopMode;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Fault {
    /// SIGKILL Keel, start it again at once.
    KillKeel,
    /// SIGTERM Keel (graceful), start it again once it exited.
    TermKeel,
    /// `pg_ctl stop -m immediate` (a crash), an outage of 1–5 s, start.
    PgImmediate,
    /// `pg_ctl stop -m fast`, an outage of 1–5 s, start.
    PgFast,
    /// `pg_terminate_backend` on every backend of Keel (`application_name = 'keel'`).
    TerminateBackends,
}

impl Fault {
    const ALL: [Fault; 5] =
        [Fault::KillKeel, Fault::TermKeel, Fault::PgImmediate, Fault::PgFast, Fault::TerminateBackends];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::KillKeel => "sigkill-keel",
            Fault::TermKeel => "sigterm-keel",
            Fault::PgImmediate => "pg-stop-immediate",
            Fault::PgFast => "pg-stop-fast",
            Fault::TerminateBackends => "pg-terminate-backends",
        }
    }
}

/// One injected fault: when (ms since the run began), what, and what it did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Injected {
    pub(crate) at_ms: u64,
    pub(crate) fault: Fault,
    /// How long the fault lasted: the database's outage, Keel's exit after SIGTERM.
    pub(crate) lasted_ms: u64,
    pub(crate) detail: String,
}

#[derive(Debug, Default)]
pub(crate) struct FaultLog {
    pub(crate) injected: Vec<Injected>,
    /// When the database accepted connections again (ms since the run began).
    pub(crate) db_back_ms: Vec<u64>,
    /// When a new Keel process was started after a kill or a SIGTERM.
    pub(crate) keel_back_ms: Vec<u64>,
}

/// Injects faults until `until`; returns what it did. A fault that could not be undone (the
/// cluster does not start again) ends the run with an error.
pub(crate) async fn run(
    cluster: &Cluster,
    keel: &Keel,
    t0: Instant,
    until: Instant,
    every: Duration,
    seed: u64,
) -> anyhow::Result<FaultLog> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xFA017);
    let mut log = FaultLog::default();
    let mut cycle: Vec<Fault> = Vec::new();
    let ms = |t: Instant| t.duration_since(t0).as_millis() as u64;
    loop {
        let wait = every.mul_f64(rng.random_range(0.5..1.5));
        if Instant::now() + wait >= until {
            break;
        }
        tokio::time::sleep(wait).await;
        if cycle.is_empty() {
            cycle = Fault::ALL.to_vec();
            cycle.shuffle(&mut rng);
        }
        let fault = cycle.pop().expect("refilled above");
        let began = Instant::now();
        let detail = match fault {
            Fault::KillKeel => {
                keel.kill_and_restart().await?;
                log.keel_back_ms.push(ms(Instant::now()));
                "killed and started again".to_owned()
            }
            Fault::TermKeel => {
                let took = keel.term_and_restart(Duration::from_secs(40)).await?;
                log.keel_back_ms.push(ms(Instant::now()));
                format!("exited {} ms after SIGTERM, started again", took.as_millis())
            }
            Fault::PgImmediate | Fault::PgFast => {
                let mode = if fault == Fault::PgFast { StopMode::Fast } else { StopMode::Immediate };
                let outage = Duration::from_millis(rng.random_range(1_000..5_000));
                let stopped = cluster.stop(mode).await;
                tokio::time::sleep(outage).await;
                cluster.restart().await?;
                log.db_back_ms.push(ms(Instant::now()));
                match stopped {
                    Ok(()) => format!("down {} ms", began.elapsed().as_millis()),
                    Err(e) => format!("stop failed ({e:#}); started again"),
                }
            }
            Fault::TerminateBackends => match check::terminate_backends(&cluster.owner_url).await {
                Ok(n) => format!("{n} backends terminated"),
                Err(e) => format!("could not terminate: {e:#}"),
            },
        };
        log.injected.push(Injected { at_ms: ms(began), fault, lasted_ms: began.elapsed().as_millis() as u64, detail });
    }
    Ok(log)
}
