//! Asynchronous projections: a runner that turns the log into read tables, batch by batch, each
//! batch committed with its checkpoint, one worker per projection by a lease.

mod models;
pub mod rebuild;
mod runner;

pub use models::{
    ALL, MembersProjection, ProjectsProjection, TasksProjection, TenantsProjection, ThroughputProjection,
    UsageProjection, tables,
};
pub use runner::{FailurePolicy, Projection, RunError, Runner, RunnerConfig, default_holder};

use keel_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts a worker for every projection; each waits as a standby while another process holds
/// its lease.
/// One LISTEN connection serves every worker of the process: each notification bumps `wake`.
pub fn spawn_all(store: &Store, config: &RunnerConfig, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let (wake_tx, wake) = watch::channel(0u64);
    let mut handles = Vec::new();
    if config.listen {
        let (store, mut stop) = (store.clone(), shutdown.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let Some(mut l) = runner::listen(&store).await else {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
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
        }));
    }
    fn spawn<P: Projection>(
        store: &Store,
        p: P,
        c: &RunnerConfig,
        s: &watch::Receiver<bool>,
        w: &watch::Receiver<u64>,
    ) -> JoinHandle<()> {
        tokio::spawn(Runner::new(store.clone(), p, c.clone()).with_wake(w.clone()).run(s.clone()))
    }
    handles.extend([
        spawn(store, ProjectsProjection, config, shutdown, &wake),
        spawn(store, TasksProjection, config, shutdown, &wake),
        spawn(store, MembersProjection, config, shutdown, &wake),
        spawn(store, ThroughputProjection, config, shutdown, &wake),
        spawn(store, UsageProjection, config, shutdown, &wake),
        spawn(store, TenantsProjection, config, shutdown, &wake),
    ]);
    handles
}
