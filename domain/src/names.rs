//! The stored names of the domain's enums (`"in_progress"`, `"suspended"`): one spelling each,
//! read back strictly, so a read row with a name Keel never wrote fails loudly instead of
//! falling back to a default.

/// An enum stored by name.
pub trait Named: Sized + Copy + 'static {
    /// What it is, for errors (`"task status"`).
    const KIND: &'static str;
    /// Every value.
    const ALL: &'static [Self];

    fn name(self) -> &'static str;

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == s)
    }
}

/// A stored name no value of the enum has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} in a stored row")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

/// `Named` and `TryFrom<String>` (what sqlx's `try_from` decodes a text column through) for an
/// enum whose variants map to the given names.
macro_rules! named {
    ($ty:ty, $kind:literal, { $($variant:path => $text:literal),+ $(,)? }) => {
        impl $crate::names::Named for $ty {
            const KIND: &'static str = $kind;
            const ALL: &'static [Self] = &[$($variant),+];

            fn name(self) -> &'static str {
                match self { $($variant => $text),+ }
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $crate::names::UnknownName;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                <$ty as $crate::names::Named>::from_name(&s)
                    .ok_or($crate::names::UnknownName { kind: $kind, value: s })
            }
        }
    };
}

named!(crate::Role, "role", {
    crate::Role::Owner => "owner", crate::Role::Admin => "admin", crate::Role::Member => "member",
    crate::Role::Viewer => "viewer", crate::Role::Auditor => "auditor",
});
named!(crate::Plan, "plan", { crate::Plan::Free => "free", crate::Plan::Team => "team", crate::Plan::Enterprise => "enterprise" });
named!(crate::tenant::TenantStatus, "tenant status", {
    crate::tenant::TenantStatus::Active => "active", crate::tenant::TenantStatus::Suspended => "suspended",
    crate::tenant::TenantStatus::Erased => "erased",
});
named!(crate::member::MemberStatus, "member status", {
    crate::member::MemberStatus::Active => "active", crate::member::MemberStatus::Removed => "removed",
    crate::member::MemberStatus::Erased => "erased",
});
named!(crate::project::ProjectStatus, "project status", {
    crate::project::ProjectStatus::Active => "active", crate::project::ProjectStatus::Archived => "archived",
});
named!(crate::webhook::EndpointState, "webhook endpoint state", {
    crate::webhook::EndpointState::Active => "active", crate::webhook::EndpointState::Failing => "failing",
    crate::webhook::EndpointState::Disabled => "disabled",
});
named!(crate::values::TaskStatus, "task status", {
    crate::values::TaskStatus::Todo => "todo", crate::values::TaskStatus::InProgress => "in_progress",
    crate::values::TaskStatus::Done => "done",
});
named!(crate::values::Priority, "priority", {
    crate::values::Priority::Low => "low", crate::values::Priority::Medium => "medium",
    crate::values::Priority::High => "high", crate::values::Priority::Urgent => "urgent",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Priority, TaskStatus};
    use crate::{Plan, Role};

    fn round_trips<T: Named + PartialEq + std::fmt::Debug + TryFrom<String, Error = UnknownName>>() {
        for v in T::ALL {
            assert_eq!(T::try_from(v.name().to_owned()), Ok(*v));
        }
        let err = T::try_from("no-such-name".to_owned()).unwrap_err();
        assert_eq!(err.kind, T::KIND);
    }

    #[test]
    fn every_stored_name_reads_back_and_an_unknown_one_is_an_error() {
        round_trips::<Role>();
        round_trips::<Plan>();
        round_trips::<crate::tenant::TenantStatus>();
        round_trips::<crate::member::MemberStatus>();
        round_trips::<crate::project::ProjectStatus>();
        round_trips::<TaskStatus>();
        round_trips::<Priority>();
        round_trips::<crate::webhook::EndpointState>();
    }

    #[test]
    fn the_names_are_the_ones_the_rest_of_the_domain_writes() {
        for r in Role::ALL {
            assert_eq!(r.name(), r.as_str());
        }
        for p in Plan::ALL {
            assert_eq!(p.name(), p.as_str());
        }
        for s in TaskStatus::ALL {
            assert_eq!(s.name(), s.as_str());
        }
        for p in Priority::ALL {
            assert_eq!(p.name(), p.as_str());
        }
    }
}
