//! Platform routes: provision tenants, change their plan, suspend, reactivate and erase them.

use super::path_id;
use crate::CommandState;
use crate::exec::{Cmd, execute};
use crate::request::{Bare, Write};
use crate::respond::Written;
use axum::extract::{Path, State};
use axum::response::Response;
use keel_domain::tenant::{OwnerInput, ProvisionTenant, TenantCommand};
use keel_domain::{MemberId, TenantId};
use keel_gateway::{Code, Problem};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnerBody {
    user_id: String,
    email: String,
    name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvisionTenantBody {
    name: String,
    /// `^[a-z0-9][a-z0-9-]{1,62}$`, unique on the platform.
    slug: String,
    /// `free`, `team` or `enterprise`.
    plan: String,
    owner: OwnerBody,
    /// Where the tenant lives: `pool` (the default, the platform's own database) or the name of
    /// a dedicated database registered with `keel databases add`.
    #[serde(default)]
    database: Option<String>,
}

/// Provisioning with an `Idempotency-Key` derives the tenant id from the key, so that a repeat
/// lands on the same tenant and finds the first response.
fn provisioned_id(key: Option<&str>) -> TenantId {
    match key {
        Some(k) => TenantId(Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("keel:provision:{k}").as_bytes())),
        None => TenantId::new_v7(),
    }
}

#[utoipa::path(post, path = "/api/v1/tenants", operation_id = "provisionTenant", summary = "Provision a tenant with its owner", tag = "tenants", request_body = ProvisionTenantBody,
    responses((status = 201, description = "Tenant provisioned with its owner's membership", body = Written)))]
pub(crate) async fn provision(
    State(state): State<CommandState>,
    w: Write<ProvisionTenantBody>,
) -> Result<Response, Problem> {
    let tenant_id = provisioned_id(w.meta.idempotency_key.as_deref());
    let member = match w.meta.idempotency_key.as_deref() {
        Some(k) => MemberId(Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("keel:provision-owner:{k}").as_bytes())),
        None => MemberId::new_v7(),
    };
    let b = w.body;
    if let Some(database) = b.database.as_deref() {
        // Only the platform places tenants (the command checks its scope again).
        if !w.meta.principal.platform {
            return Err(Problem::forbidden("this command needs the platform:admin scope"));
        }
        place(&state, tenant_id, database).await?;
    }
    let cmd = Cmd::Tenant(TenantCommand::Provision(ProvisionTenant {
        tenant_id,
        owner_member_id: member,
        name: b.name,
        slug: b.slug,
        plan: b.plan,
        owner: OwnerInput { user_id: b.owner.user_id, email: b.owner.email, name: b.owner.name },
    }));
    execute(&state, &w.meta, tenant_id, cmd, true).await
}

/// Places a tenant about to be provisioned in `database`; an unknown name is the body's fault.
async fn place(state: &CommandState, tenant: TenantId, database: &str) -> Result<(), Problem> {
    let field = |message: String| {
        Problem::validation(
            format!("database: {message}"),
            vec![keel_gateway::problem::FieldError { field: "database".into(), message }],
        )
    };
    if database != keel_store::placement::POOL && !keel_store::placement::valid_name(database) {
        return Err(field("is not a database name (1 to 40 of a-z, 0-9, _ and -, starting with a letter)".into()));
    }
    let naming = |code: Code, message: String| {
        Problem::with_errors(
            code,
            format!("database: {message}"),
            vec![keel_gateway::problem::FieldError { field: "database".into(), message }],
        )
    };
    match state.store.place_tenant(tenant, database).await {
        Ok(()) => Ok(()),
        // A well-formed name of no registered database: the body's fault, naming the field.
        Err(keel_store::StoreError::Placement(m)) if m.starts_with(keel_store::placement::UNKNOWN_DATABASE) => {
            Err(field(m))
        }
        // Placed elsewhere already (a repeat of a provisioning with another database).
        Err(keel_store::StoreError::Placement(m)) => Err(naming(Code::Conflict, m)),
        Err(e) => Err(crate::errors::store(e)),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePlanBody {
    /// `free`, `team` or `enterprise`; a downgrade must fit the seats and active projects in use.
    plan: String,
}

#[utoipa::path(put, path = "/api/v1/tenants/{id}/plan", operation_id = "changeTenantPlan", summary = "Change a tenant's plan", tag = "tenants", request_body = ChangePlanBody,
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Plan changed (or already this plan)", body = Written)))]
pub(crate) async fn change_plan(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<ChangePlanBody>,
) -> Result<Response, Problem> {
    let tenant = TenantId(path_id(&id, "tenant")?);
    execute(&state, &w.meta, tenant, Cmd::Tenant(TenantCommand::ChangePlan { plan: w.body.plan }), false).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuspendBody {
    /// Why, up to 500 characters.
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tenants/{id}/suspend", operation_id = "suspendTenant", summary = "Suspend a tenant", tag = "tenants", request_body(content = SuspendBody, description = "Optional: without it, no reason is recorded"),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Suspended: reads work, writes answer 423", body = Written)))]
pub(crate) async fn suspend(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<SuspendBody>,
) -> Result<Response, Problem> {
    let tenant = TenantId(path_id(&id, "tenant")?);
    execute(&state, &w.meta, tenant, Cmd::Tenant(TenantCommand::Suspend { reason: w.body.reason }), false).await
}

#[utoipa::path(post, path = "/api/v1/tenants/{id}/erase", operation_id = "eraseTenant", summary = "Erase a tenant's personal data and close it", tag = "tenants",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Every data key of the tenant is deleted and its read tables purged; \
        it takes no more writes", body = Written)))]
pub(crate) async fn erase(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Bare,
) -> Result<Response, Problem> {
    let tenant = TenantId(path_id(&id, "tenant")?);
    execute(&state, &w.meta, tenant, Cmd::Tenant(TenantCommand::Erase), false).await
}

#[utoipa::path(post, path = "/api/v1/tenants/{id}/reactivate", operation_id = "reactivateTenant", summary = "Reactivate a suspended tenant", tag = "tenants",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Writes are accepted again", body = Written)))]
pub(crate) async fn reactivate(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Bare,
) -> Result<Response, Problem> {
    let tenant = TenantId(path_id(&id, "tenant")?);
    execute(&state, &w.meta, tenant, Cmd::Tenant(TenantCommand::Reactivate), false).await
}
