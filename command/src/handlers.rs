//! Route handlers: parse, authorize, decide, append. No SQL here; the store does that.

use crate::CommandState;
use crate::errors;
use crate::respond::written;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use keel_domain::project::{Project, ProjectCommand, TenantContext};
use keel_domain::tenant::{OwnerInput, ProvisionTenant, Tenant};
use keel_domain::{Aggregate, Event, MemberId, ProjectId, StreamType, TenantId};
use keel_gateway::context::RequestId;
use keel_gateway::{JsonBody, Principal, Problem};
use keel_store::{EventMetadata, access, log};
use serde::Deserialize;
use uuid::Uuid;

fn metadata(principal: &Principal, request_id: Option<&RequestId>) -> EventMetadata {
    let correlation_id = request_id.and_then(|r| Uuid::parse_str(&r.0).ok()).unwrap_or_else(Uuid::now_v7);
    EventMetadata {
        actor: principal.actor(),
        correlation_id,
        causation_id: None,
        request_id: request_id.map(|r| r.0.clone()),
    }
}

/// The tenant a tenant-scoped command acts in. Platform operators never reach a tenant's data.
fn tenant_of(p: &Principal) -> Result<TenantId, Problem> {
    if p.platform {
        return Err(Problem::forbidden("platform operators cannot act inside a tenant"));
    }
    p.tenant_id.map(TenantId).ok_or_else(|| Problem::forbidden("the token carries no tenant_id"))
}

fn parse_id(raw: &str, what: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::not_found(what))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnerBody {
    user_id: String,
    email: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvisionTenantBody {
    name: String,
    slug: String,
    plan: String,
    owner: OwnerBody,
}

pub(crate) async fn provision_tenant(
    State(state): State<CommandState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    JsonBody(body): JsonBody<ProvisionTenantBody>,
) -> Result<Response, Problem> {
    if !principal.platform {
        return Err(Problem::forbidden("provisioning tenants needs the platform:admin scope"));
    }
    let tenant_id = TenantId::new_v7();
    let cmd = ProvisionTenant {
        tenant_id,
        owner_member_id: MemberId::new_v7(),
        name: body.name,
        slug: body.slug,
        plan: body.plan,
        owner: OwnerInput { user_id: body.owner.user_id, email: body.owner.email, name: body.owner.name },
    };
    let now = Utc::now();
    let events = Tenant::default().provision(cmd, now).map_err(errors::domain)?;
    let meta = metadata(&principal, request_id.as_deref());
    let mut tx = state.store.begin_write(tenant_id).await.map_err(errors::store)?;
    let appended = log::append(&mut tx, &[], &events, &meta, now).await.map_err(errors::store)?;
    tx.commit().await.map_err(errors::store)?;
    tracing::info!(tenant_id = %tenant_id, "tenant provisioned");
    let version = appended.version_of(tenant_id.0).unwrap_or(1);
    Ok(written(StatusCode::CREATED, tenant_id.0, version, appended.last))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProjectBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateProjectBody {
    #[serde(default)]
    name: Option<String>,
    /// `null` or `""` clears the description.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub(crate) async fn create_project(
    State(state): State<CommandState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    JsonBody(body): JsonBody<CreateProjectBody>,
) -> Result<Response, Problem> {
    let id = ProjectId::new_v7();
    let cmd = ProjectCommand::Create { project_id: id, name: body.name, description: body.description };
    run_project(&state, &principal, request_id.as_deref(), id.0, cmd, StatusCode::CREATED).await
}

pub(crate) async fn update_project(
    State(state): State<CommandState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateProjectBody>,
) -> Result<Response, Problem> {
    let id = parse_id(&id, "project")?;
    let description = body.description.map(|d| d.unwrap_or_default());
    let cmd = ProjectCommand::Update { name: body.name, description };
    run_project(&state, &principal, request_id.as_deref(), id, cmd, StatusCode::OK).await
}

pub(crate) async fn archive_project(
    State(state): State<CommandState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_id(&id, "project")?;
    run_project(&state, &principal, request_id.as_deref(), id, ProjectCommand::Archive, StatusCode::OK).await
}

pub(crate) async fn restore_project(
    State(state): State<CommandState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_id(&id, "project")?;
    run_project(&state, &principal, request_id.as_deref(), id, ProjectCommand::Restore, StatusCode::OK).await
}

/// One project command in one transaction: membership and tenant row read (and, for commands
/// that count against the plan, locked) in the same transaction as the append.
async fn run_project(
    state: &CommandState,
    principal: &Principal,
    request_id: Option<&RequestId>,
    project_id: Uuid,
    cmd: ProjectCommand,
    success: StatusCode,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let counts_against_limit = matches!(cmd, ProjectCommand::Create { .. } | ProjectCommand::Restore);
    let mut tx = state.store.begin_write(tenant).await.map_err(errors::store)?;
    let role = access::member_role(&mut tx, &principal.subject)
        .await
        .map_err(errors::store)?
        .ok_or_else(|| Problem::forbidden("you are not an active member of this tenant"))?;
    if !role.can_write_work() {
        return Err(Problem::forbidden(format!("the {} role cannot change projects", role.as_str())));
    }
    let t = access::tenant_row(&mut tx, counts_against_limit)
        .await
        .map_err(errors::store)?
        .ok_or_else(|| Problem::forbidden("the tenant does not exist"))?;
    let ctx = TenantContext { plan: t.plan, suspended: t.suspended, active_projects: t.active_projects };

    let stored = log::read_stream(&mut tx, project_id).await.map_err(errors::store)?;
    if stored.first().is_some_and(|e| e.stream_type != StreamType::Project.as_str()) {
        return Err(Problem::not_found("project"));
    }
    let decoded: Vec<Event> = stored.iter().map(|e| e.decode()).collect::<Result<_, _>>().map_err(errors::store)?;
    let project = Project::from_events(&decoded);
    let version = stored.last().map(|e| e.stream_version).unwrap_or(0);

    let now = Utc::now();
    let events = project.decide(cmd, &ctx, now).map_err(errors::domain)?;
    if events.is_empty() {
        // Nothing changed: answer with the current version and the position of its last event.
        tx.rollback().await.map_err(errors::store)?;
        let last = stored.last().map(|e| e.log_position()).unwrap_or_default();
        return Ok(written(success, project_id, version, last));
    }
    let meta = metadata(principal, request_id);
    let appended = log::append(&mut tx, &[(project_id, version)], &events, &meta, now).await.map_err(errors::store)?;
    tx.commit().await.map_err(errors::store)?;
    let version = appended.version_of(project_id).unwrap_or(version);
    Ok(written(success, project_id, version, appended.last))
}
