//! Events out: consumers of the log that hand each event, in its documented envelope
//! (`envelope`), to a system outside Keel — the NATS JetStream publisher now (`nats`), webhook
//! delivery next, from its parts here: Standard Webhooks signatures (`signature`), the retry
//! schedule and an endpoint's state (`schedule`), where a webhook may go (`destination`) and the
//! client that enforces it (`safe_client`). Each is driven by `keel_runner` like a projection (leased, gap-safe), but
//! delivers with no transaction open (`Consumer::DELIVERS`) and has its checkpoint advanced only
//! after its destination took the batch.

pub mod destination;
pub mod envelope;
pub mod nats;
pub mod safe_client;
pub mod schedule;
pub mod signature;

pub use envelope::{Envelope, SPEC_VERSION};
pub use nats::{NatsConfig, NatsPublisher};

use keel_runner::{Runner, RunnerConfig};
use keel_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What goes out, and where (`KEEL_NATS_*`); nothing without a destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundConfig {
    pub nats: Option<NatsConfig>,
}

/// The checkpoint names of the outbound consumers `config` runs (for `keel projections status`).
pub fn names(config: &OutboundConfig) -> Vec<&'static str> {
    config.nats.iter().map(|_| nats::NAME).collect()
}

/// Starts a worker for each configured destination; each waits as a standby while another
/// process holds its lease.
pub fn spawn_all(
    store: &Store,
    config: &OutboundConfig,
    runner: &RunnerConfig,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    if let Some(nats) = &config.nats {
        let r = Runner::new(store.clone(), NatsPublisher::new(nats.clone()), runner.clone());
        handles.push(tokio::spawn(r.run(shutdown.clone())));
    }
    handles
}
