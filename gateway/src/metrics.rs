//! Request count and latency per route and status, for `/metrics`.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

pub const REQUESTS: &str = "keel_http_requests_total";
pub const DURATION: &str = "keel_http_request_duration_seconds";

pub async fn record(req: Request, next: Next) -> Response {
    // The matched route template keeps the label set bounded; unknown paths share one label.
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(DURATION, &labels).record(started.elapsed().as_secs_f64());
    res
}
