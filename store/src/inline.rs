//! Inline projections, applied in the append transaction: what authorization and invariants
//! read is never stale. They can be rebuilt from the log like any other projection.

use crate::db::TenantTx;
use crate::error::StoreError;
use keel_domain::Event;

pub(crate) async fn apply(tx: &mut TenantTx, events: &[(&Event, i64)]) -> Result<(), StoreError> {
    let tenant = tx.tenant().0;
    for (event, _version) in events {
        match event {
            Event::TenantProvisioned(e) => {
                sqlx::query(
                    "INSERT INTO tenants (tenant_id, name, slug, plan, status, created_at)
                     VALUES ($1, $2, $3, $4, 'active', $5)",
                )
                .bind(tenant)
                .bind(e.name.as_str())
                .bind(e.slug.as_str())
                .bind(e.plan.as_str())
                .bind(e.at)
                .execute(tx.conn())
                .await?;
            }
            Event::MemberInvited(e) => {
                sqlx::query(
                    "INSERT INTO memberships (tenant_id, member_id, user_id, role, status, joined_at)
                     VALUES ($1, $2, $3, $4, 'active', $5)",
                )
                .bind(tenant)
                .bind(e.member_id.0)
                .bind(e.user_id.as_str())
                .bind(e.role.as_str())
                .bind(e.at)
                .execute(tx.conn())
                .await?;
                adjust(tx, "seats_used", 1).await?;
            }
            Event::ProjectCreated(_) | Event::ProjectRestored(_) => adjust(tx, "active_projects", 1).await?,
            Event::ProjectArchived(_) => adjust(tx, "active_projects", -1).await?,
            Event::ProjectUpdated(_) => {}
        }
    }
    Ok(())
}

async fn adjust(tx: &mut TenantTx, counter: &'static str, by: i32) -> Result<(), StoreError> {
    let sql: &'static str = match counter {
        "seats_used" => "UPDATE tenants SET seats_used = seats_used + $2 WHERE tenant_id = $1",
        _ => "UPDATE tenants SET active_projects = active_projects + $2 WHERE tenant_id = $1",
    };
    let tenant = tx.tenant().0;
    let done = sqlx::query(sql).bind(tenant).bind(by).execute(tx.conn()).await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Invalid(format!("tenant {tenant} has no control-plane row")));
    }
    Ok(())
}
