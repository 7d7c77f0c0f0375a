//! Value types: the only way in is `parse`, which names the field it was given for.

use crate::error::FieldError;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_value {
    ($name:ident) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// The one rule every free-text value obeys before any other: PostgreSQL's `text` and `jsonb`
/// cannot hold U+0000, so a NUL is refused here, naming the field, rather than by the database
/// (a 500) when the event is appended.
pub fn storable<'a>(field: &str, s: &'a str) -> Result<&'a str, FieldError> {
    if s.contains('\0') {
        return Err(FieldError::new(field, "must not contain NUL characters (\\u0000)"));
    }
    Ok(s)
}

/// A trimmed, non-empty name of at most `max` characters.
fn trimmed_name(field: &str, s: &str, max: usize) -> Result<String, FieldError> {
    let t = storable(field, s)?.trim();
    let n = t.chars().count();
    if n == 0 {
        return Err(FieldError::new(field, "must not be blank"));
    }
    if n > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters")));
    }
    if t.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(t.to_owned())
}

string_value!(Slug);
impl Slug {
    /// `^[a-z0-9][a-z0-9-]{1,62}$`
    pub fn parse(field: &str, s: &str) -> Result<Slug, FieldError> {
        let b = storable(field, s)?.as_bytes();
        let ok = (2..=63).contains(&b.len())
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b[1..].iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(Slug(s.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "must match ^[a-z0-9][a-z0-9-]{1,62}$ (2 to 63 lowercase letters, digits or dashes)",
            ))
        }
    }
}

string_value!(Email);
impl Email {
    /// A syntactically valid address (RFC 5321/5322 as checked by `email_address`), at most 254
    /// characters. Stored as given, compared lower-cased.
    pub fn parse(field: &str, s: &str) -> Result<Email, FieldError> {
        let t = storable(field, s)?.trim();
        if t.len() > 254 || !email_address::EmailAddress::is_valid(t) {
            return Err(FieldError::new(field, "must be a valid email address"));
        }
        Ok(Email(t.to_owned()))
    }
}

string_value!(ProjectName);
impl ProjectName {
    /// 1..200 characters after trimming.
    pub fn parse(field: &str, s: &str) -> Result<ProjectName, FieldError> {
        trimmed_name(field, s, 200).map(ProjectName)
    }
}

string_value!(TenantName);
impl TenantName {
    pub fn parse(field: &str, s: &str) -> Result<TenantName, FieldError> {
        trimmed_name(field, s, 200).map(TenantName)
    }
}

string_value!(PersonName);
impl PersonName {
    pub fn parse(field: &str, s: &str) -> Result<PersonName, FieldError> {
        trimmed_name(field, s, 200).map(PersonName)
    }
}

string_value!(TaskTitle);
impl TaskTitle {
    /// 1..500 characters after trimming.
    pub fn parse(field: &str, s: &str) -> Result<TaskTitle, FieldError> {
        trimmed_name(field, s, 500).map(TaskTitle)
    }
}

string_value!(Reason);
impl Reason {
    /// Up to 500 characters; blank means none.
    pub fn parse(field: &str, s: &str) -> Result<Option<Reason>, FieldError> {
        let t = storable(field, s)?.trim();
        if t.chars().count() > 500 {
            return Err(FieldError::new(field, "must be at most 500 characters"));
        }
        Ok(if t.is_empty() { None } else { Some(Reason(t.to_owned())) })
    }
}

string_value!(Metric);
impl Metric {
    /// `^[a-z][a-z0-9_.-]{0,63}$`, e.g. `api.calls`.
    pub fn parse(field: &str, s: &str) -> Result<Metric, FieldError> {
        let b = storable(field, s)?.as_bytes();
        let ok = (1..=64).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'));
        if ok { Ok(Metric(s.to_owned())) } else { Err(FieldError::new(field, "must match ^[a-z][a-z0-9_.-]{0,63}$")) }
    }
}

