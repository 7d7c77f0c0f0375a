//! The fan-out: one consumer of the log (`outbound.webhooks`, leased and gap-safe like a
//! projection) that turns each event into a queue row for every endpoint of its tenant that takes
//! its type, in the transaction that moves its checkpoint — so an event is queued for an endpoint
//! exactly once, and each endpoint's queue is in log order. It keeps the routes itself, from the
//! `Webhook*` events in log order: an endpoint takes exactly the events after its creation (and
//! after each change of its types), a deletion drops its queue, and a replay refills the queue
//! from the log up to the replay's own position.

use keel_domain::Event;
use keel_domain::webhook::ReplayFrom;
use keel_runner::{ConsumeError, Consumer};
use keel_store::webhook_delivery::{self as wd, EndpointKey, Queued, ReplayStart};
use keel_store::{LogPosition, RecordedEvent, read::Item};
use sqlx::PgConnection;

/// The fan-out's checkpoint, lease and metrics label.
pub const NAME: &str = "outbound.webhooks";

pub struct Fanout {
    /// The most events waiting for one endpoint (`KEEL_WEBHOOKS_QUEUE_MAX`).
    queue_max: i64,
}

impl Fanout {
    pub fn new(queue_max: i64) -> Fanout {
        Fanout { queue_max }
    }

    async fn flush(
        &self,
        conn: &mut PgConnection,
        run: &mut Vec<Queued<'_>>,
        touched: &mut Vec<EndpointKey>,
    ) -> Result<(), ConsumeError> {
        if !run.is_empty() {
            touched.extend(wd::enqueue(conn, run, self.queue_max).await?);
            run.clear();
        }
        Ok(())
    }
}

impl Consumer for Fanout {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Every event: which endpoints take it is the routes' business.
    fn wants(&self, _event_type: &str) -> bool {
        true
    }

    async fn consume(
        &self,
        conn: &mut PgConnection,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ConsumeError> {
        self.consume_batch(conn, &[(recorded, event.clone())]).await
    }

    async fn consume_batch(&self, conn: &mut PgConnection, items: &[Item<'_>]) -> Result<(), ConsumeError> {
        let mut run: Vec<Queued<'_>> = Vec::new();
        let mut touched: Vec<EndpointKey> = Vec::new();
        // Events that came here by an import or a move were sent by the database they came
        // from: their routes are kept (what follows them is sent), nothing of theirs is queued.
        let imported = match (items.iter().map(|i| i.0.position).min(), items.iter().map(|i| i.0.position).max()) {
            (Some(from), Some(to)) => keel_store::log::imported_between(conn, from, to).await?,
            _ => Vec::new(),
        };
        for (recorded, event) in items {
            let tenant = recorded.tenant_id.0;
            let was_sent = keel_store::log::is_imported(recorded, &imported);
            if was_sent && matches!(event, Event::WebhookReplayRequested(_)) {
                continue;
            }
            // Every event goes to the endpoints that take it, a webhook's own events too (to
            // the tenant's other endpoints: an endpoint takes what follows its creation).
            if !was_sent {
                run.push(Queued {
                    tenant_id: tenant,
                    at: recorded.log_position(),
                    event_id: recorded.event_id,
                    event_type: &recorded.event_type,
                });
            }
            let is_route_change = matches!(
                event,
                Event::WebhookCreated(_)
                    | Event::WebhookUpdated(_)
                    | Event::WebhookDeleted(_)
                    | Event::WebhookReplayRequested(_)
                    | Event::WebhookSecretRotated(_)
            );
            if !is_route_change {
                continue;
            }
            self.flush(conn, &mut run, &mut touched).await?;
            match event {
                Event::WebhookCreated(e) => wd::route_created(conn, tenant, e.webhook_id.0, &e.event_types).await?,
                Event::WebhookUpdated(e) => {
                    wd::route_updated(conn, tenant, e.webhook_id.0, e.event_types.as_deref()).await?;
                    touched.push((tenant, e.webhook_id.0));
                }
                Event::WebhookDeleted(e) => {
                    wd::route_deleted(conn, tenant, e.webhook_id.0).await?;
                    touched.push((tenant, e.webhook_id.0));
                }
                Event::WebhookReplayRequested(e) => {
                    let from = match e.from {
                        ReplayFrom::Time(t) => ReplayStart::Time(t),
                        ReplayFrom::Position { xid, position } => ReplayStart::After(LogPosition { xid, position }),
                    };
                    let n =
                        wd::replay(conn, tenant, e.webhook_id.0, from, recorded.log_position(), self.queue_max).await?;
                    tracing::info!(tenant_id = %tenant, webhook_id = %e.webhook_id.0, events = n, "webhook replay queued");
                    touched.push((tenant, e.webhook_id.0));
                }
                // A new secret signs the next attempt: wake the worker that may be waiting.
                Event::WebhookSecretRotated(e) => touched.push((tenant, e.webhook_id.0)),
                _ => {}
            }
        }
        self.flush(conn, &mut run, &mut touched).await?;
        touched.sort_unstable();
        touched.dedup();
        wd::notify(conn, &touched).await?;
        Ok(())
    }
}
