//! A method a route does not answer: axum's bare 405, as problem+json with its `Allow` header.

use crate::codes::Code;
use crate::problem::Problem;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `map_response` layer: leaves every response but axum's bare 405 alone (one with a body of
/// its own, such as GraphQL's, keeps it).
pub async fn as_problem(res: Response) -> Response {
    if res.status() != StatusCode::METHOD_NOT_ALLOWED || res.headers().contains_key(header::CONTENT_TYPE) {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let allowed = allow.as_ref().and_then(|a| a.to_str().ok()).unwrap_or("");
    let mut r = Problem::new(Code::MethodNotAllowed, format!("this resource answers {allowed}")).into_response();
    if let Some(a) = allow {
        r.headers_mut().insert(header::ALLOW, a);
    }
    r
}
