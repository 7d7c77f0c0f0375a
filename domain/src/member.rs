//! The Member aggregate: invitations under the seat limit, role changes and removal, always
//! leaving the tenant an active owner.

use crate::aggregate::{Aggregate, Decide, StreamType};
use crate::error::{DomainError, Fields, Limit};
use crate::event::{Event, MemberErased, MemberInvited, MemberRemoved, MemberRoleChanged};
use crate::ids::{MemberId, UserId};
use crate::plan::Plan;
use crate::role::Role;
use crate::values::{Email, PersonName};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MemberStatus {
    Active,
    Removed,
    Erased,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub id: Option<MemberId>,
    pub user_id: Option<UserId>,
    pub role: Option<Role>,
    pub status: Option<MemberStatus>,
}

impl Aggregate for Member {
    const STREAM_TYPE: StreamType = StreamType::Member;

    fn apply(mut self, event: &Event) -> Self {
        match event {
            Event::MemberInvited(e) => {
                self.id = Some(e.member_id);
                self.user_id = Some(e.user_id.clone());
                self.role = Some(e.role);
                self.status = Some(MemberStatus::Active);
            }
            Event::MemberRoleChanged(e) => self.role = Some(e.to),
            Event::MemberRemoved(_) => self.status = Some(MemberStatus::Removed),
            Event::MemberErased(_) => self.status = Some(MemberStatus::Erased),
            _ => {}
        }
        self
    }
}

/// The tenant and the caller, read in the command's transaction.
#[derive(Debug, Clone, Copy)]
pub struct MemberContext {
    pub plan: Plan,
    pub suspended: bool,
    pub seats_used: u64,
    pub active_owners: u64,
    /// The role of whoever issues the command.
    pub actor: Role,
}

#[derive(Debug, Clone)]
pub enum MemberCommand {
    Invite {
        member_id: MemberId,
        user_id: String,
        email: String,
        name: String,
        role: String,
    },
    ChangeRole {
        role: String,
    },
    Remove,
    /// GDPR erasure: owners only, also while the tenant is suspended.
    Erase,
}

fn parse_role(s: &str) -> Result<Role, crate::FieldError> {
    Role::parse(s).ok_or_else(|| crate::FieldError::new("role", "must be one of owner, admin, member, viewer, auditor"))
}

/// Email and user id uniqueness within the tenant are reserved by the store in the same
/// transaction; everything else is decided here.
impl Decide for Member {
    type Command = MemberCommand;
    type Context = MemberContext;

    fn check_input(cmd: &MemberCommand) -> Result<(), DomainError> {
        let mut f = Fields::default();
        match cmd {
            MemberCommand::Invite { user_id, email, name, role, .. } => {
                f.check(UserId::parse("user_id", user_id));
                f.check(Email::parse("email", email));
                f.check(PersonName::parse("name", name));
                f.check(parse_role(role));
            }
            MemberCommand::ChangeRole { role } => {
                f.check(parse_role(role));
            }
            MemberCommand::Remove | MemberCommand::Erase => {}
        }
        f.finish()
    }

