//! RFC 9457 problem details: the one shape every REST error takes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A client-facing error. `code` is stable and also forms the `type` URI.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: String,
    pub detail: String,
    pub errors: Vec<FieldError>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, title: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem { status, code, title: title.into(), detail: detail.into(), errors: Vec::new() }
    }

    pub fn validation(detail: impl Into<String>, errors: Vec<FieldError>) -> Problem {
        Problem { errors, ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", "Invalid input", detail) }
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", format!("{what} not found"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// A 500 whose body says nothing of the cause; the cause is logged inside the request span.
    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request failed; it has been logged with its request id",
        )
    }

    pub fn type_uri(&self) -> String {
        format!("urn:keel:problem:{}", self.code)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: self.type_uri(),
            title: &self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            errors: &self.errors,
        };
        let json = serde_json::to_vec(&body).expect("problem serializes");
        let mut r = (self.status, json).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        r
    }
}
