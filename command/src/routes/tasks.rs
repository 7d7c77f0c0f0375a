//! Task routes: create in a project, update, assign, change status.

use super::{not_null, path_id, present};
use crate::CommandState;
use crate::exec::{Cmd, execute, tenant_of};
use crate::request::Write;
use crate::respond::Written;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::NaiveDate;
use keel_domain::task::{TaskChanges, TaskCommand};
use keel_domain::{MemberId, ProjectId, TaskId};
use keel_gateway::Problem;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTaskBody {
    /// 1 to 500 characters after trimming.
    title: String,
    #[serde(default)]
    description: Option<String>,
    /// An active member's id.
    #[serde(default)]
    assignee: Option<Uuid>,
    /// A calendar date, `YYYY-MM-DD`.
    #[serde(default, deserialize_with = "super::date")]
    due_date: Option<NaiveDate>,
    /// `low`, `medium` (default), `high` or `urgent`.
    #[serde(default)]
    priority: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/tasks", operation_id = "createTask", summary = "Create a task in a project", tag = "tasks", request_body = CreateTaskBody,
    params(("id" = Uuid, Path, description = "Project id (active, in this tenant)")),
    responses((status = 201, description = "Task created", body = Written)))]
pub(crate) async fn create(
    State(state): State<CommandState>,
    Path(project): Path<String>,
    w: Write<CreateTaskBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let project = ProjectId(path_id(&project, "project")?);
    let id = TaskId::new_v7();
    let b = w.body;
    let cmd = TaskCommand::Create {
        task_id: id,
        project_id: project,
        title: b.title,
        description: b.description,
        assignee: b.assignee.map(MemberId),
        due_date: b.due_date,
        priority: b.priority,
    };
    execute(&state, &w.meta, tenant, Cmd::Task(id, cmd), true).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTaskBody {
    /// 1 to 500 characters after trimming.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    title: Option<String>,
    /// `null` or `""` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// A calendar date, `YYYY-MM-DD`; `null` clears it.
    #[serde(default, deserialize_with = "super::present_date")]
    #[schema(value_type = Option<NaiveDate>)]
    due_date: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    priority: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/tasks/{id}", operation_id = "updateTask", summary = "Change a task's title, description, due date or priority", tag = "tasks", request_body = UpdateTaskBody,
    params(("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, description = "Task updated", body = Written)))]
pub(crate) async fn update(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<UpdateTaskBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = TaskId(path_id(&id, "task")?);
    let b = w.body;
    let changes = TaskChanges {
        title: b.title,
        description: b.description.map(Option::unwrap_or_default),
        due_date: b.due_date,
        priority: b.priority,
    };
    execute(&state, &w.meta, tenant, Cmd::Task(id, TaskCommand::Update(changes)), false).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignBody {
    /// An active member's id, or `null` to unassign.
    member_id: Option<Uuid>,
}

#[utoipa::path(put, path = "/api/v1/tasks/{id}/assignee", operation_id = "assignTask", summary = "Assign or unassign a task", tag = "tasks", request_body = AssignBody,
    params(("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, description = "Assignee set", body = Written)))]
pub(crate) async fn assign(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<AssignBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = TaskId(path_id(&id, "task")?);
    let cmd = TaskCommand::Assign { assignee: w.body.member_id.map(MemberId) };
    execute(&state, &w.meta, tenant, Cmd::Task(id, cmd), false).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    /// `todo`, `in_progress` or `done` (done records completion; leaving done reopens).
    status: String,
}

#[utoipa::path(put, path = "/api/v1/tasks/{id}/status", operation_id = "changeTaskStatus", summary = "Change a task's status", tag = "tasks", request_body = StatusBody,
    params(("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, description = "Status changed", body = Written)))]
pub(crate) async fn change_status(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<StatusBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = TaskId(path_id(&id, "task")?);
    execute(&state, &w.meta, tenant, Cmd::Task(id, TaskCommand::ChangeStatus { status: w.body.status }), false).await
}