    fn decide(&self, cmd: MemberCommand, ctx: &MemberContext, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        if matches!(cmd, MemberCommand::Erase) {
            return self.erase(ctx, now);
        }
        if ctx.suspended {
            return Err(DomainError::TenantSuspended);
        }
        if !ctx.actor.can_manage_members() {
            return Err(DomainError::NotAllowed(format!("the {} role cannot manage members", ctx.actor.as_str())));
        }
        match cmd {
            MemberCommand::Invite { member_id, user_id, email, name, role } => {
                if self.id.is_some() {
                    return Err(DomainError::AlreadyExists("member"));
                }
                let mut f = Fields::default();
                let user_id = f.check(UserId::parse("user_id", &user_id));
                let email = f.check(Email::parse("email", &email));
                let name = f.check(PersonName::parse("name", &name));
                let role = f.check(parse_role(&role));
                f.finish()?;
                let role = role.expect("checked");
                if role == Role::Owner && ctx.actor != Role::Owner {
                    return Err(DomainError::NotAllowed("only an owner can make an owner".into()));
                }
                if let Some(limit) = ctx.plan.seat_limit().filter(|l| ctx.seats_used >= *l) {
                    return Err(DomainError::LimitExceeded { limit: Limit::Seats, limit_value: limit });
                }
                Ok(vec![Event::MemberInvited(MemberInvited {
                    member_id,
                    user_id: user_id.expect("checked"),
                    email: email.expect("checked"),
                    name: name.expect("checked"),
                    role,
                    at: now,
                })])
            }
            MemberCommand::ChangeRole { role } => {
                let (id, current) = self.active()?;
                let to = parse_role(&role).map_err(|e| DomainError::Validation(vec![e]))?;
                if to == current {
                    return Ok(vec![]);
                }
                if (current == Role::Owner || to == Role::Owner) && ctx.actor != Role::Owner {
                    return Err(DomainError::NotAllowed("only an owner can change who is an owner".into()));
                }
                if current == Role::Owner && ctx.active_owners <= 1 {
                    return Err(DomainError::RuleViolated("the tenant must keep at least one active owner".into()));
                }
                Ok(vec![Event::MemberRoleChanged(MemberRoleChanged { member_id: id, from: current, to, at: now })])
            }
            MemberCommand::Erase => unreachable!("decided above"),
            MemberCommand::Remove => {
                let (id, current) = self.active()?;
                if current == Role::Owner && ctx.actor != Role::Owner {
                    return Err(DomainError::NotAllowed("only an owner can remove an owner".into()));
                }
                if current == Role::Owner && ctx.active_owners <= 1 {
                    return Err(DomainError::RuleViolated("the tenant must keep at least one active owner".into()));
                }
                Ok(vec![Event::MemberRemoved(MemberRemoved { member_id: id, at: now })])
            }
        }
    }
}

impl Member {
    fn erase(&self, ctx: &MemberContext, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        if ctx.actor != Role::Owner {
            return Err(DomainError::NotAllowed("only an owner can erase a member".into()));
        }
        let Some(id) = self.id else { return Err(DomainError::NotFound("member")) };
        let was_active = self.status == Some(MemberStatus::Active);
        match self.status {
            Some(MemberStatus::Erased) => Ok(vec![]),
            _ if was_active && self.role == Some(Role::Owner) && ctx.active_owners <= 1 => {
                Err(DomainError::RuleViolated("the tenant must keep at least one active owner".into()))
            }
            _ => Ok(vec![Event::MemberErased(MemberErased { member_id: id, was_active, at: now })]),
        }
    }

