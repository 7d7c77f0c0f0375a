//! How domain and store errors become problem+json: the only place that decides a status.

use axum::http::StatusCode;
use keel_domain::{DomainError, FieldError as DomainField};
use keel_gateway::{FieldError, Problem};
use keel_store::StoreError;

fn fields(v: Vec<DomainField>) -> Vec<FieldError> {
    v.into_iter().map(|f| FieldError { field: f.field, message: f.message }).collect()
}

pub(crate) fn domain(e: DomainError) -> Problem {
    let detail = e.to_string();
    match e {
        DomainError::Validation(v) => Problem::validation(detail, fields(v)),
        DomainError::LimitExceeded { limit, .. } => Problem {
            errors: vec![FieldError { field: limit.as_str().to_owned(), message: detail.clone() }],
            ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "limit-exceeded", "Plan limit reached", detail)
        },
        DomainError::NotFound(what) => Problem::not_found(what),
        DomainError::AlreadyExists(_) => Problem::new(StatusCode::CONFLICT, "already-exists", "Already exists", detail),
        DomainError::RuleViolated(_) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "rule-violated", "Rule violated", detail)
        }
        DomainError::TenantSuspended => Problem::new(
            StatusCode::LOCKED,
            "tenant-suspended",
            "Tenant suspended",
            "the tenant is suspended; writes are refused",
        ),
    }
}

pub(crate) fn store(e: StoreError) -> Problem {
    match e {
        StoreError::Conflict { .. } => Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Conflict",
            "another write changed this resource at the same time; read it again and retry",
        ),
        StoreError::Unique(c) if c == "tenants_slug_key" => Problem::validation(
            "slug: is already taken",
            vec![FieldError { field: "slug".into(), message: "is already taken".into() }],
        ),
        other => {
            tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "command failed");
            Problem::internal()
        }
    }
}
