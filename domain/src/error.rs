//! What a command can be refused for, in terms the edge maps to HTTP without guessing.

use serde::Serialize;
use std::fmt;

/// One bad field of a command, named by its JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// A plan limit a command would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Seats,
    ActiveProjects,
    UsageUnits,
    WebhookEndpoints,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Seats => "seats",
            Limit::ActiveProjects => "active_projects",
            Limit::UsageUnits => "usage_units",
            Limit::WebhookEndpoints => "webhook_endpoints",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Input that can never be valid, field by field.
    #[error("invalid input: {}", fmt_fields(.0))]
    Validation(Vec<FieldError>),
    /// A plan limit (or a limit every plan shares) would be exceeded.
    #[error("the plan's {} limit of {limit_value} is reached", .limit.as_str())]
    LimitExceeded { limit: Limit, limit_value: u64 },
    /// The aggregate does not exist (or is not visible to this tenant).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The aggregate exists already.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The command is valid in shape but the aggregate's state forbids it.
    #[error("{0}")]
    RuleViolated(String),
    /// The caller's role may not do this to this target (e.g. an admin changing an owner).
    #[error("{0}")]
    NotAllowed(String),
    /// The tenant is suspended: reads work, writes are refused.
    #[error("the tenant is suspended")]
    TenantSuspended,
}

fn fmt_fields(fields: &[FieldError]) -> String {
    fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; ")
}

impl DomainError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Validation(vec![FieldError::new(field, message)])
    }
}

/// Collects field errors so a command reports every bad field at once.
#[derive(Default)]
pub(crate) struct Fields(Vec<FieldError>);

impl Fields {
    pub(crate) fn check<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub(crate) fn push(&mut self, field: &str, message: &str) {
        self.0.push(FieldError::new(field, message));
    }

    pub(crate) fn finish(self) -> Result<(), DomainError> {
        if self.0.is_empty() { Ok(()) } else { Err(DomainError::Validation(self.0)) }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
