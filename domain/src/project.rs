//! The Project aggregate: create, update, archive, restore under the plan's active-project limit.

use crate::aggregate::{Aggregate, Decide, StreamType};
use crate::error::{DomainError, Fields, Limit};
use crate::event::{Event, ProjectArchived, ProjectCreated, ProjectRestored, ProjectUpdated};
use crate::ids::ProjectId;
use crate::plan::Plan;
use crate::values::{Description, ProjectName};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProjectStatus {
    Active,
    Archived,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Project {
    pub id: Option<ProjectId>,
    pub name: Option<ProjectName>,
    pub description: Option<Description>,
    pub status: Option<ProjectStatus>,
}

impl Aggregate for Project {
    const STREAM_TYPE: StreamType = StreamType::Project;

    fn apply(mut self, event: &Event) -> Self {
        match event {
            Event::ProjectCreated(e) => {
                self.id = Some(e.project_id);
                self.name = Some(e.name.clone());
                self.description = e.description.clone();
                self.status = Some(ProjectStatus::Active);
            }
            Event::ProjectUpdated(e) => {
                if let Some(n) = &e.name {
                    self.name = Some(n.clone());
                }
                if let Some(d) = &e.description {
                    self.description = d.clone();
                }
            }
            Event::ProjectArchived(_) => self.status = Some(ProjectStatus::Archived),
            Event::ProjectRestored(_) => self.status = Some(ProjectStatus::Active),
            _ => {}
        }
        self
    }
}

/// What a project command needs to know about its tenant, read in the same transaction (the
/// tenant row is locked by the store for commands that count against a limit).
#[derive(Debug, Clone, Copy)]
pub struct TenantContext {
    pub plan: Plan,
    pub suspended: bool,
    pub active_projects: u64,
}

#[derive(Debug, Clone)]
pub enum ProjectCommand {
    Create {
        project_id: ProjectId,
        name: String,
        description: Option<String>,
    },
    /// `description: Some("")` clears it; absent fields stay as they are.
    Update {
        name: Option<String>,
        description: Option<String>,
    },
    Archive,
    Restore,
}

impl Decide for Project {
    type Command = ProjectCommand;
    type Context = TenantContext;

    fn check_input(cmd: &ProjectCommand) -> Result<(), DomainError> {
        let mut f = Fields::default();
        match cmd {
            ProjectCommand::Create { name, description, .. } => {
                f.check(ProjectName::parse("name", name));
                if let Some(d) = description {
                    f.check(Description::parse("description", d));
                }
            }
            ProjectCommand::Update { name, description } => {
                if let Some(n) = name {
                    f.check(ProjectName::parse("name", n));
                }
                if let Some(d) = description {
                    f.check(Description::parse("description", d));
                }
            }
            ProjectCommand::Archive | ProjectCommand::Restore => {}
        }
        f.finish()
    }

    fn decide(&self, cmd: ProjectCommand, ctx: &TenantContext, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        if ctx.suspended {
            return Err(DomainError::TenantSuspended);
        }
        match cmd {
            ProjectCommand::Create { project_id, name, description } => {
                if self.id.is_some() {
                    return Err(DomainError::AlreadyExists("project"));
                }
                let mut f = Fields::default();
                let name = f.check(ProjectName::parse("name", &name));
                let description = match description {
                    Some(d) => f.check(Description::parse("description", &d)).flatten(),
                    None => None,
                };
                f.finish()?;
                check_active_limit(ctx)?;
                Ok(vec![Event::ProjectCreated(ProjectCreated {
                    project_id,
                    name: name.expect("checked"),
                    description,
                    at: now,
                })])
            }
            ProjectCommand::Update { name, description } => {
                let id = self.existing()?;
                if self.status == Some(ProjectStatus::Archived) {
                    return Err(DomainError::RuleViolated(
                        "an archived project cannot be changed; restore it first".into(),
                    ));
                }
                if name.is_none() && description.is_none() {
                    return Err(DomainError::field("name", "give at least one of name, description"));
                }
                let mut f = Fields::default();
                let name = name.and_then(|n| f.check(ProjectName::parse("name", &n)));
                let description = description.and_then(|d| f.check(Description::parse("description", &d)));
                f.finish()?;
                // Only what actually changes is recorded; an update that changes nothing appends nothing.
                let name = name.filter(|n| Some(n) != self.name.as_ref());
                let description = description.filter(|d| *d != self.description);
                if name.is_none() && description.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![Event::ProjectUpdated(ProjectUpdated { project_id: id, name, description, at: now })])
            }
            ProjectCommand::Archive => {
                let id = self.existing()?;
                if self.status == Some(ProjectStatus::Archived) {
                    return Err(DomainError::RuleViolated("the project is already archived".into()));
                }
                Ok(vec![Event::ProjectArchived(ProjectArchived { project_id: id, at: now })])
            }
            ProjectCommand::Restore => {
                let id = self.existing()?;
                if self.status == Some(ProjectStatus::Active) {
                    return Err(DomainError::RuleViolated("the project is not archived".into()));
                }
                check_active_limit(ctx)?;
                Ok(vec![Event::ProjectRestored(ProjectRestored { project_id: id, at: now })])
            }
        }
    }
}

impl Project {
    fn existing(&self) -> Result<ProjectId, DomainError> {
        self.id.ok_or(DomainError::NotFound("project"))
    }
}

