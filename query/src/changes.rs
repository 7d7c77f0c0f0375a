//! What the projections changed, as they commit: one LISTEN connection per process (on the
//! primary: a standby cannot LISTEN), fanned out to the subscriptions of this process; with a
//! read replica, each change only once the replica has applied it.

use keel_store::{LogPosition, Store};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OnceCell, broadcast};
use uuid::Uuid;

/// A batch a projection committed for one tenant.
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    /// The projection.
    pub p: String,
    /// The tenant.
    pub t: Uuid,
    /// The streams it touched (`None`: too many to list).
    pub s: Option<Vec<Uuid>>,
    /// The log position the batch applied up to (its checkpoint after the commit).
    #[serde(default)]
    pub x: Option<String>,
}

/// How long a change waits for the replica before a warning says the replica is behind (it
/// goes on waiting: a subscriber never hears of a change it could not then read).
const REPLICA_BEHIND_WARNING: Duration = Duration::from_secs(5);

/// With a read replica, waits until the replica's checkpoint of `c.p` has reached `c.x`: the
/// subscription that reads after this push reads from the replica. `seen` keeps each
/// projection's last known replica position so a burst of changes costs one look.
async fn until_replica_has(store: &Store, c: &Change, seen: &mut std::collections::HashMap<String, LogPosition>) {
    let Some(want) = c.x.as_deref().and_then(LogPosition::parse) else { return };
    if seen.get(&c.p).is_some_and(|at| *at >= want) {
        return;
    }
    let began = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    let mut warned = false;
    loop {
        if let Ok(at) = keel_store::checkpoint::read(store.read_pool(), &c.p).await {
            seen.insert(c.p.clone(), at);
            if at >= want {
                return;
            }
        }
        if !warned && began.elapsed() > REPLICA_BEHIND_WARNING {
            warned = true;
            tracing::warn!(projection = %c.p, tenant_id = %c.t, "the read replica is behind: subscriptions wait for it");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

#[derive(Clone)]
pub struct Changes {
    store: Store,
    sender: Arc<OnceCell<broadcast::Sender<Change>>>,
}

impl Changes {
    pub fn new(store: Store) -> Changes {
        Changes { store, sender: Arc::new(OnceCell::new()) }
    }

    /// Every change from now on, from every database of the platform (docs/tenancy.md); the
    /// listeners start with the first subscriber.
    pub async fn subscribe(&self) -> broadcast::Receiver<Change> {
        let store = self.store.clone();
        self.sender
            .get_or_init(|| async move {
                let (tx, _) = broadcast::channel(1024);
                tokio::spawn(forward(store.clone(), tx.clone()));
                for (_, shard) in store.shards() {
                    tokio::spawn(forward(shard, tx.clone()));
                }
                tx
            })
            .await
            .subscribe()
    }
}

/// Hands every change the projections of `store`'s database commit to `sender`, reconnecting
/// when the listener is lost.
async fn forward(store: Store, sender: broadcast::Sender<Change>) {
    let mut seen = std::collections::HashMap::new();
    loop {
        let mut l = match keel_store::listen(&store, keel_store::PROJECTED_CHANNEL).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for projection changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match l.recv().await {
                Ok(n) => {
                    if let Ok(c) = serde_json::from_str::<Change>(n.payload()) {
                        if store.has_read_replica() {
                            until_replica_has(&store, &c, &mut seen).await;
                        }
                        let _ = sender.send(c);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "projection change listener lost; reconnecting");
                    break;
                }
            }
        }
    }
}
