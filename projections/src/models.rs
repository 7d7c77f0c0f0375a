//! Every asynchronous read model (`docs/`: read models) as a consumer of the log: the registry
//! `keel_store::read::MODELS` lists them, the runner drives them.

use keel_domain::Event;
use keel_runner::{ConsumeError, Consumer};
use keel_store::read::{self, ReadModel};
use keel_store::{Pool, RecordedEvent, StoreError};
use sqlx::PgConnection;
use std::collections::HashMap;

/// A read model run as a projection: the runner hands it batches of the events its descriptor
/// lists, and it tells subscribers at commit what changed.
#[derive(Debug, Clone, Copy)]
pub struct Projection(pub &'static ReadModel);

impl Projection {
    /// The projection of the read model named `name`.
    pub fn named(name: &str) -> Option<Projection> {
        read::model(name).map(Projection)
    }

    pub fn model(&self) -> &'static ReadModel {
        self.0
    }
}

/// Every projection, in the registry's order.
pub fn all() -> impl Iterator<Item = Projection> {
    read::MODELS.iter().copied().map(Projection)
}

/// Every projection's name, in the order `keel projections status` lists them.
pub fn names() -> impl Iterator<Item = &'static str> {
    read::MODELS.iter().map(|m| m.name)
}

/// The read tables projection `name` owns (rebuilt and swapped together).
pub fn tables(name: &str) -> Option<&'static [&'static str]> {
    read::model(name).map(|m| m.tables)
}

impl Consumer for Projection {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn pool(&self) -> Pool {
        self.0.pool
    }

    fn wants(&self, event_type: &str) -> bool {
        self.0.reads(event_type)
    }

    async fn consume(
        &self,
        conn: &mut PgConnection,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ConsumeError> {
        Ok(self.0.apply(conn, recorded, event).await.map(|_| ())?)
    }

    async fn consume_batch(&self, conn: &mut PgConnection, items: &[read::Item<'_>]) -> Result<(), ConsumeError> {
        Ok(self.0.apply_batch(conn, items).await?)
    }

    /// Tells subscribers, at commit, which tenants (and streams) this batch changed.
    async fn before_commit(&self, conn: &mut PgConnection, batch: &[RecordedEvent]) -> Result<(), StoreError> {
        let mut by_tenant: HashMap<uuid::Uuid, Vec<uuid::Uuid>> = HashMap::new();
        for e in batch.iter().filter(|e| self.0.reads(&e.event_type)) {
            let streams = by_tenant.entry(e.tenant_id.0).or_default();
            if !streams.contains(&e.stream_id) {
                streams.push(e.stream_id);
            }
        }
        for (tenant, streams) in by_tenant {
            // NOTIFY payloads are small: past 100 streams, say "all of this tenant".
            let streams = (streams.len() <= 100).then_some(streams);
            // `x`: the batch's last position, so a process reading from a replica can hold the
            // change back until the replica has applied it.
            let at = batch.last().map(|e| e.log_position().to_string());
            let payload = serde_json::json!({ "p": self.0.name, "t": tenant, "s": streams, "x": at }).to_string();
            keel_store::notify_projected(conn, &payload).await?;
        }
        Ok(())
    }
}