fn check_active_limit(ctx: &TenantContext) -> Result<(), DomainError> {
    match ctx.plan.active_project_limit() {
        Some(limit) if ctx.active_projects >= limit => {
            Err(DomainError::LimitExceeded { limit: Limit::ActiveProjects, limit_value: limit })
        }
        _ => Ok(()),
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
    fn pid() -> ProjectId {
        ProjectId(Uuid::from_u128(7))
    }
    fn free(active: u64) -> TenantContext {
        TenantContext { plan: Plan::Free, suspended: false, active_projects: active }
    }
    fn name(s: &str) -> ProjectName {
        ProjectName::parse("name", s).unwrap()
    }
    fn created() -> Event {
        Event::ProjectCreated(ProjectCreated { project_id: pid(), name: name("Apollo"), description: None, at: now() })
    }
    fn archived() -> Event {
        Event::ProjectArchived(ProjectArchived { project_id: pid(), at: now() })
    }
    fn create(n: &str) -> ProjectCommand {
        ProjectCommand::Create { project_id: pid(), name: n.into(), description: None }
    }

    #[test]
    fn create_trims_the_name() {
        Scenario::<Project>::given(vec![]).when(create("  Apollo  "), &free(0), now()).then(vec![created()]);
    }

    #[test]
    fn create_rejects_a_blank_or_overlong_name() {
        Scenario::<Project>::given(vec![])
            .when(create("   "), &free(0), now())
            .then_error(DomainError::Validation(vec![FieldError::new("name", "must not be blank")]));
        Scenario::<Project>::given(vec![])
            .when(create(&"x".repeat(201)), &free(0), now())
            .then_error(DomainError::Validation(vec![FieldError::new("name", "must be at most 200 characters")]));
    }

    #[test]
    fn create_respects_the_active_project_limit_of_the_plan() {
        Scenario::<Project>::given(vec![])
            .when(create("Apollo"), &free(3), now())
            .then_error(DomainError::LimitExceeded { limit: Limit::ActiveProjects, limit_value: 3 });
        let team = TenantContext { plan: Plan::Team, suspended: false, active_projects: 3 };
        assert!(Scenario::<Project>::given(vec![]).when(create("Apollo"), &team, now()).result().is_ok());
        let enterprise = TenantContext { plan: Plan::Enterprise, suspended: false, active_projects: 1_000_000 };
        assert!(Scenario::<Project>::given(vec![]).when(create("Apollo"), &enterprise, now()).result().is_ok());
    }

    #[test]
    fn a_project_is_created_once() {
        Scenario::<Project>::given(vec![created()])
            .when(create("Apollo"), &free(0), now())
            .then_error(DomainError::AlreadyExists("project"));
    }

    #[test]
    fn suspended_tenants_cannot_write() {
        let ctx = TenantContext { plan: Plan::Free, suspended: true, active_projects: 0 };
        Scenario::<Project>::given(vec![]).when(create("Apollo"), &ctx, now()).then_error(DomainError::TenantSuspended);
    }

    #[test]
    fn update_records_only_what_changed() {
        Scenario::<Project>::given(vec![created()])
            .when(
                ProjectCommand::Update { name: Some("Apollo".into()), description: Some("Moon".into()) },
                &free(1),
                now(),
            )
            .then(vec![Event::ProjectUpdated(ProjectUpdated {
                project_id: pid(),
                name: None,
                description: Some(Some(Description::parse("d", "Moon").unwrap().unwrap())),
                at: now(),
            })]);
        Scenario::<Project>::given(vec![created()])
            .when(ProjectCommand::Update { name: Some(" Apollo ".into()), description: None }, &free(1), now())
            .then(vec![]);
    }

    #[test]
    fn update_needs_a_field_and_an_existing_active_project() {
        Scenario::<Project>::given(vec![created()])
            .when(ProjectCommand::Update { name: None, description: None }, &free(1), now())
            .then_error(DomainError::field("name", "give at least one of name, description"));
        Scenario::<Project>::given(vec![])
            .when(ProjectCommand::Update { name: Some("X".into()), description: None }, &free(0), now())
            .then_error(DomainError::NotFound("project"));
        let err = Scenario::<Project>::given(vec![created(), archived()])
            .when(ProjectCommand::Update { name: Some("X".into()), description: None }, &free(0), now())
            .result()
            .unwrap_err();
        assert!(matches!(err, DomainError::RuleViolated(_)));
    }

    #[test]
    fn archive_an_active_project_once() {
        Scenario::<Project>::given(vec![created()])
            .when(ProjectCommand::Archive, &free(1), now())
            .then(vec![archived()]);
        let err = Scenario::<Project>::given(vec![created(), archived()])
            .when(ProjectCommand::Archive, &free(0), now())
            .result()
            .unwrap_err();
        assert_eq!(err, DomainError::RuleViolated("the project is already archived".into()));
    }

    #[test]
    fn restore_checks_the_limit_again() {
        Scenario::<Project>::given(vec![created(), archived()])
            .when(ProjectCommand::Restore, &free(3), now())
            .then_error(DomainError::LimitExceeded { limit: Limit::ActiveProjects, limit_value: 3 });
        Scenario::<Project>::given(vec![created(), archived()])
            .when(ProjectCommand::Restore, &free(2), now())
            .then(vec![Event::ProjectRestored(ProjectRestored { project_id: pid(), at: now() })]);
    }

    #[test]
    fn only_an_archived_project_is_restored() {
        let err = Scenario::<Project>::given(vec![created()])
            .when(ProjectCommand::Restore, &free(1), now())
            .result()
            .unwrap_err();
        assert_eq!(err, DomainError::RuleViolated("the project is not archived".into()));
        Scenario::<Project>::given(vec![])
            .when(ProjectCommand::Restore, &free(0), now())
            .then_error(DomainError::NotFound("project"));
    }
}
