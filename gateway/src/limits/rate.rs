//! Per-tenant rate limits (GCRA). A tenant's requests share one budget, keyed by the tenant id
//! from its token; a platform operator's by the token's `sub`. The budget is the base rate
//! (`KEEL_RATE_LIMIT`, the free plan's) times the tenant's plan factor, learned through
//! `PlanFactor` and cached per tenant for `PLAN_TTL`, so a request costs no database round trip
//! once its tenant is cached.
//!
//! Locally the limit is a `governor` keyed limiter per plan factor (per process). With Redis, it
//! is one atomic Lua script per request on a key holding the tenant's theoretical arrival time,
//! so every process on that Redis shares the budget. When Redis fails or is slower than its
//! timeout, the request is decided by the local limiter instead (never failed), a warning is
//! logged at most every `WARN_EVERY`, and `keel_rate_limit_fallback_total` counts it.
//!
//! Answers carry the fields of draft-ietf-httpapi-ratelimit-headers-07: `RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset` (seconds) and `RateLimit-Policy` (`B;w=W`); a
//! refusal is 429 with `Retry-After` (problem+json `rate-limited`, or on `/graphql` a GraphQL
//! error with `extensions.code = RATE_LIMITED`).

use super::{Rate, RateConfig, RedisConfig};
use crate::auth::Principal;
use crate::codes::Code;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};
use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Counter: requests refused with 429, by `principal` (`tenant`, `platform` or `user`).
pub const RATE_LIMITED: &str = "keel_rate_limited_total";
/// Counter: requests decided by the local limiter because Redis failed or timed out.
pub const FALLBACK: &str = "keel_rate_limit_fallback_total";

/// How long a tenant's plan factor is trusted before it is looked up again.
pub const PLAN_TTL: Duration = Duration::from_secs(30);
/// At most this many tenants' factors are cached; past it the cache starts over.
const PLAN_CACHE_MAX: usize = 100_000;
/// Redis is tried again at most this often after a failed connection.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// The fallback warning is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// A plan lookup that takes longer than this counts as unknown (factor 1).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// The plan factor of a tenant (its plan's multiple of the base rate), or `None` when unknown
/// (then 1). Given by the composition root, which knows plans and the store.
pub type PlanFactor = Arc<dyn Fn(Uuid) -> Pin<Box<dyn Future<Output = Option<u32>> + Send>> + Send + Sync>;

type Keyed = Governor<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// What the limiter said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rate: RateView,
    pub remaining: u32,
    /// Until the budget is full again.
    pub reset: Duration,
    /// Until a refused request may be retried.
    pub retry_after: Duration,
}

/// The applied limit, for the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateView {
    pub burst: u32,
    pub window: Duration,
}

pub struct RateLimiter {
    base: Option<Rate>,
    writes: Option<Rate>,
    plan: PlanFactor,
    platform_factor: u32,
    plans: Mutex<HashMap<Uuid, (u32, Instant)>>,
    /// One keyed limiter per (plan factor, writes budget), since each has its own quota.
    local: Mutex<HashMap<(u32, bool), Arc<Keyed>>>,
    redis: Option<Redis>,
    clock: DefaultClock,
    checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("base", &self.base).field("shared", &self.redis.is_some()).finish()
    }
}

impl RateLimiter {
    /// `None` when no rate is configured. A Redis URL that cannot be parsed is an error here
    /// (start-up); a Redis that cannot be reached is not (requests fall back).
    pub fn new(config: &RateConfig, plan: PlanFactor, platform_factor: u32) -> Result<Option<RateLimiter>, String> {
        if config.tenant.is_none() && config.writes.is_none() {
            return Ok(None);
        }
        let redis = config.redis.as_ref().map(Redis::new).transpose()?;
        Ok(Some(RateLimiter {
            base: config.tenant,
            writes: config.writes,
            plan,
            platform_factor,
            plans: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            redis,
            clock: DefaultClock::default(),
            checks: 0.into(),
        }))
    }

