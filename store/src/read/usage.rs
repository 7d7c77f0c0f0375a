//! `rm_usage_daily` and `rm_usage_monthly`: units per metric per day, and per month.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use keel_domain::Event;
use keel_domain::usage::month_of;
use sqlx::PgConnection;
use std::collections::BTreeMap;

pub async fn apply(conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
    let Event::UsageRecorded(e) = event else { return Ok(()) };
    let tenant = recorded.tenant_id.0;
    let mut daily: BTreeMap<(chrono::NaiveDate, &str), i64> = BTreeMap::new();
    let mut monthly: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
    for r in &e.records {
        *daily.entry((r.occurred_at.date_naive(), r.metric.as_str())).or_default() += r.quantity as i64;
        *monthly.entry(month_of(r.occurred_at)).or_default() += r.quantity as i64;
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
