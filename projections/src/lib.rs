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
pub fn spawn_all(store: &Store, config: &RunnerConfig, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    fn spawn<P: Projection>(store: &Store, p: P, c: &RunnerConfig, s: &watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(Runner::new(store.clone(), p, c.clone()).run(s.clone()))
    }
    vec![
        spawn(store, ProjectsProjection, config, shutdown),
        spawn(store, TasksProjection, config, shutdown),
        spawn(store, MembersProjection, config, shutdown),
        spawn(store, ThroughputProjection, config, shutdown),
        spawn(store, UsageProjection, config, shutdown),
        spawn(store, TenantsProjection, config, shutdown),
    ]
}
