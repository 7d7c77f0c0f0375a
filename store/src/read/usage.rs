//! `rm_usage_daily` and `rm_usage_monthly`: units per metric per day, and per month.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use crate::usage::add_units;
use keel_domain::Event;
use keel_domain::usage::month_of;
use sqlx::PgConnection;
use std::collections::BTreeMap;

pub async fn apply(conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
    let tenant = recorded.tenant_id.0;
    if let Event::TenantErased(_) = event {
        return super::purge(conn, tenant, &["rm_usage_daily", "rm_usage_monthly"]).await;
    }
    let Event::UsageRecorded(e) = event else { return Ok(()) };
    let mut daily: BTreeMap<(chrono::NaiveDate, &str), i64> = BTreeMap::new();
    let mut monthly: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
    for r in &e.records {
        add_units(&mut daily, (r.occurred_at.date_naive(), r.metric.as_str()), r.quantity)?;
        add_units(&mut monthly, month_of(r.occurred_at), r.quantity)?;
    }
    for ((day, metric), units) in daily {
        sqlx::query(
            "INSERT INTO rm_usage_daily (tenant_id, metric, day, units) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, day, metric) DO UPDATE SET units = rm_usage_daily.units + EXCLUDED.units",
        )
        .bind(tenant)
        .bind(metric)
        .bind(day)
        .bind(units)
        .execute(&mut *conn)
        .await?;
    }
    for (month, units) in monthly {
        sqlx::query(
            "INSERT INTO rm_usage_monthly (tenant_id, month, units) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, month) DO UPDATE SET units = rm_usage_monthly.units + EXCLUDED.units",
        )
        .bind(tenant)
        .bind(month)
        .bind(units)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

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
