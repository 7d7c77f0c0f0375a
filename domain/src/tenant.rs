//! The Tenant aggregate (control plane): provisioning with its owner's membership.

use crate::aggregate::{Aggregate, Decide, StreamType};
use crate::error::{DomainError, Fields, Limit};
use crate::event::{
    Event, MemberInvited, TenantErased, TenantPlanChanged, TenantProvisioned, TenantReactivated, TenantSuspended,
};
use crate::ids::{MemberId, TenantId, UserId};
use crate::plan::Plan;
use crate::role::Role;
use crate::values::{Email, PersonName, Reason, Slug, TenantName};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TenantStatus {
    Active,
    Suspended,
    Erased,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tenant {
    pub id: Option<TenantId>,
    pub name: Option<TenantName>,
    pub slug: Option<Slug>,
    pub plan: Option<Plan>,
    pub status: Option<TenantStatus>,
}

impl Aggregate for Tenant {
    const STREAM_TYPE: StreamType = StreamType::Tenant;

    fn apply(mut self, event: &Event) -> Self {
        match event {
            Event::TenantProvisioned(e) => {
                self.id = Some(e.tenant_id);
                self.name = Some(e.name.clone());
                self.slug = Some(e.slug.clone());
                self.plan = Some(e.plan);
                self.status = Some(TenantStatus::Active);
            }
            Event::TenantPlanChanged(e) => self.plan = Some(e.to),
            Event::TenantSuspended(_) => self.status = Some(TenantStatus::Suspended),
            Event::TenantReactivated(_) => self.status = Some(TenantStatus::Active),
            Event::TenantErased(_) => self.status = Some(TenantStatus::Erased),
            _ => {}
        }
        self
    }
}

/// The owner named when a tenant is provisioned; raw input, validated by `decide`.
#[derive(Debug, Clone)]
pub struct OwnerInput {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

/// Ids are chosen by the caller so that `decide` stays deterministic.
#[derive(Debug, Clone)]
pub struct ProvisionTenant {
    pub tenant_id: TenantId,
    pub owner_member_id: MemberId,
    pub name: String,
    pub slug: String,
    pub plan: String,
    pub owner: OwnerInput,
}

/// What the platform does to a tenant.
#[derive(Debug, Clone)]
pub enum TenantCommand {
    /// Creates the tenant and, in the same decision, the owner's membership.
    Provision(ProvisionTenant),
    /// A downgrade must fit the seats and active projects in use.
    ChangePlan {
        plan: String,
    },
    Suspend {
        reason: Option<String>,
    },
    Reactivate,
    /// GDPR erasure of the whole tenant; erasing it again changes nothing.
    Erase,
}

/// What the tenant uses now, read in the command's transaction (the tenant row locked); a tenant
/// being provisioned uses nothing yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantUsage {
    pub seats_used: u64,
    pub active_projects: u64,
}

impl Decide for Tenant {
    type Command = TenantCommand;
    type Context = TenantUsage;

    fn decide(&self, cmd: TenantCommand, usage: &TenantUsage, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        match cmd {
            TenantCommand::Provision(p) => self.provision(p, now),
            TenantCommand::ChangePlan { plan } => self.change_plan(&plan, *usage, now),
            TenantCommand::Suspend { reason } => self.suspend(reason.as_deref(), now),
            TenantCommand::Reactivate => self.reactivate(now),
            TenantCommand::Erase => self.erase(now),
        }
    }
}

impl Tenant {
    /// Platform-wide slug uniqueness is reserved by the store in the same transaction.
    fn provision(&self, cmd: ProvisionTenant, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        if self.id.is_some() {
            return Err(DomainError::AlreadyExists("tenant"));
        }
        let mut f = Fields::default();
        let name = f.check(TenantName::parse("name", &cmd.name));
        let slug = f.check(Slug::parse("slug", &cmd.slug));
        let plan = f.check(
            Plan::parse(&cmd.plan)
                .ok_or_else(|| crate::FieldError::new("plan", "must be one of free, team, enterprise")),
        );
        let user_id = f.check(UserId::parse("owner.user_id", &cmd.owner.user_id));
        let email = f.check(Email::parse("owner.email", &cmd.owner.email));
        let owner_name = f.check(PersonName::parse("owner.name", &cmd.owner.name));
        f.finish()?;
        let (Some(name), Some(slug), Some(plan), Some(user_id), Some(email), Some(owner_name)) =
            (name, slug, plan, user_id, email, owner_name)
        else {
            unreachable!("Fields::finish returns the error when any field failed")
        };
        Ok(vec![
            Event::TenantProvisioned(TenantProvisioned {
                tenant_id: cmd.tenant_id,
                name,
                slug,
                plan,
                owner_member_id: cmd.owner_member_id,
                at: now,
            }),
            Event::MemberInvited(MemberInvited {
                member_id: cmd.owner_member_id,
                user_id,
                email,
                name: owner_name,
                role: Role::Owner,
                at: now,
            }),
        ])
    }
}

impl Tenant {
    /// The tenant's id, if it exists and was not erased (an erased tenant takes no more commands).
    fn existing(&self) -> Result<TenantId, DomainError> {
        let id = self.id.ok_or(DomainError::NotFound("tenant"))?;
        if self.status == Some(TenantStatus::Erased) {
            return Err(DomainError::RuleViolated("the tenant has been erased".into()));
        }
        Ok(id)
    }

    fn erase(&self, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        let id = self.id.ok_or(DomainError::NotFound("tenant"))?;
        if self.status == Some(TenantStatus::Erased) {
            return Ok(vec![]);
        }
        Ok(vec![Event::TenantErased(TenantErased { tenant_id: id, at: now })])
    }

    /// A downgrade that does not fit names the limit.
    fn change_plan(&self, plan: &str, usage: TenantUsage, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        // Input first: a value that cannot be right is a 422 whatever the tenant's state.
        let to =
            Plan::parse(plan).ok_or_else(|| DomainError::field("plan", "must be one of free, team, enterprise"))?;
        let id = self.existing()?;
        let from = self.plan.expect("a provisioned tenant has a plan");
        if to == from {
            return Ok(vec![]);
        }
        if let Some(limit) = to.seat_limit().filter(|l| usage.seats_used > *l) {
            return Err(DomainError::LimitExceeded { limit: Limit::Seats, limit_value: limit });
        }
        if let Some(limit) = to.active_project_limit().filter(|l| usage.active_projects > *l) {
            return Err(DomainError::LimitExceeded { limit: Limit::ActiveProjects, limit_value: limit });
        }
        Ok(vec![Event::TenantPlanChanged(TenantPlanChanged { tenant_id: id, from, to, at: now })])
    }

    fn suspend(&self, reason: Option<&str>, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        let reason = match reason {
            Some(r) => Reason::parse("reason", r).map_err(|e| DomainError::Validation(vec![e]))?,
            None => None,
        };
        let id = self.existing()?;
        if self.status == Some(TenantStatus::Suspended) {
            return Err(DomainError::RuleViolated("the tenant is already suspended".into()));
        }
        Ok(vec![Event::TenantSuspended(TenantSuspended { tenant_id: id, reason, at: now })])
    }

    fn reactivate(&self, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        let id = self.existing()?;
        if self.status != Some(TenantStatus::Suspended) {
            return Err(DomainError::RuleViolated("the tenant is not suspended".into()));
        }
        Ok(vec![Event::TenantReactivated(TenantReactivated { tenant_id: id, at: now })])
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
    fn tid() -> TenantId {
        TenantId(Uuid::from_u128(1))
    }
    fn mid() -> MemberId {
        MemberId(Uuid::from_u128(2))
    }
    fn cmd() -> ProvisionTenant {
        ProvisionTenant {
            tenant_id: tid(),
            owner_member_id: mid(),
            name: " Acme Corp ".into(),
            slug: "acme".into(),
            plan: "free".into(),
            owner: OwnerInput { user_id: "u-1".into(), email: "ada@acme.test".into(), name: "Ada".into() },
        }
    }
    fn provisioned() -> Event {
        Scenario::<Tenant>::given(vec![])
            .when(TenantCommand::Provision(cmd()), &none(), now())
            .result()
            .unwrap()
            .remove(0)
    }

    #[test]
    fn provisioning_creates_the_tenant_and_the_owners_membership() {
        Scenario::<Tenant>::given(vec![]).when(TenantCommand::Provision(cmd()), &none(), now()).then(vec![
            Event::TenantProvisioned(TenantProvisioned {
                tenant_id: tid(),
                name: TenantName::parse("name", "Acme Corp").unwrap(),
                slug: Slug::parse("slug", "acme").unwrap(),
                plan: Plan::Free,
                owner_member_id: mid(),
                at: now(),
            }),
            Event::MemberInvited(MemberInvited {
                member_id: mid(),
                user_id: UserId::parse("u", "u-1").unwrap(),
                email: Email::parse("e", "ada@acme.test").unwrap(),
                name: PersonName::parse("n", "Ada").unwrap(),
                role: Role::Owner,
                at: now(),
            }),
        ]);
    }

    fn usage(seats: u64, projects: u64) -> TenantUsage {
        TenantUsage { seats_used: seats, active_projects: projects }
    }
    /// The context of a command that does not count against a limit.
    fn none() -> TenantUsage {
        TenantUsage::default()
    }
    fn plan(p: &str) -> TenantCommand {
        TenantCommand::ChangePlan { plan: p.into() }
    }

    fn team() -> Event {
        Event::TenantPlanChanged(TenantPlanChanged { tenant_id: tid(), from: Plan::Free, to: Plan::Team, at: now() })
    }

    #[test]
    fn upgrading_always_fits() {
        Scenario::<Tenant>::given(vec![provisioned()]).when(plan("team"), &usage(3, 3), now()).then(vec![team()]);
    }

    #[test]
    fn a_downgrade_that_does_not_fit_names_the_limit() {
        Scenario::<Tenant>::given(vec![provisioned(), team()])
            .when(plan("free"), &usage(4, 1), now())
            .then_error(DomainError::LimitExceeded { limit: Limit::Seats, limit_value: 3 });
        Scenario::<Tenant>::given(vec![provisioned(), team()])
            .when(plan("free"), &usage(2, 5), now())
            .then_error(DomainError::LimitExceeded { limit: Limit::ActiveProjects, limit_value: 3 });
        Scenario::<Tenant>::given(vec![provisioned(), team()]).when(plan("free"), &usage(3, 3), now()).then(vec![
            Event::TenantPlanChanged(TenantPlanChanged {
                tenant_id: tid(),
                from: Plan::Team,
                to: Plan::Free,
                at: now(),
            }),
        ]);
    }

    #[test]
    fn the_same_plan_changes_nothing_and_unknown_plans_are_refused() {
        Scenario::<Tenant>::given(vec![provisioned()]).when(plan("free"), &usage(1, 0), now()).then(vec![]);
        Scenario::<Tenant>::given(vec![provisioned()])
            .when(plan("gold"), &usage(1, 0), now())
            .then_error(DomainError::field("plan", "must be one of free, team, enterprise"));
        Scenario::<Tenant>::given(vec![])
            .when(plan("team"), &usage(0, 0), now())
            .then_error(DomainError::NotFound("tenant"));
    }

    /// Input that cannot be right is refused before the tenant's state is consulted, so a 422
    /// wins over a 409 or an `If-Match` that does not hold (found by schemathesis: an unknown plan
    /// for an erased tenant answered 412).
    #[test]
    fn bad_input_is_refused_whatever_state_the_tenant_is_in() {
        let erased = Event::TenantErased(TenantErased { tenant_id: tid(), at: now() });
        Scenario::<Tenant>::given(vec![provisioned(), erased.clone()])
            .when(plan("gold"), &usage(0, 0), now())
            .then_error(DomainError::field("plan", "must be one of free, team, enterprise"));
        let suspended = Event::TenantSuspended(TenantSuspended { tenant_id: tid(), reason: None, at: now() });
        let bad_reason = TenantCommand::Suspend { reason: Some("a\u{0}b".into()) };
        for given in [vec![provisioned(), suspended], vec![provisioned(), erased]] {
            let error = Scenario::<Tenant>::given(given).when(bad_reason.clone(), &none(), now()).result().unwrap_err();
            assert!(matches!(error, DomainError::Validation(_)), "{error:?}");
        }
    }

    #[test]
    fn suspend_then_reactivate() {
        let suspended = Event::TenantSuspended(TenantSuspended {
            tenant_id: tid(),
            reason: Reason::parse("reason", "unpaid").unwrap(),
            at: now(),
        });
        Scenario::<Tenant>::given(vec![provisioned()])
            .when(TenantCommand::Suspend { reason: Some(" unpaid ".into()) }, &none(), now())
            .then(vec![suspended.clone()]);
        Scenario::<Tenant>::given(vec![provisioned(), suspended.clone()])
            .when(TenantCommand::Suspend { reason: None }, &none(), now())
            .then_error(DomainError::RuleViolated("the tenant is already suspended".into()));
        Scenario::<Tenant>::given(vec![provisioned(), suspended])
            .when(TenantCommand::Reactivate, &none(), now())
            .then(vec![Event::TenantReactivated(TenantReactivated { tenant_id: tid(), at: now() })]);
        Scenario::<Tenant>::given(vec![provisioned()])
            .when(TenantCommand::Reactivate, &none(), now())
            .then_error(DomainError::RuleViolated("the tenant is not suspended".into()));
    }

    #[test]
    fn a_tenant_is_provisioned_once() {
        Scenario::<Tenant>::given(vec![provisioned()])
            .when(TenantCommand::Provision(cmd()), &none(), now())
            .then_error(DomainError::AlreadyExists("tenant"));
    }

    #[test]
    fn slug_must_match_the_pattern() {
        let mut c = cmd();
        c.slug = "Acme!".into();
        Scenario::<Tenant>::given(vec![]).when(TenantCommand::Provision(c), &none(), now()).then_error(
            DomainError::Validation(vec![FieldError::new(
                "slug",
                "must match ^[a-z0-9][a-z0-9-]{1,62}$ (2 to 63 lowercase letters, digits or dashes)",
            )]),
        );
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let mut c = cmd();
        c.name = "  ".into();
        c.plan = "gold".into();
        c.owner = OwnerInput { user_id: "".into(), email: "nope".into(), name: "".into() };
        let err =
            Scenario::<Tenant>::given(vec![]).when(TenantCommand::Provision(c), &none(), now()).result().unwrap_err();
        let DomainError::Validation(fields) = err else { panic!("expected validation error, got {err:?}") };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, vec!["name", "plan", "owner.user_id", "owner.email", "owner.name"]);
    }

    #[test]
    fn an_erased_tenant_is_erased_once_and_takes_no_more_commands() {
        let erased = Event::TenantErased(TenantErased { tenant_id: tid(), at: now() });
        Scenario::<Tenant>::given(vec![provisioned()])
            .when(TenantCommand::Erase, &none(), now())
            .then(vec![erased.clone()]);
        Scenario::<Tenant>::given(vec![provisioned(), erased.clone()])
            .when(TenantCommand::Erase, &none(), now())
            .then(vec![]);
        Scenario::<Tenant>::given(vec![])
            .when(TenantCommand::Erase, &none(), now())
            .then_error(DomainError::NotFound("tenant"));
        let gone = DomainError::RuleViolated("the tenant has been erased".into());
        Scenario::<Tenant>::given(vec![provisioned(), erased.clone()])
            .when(TenantCommand::Suspend { reason: None }, &none(), now())
            .then_error(gone.clone());
        Scenario::<Tenant>::given(vec![provisioned(), erased])
            .when(TenantCommand::Reactivate, &none(), now())
            .then_error(gone);
    }
}
