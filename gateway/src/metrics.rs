//! Request count and latency per route and status, for `/metrics`; per tenant under a bounded
//! label set (`tenant_label`); requests answered with a timeout.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Instant;
use uuid::Uuid;

pub const REQUESTS: &str = "keel_http_requests_total";
pub const DURATION: &str = "keel_http_request_duration_seconds";
/// Requests of one tenant, by `tenant` (bounded, see `tenant_label`) and `status` class (`2xx`…).
pub const TENANT_REQUESTS: &str = "keel_tenant_requests_total";
/// Latency of one tenant's requests, by `tenant` (bounded).
pub const TENANT_DURATION: &str = "keel_tenant_request_duration_seconds";
/// Requests answered with a timeout, by `cause`: `deadline`, `statement_timeout`, `pool_acquire`.
pub const TIMED_OUT: &str = "keel_requests_timed_out_total";

/// The label every tenant past the first `KEEL_METRICS_TENANTS` shares.
pub const OTHER: &str = "other";

/// The tenant a request was authenticated for, put on the response by `authenticate` so the
/// metrics layer (outside it) can count the request per tenant.
#[derive(Debug, Clone, Copy)]
pub struct RequestTenant(pub Uuid);

/// How many tenants may get their own label (a process-wide setting, as the recorder is).
static CAPACITY: AtomicUsize = AtomicUsize::new(20);

fn labels() -> &'static RwLock<HashMap<Uuid, &'static str>> {
    static LABELS: OnceLock<RwLock<HashMap<Uuid, &'static str>>> = OnceLock::new();
    LABELS.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Sets how many tenants get their own `tenant` label (`KEEL_METRICS_TENANTS`). Tenants already
/// labelled keep their label; the bound only ever applies to tenants seen after.
pub fn set_tenant_series(n: usize) {
    CAPACITY.store(n, Ordering::Relaxed);
}

/// The `tenant` label of a tenant's series: its id for the first N tenants that send traffic to
/// this process (N = `KEEL_METRICS_TENANTS`), `other` for every tenant after. A label once given
/// is kept for the life of the process (a Prometheus series cannot be withdrawn), so the set of
/// values is at most N + 1, whatever the traffic. Any per-tenant series in Keel takes its label
/// from here.
pub fn tenant_label(tenant: Uuid) -> &'static str {
    if let Some(l) = labels().read().expect("not poisoned").get(&tenant) {
        return l;
    }
    let mut map = labels().write().expect("not poisoned");
    if let Some(l) = map.get(&tenant) {
        return l;
    }
    if map.len() >= CAPACITY.load(Ordering::Relaxed) {
        return OTHER;
    }
    // At most N strings are ever leaked: the map holds them for the life of the process anyway.
    let label: &'static str = Box::leak(tenant.hyphenated().to_string().into_boxed_str());
    map.insert(tenant, label);
    label
}

/// Tenants whose requests this process counts for `tenant_requests` (a bound on the map; past it
/// a new tenant's requests are not counted, and `tenant_requests` says 0 for it).
pub const MAX_COUNTED_TENANTS: usize = 100_000;

fn counts() -> &'static std::sync::Mutex<HashMap<Uuid, u64>> {
    static COUNTS: OnceLock<std::sync::Mutex<HashMap<Uuid, u64>>> = OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

fn count_request(tenant: Uuid) {
    let mut c = counts().lock().expect("not poisoned");
    if let Some(n) = c.get_mut(&tenant) {
        *n += 1;
    } else if c.len() < MAX_COUNTED_TENANTS {
        c.insert(tenant, 1);
    }
}

/// Requests this process has answered for `tenant` since it started (the platform view's
/// per-tenant usage; every tenant, not only the labelled ones).
pub fn tenant_requests(tenant: Uuid) -> u64 {
    counts().lock().expect("not poisoned").get(&tenant).copied().unwrap_or(0)
}

/// Counts a request answered with a timeout (`cause`: `deadline`, `statement_timeout`,
/// `pool_acquire`).
pub fn timed_out(cause: &'static str) {
    metrics::counter!(TIMED_OUT, "cause" => cause).increment(1);
}

pub async fn record(req: Request, next: Next) -> Response {
    // The matched route template keeps the label set bounded; unknown paths share one label.
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let res = next.run(req).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = res.status().as_u16();
    let labels = [("method", method), ("route", route), ("status", status.to_string())];
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(DURATION, &labels).record(elapsed);
    if let Some(RequestTenant(t)) = res.extensions().get::<RequestTenant>() {
        count_request(*t);
        let tenant = tenant_label(*t);
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!(TENANT_REQUESTS, "tenant" => tenant, "status" => class).increment(1);
        metrics::histogram!(TENANT_DURATION, "tenant" => tenant).record(elapsed);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_set_is_bounded_by_the_setting() {
        set_tenant_series(3);
        let tenants: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        let first: Vec<&str> = tenants.iter().map(|t| tenant_label(*t)).collect();
        // Asked again, every tenant keeps the label it was given.
        let again: Vec<&str> = tenants.iter().map(|t| tenant_label(*t)).collect();
        assert_eq!(first, again);
        let distinct: std::collections::HashSet<&str> = first.iter().copied().collect();
        assert_eq!(distinct.len(), 4, "three tenants and other: {first:?}");
        assert_eq!(first[0], tenants[0].hyphenated().to_string());
        assert!(first[3..].iter().all(|l| *l == OTHER));
    }
}
