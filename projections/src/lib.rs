//! Asynchronous projections: every read model of `keel_store::read::MODELS` as a consumer of the
//! log, driven by `keel_runner` (batch by batch, each batch committed with its checkpoint, one
//! worker per projection by a lease), and their rebuilds.

mod models;
pub mod rebuild;

pub use keel_runner::{ConsumeError, FailurePolicy, RunError, Runner, RunnerConfig, default_holder};
pub use models::{Projection, all, names, tables};

use keel_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts a worker for every projection; each waits as a standby while another process holds
/// its lease. One LISTEN connection serves every worker of the process.
pub fn spawn_all(store: &Store, config: &RunnerConfig, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    let wake = if config.listen {
        let (task, wake) = keel_runner::wake_on_appends(store, shutdown);
        handles.push(task);
        Some(wake)
    } else {
        None
    };
    for projection in all() {
        let mut runner = Runner::new(store.clone(), projection, config.clone());
        if let Some(w) = &wake {
            runner = runner.with_wake(w.clone());
        }
        handles.push(tokio::spawn(runner.run(shutdown.clone())));
    }
    handles
}