    async fn factor(&self, tenant: Uuid) -> u32 {
        let now = Instant::now();
        if let Some((f, at)) = self.plans.lock().expect("plan cache").get(&tenant).copied()
            && now.duration_since(at) < PLAN_TTL
        {
            return f;
        }
        let f = tokio::time::timeout(LOOKUP_TIMEOUT, (self.plan)(tenant)).await.ok().flatten().unwrap_or(1).max(1);
        let mut plans = self.plans.lock().expect("plan cache");
        if plans.len() >= PLAN_CACHE_MAX {
            plans.clear();
        }
        plans.insert(tenant, (f, now));
        f
    }

    /// Decides one request of `principal`; `write` for a REST request (a command). `None`: no
    /// limit applies to it.
    pub async fn check(&self, principal: &Principal, write: bool) -> Option<Decision> {
        let (base, writes) = match (write, self.writes) {
            (true, Some(w)) => (w, true),
            _ => (self.base?, false),
        };
        let (key, factor) = match principal.tenant_id {
            Some(t) if !principal.platform => (format!("tenant:{t}"), self.factor(t).await),
            _ if principal.platform => (format!("operator:{}", principal.subject), self.platform_factor),
            // A user token without a tenant can do little; it gets the base rate on its own.
            _ => (format!("user:{}", principal.subject), 1),
        };
        let key = if writes { format!("{key}:writes") } else { key };
        let rate = base.scaled(factor);
        if let Some(redis) = &self.redis {
            match redis.check(&key, &rate).await {
                Ok(d) => return Some(d),
                Err(e) => {
                    metrics::counter!(FALLBACK).increment(1);
                    redis.warn(&e);
                }
            }
        }
        Some(self.check_local(&key, &rate, (factor, writes)))
    }

    fn check_local(&self, key: &str, rate: &Rate, budget: (u32, bool)) -> Decision {
        let limiter = {
            let mut local = self.local.lock().expect("local limiters");
            local
                .entry(budget)
                .or_insert_with(|| {
                    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
                    let quota = Quota::with_period(rate.emission().max(Duration::from_nanos(1)))
                        .expect("a positive period")
                        .allow_burst(burst);
                    Arc::new(Governor::dashmap(quota).with_middleware::<StateInformationMiddleware>())
                })
                .clone()
        };
        // Forget idle keys now and then, so the map holds only recent tenants.
        if self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
        }
        let view = view_of(rate);
        let emission = rate.emission();
        match limiter.check_key(&key.to_owned()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    rate: view,
                    remaining,
                    reset: emission * (rate.burst - remaining.min(rate.burst)),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    rate: view,
                    remaining: 0,
                    reset: wait + emission * rate.burst.saturating_sub(1),
                    retry_after: wait,
                }
            }
        }
    }
}

fn view_of(rate: &Rate) -> RateView {
    RateView { burst: rate.burst, window: rate.emission() * rate.burst }
}

/// GCRA over the Redis clock, in microseconds. KEYS[1]: the budget's key; ARGV: the emission
/// interval and the burst. Returns {allowed, remaining, retry_after_us, reset_us}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then tat = math.max(tonumber(stored), now) end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / emission), 0, new_tat - now}
"#;

struct Redis {
    client: redis::Client,
    conn: tokio::sync::Mutex<(Option<redis::aio::MultiplexedConnection>, Option<Instant>)>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    warned: Mutex<Option<Instant>>,
}

#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis is unreachable; retrying in at most {0:?}")]
    Down(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("the rate limit script answered {0:?}")]
    Shape(Vec<i64>),
}

