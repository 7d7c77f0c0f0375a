//! Subscriptions: pushed after the projection has applied the change, only to subscribers of
//! that tenant.

use crate::changes::{Change, Changes};
use crate::context::{RequestCtx, bad_input, forbidden, internal};
use crate::schema::Dashboard;
use crate::types::{Project, req};
use async_graphql::{Context, ID, Result, Subscription};
use futures::Stream;
use keel_domain::Role as DomainRole;
use keel_store::read::{self, ReadModel};
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// The projections a dashboard reads.
const DASHBOARD: &[&ReadModel] = &[
    &read::projects::MODEL,
    &read::tasks::MODEL,
    &read::members::MODEL,
    &read::throughput::MODEL,
    &read::usage::MODEL,
];

/// The next change for `tenant` that `wanted` accepts, with the projection that announced it
/// (`Some(None)` when changes were dropped while this subscriber was slow); `None` when the
/// feed is closed.
async fn next_change(
    rx: &mut broadcast::Receiver<Change>,
    tenant: Uuid,
    wanted: impl Fn(&Change) -> bool,
) -> Option<Option<String>> {
    loop {
        match rx.recv().await {
            Ok(c) if c.t == tenant && wanted(&c) => return Some(Some(c.p)),
            Ok(_) => {}
            // Changes were dropped while this subscriber was slow: something may have changed.
            Err(broadcast::error::RecvError::Lagged(_)) => return Some(None),
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Before a push: the subscriber's access as it is now. `Some(error)` ends the subscription.
async fn access_lost(r: &RequestCtx, allowed: fn(DomainRole) -> bool) -> Option<async_graphql::Error> {
    match r.still_allowed(allowed).await {
        Ok(true) => None,
        Ok(false) => Some(forbidden("your access to this tenant has ended")),
        Err(e) => Some(e),
    }
}

pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// The dashboard, each time a projection it reads has applied a change of your tenant.
    async fn dashboard_changed(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Result<Dashboard>>> {
        let r: Arc<RequestCtx> = req(ctx).clone();
        r.require(|_| true).await?;
        let tenant = r.tenant()?.0;
        let rx = ctx.data_unchecked::<Changes>().subscribe().await;
        Ok(futures::stream::unfold(Some((rx, r)), move |state| async move {
            let (mut rx, r) = state?;
            let change = next_change(&mut rx, tenant, |c| DASHBOARD.iter().any(|m| m.name == c.p)).await?;
            // One read model announced the change; the dashboard reads five, which apply it each
            // in their own time. Pushed once all of them have it (at most the consistency wait),
            // so a push never shows the change half applied (a task done in `throughput` but not
            // yet in `tasks`).
            if let Some(p) = change {
                let settled = async {
                    let at = r.checkpoint_of(&p).await?;
                    for m in DASHBOARD {
                        r.wait_for(m.name, at).await?;
                    }
                    Ok::<_, async_graphql::Error>(())
                };
                if let Err(e) = settled.await {
                    return Some((Err(e), None));
                }
            }
            match access_lost(&r, |_| true).await {
                None => Some((Ok(Dashboard), Some((rx, r)))),
                Some(e) => Some((Err(e), None)),
            }
        }))
    }

    /// The project, each time the projection has applied a change to it (its tasks included).
    async fn project_changed(&self, ctx: &Context<'_>, id: ID) -> Result<impl Stream<Item = Result<Project>>> {
        let r: Arc<RequestCtx> = req(ctx).clone();
        r.require(DomainRole::can_read_data).await?;
        let tenant = r.tenant()?.0;
        let id = Uuid::parse_str(&id).map_err(|_| bad_input("not a valid project id"))?;
        let rx = ctx.data_unchecked::<Changes>().subscribe().await;
        let last: Option<(i64, i32, i32, i32)> = None;
        Ok(futures::stream::unfold(Some((rx, r, last)), move |state| async move {
            let (mut rx, r, mut last) = state?;
            loop {
                next_change(&mut rx, tenant, |c| c.p == keel_store::read::projects::MODEL.name).await?;
                if let Some(e) = access_lost(&r, DomainRole::can_read_data).await {
                    return Some((Err(e), None));
                }
                // A change to any of its tasks moves its counts: read it and push it when it moved.
                let mut tx = r.read_tx().await.ok()?;
                let row = keel_store::read::projects::get(&mut tx, id).await.map_err(internal).ok()?;
                let _ = tx.commit().await;
                let Some(row) = row else { continue };
                let state = (row.version, row.tasks_todo, row.tasks_in_progress, row.tasks_done);
                if last != Some(state) {
                    last = Some(state);
                    return Some((Ok(Project::from(row)), Some((rx, r, last))));
                }
            }
        }))
    }
}
