//! The reader's queries of `rm_task_throughput`, `rm_task_completions`.

use crate::error::StoreError;

/// Tasks completed on each of the `days` days up to and including `today` (zero-filled).
pub async fn completed_per_day(
    tx: &mut crate::TenantTx,
    today: chrono::NaiveDate,
    days: i32,
) -> Result<Vec<(chrono::NaiveDate, i64)>, StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_as(
        "SELECT d::date, COALESCE(t.completed, 0)::bigint
           FROM generate_series($2::date - ($3 - 1), $2::date, interval '1 day') d
           LEFT JOIN rm_task_throughput t ON t.tenant_id = $1 AND t.day = d::date
          ORDER BY 1",
    )
    .bind(tenant)
    .bind(today)
    .bind(days)
    .fetch_all(tx.conn())
    .await?)
}
