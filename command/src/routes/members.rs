//! Member routes: invite, change role, remove, erase.

use super::path_id;
use crate::CommandState;
use crate::exec::{Cmd, execute, tenant_of};
use crate::request::{Bare, Write};
use crate::respond::Written;
use axum::extract::{Path, State};
use axum::response::Response;
use keel_domain::MemberId;
use keel_domain::member::MemberCommand;
use keel_gateway::Problem;
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteBody {
    /// The identity provider's user id (the JWT `sub`), unique among active members.
    user_id: String,
    /// Unique among active members.
    email: String,
    name: String,
    /// `owner` (owners only), `admin`, `member`, `viewer` or `auditor`.
    role: String,
}

#[utoipa::path(post, path = "/api/v1/members", operation_id = "inviteMember", summary = "Invite a member", tag = "members", request_body = InviteBody,
    responses((status = 201, description = "Member added (takes a seat)", body = Written)))]
pub(crate) async fn invite(State(state): State<CommandState>, w: Write<InviteBody>) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = MemberId::new_v7();
    let b = w.body;
    let cmd = MemberCommand::Invite { member_id: id, user_id: b.user_id, email: b.email, name: b.name, role: b.role };
    execute(&state, &w.meta, tenant, Cmd::Member(id, cmd), true).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleBody {
    role: String,
}

#[utoipa::path(put, path = "/api/v1/members/{id}/role", operation_id = "changeMemberRole", summary = "Change a member's role", tag = "members", request_body = RoleBody,
    params(("id" = Uuid, Path, description = "Member id")),
    responses((status = 200, description = "Role changed", body = Written)))]
pub(crate) async fn change_role(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<RoleBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = MemberId(path_id(&id, "member")?);
    execute(&state, &w.meta, tenant, Cmd::Member(id, MemberCommand::ChangeRole { role: w.body.role }), false).await
}

#[utoipa::path(post, path = "/api/v1/members/{id}/erase", operation_id = "eraseMember", summary = "Erase a member's personal data", tag = "members",
    params(("id" = Uuid, Path, description = "Member id")),
    responses((status = 200, description = "The member's data key is deleted: its email and name read as erased \
        everywhere, its events stay and still verify. Owners only; also while suspended.", body = Written)))]
pub(crate) async fn erase(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Bare,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = MemberId(path_id(&id, "member")?);
    execute(&state, &w.meta, tenant, Cmd::Member(id, MemberCommand::Erase), false).await
}

#[utoipa::path(delete, path = "/api/v1/members/{id}", operation_id = "removeMember", summary = "Remove a member", tag = "members",
    params(("id" = Uuid, Path, description = "Member id")),
    responses((status = 200, description = "Member removed (frees a seat)", body = Written)))]
pub(crate) async fn remove(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Bare,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = MemberId(path_id(&id, "member")?);
    execute(&state, &w.meta, tenant, Cmd::Member(id, MemberCommand::Remove), false).await
}
