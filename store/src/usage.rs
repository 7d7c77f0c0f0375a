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

/// Which of `ids` were recorded before. Ids PostgreSQL cannot hold (a NUL) were never recorded
/// and are not sent: this runs before the domain refuses them, naming the field.
pub async fn recorded(tx: &mut TenantTx, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
    let tenant = tx.tenant().0;
    let ids: Vec<&str> = ids.iter().copied().filter(|id| !id.contains('\0')).collect();
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
            .bind(&ids)
            .fetch_all(tx.conn())
            .await?;
    Ok(found.into_iter().collect())
}

/// Where the records `ids` were recorded: of the batches that recorded any of them, the one
/// whose last event comes last in the log, as (batch id, its version, that event's position).
/// `None` when none of them was recorded. A call that repeats recorded usage answers with it, so
/// its consistency token covers the records.
pub async fn recording_head(
    tx: &mut TenantTx,
    ids: &[&str],
) -> Result<Option<(uuid::Uuid, i64, crate::LogPosition)>, StoreError> {
    let tenant = tx.tenant().0;
    let ids: Vec<&str> = ids.iter().copied().filter(|id| !id.contains('\0')).collect();
    let row = sqlx::query(
        "SELECT e.stream_id, e.stream_version, e.transaction_id::text AS xid, e.position
           FROM events e
          WHERE e.tenant_id = $1
            AND e.stream_id IN (SELECT r.batch_id FROM usage_records r
                                 WHERE r.tenant_id = $1 AND r.record_id = ANY($2))
          ORDER BY e.transaction_id DESC, e.position DESC
          LIMIT 1",
    )
    .bind(tenant)
    .bind(&ids)
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| {
        let xid: String = r.try_get("xid")?;
        let xid = xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?;
        Ok((
            r.try_get("stream_id")?,
            r.try_get("stream_version")?,
            crate::LogPosition { xid, position: r.try_get("position")? },
        ))
    })
    .transpose()
}

/// Adds `quantity` to the units under `key`, as the `bigint` they are stored as; a sum that does
/// not fit is an error, never a wrapped number. (The domain's bounds keep every sum far below.)
pub(crate) fn add_units<K: Ord>(sums: &mut BTreeMap<K, i64>, key: K, quantity: u64) -> Result<(), StoreError> {
    let units = sums.entry(key).or_default();
    *units = i64::try_from(quantity)
        .ok()
        .and_then(|q| units.checked_add(q))
        .ok_or_else(|| StoreError::UsageOverflow(quantity))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_that_do_not_fit_a_bigint_are_an_error_not_a_wrapped_sum() {
        let mut sums = BTreeMap::new();
        add_units(&mut sums, "m", i64::MAX as u64).unwrap();
        assert!(matches!(add_units(&mut sums, "m", 1), Err(StoreError::UsageOverflow(_))));
        assert!(matches!(add_units(&mut sums, "other", u64::MAX), Err(StoreError::UsageOverflow(_))));
        assert_eq!(sums.get("m"), Some(&i64::MAX));
        add_units(&mut sums, "other", 2).unwrap();
        add_units(&mut sums, "other", 3).unwrap();
        assert_eq!(sums.get("other"), Some(&5));
    }
}
