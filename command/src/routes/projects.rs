//! Project routes: create, update, archive, restore.

use super::{not_null, path_id, present};
use crate::CommandState;
use crate::exec::{Cmd, execute, tenant_of};
use crate::request::{Bare, Write};
use crate::respond::Written;
use axum::extract::{Path, State};
use axum::response::Response;
use keel_domain::ProjectId;
use keel_domain::project::ProjectCommand;
use keel_gateway::Problem;
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProjectBody {
    /// 1 to 200 characters after trimming.
    name: String,
    /// Up to 10,000 characters.
    #[serde(default)]
    description: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/projects", operation_id = "createProject", summary = "Create a project", tag = "projects", request_body = CreateProjectBody,
    responses((status = 201, description = "Project created (counts against the plan's active projects)", body = Written)))]
pub(crate) async fn create(
    State(state): State<CommandState>,
    w: Write<CreateProjectBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = ProjectId::new_v7();
    let cmd = ProjectCommand::Create { project_id: id, name: w.body.name, description: w.body.description };
    execute(&state, &w.meta, tenant, Cmd::Project(id, cmd), true).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateProjectBody {
    /// 1 to 200 characters after trimming.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    name: Option<String>,
    /// `null` or `""` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
}

#[utoipa::path(patch, path = "/api/v1/projects/{id}", operation_id = "updateProject", summary = "Rename a project or change its description", tag = "projects", request_body = UpdateProjectBody,
    params(("id" = Uuid, Path, description = "Project id")),
    responses((status = 200, description = "Project updated", body = Written)))]
pub(crate) async fn update(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<UpdateProjectBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = ProjectId(path_id(&id, "project")?);
    let cmd =
        ProjectCommand::Update { name: w.body.name, description: w.body.description.map(Option::unwrap_or_default) };
    execute(&state, &w.meta, tenant, Cmd::Project(id, cmd), false).await
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/archive", operation_id = "archiveProject", summary = "Archive a project", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id")),
    responses((status = 200, description = "Project archived (read-only until restored)", body = Written)))]
pub(crate) async fn archive(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Bare,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = ProjectId(path_id(&id, "project")?);
    execute(&state, &w.meta, tenant, Cmd::Project(id, ProjectCommand::Archive), false).await
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/restore", operation_id = "restoreProject", summary = "Restore an archived project", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id")),
    responses((status = 200, description = "Project restored (the active-project limit applies)", body = Written)))]
pub(crate) async fn restore(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Bare,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = ProjectId(path_id(&id, "project")?);
    execute(&state, &w.meta, tenant, Cmd::Project(id, ProjectCommand::Restore), false).await
}
