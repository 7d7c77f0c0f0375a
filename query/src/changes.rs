//! What the projections changed, as they commit: one LISTEN connection per process, fanned out
//! to the subscriptions of this process.

use keel_store::Store;
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

    /// Every change from now on; the listener starts with the first subscriber.
    pub async fn subscribe(&self) -> broadcast::Receiver<Change> {
        let store = self.store.clone();
        self.sender
            .get_or_init(|| async move {
                let (tx, _) = broadcast::channel(1024);
                let sender = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let mut l = match keel_store::listen(store.reader(), keel_store::PROJECTED_CHANNEL).await {
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
                });
                tx
            })
            .await
            .subscribe()
    }
}
