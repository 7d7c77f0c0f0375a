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

/// How `events` move the tenant's seat and active-project counters. An erasure zeroes both, so
/// only what follows the last one counts.
pub(crate) fn counter_deltas<'a>(events: impl IntoIterator<Item = &'a Event>) -> (i32, i32) {
    let (mut seats, mut projects) = (0, 0);
    for event in events {
        match event {
            Event::MemberInvited(_) => seats += 1,
            Event::MemberRemoved(_) => seats -= 1,
            Event::MemberErased(e) if e.was_active => seats -= 1,
            Event::ProjectCreated(_) | Event::ProjectRestored(_) => projects += 1,
            Event::ProjectArchived(_) => projects -= 1,
            Event::TenantErased(_) => (seats, projects) = (0, 0),
            _ => {}
        }
    }
    (seats, projects)
}

/// Whether appending `events` moves the counters of an existing tenant row (an update of it;
/// provisioning inserts the row, which no one else can hold yet).
pub fn moves_counters(events: &[Event]) -> bool {
    !events.iter().any(|e| matches!(e, Event::TenantProvisioned(_))) && counter_deltas(events) != (0, 0)
}

/// Whether `events` can be appended in one call as their own transaction
/// (`write_path::WriteConn::append`): none writes an inline table other than the tenant's
/// counters (which the call moves), and none carries personal data or a secret to seal.
pub fn in_one_call(events: &[Event]) -> bool {
    events.iter().all(|e| match e {
        Event::WebhookReplayRequested(_)
        | Event::ProjectCreated(_)
        | Event::ProjectRestored(_)
        | Event::ProjectArchived(_)
        | Event::ProjectUpdated(_)
        | Event::TaskCreated(_)
        | Event::TaskUpdated(_)
        | Event::TaskAssigned(_)
        | Event::TaskStatusChanged(_) => true,
        Event::TenantProvisioned(_)
        | Event::TenantPlanChanged(_)
        | Event::TenantSuspended(_)
        | Event::TenantReactivated(_)
        | Event::TenantErased(_)
        | Event::MemberInvited(_)
        | Event::MemberRoleChanged(_)
        | Event::MemberRemoved(_)
        | Event::MemberErased(_)
        | Event::UsageRecorded(_)
        | Event::WebhookCreated(_)
        | Event::WebhookUpdated(_)
        | Event::WebhookDeleted(_)
        | Event::WebhookSecretRotated(_) => false,
    })
}

