//! The drain between a shutdown signal and the server's graceful shutdown (`docs/decisions.md`,
//! "Shutdown drains"): readiness answers 503 so a load balancer stops sending, and every HTTP/1
//! response carries `Connection: close` so clients move their keep-alive connections elsewhere,
//! while requests, on open connections and new ones, are still served.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::watch;

/// Adds `Connection: close` to every HTTP/1 response once `draining` is true: hyper then closes
/// the connection after that response, so a request that was already on its way over a
/// keep-alive connection is answered instead of meeting a closed socket. An upgrade (101, the
/// subscriptions' WebSocket) keeps its own `Connection` header.
pub async fn close_connections(State(draining): State<watch::Receiver<bool>>, req: Request, next: Next) -> Response {
    let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
    let mut res = next.run(req).await;
    if http1 && *draining.borrow() && res.status() != StatusCode::SWITCHING_PROTOCOLS {
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
