//! Identifiers. Ids are generated at the edge and passed in, so the domain stays deterministic.

use crate::error::FieldError;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! uuid_id {
    ($name:ident) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_v7() -> Self {
                $name(Uuid::now_v7())
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                $name(u)
            }
        }
    };
}

uuid_id!(TenantId);
uuid_id!(ProjectId);
uuid_id!(MemberId);
uuid_id!(TaskId);
uuid_id!(UsageBatchId);
uuid_id!(WebhookId);

/// The identity provider's user id (the JWT `sub`): 1..200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(field: &str, s: &str) -> Result<UserId, FieldError> {
        let s = crate::values::storable(field, s)?;
        if s.is_empty() || s.chars().count() > 200 {
            return Err(FieldError::new(field, "must be 1 to 200 characters"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(FieldError::new(field, "must not contain whitespace or control characters"));
        }
        Ok(UserId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rejects_empty_whitespace_and_overlong() {
        assert!(UserId::parse("u", "").is_err());
        assert!(UserId::parse("u", "a b").is_err());
        assert!(UserId::parse("u", &"x".repeat(201)).is_err());
        assert_eq!(UserId::parse("u", "auth0|42").unwrap().as_str(), "auth0|42");
    }
}
