//! How domain and store errors become problem+json: the only place that decides which code
//! (and so which status, from the table in `keel_gateway::codes`) an error gets.

use keel_domain::{DomainError, FieldError as DomainField};
use keel_gateway::{Code, FieldError, Problem};
use keel_store::StoreError;

fn fields(v: Vec<DomainField>) -> Vec<FieldError> {
    v.into_iter().map(|f| FieldError { field: f.field, message: f.message }).collect()
}

/// A unique value held by another resource: the request conflicts with what is stored (409),
/// naming the field.
fn taken(field: &str, message: &str) -> Problem {
    Problem::with_errors(
        Code::Taken,
        format!("{field}: {message}"),
        vec![FieldError { field: field.to_owned(), message: message.to_owned() }],
    )
}

pub(crate) fn domain(e: DomainError) -> Problem {
    let detail = e.to_string();
    match e {
        DomainError::Validation(v) => Problem::validation(detail, fields(v)),
        DomainError::LimitExceeded { limit, .. } => Problem::with_errors(
            Code::LimitExceeded,
            detail.clone(),
            vec![FieldError { field: limit.as_str().to_owned(), message: detail }],
        ),
        DomainError::NotFound(what) => Problem::not_found(what),
        DomainError::AlreadyExists(_) => Problem::new(Code::AlreadyExists, detail),
        // The request is well-formed but the resource's current state refuses it (already
        // archived, the last owner, a removed member): a conflict with that state.
        DomainError::RuleViolated(_) => Problem::new(Code::RuleViolated, detail),
        DomainError::NotAllowed(_) => Problem::forbidden(detail),
        DomainError::TenantSuspended => {
            Problem::new(Code::TenantSuspended, "the tenant is suspended; reads work, writes are refused")
        }
    }
}

/// An `Idempotency-Key` already used for another method, path or body in this tenant.
pub(crate) fn idempotency_key_reused() -> Problem {
    Problem::with_errors(
        Code::IdempotencyKeyReused,
        "this Idempotency-Key was used for a different request; use a new key for a new request",
        vec![FieldError { field: "Idempotency-Key".into(), message: "was used for a different request".into() }],
    )
}

pub(crate) fn precondition_failed() -> Problem {
    Problem::new(Code::PreconditionFailed, "the resource is no longer at the version given in If-Match; read it again")
}

/// A race lost to a change after which the command no longer holds.
pub(crate) fn conflict(detail: &str) -> Problem {
    Problem::new(Code::Conflict, format!("another write changed this resource at the same time, and now: {detail}"))
}

/// A commit whose answer was lost while the database stayed unreachable.
pub(crate) fn outcome_unknown() -> Problem {
    Problem::new(
        Code::OutcomeUnknown,
        "the database connection was lost while the command was committing and the database could not be \
         asked whether it landed; repeating the request with the same Idempotency-Key is safe",
    )
}

pub(crate) fn store(e: StoreError) -> Problem {
    match e {
        StoreError::Unavailable => Problem::new(
            Code::DatabaseUnavailable,
            "the database is unreachable; nothing was written: retry shortly (with the same Idempotency-Key)",
        ),
        StoreError::OutcomeUnknown => outcome_unknown(),
        StoreError::Conflict { .. } | StoreError::ReadSetChanged(_) => Problem::new(
            Code::Conflict,
            "another write changed this resource at the same time; read it again and retry",
        ),
        StoreError::Unique(c) if c == "tenants_slug_key" => taken("slug", "is already taken"),
        StoreError::Unique(c) if c == "memberships_user_key" => taken("user_id", "is already a member of this tenant"),
        StoreError::Unique(c) if c == "memberships_email_key" => taken("email", "is already a member of this tenant"),
        other if other.is_statement_timeout() => {
            tracing::warn!(error = %other, "command cancelled at the writer's statement_timeout");
            keel_gateway::metrics::timed_out("statement_timeout");
            Problem::new(
                Code::DependencyTimeout,
                "the database did not answer within the writer's statement timeout; retry with the same Idempotency-Key",
            )
        }
        other if other.is_connection_lost() => {
            // Still lost after the command's retries: nothing of it was committed.
            tracing::warn!(error = %other, "the database connection kept failing before the commit");
            Problem::new(
                Code::DatabaseUnavailable,
                "the database connection was lost before the command committed; nothing was written: retry shortly",
            )
        }
        other if other.is_pool_timeout() => {
            tracing::warn!("no writer connection came free within the pool's acquire timeout");
            keel_gateway::metrics::timed_out("pool_acquire");
            Problem::new(Code::Timeout, "no database connection came free in time; retry with the same Idempotency-Key")
        }
        other => {
            tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "command failed");
            Problem::internal()
        }
    }
}
