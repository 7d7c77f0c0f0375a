//! Roles within a tenant and what each may do (`docs/domain.md`, "Members and roles"). The role always comes from the
//! membership, never from a token.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
    Auditor,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "viewer" => Some(Role::Viewer),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
        }
    }

    /// Projects, tasks and usage commands.
    pub fn can_write_work(self) -> bool {
        matches!(self, Role::Owner | Role::Admin | Role::Member)
    }

    /// Inviting, re-roling and removing members.
    pub fn can_manage_members(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// Webhook endpoints: where the tenant's events are sent.
    pub fn can_manage_webhooks(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// Projects, tasks, members and usage reads.
    pub fn can_read_data(self) -> bool {
        matches!(self, Role::Owner | Role::Admin | Role::Member | Role::Viewer)
    }

    pub fn can_read_audit(self) -> bool {
        matches!(self, Role::Owner | Role::Admin | Role::Auditor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owner_admin_member_write_work() {
        let writers: Vec<_> = [Role::Owner, Role::Admin, Role::Member, Role::Viewer, Role::Auditor]
            .into_iter()
            .filter(|r| r.can_write_work())
            .collect();
        assert_eq!(writers, vec![Role::Owner, Role::Admin, Role::Member]);
    }

    #[test]
    fn auditor_reads_audit_but_not_data() {
        assert!(Role::Auditor.can_read_audit());
        assert!(!Role::Auditor.can_read_data());
        assert!(!Role::Member.can_read_audit());
    }
}
