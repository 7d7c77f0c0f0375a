//! The request span: every log line of a request carries its request id, and its tenant and
//! actor once authentication has read them.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

pub const REQUEST_ID: &str = "x-request-id";

/// The request id a request is handled under (from `X-Request-Id` when sane, else new).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = route.as_deref().unwrap_or(req.uri().path()),
        tenant_id = tracing::field::Empty,
        actor = tracing::field::Empty,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    async move {
        let mut res = next.run(req).await;
        let status = res.status().as_u16();
        // Milliseconds to the microsecond: `0.036`, not `0.036174000000000005`.
        let ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
        if status >= 500 {
            tracing::error!(status, ms, "request failed");
        } else {
            tracing::info!(status, ms, "request finished");
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(REQUEST_ID, v);
        }
        res
    }
    .instrument(span)
    .await
}
