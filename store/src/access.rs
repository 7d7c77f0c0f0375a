//! What authorization and invariants read inside a command's transaction: the caller's
//! membership and the tenant's plan, status and counters.

use crate::db::TenantTx;
use crate::error::StoreError;
use keel_domain::{Plan, Role};
use sqlx::Row;

/// The active role of `user_id` in the transaction's tenant; `None` when not a member.
pub async fn member_role(tx: &mut TenantTx, user_id: &str) -> Result<Option<Role>, StoreError> {
    let tenant = tx.tenant().0;
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2 AND status = 'active'")
            .bind(tenant)
            .bind(user_id)
            .fetch_optional(tx.conn())
            .await?;
    role.map(|r| Role::parse(&r).ok_or_else(|| StoreError::Corrupt(format!("unknown role {r}")))).transpose()
}

#[derive(Debug, Clone)]
pub struct TenantRow {
    pub name: String,
    pub slug: String,
    pub plan: Plan,
    /// Takes no writes: suspended or erased.
    pub suspended: bool,
    pub status: keel_domain::tenant::TenantStatus,
    pub active_projects: u64,
    pub seats_used: u64,
}

/// The tenant's control-plane row. With `lock`, the row stays locked until the transaction ends,
/// which serialises every command of this tenant that counts against a plan limit.
pub async fn tenant_row(tx: &mut TenantTx, lock: bool) -> Result<Option<TenantRow>, StoreError> {
    let sql: &'static str = if lock {
        "SELECT name, slug, plan, status, active_projects, seats_used FROM tenants WHERE tenant_id = $1 FOR UPDATE"
    } else {
        "SELECT name, slug, plan, status, active_projects, seats_used FROM tenants WHERE tenant_id = $1"
    };
    let tenant = tx.tenant().0;
    let Some(r) = sqlx::query(sql).bind(tenant).fetch_optional(tx.conn()).await? else {
        return Ok(None);
    };
    tx.tenant_locked |= lock;
    tenant_row_of(&r).map(Some)
}

fn tenant_row_of(r: &sqlx::postgres::PgRow) -> Result<TenantRow, StoreError> {
    tenant_row_from(
        r.try_get("name")?,
        r.try_get("slug")?,
        r.try_get("plan")?,
        r.try_get("status")?,
        r.try_get("active_projects")?,
        r.try_get("seats_used")?,
    )
}

/// A tenant row from its stored columns.
pub(crate) fn tenant_row_from(
    name: String,
    slug: String,
    plan: String,
    status: String,
    active_projects: i32,
    seats_used: i32,
) -> Result<TenantRow, StoreError> {
    let status = keel_domain::tenant::TenantStatus::try_from(status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(TenantRow {
        name,
        slug,
        plan: Plan::parse(&plan).ok_or_else(|| StoreError::Corrupt(format!("unknown plan {plan}")))?,
        // An erased tenant takes no writes, as a suspended one.
        suspended: status != keel_domain::tenant::TenantStatus::Active,
        status,
        active_projects: active_projects.max(0) as u64,
        seats_used: seats_used.max(0) as u64,
    })
}