impl Redis {
    fn new(config: &RedisConfig) -> Result<Redis, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("KEEL_REDIS_URL: not a Redis URL ({:?})", e.kind()))?;
        Ok(Redis {
            client,
            conn: tokio::sync::Mutex::new((None, None)),
            script: redis::Script::new(GCRA),
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            warned: Mutex::new(None),
        })
    }

    /// The shared connection, connecting when there is none (at most once per `RECONNECT_EVERY`).
    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, RedisFailure> {
        let mut guard = tokio::time::timeout(self.timeout, self.conn.lock())
            .await
            .map_err(|_| RedisFailure::Timeout(self.timeout))?;
        if let Some(c) = &guard.0 {
            return Ok(c.clone());
        }
        if guard.1.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
            return Err(RedisFailure::Down(RECONNECT_EVERY));
        }
        guard.1 = Some(Instant::now());
        let c = tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| RedisFailure::Timeout(self.timeout))??;
        guard.0 = Some(c.clone());
        Ok(c)
    }

    /// Drops the shared connection after a failure; the next request reconnects.
    async fn forget(&self) {
        if let Ok(mut guard) = tokio::time::timeout(self.timeout, self.conn.lock()).await {
            guard.0 = None;
        }
    }

    async fn check(&self, key: &str, rate: &Rate) -> Result<Decision, RedisFailure> {
        let mut conn = self.connection().await?;
        let emission = rate.emission().as_micros().max(1) as i64;
        let mut invocation = self.script.key(format!("{}:{key}", self.prefix));
        invocation.arg(emission).arg(rate.burst);
        let answer = tokio::time::timeout(self.timeout, invocation.invoke_async::<Vec<i64>>(&mut conn)).await;
        let answer = match answer {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped() {
                    self.forget().await;
                }
                return Err(e.into());
            }
            Err(_) => {
                self.forget().await;
                return Err(RedisFailure::Timeout(self.timeout));
            }
        };
        let [allowed, remaining, retry_us, reset_us] = answer[..] else {
            return Err(RedisFailure::Shape(answer));
        };
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        Ok(Decision {
            allowed: allowed == 1,
            rate: view_of(rate),
            remaining: remaining.clamp(0, rate.burst as i64) as u32,
            reset: us(reset_us),
            retry_after: us(retry_us),
        })
    }

    fn warn(&self, e: &RedisFailure) {
        let mut warned = self.warned.lock().expect("warn clock");
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(error = %e, "the shared rate limit is unavailable: limiting per process until Redis answers");
        }
    }
}

/// Middleware (after authentication): limits requests that carry a principal; others pass
/// (they are refused by authentication or need none).
pub async fn limit(State(limiter): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    let graphql = req.uri().path().starts_with("/graphql");
    let Some(decision) = limiter.check(&principal, !graphql).await else {
        return next.run(req).await;
    };
    if !decision.allowed {
        let who = match (principal.platform, principal.tenant_id) {
            (true, _) => "platform",
            (false, Some(_)) => "tenant",
            (false, None) => "user",
        };
        metrics::counter!(RATE_LIMITED, "principal" => who).increment(1);
        // Debug only: a flood must not become a flood of log lines (the request's own line says 429).
        tracing::debug!(retry_after_ms = decision.retry_after.as_millis() as u64, "rate limited");
        let detail = format!(
            "too many requests for this {}: at most {} at once, refilled over {} s; retry after {} s",
            if principal.platform { "operator" } else { "tenant" },
            decision.rate.burst,
            ceil_secs(decision.rate.window),
            ceil_secs(decision.retry_after).max(1),
        );
        let mut r = super::shed::refuse(graphql, Code::RateLimited, &detail, decision.retry_after);
        headers(r.headers_mut(), &decision);
        return r;
    }
    let mut r = next.run(req).await;
    headers(r.headers_mut(), &decision);
    r
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

fn headers(h: &mut HeaderMap, d: &Decision) {
    let set = |h: &mut HeaderMap, name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(h, "ratelimit-limit", d.rate.burst.to_string());
    set(h, "ratelimit-remaining", d.remaining.to_string());
    set(h, "ratelimit-reset", ceil_secs(d.reset).to_string());
    set(h, "ratelimit-policy", format!("{};w={}", d.rate.burst, ceil_secs(d.rate.window).max(1)));
    if !d.allowed {
        h.insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(d.retry_after).max(1)));
    }
}
