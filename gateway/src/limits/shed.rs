//! Load shedding and bulkheads. Each service (commands, queries, subscriptions) has its own
//! bound on in-flight work; a request past it is answered 503 `overloaded` with `Retry-After`
//! at once instead of queueing into its deadline. On the command path each tenant also has a
//! share (`TenantBulkhead`): at most `tenant_commands` of its requests run at once, a bounded
//! number wait (up to `tenant_wait`) and the rest are shed, so one slow tenant cannot hold the
//! writer pool. These layers sit on the services' routers only: `/healthz`, `/readyz` and
//! `/metrics` are never shed.

use crate::auth::Principal;
use crate::codes::Code;
use crate::problem::Problem;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Counter: requests shed with 503, by `service` and `reason` (`in_flight`, `tenant`).
pub const SHED: &str = "keel_shed_total";

/// A refusal in the shape of the surface: problem+json on REST, a GraphQL error on `/graphql`.
pub fn refuse(graphql: bool, code: Code, detail: &str, retry_after: Duration) -> Response {
    let mut r = if graphql {
        let body = serde_json::json!({ "errors": [{ "message": detail, "extensions": { "code": code.graphql() } }] });
        (code.status(), [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    } else {
        Problem::new(code, detail).into_response()
    };
    let secs = retry_after.as_micros().div_ceil(1_000_000).max(1) as u64;
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Holds a service's slot for as long as the request (or the socket it opened) lives.
#[derive(Clone, Debug)]
pub struct Slot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// A service's bound on in-flight work.
#[derive(Clone, Debug)]
pub struct Bulkhead {
    service: &'static str,
    slots: Arc<Semaphore>,
}

impl Bulkhead {
    pub fn new(service: &'static str, bound: usize) -> Bulkhead {
        Bulkhead { service, slots: Arc::new(Semaphore::new(bound.clamp(1, Semaphore::MAX_PERMITS))) }
    }
}

/// Middleware: admits a request when its service has a free slot, else 503 at once. The slot
/// is put in the request's extensions as a `Slot`; a handler that outlives its response (a
/// subscription socket) keeps a clone until it ends.
pub async fn shed(State(bulkhead): State<Bulkhead>, mut req: Request, next: Next) -> Response {
    match bulkhead.slots.clone().try_acquire_owned() {
        Ok(permit) => {
            // Held here until the response, since a handler may drop the request's extensions
            // early (a body extractor consumes the request).
            let slot = Slot(Arc::new(permit));
            req.extensions_mut().insert(slot.clone());
            let r = next.run(req).await;
            drop(slot);
            r
        }
        Err(_) => {
            metrics::counter!(SHED, "service" => bulkhead.service, "reason" => "in_flight").increment(1);
            // Debug only: overload must not add a log line per refusal (the request's line says 503).
            tracing::debug!(service = bulkhead.service, "shed: too much work in flight");
            let graphql = req.uri().path().starts_with("/graphql");
            refuse(graphql, Code::Overloaded, "too many requests are in flight; retry shortly", Duration::from_secs(1))
        }
    }
}

struct Share {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Each tenant's share of the command path.
#[derive(Clone)]
pub struct TenantBulkhead {
    per_tenant: usize,
    queue: usize,
    wait: Duration,
    shares: Arc<Mutex<HashMap<Uuid, Arc<Share>>>>,
}

impl std::fmt::Debug for TenantBulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantBulkhead").field("per_tenant", &self.per_tenant).field("queue", &self.queue).finish()
    }
}

impl TenantBulkhead {
    pub fn new(per_tenant: usize, queue: usize, wait: Duration) -> TenantBulkhead {
        TenantBulkhead {
            per_tenant: per_tenant.clamp(1, Semaphore::MAX_PERMITS),
            queue,
            wait,
            shares: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn share(&self, tenant: Uuid) -> Arc<Share> {
        let mut shares = self.shares.lock().expect("tenant shares");
        // Idle shares (nothing running or waiting, held only here) are dropped as the map grows.
        if shares.len() >= 10_000 {
            shares.retain(|_, s| Arc::strong_count(s) > 1 || s.running.available_permits() < self.per_tenant);
        }
        shares
            .entry(tenant)
            .or_insert_with(|| {
                Arc::new(Share { running: Arc::new(Semaphore::new(self.per_tenant)), waiting: AtomicUsize::new(0) })
            })
            .clone()
    }
}

/// Middleware (after authentication, on the command path): runs at most `per_tenant` requests
/// of one tenant at once.
pub async fn tenant_share(State(bulkhead): State<TenantBulkhead>, req: Request, next: Next) -> Response {
    let Some(tenant) = req.extensions().get::<Principal>().and_then(|p| p.tenant_id) else {
        return next.run(req).await;
    };
    let share = bulkhead.share(tenant);
    let permit = match share.running.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            let shed = |why: &str| {
                metrics::counter!(SHED, "service" => "commands", "reason" => "tenant").increment(1);
                tracing::debug!(reason = why, "shed: the tenant's share of the command path is taken");
                refuse(
                    false,
                    Code::Overloaded,
                    "too many of this tenant's requests are in flight; retry shortly",
                    Duration::from_secs(1),
                )
            };
            if share.waiting.fetch_add(1, Ordering::AcqRel) >= bulkhead.queue {
                share.waiting.fetch_sub(1, Ordering::AcqRel);
                return shed("queue full");
            }
            let acquired = tokio::time::timeout(bulkhead.wait, share.running.clone().acquire_owned()).await;
            share.waiting.fetch_sub(1, Ordering::AcqRel);
            match acquired {
                Ok(Ok(p)) => p,
                _ => return shed("waited too long"),
            }
        }
    };
    let r = next.run(req).await;
    drop(permit);
    r
}

/// The query service's two bulkheads: GraphQL requests, and subscription sockets (`/graphql/ws`).
#[derive(Clone, Debug)]
pub struct QueryBulkheads {
    queries: Bulkhead,
    subscriptions: Bulkhead,
}

impl QueryBulkheads {
    pub fn new(queries: usize, subscriptions: usize) -> QueryBulkheads {
        QueryBulkheads {
            queries: Bulkhead::new("queries", queries),
            subscriptions: Bulkhead::new("subscriptions", subscriptions),
        }
    }
}

/// Middleware on the query service: `shed` with the bulkhead of the request's kind.
pub async fn shed_queries(State(b): State<QueryBulkheads>, req: Request, next: Next) -> Response {
    let bulkhead = if req.uri().path() == "/graphql/ws" { b.subscriptions } else { b.queries };
    shed(State(bulkhead), req, next).await
}
