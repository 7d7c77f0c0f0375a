//! The request span: every log line of a request carries its request id, its W3C trace and span
//! ids (an incoming `traceparent` is continued, else a trace starts here), and its tenant and
//! actor once authentication has read them. The response's `traceresponse` header names the
//! trace, so a client finds it in the tracing backend.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

pub const REQUEST_ID: &str = "x-request-id";
/// W3C Trace Context Level 2: the trace and span the server handled the request under.
pub const TRACE_RESPONSE: &str = "traceresponse";

/// Reads `traceparent` and `tracestate` from request headers (values that are not visible
/// ASCII are ignored, as the propagator ignores a malformed `traceparent`).
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

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
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        otel.kind = "server",
    );
    // Continue the caller's trace when its `traceparent` is valid; a new trace starts otherwise.
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    // Without the OpenTelemetry layer (a library user's own subscriber) there are no ids.
    let traced = span.context().span().span_context().clone();
    let trace_response = traced.is_valid().then(|| {
        span.record("trace_id", tracing::field::display(traced.trace_id()));
        span.record("span_id", tracing::field::display(traced.span_id()));
        format!("00-{}-{}-{:02x}", traced.trace_id(), traced.span_id(), traced.trace_flags().to_u8())
    });
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
        if let Some(v) = trace_response.and_then(|t| HeaderValue::from_str(&t).ok()) {
            res.headers_mut().insert(TRACE_RESPONSE, v);
        }
        res
    }
    .instrument(span)
    .await
}
