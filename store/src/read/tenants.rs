//! `rm_tenants`: the platform's view of every tenant.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use keel_domain::Event;
use sqlx::PgConnection;

pub async fn apply(conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
    let tenant = recorded.tenant_id.0;
    let at = recorded.recorded_at;
    let change: &'static str = match event {
        Event::TenantProvisioned(e) => {
            sqlx::query(
                "INSERT INTO rm_tenants (tenant_id, name, slug, plan, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'active', $5, $5) ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(e.name.as_str())
            .bind(e.slug.as_str())
            .bind(e.plan.as_str())
            .bind(e.at)
            .execute(conn)
            .await?;
            return Ok(());
        }
        Event::TenantPlanChanged(e) => {
            sqlx::query("UPDATE rm_tenants SET plan = $2, updated_at = $3 WHERE tenant_id = $1")
                .bind(tenant)
                .bind(e.to.as_str())
                .bind(at)
                .execute(conn)
                .await?;
            return Ok(());
        }
        Event::TenantSuspended(_) => "status = 'suspended'",
        Event::TenantReactivated(_) => "status = 'active'",
        Event::MemberInvited(_) => "seats_used = seats_used + 1",
        Event::MemberRemoved(_) => "seats_used = seats_used - 1",
        Event::MemberErased(e) if e.was_active => "seats_used = seats_used - 1",
        Event::TenantErased(_) => "status = 'erased', seats_used = 0, active_projects = 0",
        Event::ProjectCreated(_) | Event::ProjectRestored(_) => "active_projects = active_projects + 1",
        Event::ProjectArchived(_) => "active_projects = active_projects - 1",
        _ => return Ok(()),
    };
    // `change` is one of the fixed fragments above, never input.
    let sql = format!("UPDATE rm_tenants SET {change}, updated_at = $2 WHERE tenant_id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(at).execute(conn).await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlatformTenantRow {
    pub tenant_id: uuid::Uuid,
    pub name: String,
    pub slug: String,
    #[sqlx(try_from = "String")]
    pub plan: keel_domain::Plan,
    #[sqlx(try_from = "String")]
    pub status: keel_domain::tenant::TenantStatus,
    pub seats_used: i32,
    pub active_projects: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Every tenant (a platform transaction), oldest first, after `(created_at, tenant_id)`.
pub async fn page(
    tx: &mut crate::TenantTx,
    plan: Option<&str>,
    after: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>,
    limit: i64,
) -> Result<Vec<PlatformTenantRow>, StoreError> {
    let (at, id) = match after {
        Some((a, i)) => (Some(a), Some(i)),
        None => (None, None),
    };
    Ok(sqlx::query_as(
        "SELECT tenant_id, name, slug, plan, status, seats_used, active_projects, created_at FROM rm_tenants
          WHERE ($1::text IS NULL OR plan = $1) AND ($2::timestamptz IS NULL OR (created_at, tenant_id) > ($2, $3))
          ORDER BY created_at, tenant_id LIMIT $4",
    )
    .bind(plan)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn count(tx: &mut crate::TenantTx, plan: Option<&str>) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM rm_tenants WHERE ($1::text IS NULL OR plan = $1)")
        .bind(plan)
        .fetch_one(tx.conn())
        .await?)
}

pub async fn by_plan(tx: &mut crate::TenantTx) -> Result<Vec<(keel_domain::Plan, i64)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT plan, count(*) FROM rm_tenants GROUP BY plan ORDER BY plan")
        .fetch_all(tx.conn())
        .await?;
    rows.into_iter()
        .map(|(plan, n)| Ok((keel_domain::Plan::try_from(plan).map_err(|e| StoreError::Corrupt(e.to_string()))?, n)))
        .collect()
}
