//! A method a route does not answer: axum's bare 405, as problem+json with its `Allow` header.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel_gateway::Problem;

/// `map_response` layer: leaves every response but a 405 alone.
pub(crate) async fn as_problem(res: Response) -> Response {
    if res.status() != StatusCode::METHOD_NOT_ALLOWED {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let allowed = allow.as_ref().and_then(|a| a.to_str().ok()).unwrap_or("");
    let mut r = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("this resource answers {allowed}"),
    )
    .into_response();
    if let Some(a) = allow {
        r.headers_mut().insert(header::ALLOW, a);
    }
    r
}
