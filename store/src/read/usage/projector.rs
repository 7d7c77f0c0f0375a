//! The projector's writes to `rm_usage_daily`, `rm_usage_monthly`.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use crate::read::Handled;
use crate::usage::add_units;
use keel_domain::Event;
use keel_domain::usage::month_of;
use sqlx::PgConnection;
use std::collections::BTreeMap;

pub(super) async fn apply(
    conn: &mut PgConnection,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<Handled, StoreError> {
    let tenant = recorded.tenant_id.0;
    if let Event::TenantErased(_) = event {
        crate::read::purge(conn, tenant, super::MODEL.tables).await?;
        return Ok(Handled::Applied);
    }
    let Event::UsageRecorded(e) = event else { return Ok(Handled::Ignored) };
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
    Ok(Handled::Applied)
}
