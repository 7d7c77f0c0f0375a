//! RFC 9457 problem details: the one shape every REST error takes.

use crate::codes::Code;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A client-facing error. Its `code` (from the one table in `codes`) gives the status, the title
/// and the `type` URI.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: Code,
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
    pub fn new(code: Code, detail: impl Into<String>) -> Problem {
        Problem { code, detail: detail.into(), errors: Vec::new() }
    }

    /// A problem naming the fields at fault.
    pub fn with_errors(code: Code, detail: impl Into<String>, errors: Vec<FieldError>) -> Problem {
        Problem { code, detail: detail.into(), errors }
    }

    pub fn validation(detail: impl Into<String>, errors: Vec<FieldError>) -> Problem {
        Problem::with_errors(Code::Validation, detail, errors)
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(Code::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(Code::Forbidden, detail)
    }

    /// A 500 whose body says nothing of the cause; the cause is logged inside the request span.
    pub fn internal() -> Problem {
        Problem::new(Code::Internal, "the request failed; it has been logged with its request id")
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn type_uri(&self) -> String {
        self.code.type_uri()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: self.type_uri(),
            title: self.code.title(),
            status: self.status().as_u16(),
            detail: &self.detail,
            code: self.code.as_str(),
            errors: &self.errors,
        };
        let json = serde_json::to_vec(&body).expect("problem serializes");
        let mut r = (self.status(), json).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        // Every 503 is worth a repeat: say when (a caller with a better figure overwrites it).
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}
