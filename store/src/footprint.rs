//! What each tenant costs the platform in storage, for cost allocation (the platform view's
//! `tenantUsage`): its events and the bytes of its rows in the event log and the read tables,
//! summed with `pg_column_size` over whole rows (the stored, possibly compressed size; indexes
//! and page overhead are not counted). Every row is read, so the answer is cached.

use crate::error::StoreError;
use sqlx::Row;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFootprint {
    pub tenant_id: Uuid,
    /// Events in the log (every event the tenant's commands appended and that erasure kept).
    pub events: i64,
    /// Bytes of the tenant's rows in `events` and the read tables.
    pub storage_bytes: i64,
}

/// The tables whose rows a tenant's footprint sums, each with a `tenant_id` column the projector
/// role reads for every tenant. Fixed names: nothing from a caller reaches the SQL.
const TABLES: [&str; 9] = [
    "events",
    "rm_projects",
    "rm_tasks",
    "rm_members",
    "rm_task_throughput",
    "rm_task_completions",
    "rm_usage_daily",
    "rm_usage_monthly",
    "rm_tenants",
];

/// Every tenant's footprint, largest first, measured now over the projector pool.
pub async fn measure(projector: &crate::RolePool) -> Result<Vec<TenantFootprint>, StoreError> {
    let bytes = TABLES
        .iter()
        .map(|t| format!("SELECT tenant_id, sum(pg_column_size(x.*))::bigint AS bytes FROM {t} x GROUP BY tenant_id"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let sql = format!(
        "WITH b AS ({bytes}), e AS (SELECT tenant_id, count(*) AS n FROM events GROUP BY tenant_id)
         SELECT b.tenant_id, coalesce(max(e.n), 0)::bigint AS events, sum(b.bytes)::bigint AS bytes
         FROM b LEFT JOIN e ON e.tenant_id = b.tenant_id
         GROUP BY b.tenant_id ORDER BY bytes DESC, b.tenant_id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(projector).await?;
    rows.iter()
        .map(|r| {
            Ok(TenantFootprint {
                tenant_id: r.try_get("tenant_id")?,
                events: r.try_get("events")?,
                storage_bytes: r.try_get("bytes")?,
            })
        })
        .collect()
}

/// The last measurement and when it was taken; one measurement at a time refreshes it.
#[derive(Debug, Default)]
pub struct Cache {
    last: Mutex<Option<(Instant, Arc<Vec<TenantFootprint>>)>>,
    refresh: tokio::sync::Mutex<()>,
}

impl Cache {
    /// The footprints, measured at most `max_age` ago, and how old they are.
    pub async fn get(
        &self,
        projector: &crate::RolePool,
        max_age: Duration,
    ) -> Result<(Arc<Vec<TenantFootprint>>, Duration), StoreError> {
        let fresh = |c: &Self| {
            c.last
                .lock()
                .expect("not poisoned")
                .as_ref()
                .filter(|(at, _)| at.elapsed() <= max_age)
                .map(|(at, v)| (v.clone(), at.elapsed()))
        };
        if let Some(hit) = fresh(self) {
            return Ok(hit);
        }
        // Concurrent readers wait for one measurement instead of each scanning every table.
        let _one = self.refresh.lock().await;
        if let Some(hit) = fresh(self) {
            return Ok(hit);
        }
        let measured = Arc::new(measure(projector).await?);
        *self.last.lock().expect("not poisoned") = Some((Instant::now(), measured.clone()));
        Ok((measured, Duration::ZERO))
    }
}
