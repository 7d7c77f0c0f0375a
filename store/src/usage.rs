//! What a RecordUsage command reads: the months' counters (locked) and record ids seen before.

use crate::db::TenantTx;
use crate::error::StoreError;
use chrono::NaiveDate;
use sqlx::Row;
use std::collections::{BTreeMap, HashSet};

/// Units recorded in each of `months`, with their counter rows locked until the transaction
/// ends, so that concurrent calls for the same month are decided one after the other.
pub async fn lock_months(tx: &mut TenantTx, months: &[NaiveDate]) -> Result<BTreeMap<NaiveDate, u64>, StoreError> {
    let tenant = tx.tenant().0;
    // Missing rows are created first so that there is something to lock; sorted order avoids
    // deadlocks between calls that touch the same months.
    sqlx::query(
        "INSERT INTO usage_counters (tenant_id, month) SELECT $1, m FROM UNNEST($2::date[]) m
         ON CONFLICT (tenant_id, month) DO NOTHING",
    )
    .bind(tenant)
    .bind(months)
    .execute(tx.conn())
    .await?;
    let rows = sqlx::query(
        "SELECT month, units FROM usage_counters WHERE tenant_id = $1 AND month = ANY($2) ORDER BY month FOR UPDATE",
    )
    .bind(tenant)
    .bind(months)
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(|r| Ok((r.try_get("month")?, r.try_get::<i64, _>("units")?.max(0) as u64))).collect()
}

/// Which of `ids` were recorded before.
pub async fn recorded(tx: &mut TenantTx, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
    let tenant = tx.tenant().0;
    let found: Vec<String> =
        // One primary-key probe per id, whatever the table's statistics say: `= ANY($2)` was
        // planned as a scan of the tenant's records while the table grew without fresh
        // statistics (18 ms a call in the bench).
        sqlx::query_scalar(
            "SELECT x.record_id FROM UNNEST($2::text[]) AS i(id),
                    LATERAL (SELECT r.record_id FROM usage_records r
                              WHERE r.tenant_id = $1 AND r.record_id = i.id LIMIT 1) AS x",
        )
            .bind(tenant)
            .bind(ids)
            .fetch_all(tx.conn())
            .await?;
    Ok(found.into_iter().collect())
}