    fn active(&self) -> Result<(MemberId, Role), DomainError> {
        match (self.id, self.role, self.status) {
            (Some(id), Some(role), Some(MemberStatus::Active)) => Ok((id, role)),
            (Some(_), _, Some(MemberStatus::Erased)) => {
                Err(DomainError::RuleViolated("the member has been erased".into()))
            }
            (Some(_), _, _) => Err(DomainError::RuleViolated("the member has been removed".into())),
            _ => Err(DomainError::NotFound("member")),
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
    fn mid() -> MemberId {
        MemberId(Uuid::from_u128(9))
    }
    fn ctx(actor: Role, seats: u64, owners: u64) -> MemberContext {
        MemberContext { plan: Plan::Free, suspended: false, seats_used: seats, active_owners: owners, actor }
    }
    fn invite(role: &str) -> MemberCommand {
        MemberCommand::Invite {
            member_id: mid(),
            user_id: "bob".into(),
            email: "bob@acme.test".into(),
            name: "Bob".into(),
            role: role.into(),
        }
    }
    fn invited(role: Role) -> Event {
        Event::MemberInvited(MemberInvited {
            member_id: mid(),
            user_id: UserId::parse("u", "bob").unwrap(),
            email: Email::parse("e", "bob@acme.test").unwrap(),
            name: PersonName::parse("n", "Bob").unwrap(),
            role,
            at: now(),
        })
    }
    fn removed() -> Event {
        Event::MemberRemoved(MemberRemoved { member_id: mid(), at: now() })
    }

    #[test]
    fn a_role_that_is_no_role_is_refused_by_the_command_alone() {
        let fields = |r: Result<(), DomainError>| match r {
            Err(DomainError::Validation(v)) => v.into_iter().map(|f| f.field).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(fields(Member::check_input(&MemberCommand::ChangeRole { role: "wizard".into() })), ["role"]);
        assert_eq!(fields(Member::check_input(&invite("wizard"))), ["role"]);
        assert!(Member::check_input(&MemberCommand::ChangeRole { role: "admin".into() }).is_ok());
        assert!(Member::check_input(&invite("member")).is_ok());
        // decide agrees: whatever the state, the same input is refused for the same field.
        Scenario::<Member>::given(vec![invited(Role::Member)])
            .when(MemberCommand::ChangeRole { role: "wizard".into() }, &ctx(Role::Owner, 2, 1), now())
            .then_error(DomainError::Validation(vec![crate::FieldError::new(
                "role",
                "must be one of owner, admin, member, viewer, auditor",
            )]));
    }

    #[test]
    fn an_admin_invites_a_member() {
        Scenario::<Member>::given(vec![])
            .when(invite("member"), &ctx(Role::Admin, 1, 1), now())
            .then(vec![invited(Role::Member)]);
    }

    #[test]
    fn invitations_respect_the_seat_limit() {
        Scenario::<Member>::given(vec![])
            .when(invite("member"), &ctx(Role::Owner, 3, 1), now())
            .then_error(DomainError::LimitExceeded { limit: Limit::Seats, limit_value: 3 });
        let enterprise = MemberContext { plan: Plan::Enterprise, ..ctx(Role::Owner, 10_000, 1) };
        assert!(Scenario::<Member>::given(vec![]).when(invite("member"), &enterprise, now()).result().is_ok());
    }

    #[test]
    fn invitations_validate_email_user_id_name_and_role() {
        let cmd = MemberCommand::Invite {
            member_id: mid(),
            user_id: "has space".into(),
            email: "not-an-email".into(),
            name: " ".into(),
            role: "king".into(),
        };
        let err = Scenario::<Member>::given(vec![]).when(cmd, &ctx(Role::Owner, 1, 1), now()).result().unwrap_err();
        let DomainError::Validation(fields) = err else { panic!("{err:?}") };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, vec!["user_id", "email", "name", "role"]);
    }

    #[test]
    fn only_owners_and_admins_manage_members() {
        for actor in [Role::Member, Role::Viewer, Role::Auditor] {
            let err = Scenario::<Member>::given(vec![])
                .when(invite("viewer"), &ctx(actor, 1, 1), now())
                .result()
                .unwrap_err();
            assert!(matches!(err, DomainError::NotAllowed(_)), "{actor:?}");
        }
    }

    #[test]
    fn only_an_owner_makes_or_changes_an_owner() {
        let err = Scenario::<Member>::given(vec![])
            .when(invite("owner"), &ctx(Role::Admin, 1, 1), now())
            .result()
            .unwrap_err();
        assert!(matches!(err, DomainError::NotAllowed(_)));
        Scenario::<Member>::given(vec![])
            .when(invite("owner"), &ctx(Role::Owner, 1, 1), now())
            .then(vec![invited(Role::Owner)]);
        let err = Scenario::<Member>::given(vec![invited(Role::Owner)])
            .when(MemberCommand::ChangeRole { role: "admin".into() }, &ctx(Role::Admin, 2, 2), now())
            .result()
            .unwrap_err();
        assert!(matches!(err, DomainError::NotAllowed(_)));
        let err = Scenario::<Member>::given(vec![invited(Role::Owner)])
            .when(MemberCommand::Remove, &ctx(Role::Admin, 2, 2), now())
            .result()
            .unwrap_err();
        assert!(matches!(err, DomainError::NotAllowed(_)));
    }

    #[test]
    fn the_tenant_always_keeps_an_active_owner() {
        let last_owner = DomainError::RuleViolated("the tenant must keep at least one active owner".into());
        Scenario::<Member>::given(vec![invited(Role::Owner)])
            .when(MemberCommand::ChangeRole { role: "admin".into() }, &ctx(Role::Owner, 1, 1), now())
            .then_error(last_owner.clone());
        Scenario::<Member>::given(vec![invited(Role::Owner)])
            .when(MemberCommand::Remove, &ctx(Role::Owner, 1, 1), now())
            .then_error(last_owner);
        Scenario::<Member>::given(vec![invited(Role::Owner)])
            .when(MemberCommand::ChangeRole { role: "admin".into() }, &ctx(Role::Owner, 2, 2), now())
            .then(vec![Event::MemberRoleChanged(MemberRoleChanged {
                member_id: mid(),
                from: Role::Owner,
                to: Role::Admin,
                at: now(),
            })]);
    }

    #[test]
    fn role_changes_and_removal_need_an_active_member() {
        Scenario::<Member>::given(vec![])
            .when(MemberCommand::Remove, &ctx(Role::Owner, 1, 1), now())
            .then_error(DomainError::NotFound("member"));
        Scenario::<Member>::given(vec![invited(Role::Member), removed()])
            .when(MemberCommand::Remove, &ctx(Role::Owner, 1, 1), now())
            .then_error(DomainError::RuleViolated("the member has been removed".into()));
        Scenario::<Member>::given(vec![invited(Role::Member)])
            .when(MemberCommand::ChangeRole { role: "member".into() }, &ctx(Role::Owner, 2, 1), now())
            .then(vec![]);
        Scenario::<Member>::given(vec![invited(Role::Member)])
            .when(MemberCommand::ChangeRole { role: "boss".into() }, &ctx(Role::Owner, 2, 1), now())
            .then_error(DomainError::Validation(vec![FieldError::new(
                "role",
                "must be one of owner, admin, member, viewer, auditor",
            )]));
    }

    #[test]
    fn suspended_tenants_cannot_change_members() {
        let c = MemberContext { suspended: true, ..ctx(Role::Owner, 1, 1) };
        Scenario::<Member>::given(vec![]).when(invite("member"), &c, now()).then_error(DomainError::TenantSuspended);
    }

    fn erased(was_active: bool) -> Event {
        Event::MemberErased(MemberErased { member_id: mid(), was_active, at: now() })
    }

    #[test]
    fn an_owner_erases_a_member_active_or_removed_and_erasing_again_changes_nothing() {
        Scenario::<Member>::given(vec![invited(Role::Member)])
            .when(MemberCommand::Erase, &ctx(Role::Owner, 2, 1), now())
            .then(vec![erased(true)]);
        Scenario::<Member>::given(vec![invited(Role::Member), removed()])
            .when(MemberCommand::Erase, &ctx(Role::Owner, 1, 1), now())
            .then(vec![erased(false)]);
        Scenario::<Member>::given(vec![invited(Role::Member), erased(true)])
            .when(MemberCommand::Erase, &ctx(Role::Owner, 1, 1), now())
            .then(vec![]);
    }

    #[test]
    fn only_an_owner_erases_and_never_the_last_active_owner_even_while_suspended() {
        for actor in [Role::Admin, Role::Member, Role::Viewer, Role::Auditor] {
            let err = Scenario::<Member>::given(vec![invited(Role::Member)])
                .when(MemberCommand::Erase, &ctx(actor, 2, 1), now())
                .result()
                .unwrap_err();
            assert!(matches!(err, DomainError::NotAllowed(_)), "{actor:?}");
        }
        Scenario::<Member>::given(vec![invited(Role::Owner)])
            .when(MemberCommand::Erase, &ctx(Role::Owner, 1, 1), now())
            .then_error(DomainError::RuleViolated("the tenant must keep at least one active owner".into()));
        let suspended = MemberContext { suspended: true, ..ctx(Role::Owner, 2, 1) };
        Scenario::<Member>::given(vec![invited(Role::Member)])
            .when(MemberCommand::Erase, &suspended, now())
            .then(vec![erased(true)]);
        Scenario::<Member>::given(vec![invited(Role::Member), erased(true)])
            .when(MemberCommand::ChangeRole { role: "admin".into() }, &ctx(Role::Owner, 1, 1), now())
            .then_error(DomainError::RuleViolated("the member has been erased".into()));
    }
}