string_value!(RecordId);
impl RecordId {
    /// The client's id of a usage record: 1..200 printable ASCII characters.
    pub fn parse(field: &str, s: &str) -> Result<RecordId, FieldError> {
        let s = storable(field, s)?;
        if s.is_empty() || s.len() > 200 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FieldError::new(field, "must be 1 to 200 printable ASCII characters"));
        }
        Ok(RecordId(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
    Urgent,
}

impl Priority {
    pub fn parse(field: &str, s: &str) -> Result<Priority, FieldError> {
        match s {
            "low" => Ok(Priority::Low),
            "medium" => Ok(Priority::Medium),
            "high" => Ok(Priority::High),
            "urgent" => Ok(Priority::Urgent),
            _ => Err(FieldError::new(field, "must be one of low, medium, high, urgent")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Todo,
    InProgress,
    Done,
}

impl TaskStatus {
    pub fn parse(field: &str, s: &str) -> Result<TaskStatus, FieldError> {
        match s {
            "todo" => Ok(TaskStatus::Todo),
            "in_progress" => Ok(TaskStatus::InProgress),
            "done" => Ok(TaskStatus::Done),
            _ => Err(FieldError::new(field, "must be one of todo, in_progress, done")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Todo => "todo",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Done => "done",
        }
    }
}

string_value!(Description);
impl Description {
    /// Free text up to 10,000 characters; blank means "no description".
    pub fn parse(field: &str, s: &str) -> Result<Option<Description>, FieldError> {
        let t = storable(field, s)?.trim();
        if t.chars().count() > 10_000 {
            return Err(FieldError::new(field, "must be at most 10000 characters"));
        }
        Ok(if t.is_empty() { None } else { Some(Description(t.to_owned())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_follows_the_pattern() {
        for ok in ["ab", "a1", "0-x", "acme-corp", &"a".repeat(63)] {
            assert!(Slug::parse("slug", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "-ab", "Acme", "a_b", "a b", &"a".repeat(64), "ab\n"] {
            let e = Slug::parse("slug", bad).unwrap_err();
            assert_eq!(e.field, "slug", "{bad}");
        }
    }

    #[test]
    fn email_must_be_valid() {
        assert!(Email::parse("email", "ada@example.com").is_ok());
        for bad in ["", "ada", "ada@", "@example.com", "a b@example.com"] {
            assert!(Email::parse("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn project_name_is_trimmed_and_bounded() {
        assert_eq!(ProjectName::parse("name", "  Apollo ").unwrap().as_str(), "Apollo");
        assert!(ProjectName::parse("name", "   ").is_err());
        assert!(ProjectName::parse("name", &"é".repeat(200)).is_ok());
        assert!(ProjectName::parse("name", &"é".repeat(201)).is_err());
    }

    #[test]
    fn blank_description_is_none() {
        assert_eq!(Description::parse("d", "  ").unwrap(), None);
        assert!(Description::parse("d", &"x".repeat(10_001)).is_err());
    }

    #[test]
    fn no_free_text_value_holds_a_nul_character() {
        let nul = "a\u{0}b";
        let results: Vec<(&str, Result<(), FieldError>)> = vec![
            ("slug", Slug::parse("slug", nul).map(drop)),
            ("email", Email::parse("email", "a\u{0}b@example.com").map(drop)),
            ("name", ProjectName::parse("name", nul).map(drop)),
            ("tenant", TenantName::parse("tenant", nul).map(drop)),
            ("person", PersonName::parse("person", nul).map(drop)),
            ("title", TaskTitle::parse("title", nul).map(drop)),
            ("reason", Reason::parse("reason", nul).map(drop)),
            ("metric", Metric::parse("metric", nul).map(drop)),
            ("records[0].id", RecordId::parse("records[0].id", nul).map(drop)),
            ("description", Description::parse("description", nul).map(drop)),
            ("description", Description::parse("description", "\u{0}").map(drop)),
            ("user_id", crate::UserId::parse("user_id", nul).map(drop)),
        ];
        for (field, r) in results {
            let e = r.expect_err(field);
            assert_eq!(e.field, field);
            assert!(e.message.contains("NUL"), "{field}: {}", e.message);
        }
        // Other text, control characters of multi-line prose included, is still free text.
        assert!(Description::parse("d", "line one\nline\ttwo").unwrap().is_some());
        assert!(Reason::parse("r", "unpaid\r\nsince May").unwrap().is_some());
    }
}