/// Applies `events` to the inline tables. The counters move by `counter_deltas` at the end,
/// unless the caller already moved them (the append folds that into its insert).
pub(crate) async fn apply(
    conn: &mut PgConnection,
    tenant: TenantId,
    events: &[&Event],
    counters_moved: bool,
) -> Result<(), StoreError> {
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
            }
            Event::TenantErased(_) => {
                for sql in [
                    "UPDATE tenants SET status = 'erased', seats_used = 0, active_projects = 0 WHERE tenant_id = $1",
                    "UPDATE memberships SET status = 'erased', email_key = NULL WHERE tenant_id = $1",
                    "DELETE FROM member_keys WHERE tenant_id = $1",
                    // An erased tenant sends nothing more (its endpoints' keys are gone too).
                    "UPDATE webhook_endpoints SET deleted = true WHERE tenant_id = $1",
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
            }
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
                    crate::usage::add_units(&mut months, month_of(r.occurred_at), r.quantity)?;
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
            Event::WebhookCreated(e) => {
                sqlx::query(
                    "INSERT INTO webhook_endpoints (tenant_id, webhook_id, url, event_types, description, secret,
                                                    created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                )
                .bind(tenant)
                .bind(e.webhook_id.0)
                .bind(e.url.as_str())
                .bind(&e.event_types)
                .bind(e.description.as_ref().map(|d| d.as_str()))
                .bind(e.secret.expose())
                .bind(e.at)
                .execute(&mut *conn)
                .await?;
            }
            Event::WebhookUpdated(e) => {
                sqlx::query(
                    "UPDATE webhook_endpoints
                        SET url = COALESCE($3, url), event_types = COALESCE($4, event_types),
                            description = CASE WHEN $5 THEN $6 ELSE description END, updated_at = $7
                      WHERE tenant_id = $1 AND webhook_id = $2",
                )
                .bind(tenant)
                .bind(e.webhook_id.0)
                .bind(e.url.as_ref().map(|u| u.as_str()))
                .bind(e.event_types.as_ref())
                .bind(e.description.is_some())
                .bind(e.description.as_ref().and_then(|d| d.as_ref().map(|d| d.as_str())))
                .bind(e.at)
                .execute(&mut *conn)
                .await?;
            }
            Event::WebhookDeleted(e) => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET deleted = true, updated_at = $3 WHERE tenant_id = $1 AND webhook_id = $2",
                )
                .bind(tenant)
                .bind(e.webhook_id.0)
                .bind(e.at)
                .execute(&mut *conn)
                .await?;
            }
            Event::WebhookSecretRotated(e) => {
                sqlx::query(
                    "UPDATE webhook_endpoints
                        SET previous_secret = secret, previous_valid_until = $4, secret = $3, updated_at = $5
                      WHERE tenant_id = $1 AND webhook_id = $2",
                )
                .bind(tenant)
                .bind(e.webhook_id.0)
                .bind(e.secret.expose())
                .bind(e.previous_valid_until)
                .bind(e.at)
                .execute(&mut *conn)
                .await?;
            }
            // Counters only (moved below), or nothing inline (a replay is the delivery worker's).
            Event::WebhookReplayRequested(_)
            | Event::ProjectCreated(_)
            | Event::ProjectRestored(_)
            | Event::ProjectArchived(_)
            | Event::ProjectUpdated(_)
            | Event::TaskCreated(_)
            | Event::TaskUpdated(_)
            | Event::TaskAssigned(_)
            | Event::TaskStatusChanged(_) => {}
        }
    }
    let deltas = counter_deltas(events.iter().copied());
    if !counters_moved && deltas != (0, 0) {
        adjust(conn, tenant, deltas).await?;
    }
    Ok(())
}

async fn exec(conn: &mut PgConnection, sql: &'static str, tenant: uuid::Uuid, value: &str) -> Result<(), StoreError> {
    sqlx::query(sql).bind(tenant).bind(value).execute(conn).await?;
    Ok(())
}

/// Moves the tenant's counters (see `counter_deltas`).
async fn adjust(conn: &mut PgConnection, tenant: uuid::Uuid, (seats, projects): (i32, i32)) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE tenants SET seats_used = seats_used + $2, active_projects = active_projects + $3 WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(seats)
    .bind(projects)
    .execute(conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::NoControlPlaneRow(tenant.to_string()));
    }
    Ok(())
}

/// How many of the tenant's webhook endpoints are not deleted (the per-tenant limit; read under
/// the tenant row lock by a create).
pub async fn webhook_endpoints(tx: &mut TenantTx) -> Result<u64, StoreError> {
    let tenant = tx.tenant();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1 AND NOT deleted")
        .bind(tenant.0)
        .fetch_one(tx.conn())
        .await?;
    Ok(n as u64)
}

/// Replaces a tenant's inline tables with what its events say, in one transaction. Idempotency
/// keys are not derived from the log and are kept.
pub async fn rebuild_tenant(tx: &mut TenantTx) -> Result<usize, StoreError> {
    let tenant = tx.tenant();
    for sql in [
        "DELETE FROM webhook_endpoints WHERE tenant_id = $1",
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
        apply(tx.conn(), tenant, &refs, false).await?;
        applied += events.len();
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_domain::event::{MemberErased, ProjectArchived, TenantErased};
    use keel_domain::{MemberId, ProjectId};

    #[test]
    fn counters_move_with_members_and_projects_and_an_erasure_zeroes_what_came_before() {
        let at = chrono::Utc::now();
        let archived = Event::ProjectArchived(ProjectArchived { project_id: ProjectId::new_v7(), at });
        let erased = |was_active| Event::MemberErased(MemberErased { member_id: MemberId::new_v7(), was_active, at });
        assert_eq!(counter_deltas([&archived, &erased(true), &erased(false)]), (-1, -1));
        let tenant_erased = Event::TenantErased(TenantErased { tenant_id: TenantId::new_v7(), at });
        assert_eq!(counter_deltas([&archived, &erased(true), &tenant_erased]), (0, 0));
        assert_eq!(counter_deltas([&tenant_erased, &archived]), (0, -1));
    }
}
