//! The Tenant aggregate (control plane): provisioning with its owner's membership.

use crate::aggregate::{Aggregate, StreamType};
use crate::error::{DomainError, Fields};
use crate::event::{Event, MemberInvited, TenantProvisioned};
use crate::ids::{MemberId, TenantId, UserId};
use crate::plan::Plan;
use crate::role::Role;
use crate::values::{Email, PersonName, Slug, TenantName};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[derive(Debug, Clone, Default)]
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
        if let Event::TenantProvisioned(e) = event {
            self.id = Some(e.tenant_id);
            self.name = Some(e.name.clone());
            self.slug = Some(e.slug.clone());
            self.plan = Some(e.plan);
            self.status = Some(TenantStatus::Active);
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

impl Tenant {
    /// Provisioning creates the tenant and, in the same decision, the owner's membership.
    /// Platform-wide slug uniqueness is reserved by the store in the same transaction.
    pub fn provision(&self, cmd: ProvisionTenant, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
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
        Scenario::<Tenant>::given(vec![]).decide(|t| t.provision(cmd(), now())).unwrap().remove(0)
    }

    #[test]
    fn provisioning_creates_the_tenant_and_the_owners_membership() {
        Scenario::<Tenant>::given(vec![]).when(|t| t.provision(cmd(), now())).then(vec![
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

    #[test]
    fn a_tenant_is_provisioned_once() {
        Scenario::<Tenant>::given(vec![provisioned()])
            .when(|t| t.provision(cmd(), now()))
            .then_error(DomainError::AlreadyExists("tenant"));
    }

    #[test]
    fn slug_must_match_the_pattern() {
        let mut c = cmd();
        c.slug = "Acme!".into();
        Scenario::<Tenant>::given(vec![]).when(|t| t.provision(c, now())).then_error(DomainError::Validation(vec![
            FieldError::new(
                "slug",
                "must match ^[a-z0-9][a-z0-9-]{1,62}$ (2 to 63 lowercase letters, digits or dashes)",
            ),
        ]));
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let mut c = cmd();
        c.name = "  ".into();
        c.plan = "gold".into();
        c.owner = OwnerInput { user_id: "".into(), email: "nope".into(), name: "".into() };
        let err = Scenario::<Tenant>::given(vec![]).decide(|t| t.provision(c, now())).unwrap_err();
        let DomainError::Validation(fields) = err else { panic!("expected validation error, got {err:?}") };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, vec!["name", "plan", "owner.user_id", "owner.email", "owner.name"]);
    }
}
