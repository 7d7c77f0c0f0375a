//! Subscriptions: pushed after the projection has applied the change, only to subscribers of
//! that tenant.

use crate::changes::{Change, Changes};
use crate::context::{RequestCtx, bad_input, internal};
use crate::schema::Dashboard;
use crate::types::{Project, req};
use async_graphql::{Context, ID, Result, Subscription};
use futures::Stream;
use keel_domain::Role as DomainRole;
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// The projections a dashboard reads.
const DASHBOARD: &[&str] = &["projects", "tasks", "members", "throughput", "usage"];

/// The next change for `tenant` that `wanted` accepts; `None` when the feed is closed.
async fn next_change(
    rx: &mut broadcast::Receiver<Change>,
    tenant: Uuid,
    wanted: impl Fn(&Change) -> bool,
) -> Option<()> {
    loop {
        match rx.recv().await {
            Ok(c) if c.t == tenant && wanted(&c) => return Some(()),
            Ok(_) => {}
            // Changes were dropped while this subscriber was slow: something may have changed.
            Err(broadcast::error::RecvError::Lagged(_)) => return Some(()),
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// The dashboard, each time a projection it reads has applied a change of your tenant.
    async fn dashboard_changed(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Dashboard>> {
        let r: Arc<RequestCtx> = req(ctx).clone();
        r.require(|_| true).await?;
        let tenant = r.tenant()?.0;
        let rx = ctx.data_unchecked::<Changes>().subscribe().await;
        Ok(futures::stream::unfold(rx, move |mut rx| async move {
            next_change(&mut rx, tenant, |c| DASHBOARD.contains(&c.p.as_str())).await?;
            Some((Dashboard, rx))
        }))
    }

    /// The project, each time the projection has applied a change to it (its tasks included).
    async fn project_changed(&self, ctx: &Context<'_>, id: ID) -> Result<impl Stream<Item = Project>> {
        let r: Arc<RequestCtx> = req(ctx).clone();
        r.require(DomainRole::can_read_data).await?;
        let tenant = r.tenant()?.0;
        let id = Uuid::parse_str(&id).map_err(|_| bad_input("not a valid project id"))?;
        let rx = ctx.data_unchecked::<Changes>().subscribe().await;
        let last: Option<(i64, i32, i32, i32)> = None;
        Ok(futures::stream::unfold((rx, r, last), move |(mut rx, r, mut last)| async move {
            loop {
                next_change(&mut rx, tenant, |c| c.p == "projects").await?;
                // A change to any of its tasks moves its counts: read it and push it when it moved.
                let mut tx = r.read_tx().await.ok()?;
                let row = keel_store::read::projects::get(&mut tx, id).await.map_err(internal).ok()?;
                let _ = tx.commit().await;
                let Some(row) = row else { continue };
                let state = (row.version, row.tasks_todo, row.tasks_in_progress, row.tasks_done);
                if last != Some(state) {
                    last = Some(state);
                    return Some((Project::from(row), (rx, r, last)));
                }
            }
        }))
    }
}
