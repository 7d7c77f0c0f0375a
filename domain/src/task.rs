//! The Task aggregate: created in an active project of the tenant, assigned to active members,
//! moved through todo → in progress → done (done records completion; leaving done reopens).

use crate::aggregate::{Aggregate, Decide, StreamType};
use crate::error::{DomainError, Fields};
use crate::event::{Event, TaskAssigned, TaskCreated, TaskStatusChanged, TaskUpdated};
use crate::ids::{MemberId, ProjectId, TaskId};
use crate::values::{Description, Priority, TaskStatus, TaskTitle};
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    pub id: Option<TaskId>,
    pub project_id: Option<ProjectId>,
    pub title: Option<TaskTitle>,
    pub description: Option<Description>,
    pub assignee: Option<MemberId>,
    pub due_date: Option<NaiveDate>,
    pub priority: Option<Priority>,
    pub status: Option<TaskStatus>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Aggregate for Task {
    const STREAM_TYPE: StreamType = StreamType::Task;

    fn apply(mut self, event: &Event) -> Self {
        match event {
            Event::TaskCreated(e) => {
                self.id = Some(e.task_id);
                self.project_id = Some(e.project_id);
                self.title = Some(e.title.clone());
                self.description = e.description.clone();
                self.assignee = e.assignee;
                self.due_date = e.due_date;
                self.priority = Some(e.priority);
                self.status = Some(TaskStatus::Todo);
            }
            Event::TaskUpdated(e) => {
                if let Some(t) = &e.title {
                    self.title = Some(t.clone());
                }
                if let Some(d) = &e.description {
                    self.description = d.clone();
                }
                if let Some(d) = e.due_date {
                    self.due_date = d;
                }
                if let Some(p) = e.priority {
                    self.priority = Some(p);
                }
            }
            Event::TaskAssigned(e) => self.assignee = e.assignee,
            Event::TaskStatusChanged(e) => {
                self.status = Some(e.to);
                self.completed_at = e.completed_at;
            }
            _ => {}
        }
        self
    }
}

/// The state of the task's project, as this tenant sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectState {
    Missing,
    Active,
    Archived,
}

/// What a task command needs from outside the task, read in the command's transaction.
#[derive(Debug, Clone, Copy)]
pub struct TaskContext {
    pub suspended: bool,
    pub project: ProjectState,
    /// For a command that names an assignee: whether that member is active in this tenant.
    pub assignee_active: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct TaskChanges {
    pub title: Option<String>,
    /// `Some("")` clears it.
    pub description: Option<String>,
    /// `Some(None)` clears it.
    pub due_date: Option<Option<NaiveDate>>,
    pub priority: Option<String>,
}

#[derive(Debug, Clone)]
pub enum TaskCommand {
    Create {
        task_id: TaskId,
        project_id: ProjectId,
        title: String,
        description: Option<String>,
        assignee: Option<MemberId>,
        due_date: Option<NaiveDate>,
        priority: Option<String>,
    },
    Update(TaskChanges),
    Assign {
        assignee: Option<MemberId>,
    },
    ChangeStatus {
        status: String,
    },
}

impl Decide for Task {
    type Command = TaskCommand;
    type Context = TaskContext;

    fn check_input(cmd: &TaskCommand) -> Result<(), DomainError> {
        let mut f = Fields::default();
        match cmd {
            TaskCommand::Create { title, description, priority, .. } => {
                f.check(TaskTitle::parse("title", title));
                if let Some(d) = description {
                    f.check(Description::parse("description", d));
                }
                if let Some(p) = priority {
                    f.check(Priority::parse("priority", p));
                }
            }
            TaskCommand::Update(c) => {
                if let Some(t) = &c.title {
                    f.check(TaskTitle::parse("title", t));
                }
                if let Some(d) = &c.description {
                    f.check(Description::parse("description", d));
                }
                if let Some(p) = &c.priority {
                    f.check(Priority::parse("priority", p));
                }
            }
            TaskCommand::ChangeStatus { status } => {
                f.check(TaskStatus::parse("status", status));
            }
            TaskCommand::Assign { .. } => {}
        }
        f.finish()
    }

