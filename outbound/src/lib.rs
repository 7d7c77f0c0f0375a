//! Events out: consumers of the log that hand each event, in its documented envelope
//! (`envelope`), to a system outside Keel — the NATS JetStream publisher (`nats`) and webhook
//! delivery (`webhooks`: a fan-out consumer and per-endpoint workers), with their parts:
//! Standard Webhooks signatures (`signature`), the retry schedule and an endpoint's state
//! (`schedule`), where a webhook may go (`destination`) and the client that enforces it
//! (`safe_client`). Each follows the log through `keel_runner` like a projection (leased,
//! gap-safe); nothing waits for a destination with a transaction open.

pub mod destination;
pub mod envelope;
pub mod nats;
pub mod safe_client;
pub mod schedule;
pub mod signature;
pub mod webhooks;

pub use envelope::{Envelope, SPEC_VERSION};
pub use nats::{NatsConfig, NatsPublisher};
pub use webhooks::WebhookConfig;

use keel_runner::{Runner, RunnerConfig};
use keel_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What goes out, and where (`KEEL_NATS_*`, `KEEL_WEBHOOKS_*`). Webhooks are always delivered
/// (a tenant with no endpoint costs the fan-out one statement per batch); NATS only when set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboundConfig {
    pub nats: Option<NatsConfig>,
    pub webhooks: WebhookConfig,
}

/// The checkpoint names of the outbound consumers `config` runs (for `keel projections status`).
pub fn names(config: &OutboundConfig) -> Vec<&'static str> {
    let mut names = vec![webhooks::fanout::NAME];
    names.extend(config.nats.iter().map(|_| nats::NAME));
    names
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
    let fanout = webhooks::fanout::Fanout::new(config.webhooks.queue_max);
    handles.push(tokio::spawn(Runner::new(store.clone(), fanout, runner.clone()).run(shutdown.clone())));
    let webhooks = WebhookConfig { lease_ttl: runner.lease_ttl, ..config.webhooks.clone() };
    handles.push(tokio::spawn(webhooks::worker::run(store.clone(), webhooks, runner.holder.clone(), shutdown.clone())));
    if let Some(nats) = &config.nats {
        let r = Runner::new(store.clone(), NatsPublisher::new(nats.clone()), runner.clone());
        handles.push(tokio::spawn(r.run(shutdown.clone())));
    }
    handles
}
