//! The reader's queries of `rm_usage_daily`, `rm_usage_monthly`.

use crate::error::StoreError;

/// Units per day and metric between `from` and `to` (inclusive), optionally of one metric.
pub async fn daily(
    tx: &mut crate::TenantTx,
    metric: Option<&str>,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<Vec<(chrono::NaiveDate, String, i64)>, StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_as(
        "SELECT day, metric, units FROM rm_usage_daily
          WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 AND ($4::text IS NULL OR metric = $4)
          ORDER BY day, metric",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(metric)
    .fetch_all(tx.conn())
    .await?)
}

/// Units recorded in `month` (its first day), all metrics.
pub async fn month(tx: &mut crate::TenantTx, month: chrono::NaiveDate) -> Result<i64, StoreError> {
    let tenant = tx.tenant().0;
    let units: Option<i64> =
        sqlx::query_scalar("SELECT units FROM rm_usage_monthly WHERE tenant_id = $1 AND month = $2")
            .bind(tenant)
            .bind(month)
            .fetch_optional(tx.conn())
            .await?;
    Ok(units.unwrap_or(0))
}