    fn decide(&self, cmd: TaskCommand, ctx: &TaskContext, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        if ctx.suspended {
            return Err(DomainError::TenantSuspended);
        }
        if let TaskCommand::Create { task_id, project_id, title, description, assignee, due_date, priority } = cmd {
            if self.id.is_some() {
                return Err(DomainError::AlreadyExists("task"));
            }
            let mut f = Fields::default();
            match ctx.project {
                ProjectState::Missing => f.push("project_id", "no such project in this tenant"),
                ProjectState::Archived => f.push("project_id", "the project is archived"),
                ProjectState::Active => {}
            }
            let title = f.check(TaskTitle::parse("title", &title));
            let description = description.and_then(|d| f.check(Description::parse("description", &d))).flatten();
            let priority = match priority {
                Some(p) => f.check(Priority::parse("priority", &p)),
                None => Some(Priority::Medium),
            };
            if assignee.is_some() && ctx.assignee_active != Some(true) {
                f.push("assignee", "must be an active member of this tenant");
            }
            f.finish()?;
            return Ok(vec![Event::TaskCreated(TaskCreated {
                task_id,
                project_id,
                title: title.expect("checked"),
                description,
                assignee,
                due_date,
                priority: priority.expect("checked"),
                at: now,
            })]);
        }

        let (Some(id), Some(project_id)) = (self.id, self.project_id) else {
            return Err(DomainError::NotFound("task"));
        };
        if ctx.project != ProjectState::Active {
            return Err(DomainError::RuleViolated("the task's project is archived; restore it first".into()));
        }
        match cmd {
            TaskCommand::Create { .. } => unreachable!("handled above"),
            TaskCommand::Update(c) => {
                if c.title.is_none() && c.description.is_none() && c.due_date.is_none() && c.priority.is_none() {
                    return Err(DomainError::field(
                        "title",
                        "give at least one of title, description, due_date, priority",
                    ));
                }
                let mut f = Fields::default();
                let title = c.title.and_then(|t| f.check(TaskTitle::parse("title", &t)));
                let description = c.description.and_then(|d| f.check(Description::parse("description", &d)));
                let priority = c.priority.and_then(|p| f.check(Priority::parse("priority", &p)));
                f.finish()?;
                let title = title.filter(|t| Some(t) != self.title.as_ref());
                let description = description.filter(|d| *d != self.description);
                let due_date = c.due_date.filter(|d| *d != self.due_date);
                let priority = priority.filter(|p| Some(*p) != self.priority);
                if title.is_none() && description.is_none() && due_date.is_none() && priority.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![Event::TaskUpdated(TaskUpdated {
                    task_id: id,
                    title,
                    description,
                    due_date,
                    priority,
                    at: now,
                })])
            }
            TaskCommand::Assign { assignee } => {
                if assignee.is_some() && ctx.assignee_active != Some(true) {
                    return Err(DomainError::field("member_id", "must be an active member of this tenant"));
                }
                if assignee == self.assignee {
                    return Ok(vec![]);
                }
                Ok(vec![Event::TaskAssigned(TaskAssigned { task_id: id, assignee, at: now })])
            }
            TaskCommand::ChangeStatus { status } => {
                let to = TaskStatus::parse("status", &status).map_err(|e| DomainError::Validation(vec![e]))?;
                let from = self.status.expect("a created task has a status");
                if to == from {
                    return Ok(vec![]);
                }
                let completed_at = (to == TaskStatus::Done).then_some(now);
                Ok(vec![Event::TaskStatusChanged(TaskStatusChanged {
                    task_id: id,
                    project_id,
                    from,
                    to,
                    completed_at,
                    at: now,
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::Scenario;
    use crate::error::FieldError;
    use uuid::Uuid;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }
    fn later() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_086_400, 0).unwrap()
    }
    fn tid() -> TaskId {
        TaskId(Uuid::from_u128(11))
    }
    fn pid() -> ProjectId {
        ProjectId(Uuid::from_u128(12))
    }
    fn bob() -> MemberId {
        MemberId(Uuid::from_u128(13))
    }
    fn ctx(project: ProjectState, assignee_active: Option<bool>) -> TaskContext {
        TaskContext { suspended: false, project, assignee_active }
    }
    fn create(assignee: Option<MemberId>, priority: Option<&str>) -> TaskCommand {
        TaskCommand::Create {
            task_id: tid(),
            project_id: pid(),
            title: " Write spec ".into(),
            description: None,
            assignee,
            due_date: NaiveDate::from_ymd_opt(2027, 1, 31),
            priority: priority.map(str::to_owned),
        }
    }
    fn created() -> Event {
        Event::TaskCreated(TaskCreated {
            task_id: tid(),
            project_id: pid(),
            title: TaskTitle::parse("t", "Write spec").unwrap(),
            description: None,
            assignee: None,
            due_date: NaiveDate::from_ymd_opt(2027, 1, 31),
            priority: Priority::Medium,
            at: now(),
        })
    }
    fn status(from: TaskStatus, to: TaskStatus, at: DateTime<Utc>) -> Event {
        Event::TaskStatusChanged(TaskStatusChanged {
            task_id: tid(),
            project_id: pid(),
            from,
            to,
            completed_at: (to == TaskStatus::Done).then_some(at),
            at,
        })
    }
    fn change(s: &str) -> TaskCommand {
        TaskCommand::ChangeStatus { status: s.into() }
    }

    #[test]
    fn a_task_is_created_in_an_active_project_with_medium_priority_by_default() {
        Scenario::<Task>::given(vec![])
            .when(create(None, None), &ctx(ProjectState::Active, None), now())
            .then(vec![created()]);
    }

    #[test]
    fn the_project_must_exist_in_this_tenant_and_not_be_archived() {
        Scenario::<Task>::given(vec![])
            .when(create(None, None), &ctx(ProjectState::Missing, None), now())
            .then_error(DomainError::Validation(vec![FieldError::new("project_id", "no such project in this tenant")]));
        Scenario::<Task>::given(vec![])
            .when(create(None, None), &ctx(ProjectState::Archived, None), now())
            .then_error(DomainError::Validation(vec![FieldError::new("project_id", "the project is archived")]));
    }

    #[test]
    fn the_assignee_must_be_an_active_member() {
        Scenario::<Task>::given(vec![])
            .when(create(Some(bob()), None), &ctx(ProjectState::Active, Some(false)), now())
            .then_error(DomainError::Validation(vec![FieldError::new(
                "assignee",
                "must be an active member of this tenant",
            )]));
        assert!(
            Scenario::<Task>::given(vec![])
                .when(create(Some(bob()), None), &ctx(ProjectState::Active, Some(true)), now())
                .result()
                .is_ok()
        );
        Scenario::<Task>::given(vec![created()])
            .when(TaskCommand::Assign { assignee: Some(bob()) }, &ctx(ProjectState::Active, Some(false)), now())
            .then_error(DomainError::field("member_id", "must be an active member of this tenant"));
        Scenario::<Task>::given(vec![created()])
            .when(TaskCommand::Assign { assignee: Some(bob()) }, &ctx(ProjectState::Active, Some(true)), now())
            .then(vec![Event::TaskAssigned(TaskAssigned { task_id: tid(), assignee: Some(bob()), at: now() })]);
    }

    #[test]
    fn title_and_priority_are_validated() {
        let cmd = TaskCommand::Create {
            task_id: tid(),
            project_id: pid(),
            title: "x".repeat(501),
            description: None,
            assignee: None,
            due_date: None,
            priority: Some("asap".into()),
        };
        let err =
            Scenario::<Task>::given(vec![]).when(cmd, &ctx(ProjectState::Active, None), now()).result().unwrap_err();
        let DomainError::Validation(f) = err else { panic!() };
        assert_eq!(f.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), vec!["title", "priority"]);
    }

    #[test]
    fn moving_to_done_records_completion_and_leaving_done_reopens() {
        Scenario::<Task>::given(vec![created()])
            .when(change("done"), &ctx(ProjectState::Active, None), later())
            .then(vec![status(TaskStatus::Todo, TaskStatus::Done, later())]);
        let done = Task::from_events(&[created(), status(TaskStatus::Todo, TaskStatus::Done, later())]);
        assert_eq!(done.completed_at, Some(later()));
        Scenario::<Task>::given(vec![created(), status(TaskStatus::Todo, TaskStatus::Done, later())])
            .when(change("in_progress"), &ctx(ProjectState::Active, None), later())
            .then(vec![status(TaskStatus::Done, TaskStatus::InProgress, later())]);
        let reopened = Task::from_events(&[
            created(),
            status(TaskStatus::Todo, TaskStatus::Done, later()),
            status(TaskStatus::Done, TaskStatus::InProgress, later()),
        ]);
        assert_eq!((reopened.status, reopened.completed_at), (Some(TaskStatus::InProgress), None));
    }

    #[test]
    fn status_must_be_known_and_a_same_status_changes_nothing() {
        Scenario::<Task>::given(vec![created()])
            .when(change("blocked"), &ctx(ProjectState::Active, None), now())
            .then_error(DomainError::field("status", "must be one of todo, in_progress, done"));
        Scenario::<Task>::given(vec![created()])
            .when(change("todo"), &ctx(ProjectState::Active, None), now())
            .then(vec![]);
    }

    #[test]
    fn tasks_of_archived_projects_are_read_only_and_missing_tasks_are_not_found() {
        let err = Task::from_events(&[created()])
            .decide(change("done"), &ctx(ProjectState::Archived, None), now())
            .unwrap_err();
        assert!(matches!(err, DomainError::RuleViolated(_)));
        Scenario::<Task>::given(vec![])
            .when(change("done"), &ctx(ProjectState::Active, None), now())
            .then_error(DomainError::NotFound("task"));
    }

    #[test]
    fn update_records_only_what_changed() {
        let changes = TaskChanges {
            title: Some("Write spec".into()),
            description: None,
            due_date: Some(None),
            priority: Some("urgent".into()),
        };
        Scenario::<Task>::given(vec![created()])
            .when(TaskCommand::Update(changes), &ctx(ProjectState::Active, None), now())
            .then(vec![Event::TaskUpdated(TaskUpdated {
                task_id: tid(),
                title: None,
                description: None,
                due_date: Some(None),
                priority: Some(Priority::Urgent),
                at: now(),
            })]);
    }

    #[test]
    fn suspended_tenants_cannot_change_tasks() {
        let c = TaskContext { suspended: true, project: ProjectState::Active, assignee_active: None };
        Scenario::<Task>::given(vec![]).when(create(None, None), &c, now()).then_error(DomainError::TenantSuspended);
    }
}
