//! The projector's writes to `rm_tenants`.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use crate::read::Handled;
use keel_domain::Event;
use sqlx::PgConnection;

pub(super) async fn apply(
    conn: &mut PgConnection,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<Handled, StoreError> {
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
            return Ok(Handled::Applied);
        }
        Event::TenantPlanChanged(e) => {
            sqlx::query("UPDATE rm_tenants SET plan = $2, updated_at = $3 WHERE tenant_id = $1")
                .bind(tenant)
                .bind(e.to.as_str())
                .bind(at)
                .execute(conn)
                .await?;
            return Ok(Handled::Applied);
        }
        Event::TenantSuspended(_) => "status = 'suspended'",
        Event::TenantReactivated(_) => "status = 'active'",
        Event::MemberInvited(_) => "seats_used = seats_used + 1",
        Event::MemberRemoved(_) => "seats_used = seats_used - 1",
        Event::MemberErased(e) if e.was_active => "seats_used = seats_used - 1",
        // A removed member held no seat.
        Event::MemberErased(_) => return Ok(Handled::Applied),
        Event::TenantErased(_) => "status = 'erased', seats_used = 0, active_projects = 0",
        Event::ProjectCreated(_) | Event::ProjectRestored(_) => "active_projects = active_projects + 1",
        Event::ProjectArchived(_) => "active_projects = active_projects - 1",
        _ => return Ok(Handled::Ignored),
    };
    // `change` is one of the fixed fragments above, never input.
    let sql = format!("UPDATE rm_tenants SET {change}, updated_at = $2 WHERE tenant_id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(at).execute(conn).await?;
    Ok(Handled::Applied)
}
