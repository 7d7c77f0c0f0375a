//! Every REST request has a deadline (`KEEL_REQUEST_TIMEOUT_MS`): past it the handler is
//! cancelled (its transaction rolls back when it had not committed) and the client gets a 503.
//! A statement the database cancelled at its role's `statement_timeout` is a 504
//! `dependency-timeout`; a pool that lends no connection within its acquire timeout a 503
//! `timeout` (both mapped where store errors become answers, and logged with the request id).

use crate::codes::Code;
use crate::problem::Problem;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Middleware: runs the rest of the stack within `limit`.
pub async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(timeout_ms = limit.as_millis() as u64, "request cancelled at its deadline");
            crate::metrics::timed_out("deadline");
            let mut r = Problem::new(
                Code::Timeout,
                format!(
                    "the request did not finish within {} ms; a command may have been applied: \
                     retry it with the same Idempotency-Key",
                    limit.as_millis()
                ),
            )
            .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

/// Middleware: cancels the request when `stop` turns true (the shutdown deadline has passed),
/// answering 503 `shutting-down`.
pub async fn cancel_on(
    State(mut stop): State<tokio::sync::watch::Receiver<bool>>,
    req: Request,
    next: Next,
) -> Response {
    tokio::select! {
        r = next.run(req) => r,
        _ = stop.wait_for(|s| *s) => {
            let mut r = Problem::new(
                Code::ShuttingDown,
                "Keel is shutting down and cancelled this request; retry it (with the same Idempotency-Key)",
            )
            .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}
