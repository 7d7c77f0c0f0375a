//! Read models: one folder each, holding its descriptor (`mod.rs`), the projector's writes
//! (`projector.rs`) and the reader's queries (`reader.rs`). `MODELS` is the registry every list
//! of projections, their tables, workers, status and rebuilds is generated from.

pub mod members;
pub mod projects;
pub mod tasks;
pub mod tenants;
pub mod throughput;
pub mod usage;

use crate::Pool;
use crate::error::StoreError;
use crate::log::RecordedEvent;
use keel_domain::{Event, EventKind};
use sqlx::PgConnection;
use std::future::Future;
use std::pin::Pin;

/// Every read model, in the order `keel projections status` lists them. A new read model is a
/// folder beside these and one line here.
/// The most rows a connection's `totalCount` counts when no counter answers it: a count of a
/// filtered list stops there, so it costs the same at any size (docs/api.md, "Counts").
pub const COUNT_CAP: i64 = 1_000;

/// A count of matching rows: exact, or `COUNT_CAP` with `capped` when more match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub n: i64,
    pub capped: bool,
}

impl Count {
    pub fn exact(n: i64) -> Count {
        Count { n, capped: false }
    }

    /// From a count of at most `COUNT_CAP + 1` rows.
    pub(crate) fn from_limited(n: i64) -> Count {
        if n > COUNT_CAP { Count { n: COUNT_CAP, capped: true } } else { Count::exact(n) }
    }
}

/// `SELECT count(*) FROM (<inner> LIMIT COUNT_CAP + 1) AS c`: the inner select picks the matching
/// rows (`SELECT 1 FROM ... WHERE ...`).
pub(crate) fn capped_sql(inner: &str) -> String {
    format!("SELECT count(*) FROM ({inner} LIMIT {}) AS c", COUNT_CAP + 1)
}

pub static MODELS: &[&ReadModel] =
    &[&projects::MODEL, &tasks::MODEL, &members::MODEL, &throughput::MODEL, &usage::MODEL, &tenants::MODEL];

/// The read model named `name`.
pub fn model(name: &str) -> Option<&'static ReadModel> {
    MODELS.iter().copied().find(|m| m.name == name)
}

/// What one event did to a read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The model reads this kind of event (whether or not a row changed).
    Applied,
    /// The model does not read this kind of event.
    Ignored,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Applies one event as the projector.
pub type ApplyFn =
    for<'a> fn(&'a mut PgConnection, &'a RecordedEvent, &'a Event) -> BoxFuture<'a, Result<Handled, StoreError>>;

/// Applies a batch of decoded events in order, with the same effect as `ApplyFn` on each.
pub type ApplyBatchFn = for<'a, 'b> fn(&'a mut PgConnection, &'a [Item<'b>]) -> BoxFuture<'a, Result<(), StoreError>>;

/// A read model's descriptor: everything the projection runner, the rebuild and the query side
/// need to know about it, declared once in its folder's `mod.rs`.
#[derive(Debug)]
pub struct ReadModel {
    /// Its name: the projection's checkpoint, lease, metrics label and change notifications.
    pub name: &'static str,
    /// The tables it owns (rebuilt and swapped together, purged on `TenantErased`).
    pub tables: &'static [&'static str],
    /// The event kinds it reads; the runner only moves the checkpoint past the others. A test
    /// (`tests/integration/registry.rs`) fails when `apply` and this list disagree.
    pub handles: &'static [EventKind],
    /// The service role its projector writes as.
    pub pool: Pool,
    pub apply: ApplyFn,
    /// A faster path for runs of similar events; `None`: event by event.
    pub apply_batch: Option<ApplyBatchFn>,
}

impl ReadModel {
    /// Whether it reads events stored with this type name.
    pub fn reads(&self, event_type: &str) -> bool {
        EventKind::parse(event_type).is_some_and(|k| self.handles.contains(&k))
    }

    pub async fn apply(
        &self,
        conn: &mut PgConnection,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<Handled, StoreError> {
        (self.apply)(conn, recorded, event).await
    }

    pub async fn apply_batch(&self, conn: &mut PgConnection, items: &[Item<'_>]) -> Result<(), StoreError> {
        match self.apply_batch {
            Some(batch) => batch(conn, items).await,
            None => {
                for (recorded, event) in items {
                    (self.apply)(conn, recorded, event).await?;
                }
                Ok(())
            }
        }
    }
}

impl PartialEq for ReadModel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ReadModel {}

fn boxed_apply<'a>(
    f: impl Future<Output = Result<Handled, StoreError>> + Send + 'a,
) -> BoxFuture<'a, Result<Handled, StoreError>> {
    Box::pin(f)
}

fn boxed_batch<'a>(
    f: impl Future<Output = Result<(), StoreError>> + Send + 'a,
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(f)
}

/// Deletes the tenant's rows from a projection's tables (its answer to `TenantErased`).
pub(crate) async fn purge(
    conn: &mut sqlx::PgConnection,
    tenant: uuid::Uuid,
    tables: &[&'static str],
) -> Result<(), crate::StoreError> {
    for table in tables {
        // `table` is one of the fixed names the descriptors declare, never input.
        let sql = format!("DELETE FROM {table} WHERE tenant_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).execute(&mut *conn).await?;
    }
    Ok(())
}

/// One decoded event of a projection batch.
pub type Item<'a> = (&'a crate::log::RecordedEvent, keel_domain::Event);

/// Splits a batch into maximal runs of events of the same type, in log order: a run of creations
/// can be written with one statement without reordering anything.
pub fn runs<'a, 'b>(items: &'b [Item<'a>]) -> impl Iterator<Item = &'b [Item<'a>]> {
    items.chunk_by(|a, b| std::mem::discriminant(&a.1) == std::mem::discriminant(&b.1))
}
