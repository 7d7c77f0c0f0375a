//! Request count and latency per route and status, for `/metrics`; per tenant under a bounded
//! label set (`tenant_label`); requests answered with a timeout.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
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

/// How often the labelled tenants are re-ranked, in milliseconds.
static PERIOD_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(60_000);

/// Tenants counted in one ranking window (a bound on its memory; past it a new tenant is not
/// counted until the next window, and cannot be among that window's busiest).
const WINDOW_TENANTS: usize = 10_000;

/// Which tenants have their own label: the busiest of the last window.
struct Ranking {
    /// Requests per tenant since the window started.
    window: HashMap<Uuid, u64>,
    /// Requests per tenant since the process started (`tenant_requests`), at most
    /// `MAX_COUNTED_TENANTS` tenants.
    total: HashMap<Uuid, u64>,
    started: Instant,
    labels: HashMap<Uuid, &'static str>,
}

fn ranking() -> &'static Mutex<Ranking> {
    static RANKING: OnceLock<Mutex<Ranking>> = OnceLock::new();
    RANKING.get_or_init(|| {
        Mutex::new(Ranking {
            window: HashMap::new(),
            total: HashMap::new(),
            started: Instant::now(),
            labels: HashMap::new(),
        })
    })
}

/// The label strings handed out, one per tenant ever labelled: `metrics` keeps label values as
/// `&'static str` cheaply, and a tenant demoted and promoted again reuses its string.
fn interned(tenant: Uuid) -> &'static str {
    static NAMES: OnceLock<RwLock<HashMap<Uuid, &'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    if let Some(n) = names.read().expect("not poisoned").get(&tenant) {
        return n;
    }
    let mut w = names.write().expect("not poisoned");
    w.entry(tenant).or_insert_with(|| Box::leak(tenant.hyphenated().to_string().into_boxed_str()))
}

/// Sets how many tenants get their own `tenant` label (`KEEL_METRICS_TENANTS`).
pub fn set_tenant_series(n: usize) {
    CAPACITY.store(n, Ordering::Relaxed);
}

/// Sets how often the labelled tenants are re-ranked (`KEEL_METRICS_RANK_SECS`); the recorder
/// forgets a series not updated for twice this long, so a demoted tenant's series go away.
pub fn set_rank_period(period: std::time::Duration) {
    PERIOD_MS.store(period.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// How often the labelled tenants are re-ranked.
pub fn rank_period() -> std::time::Duration {
    std::time::Duration::from_millis(PERIOD_MS.load(Ordering::Relaxed))
}

/// The `tenant` label of a request's series, counting the request: the tenant's id while it is
/// among the N busiest tenants of the last ranking window (N = `KEEL_METRICS_TENANTS`; while
/// fewer than N are labelled, a new tenant takes a free place at once), `other` otherwise. Every
/// window (`KEEL_METRICS_RANK_SECS`) the N tenants with the most requests in it become the
/// labelled ones. The recorder drops series idle for two windows, so the label values alive at
/// any moment are this ranking's, the two before it's and `other`: at most 3N + 1, whatever the
/// traffic. Any per-tenant series in Keel takes its label from here.
pub fn tenant_label(tenant: Uuid) -> &'static str {
    let capacity = CAPACITY.load(Ordering::Relaxed);
    let mut r = ranking().lock().expect("not poisoned");
    if r.started.elapsed() >= rank_period() {
        let mut busiest: Vec<(Uuid, u64)> = r.window.drain().collect();
        busiest.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        busiest.truncate(capacity);
        r.labels = busiest.into_iter().map(|(t, _)| (t, interned(t))).collect();
        r.started = Instant::now();
    }
    if let Some(n) = r.window.get_mut(&tenant) {
        *n += 1;
    } else if r.window.len() < WINDOW_TENANTS {
        r.window.insert(tenant, 1);
    }
    if let Some(n) = r.total.get_mut(&tenant) {
        *n += 1;
    } else if r.total.len() < MAX_COUNTED_TENANTS {
        r.total.insert(tenant, 1);
    }
    if let Some(l) = r.labels.get(&tenant) {
        return l;
    }
    if r.labels.len() < capacity {
        let l = interned(tenant);
        r.labels.insert(tenant, l);
        return l;
    }
    OTHER
}

/// Tenants whose requests this process counts for `tenant_requests` (a bound on the map; past it
/// a new tenant's requests are not counted, and `tenant_requests` says 0 for it).
pub const MAX_COUNTED_TENANTS: usize = 100_000;

/// Requests this process has answered for `tenant` since it started (the platform view's
/// per-tenant usage; every tenant, not only the labelled ones).
pub fn tenant_requests(tenant: Uuid) -> u64 {
    ranking().lock().expect("not poisoned").total.get(&tenant).copied().unwrap_or(0)
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
    fn the_busiest_tenants_of_the_last_window_have_labels_and_the_set_is_bounded() {
        set_tenant_series(3);
        set_rank_period(std::time::Duration::from_millis(200));
        let tenants: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        // The first window: free places go to the first tenants seen; the rest are `other`.
        let first: Vec<&str> = tenants.iter().map(|t| tenant_label(*t)).collect();
        assert!(first[..3].iter().all(|l| *l != OTHER) && first[3..].iter().all(|l| *l == OTHER), "{first:?}");
        // The last three tenants become the busiest; after the window they are the labelled ones.
        for _ in 0..20 {
            for t in &tenants[5..] {
                tenant_label(*t);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        let next: Vec<&str> = tenants.iter().map(|t| tenant_label(*t)).collect();
        assert!(next[..5].iter().all(|l| *l == OTHER), "{next:?}");
        for (t, l) in tenants[5..].iter().zip(&next[5..]) {
            assert_eq!(*l, t.hyphenated().to_string());
        }
        let distinct: std::collections::HashSet<&str> = next.iter().copied().collect();
        assert_eq!(distinct.len(), 4, "three tenants and other: {next:?}");
    }
}
