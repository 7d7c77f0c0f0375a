//! Inline projections, applied in the append transaction: what authorization and invariants
//! read is never stale. They are rebuilt from the log by `rebuild_tenant`.

use crate::db::TenantTx;
use crate::error::StoreError;
use crate::log::{self, LogPosition};
use keel_domain::usage::month_of;
use keel_domain::{Event, TenantId};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use std::collections::BTreeMap;

/// The reservation key of an email: its lower-cased SHA-256, so uniqueness needs no address.
pub fn email_key(email: &str) -> String {
    hex::encode(Sha256::digest(email.trim().to_lowercase().as_bytes()))
}

pub(crate) async fn apply(conn: &mut PgConnection, tenant: TenantId, events: &[&Event]) -> Result<(), StoreError> {
    let tenant = tenant.0;
    for event in events {
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
                .execute(&mut *conn)
                .await?;
            }
            Event::TenantPlanChanged(e) => {
                exec(conn, "UPDATE tenants SET plan = $2 WHERE tenant_id = $1", tenant, e.to.as_str()).await?;
            }
            Event::TenantSuspended(e) => {
                sqlx::query("UPDATE tenants SET status = 'suspended', suspended_reason = $2 WHERE tenant_id = $1")
                    .bind(tenant)
                    .bind(e.reason.as_ref().map(|r| r.as_str()))
                    .execute(&mut *conn)
                    .await?;
            }
            Event::TenantReactivated(_) => {
                sqlx::query("UPDATE tenants SET status = 'active', suspended_reason = NULL WHERE tenant_id = $1")
                    .bind(tenant)
                    .execute(&mut *conn)
                    .await?;
            }
            Event::MemberInvited(e) => {
                sqlx::query(
                    "INSERT INTO memberships (tenant_id, member_id, user_id, role, status, joined_at, email_key)
                     VALUES ($1, $2, $3, $4, 'active', $5, $6)",
                )
                .bind(tenant)
                .bind(e.member_id.0)
                .bind(e.user_id.as_str())
                .bind(e.role.as_str())
                .bind(e.at)
                // An erased address (read back during a rebuild) reserves nothing.
                .bind((e.email.as_str() != crate::crypto::ERASED).then(|| email_key(e.email.as_str())))
                .execute(&mut *conn)
                .await?;
                adjust(conn, tenant, Counter::Seats, 1).await?;
            }
            Event::MemberRoleChanged(e) => {
                sqlx::query("UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND member_id = $2")
                    .bind(tenant)
                    .bind(e.member_id.0)
                    .bind(e.to.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
            Event::MemberErased(e) => {
                sqlx::query(
                    "UPDATE memberships SET status = 'erased', email_key = NULL WHERE tenant_id = $1 AND member_id = $2",
                )
                .bind(tenant)
                .bind(e.member_id.0)
                .execute(&mut *conn)
                .await?;
                sqlx::query("DELETE FROM member_keys WHERE tenant_id = $1 AND member_id = $2")
                    .bind(tenant)
                    .bind(e.member_id.0)
                    .execute(&mut *conn)
                    .await?;
                if e.was_active {
                    adjust(conn, tenant, Counter::Seats, -1).await?;
                }
            }
            Event::TenantErased(_) => {
                for sql in [
                    "UPDATE tenants SET status = 'erased', seats_used = 0 WHERE tenant_id = $1",
                    "UPDATE memberships SET status = 'erased', email_key = NULL WHERE tenant_id = $1",
                    "DELETE FROM member_keys WHERE tenant_id = $1",
                ] {
                    sqlx::query(sql).bind(tenant).execute(&mut *conn).await?;
                }
            }
            Event::MemberRemoved(e) => {
                sqlx::query("UPDATE memberships SET status = 'removed' WHERE tenant_id = $1 AND member_id = $2")
                    .bind(tenant)
                    .bind(e.member_id.0)
                    .execute(&mut *conn)
                    .await?;
                adjust(conn, tenant, Counter::Seats, -1).await?;
            }
            Event::ProjectCreated(_) | Event::ProjectRestored(_) => {
                adjust(conn, tenant, Counter::ActiveProjects, 1).await?
            }
            Event::ProjectArchived(_) => adjust(conn, tenant, Counter::ActiveProjects, -1).await?,
            Event::UsageRecorded(e) => {
                let ids: Vec<&str> = e.records.iter().map(|r| r.id.as_str()).collect();
                // A record id seen before violates usage_records_pkey: the command is retried
                // against fresh state, where that record is skipped.
                sqlx::query(
                    "INSERT INTO usage_records (tenant_id, record_id, batch_id) SELECT $1, r, $2 FROM UNNEST($3::text[]) r",
                )
                .bind(tenant)
                .bind(e.batch_id.0)
                .bind(&ids)
                .execute(&mut *conn)
                .await?;
                let mut months: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
                for r in &e.records {
                    *months.entry(month_of(r.occurred_at)).or_default() += r.quantity as i64;
                }
                for (month, units) in months {
                    sqlx::query(
                        "INSERT INTO usage_counters (tenant_id, month, units) VALUES ($1, $2, $3)
                         ON CONFLICT (tenant_id, month) DO UPDATE SET units = usage_counters.units + EXCLUDED.units",
                    )
                    .bind(tenant)
                    .bind(month)
                    .bind(units)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            Event::ProjectUpdated(_)
            | Event::TaskCreated(_)
            | Event::TaskUpdated(_)
            | Event::TaskAssigned(_)
            | Event::TaskStatusChanged(_) => {}
        }
    }
    Ok(())
}

async fn exec(conn: &mut PgConnection, sql: &'static str, tenant: uuid::Uuid, value: &str) -> Result<(), StoreError> {
    sqlx::query(sql).bind(tenant).bind(value).execute(conn).await?;
    Ok(())
}

enum Counter {
    Seats,
    ActiveProjects,
}

async fn adjust(conn: &mut PgConnection, tenant: uuid::Uuid, counter: Counter, by: i32) -> Result<(), StoreError> {
    let sql: &'static str = match counter {
        Counter::Seats => "UPDATE tenants SET seats_used = seats_used + $2 WHERE tenant_id = $1",
        Counter::ActiveProjects => "UPDATE tenants SET active_projects = active_projects + $2 WHERE tenant_id = $1",
    };
    let done = sqlx::query(sql).bind(tenant).bind(by).execute(conn).await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Invalid(format!("tenant {tenant} has no control-plane row")));
    }
    Ok(())
}

/// Replaces a tenant's inline tables with what its events say, in one transaction. Idempotency
/// keys are not derived from the log and are kept.
pub async fn rebuild_tenant(tx: &mut TenantTx) -> Result<usize, StoreError> {
    let tenant = tx.tenant();
    for sql in [
        "DELETE FROM usage_records WHERE tenant_id = $1",
        "DELETE FROM usage_counters WHERE tenant_id = $1",
        "DELETE FROM memberships WHERE tenant_id = $1",
        "DELETE FROM tenants WHERE tenant_id = $1",
    ] {
        sqlx::query(sql).bind(tenant.0).execute(tx.conn()).await?;
    }
    let mut after = LogPosition::START;
    let mut applied = 0;
    loop {
        let batch = log::read_tenant_after(tx, after, 1000).await?;
        let Some(last) = batch.last() else { break };
        after = last.log_position();
        let events: Vec<Event> = batch.iter().map(|e| e.decode()).collect::<Result<_, _>>()?;
        let refs: Vec<&Event> = events.iter().collect();
        apply(tx.conn(), tenant, &refs).await?;
        applied += events.len();
    }
    Ok(applied)
}
