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
/// (`write_path::WriteConn::append`): none carries personal data or a secret to seal, and none
/// writes an inline table whose invariants are decided under the tenant row's update lock
/// (tenants, members, endpoints). Usage is: its months are checked again by the call.
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
        | Event::TaskStatusChanged(_)
        | Event::UsageRecorded(_) => true,
        Event::TenantProvisioned(_)
        | Event::TenantPlanChanged(_)
        | Event::TenantSuspended(_)
        | Event::TenantReactivated(_)
        | Event::TenantErased(_)
        | Event::MemberInvited(_)
        | Event::MemberRoleChanged(_)
        | Event::MemberRemoved(_)
        | Event::MemberErased(_)
        | Event::WebhookCreated(_)
        | Event::WebhookUpdated(_)
        | Event::WebhookDeleted(_)
        | Event::WebhookSecretRotated(_) => false,
    })
}

/// What `events` change in the inline tables, as the operations `keel_inline` (migration 0015)
/// applies: the one place that says what each event writes there. `None` when nothing changes
/// (the counters are moved by `counter_deltas`, beside these).
pub(crate) fn ops<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<Option<serde_json::Value>, StoreError> {
    use serde_json::json;
    let mut ops = Vec::new();
    for event in events {
        match event {
            Event::TenantProvisioned(e) => ops.push(json!({
                "op": "tenant_insert", "name": e.name.as_str(), "slug": e.slug.as_str(), "plan": e.plan.as_str(), "at": e.at,
            })),
            Event::TenantPlanChanged(e) => ops.push(json!({ "op": "tenant_plan", "plan": e.to.as_str() })),
            Event::TenantSuspended(e) => {
                ops.push(json!({ "op": "tenant_suspend", "reason": e.reason.as_ref().map(|r| r.as_str()) }))
            }
            Event::TenantReactivated(_) => ops.push(json!({ "op": "tenant_reactivate" })),
            Event::TenantErased(_) => ops.push(json!({ "op": "tenant_erase" })),
            Event::MemberInvited(e) => ops.push(json!({
                "op": "member_insert", "member_id": e.member_id.0, "user_id": e.user_id.as_str(), "role": e.role.as_str(),
                "at": e.at,
                // An erased address (read back during a rebuild) reserves nothing.
                "email_key": (e.email.as_str() != crate::crypto::ERASED).then(|| email_key(e.email.as_str())),
            })),
            Event::MemberRoleChanged(e) => {
                ops.push(json!({ "op": "member_role", "member_id": e.member_id.0, "role": e.to.as_str() }))
            }
            Event::MemberRemoved(e) => ops.push(json!({ "op": "member_remove", "member_id": e.member_id.0 })),
            Event::MemberErased(e) => ops.push(json!({ "op": "member_erase", "member_id": e.member_id.0 })),
            Event::UsageRecorded(e) => {
                let ids: Vec<&str> = e.records.iter().map(|r| r.id.as_str()).collect();
                let mut months: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
                for r in &e.records {
                    crate::usage::add_units(&mut months, month_of(r.occurred_at), r.quantity)?;
                }
                let months: Vec<_> = months.into_iter().map(|(month, units)| json!({ "month": month, "units": units })).collect();
                ops.push(json!({ "op": "usage", "batch_id": e.batch_id.0, "ids": ids, "months": months }));
            }
            Event::WebhookCreated(e) => ops.push(json!({
                "op": "webhook_insert", "webhook_id": e.webhook_id.0, "url": e.url.as_str(), "event_types": e.event_types,
                "description": e.description.as_ref().map(|d| d.as_str()), "secret": e.secret.expose(), "at": e.at,
            })),
            Event::WebhookUpdated(e) => {
                let mut op = json!({ "op": "webhook_update", "webhook_id": e.webhook_id.0, "at": e.at });
                if let Some(url) = &e.url {
                    op["url"] = json!(url.as_str());
                }
                if let Some(types) = &e.event_types {
                    op["event_types"] = json!(types);
                }
                if let Some(d) = &e.description {
                    op["description"] = json!(d.as_ref().map(|d| d.as_str()));
                }
                ops.push(op);
            }
            Event::WebhookDeleted(e) => {
                ops.push(json!({ "op": "webhook_delete", "webhook_id": e.webhook_id.0, "at": e.at }))
            }
            Event::WebhookSecretRotated(e) => ops.push(json!({
                "op": "webhook_rotate", "webhook_id": e.webhook_id.0, "secret": e.secret.expose(),
                "previous_valid_until": e.previous_valid_until, "at": e.at,
            })),
            // Counters only, or nothing inline (a replay is the delivery worker's).
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
    Ok((!ops.is_empty()).then_some(serde_json::Value::Array(ops)))
}

/// Applies `events` to the inline tables and moves the counters, in one call (`keel_inline`).
pub(crate) async fn apply(conn: &mut PgConnection, tenant: TenantId, events: &[Event]) -> Result<(), StoreError> {
    let (seats, projects) = counter_deltas(events);
    let ops = ops(events)?;
    if ops.is_none() && (seats, projects) == (0, 0) {
        return Ok(());
    }
    sqlx::query("SELECT keel_inline($1, $2, $3, $4)")
        .bind(tenant.0)
        .bind(ops)
        .bind(seats)
        .bind(projects)
        .execute(conn)
        .await
        .map_err(|e| match e.as_database_error().and_then(|d| d.code()).as_deref() {
            Some("KL002") => StoreError::NoControlPlaneRow(tenant.to_string()),
            _ => StoreError::from(e),
        })?;
    Ok(())
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
        apply(tx.conn(), tenant, &events).await?;
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
