//! Traffic limits at the edge, shared by REST and GraphQL: per-tenant rate limits (`rate`,
//! local with `governor` or shared through Redis) and load shedding with bulkheads (`shed`).
//! Settings are parsed here so that a bad value stops start-up naming its variable.

pub mod rate;
pub mod shed;

use std::time::Duration;

pub use rate::{PlanFactor, RateLimiter};
pub use shed::{Bulkhead, TenantBulkhead};

/// A rate with a burst, written `N/s`, `N/m` or `N/h`, optionally `,burst=B`
/// (`KEEL_RATE_LIMIT=50/s,burst=100`). Without a burst, the burst is one second's worth of
/// requests (at least 1). `off` turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests admitted per `per`.
    pub requests: u32,
    pub per: Duration,
    /// Requests admitted at once from a full bucket.
    pub burst: u32,
}

/// The largest count or burst accepted (a typo of many digits is an error, not a limit).
pub const MAX_RATE: u32 = 1_000_000;

impl Rate {
    /// Time between two requests at the steady rate.
    pub fn emission(&self) -> Duration {
        self.per / self.requests
    }

    /// This rate multiplied by a plan's factor (both the rate and the burst).
    pub fn scaled(&self, factor: u32) -> Rate {
        let factor = factor.max(1);
        Rate {
            requests: self.requests.saturating_mul(factor).min(MAX_RATE * 64),
            per: self.per,
            burst: self.burst.saturating_mul(factor).min(MAX_RATE * 64),
        }
    }

    /// Parses a setting's value; the error names `variable` and says what is expected.
    pub fn parse_setting(variable: &str, value: &str) -> Result<Option<Rate>, String> {
        Rate::parse(value).map_err(|e| {
            format!("{variable}: {e} (expected `off`, or `N/s`, `N/m` or `N/h` with an optional `,burst=B`, e.g. `50/s,burst=100`)")
        })
    }

    /// `off` → `None`.
    pub fn parse(value: &str) -> Result<Option<Rate>, String> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        if value.len() > 64 {
            return Err("the value is too long".into());
        }
        let mut parts = value.split(',');
        let rate = parts.next().unwrap_or_default().trim();
        let (count, unit) = rate.split_once('/').ok_or_else(|| format!("`{}` has no `/unit`", printable(rate)))?;
        let requests = count_of(count.trim(), "the request count")?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("unknown unit `{}`: use s, m or h", printable(other))),
        };
        let mut burst = None;
        for part in parts {
            let (name, v) = part.split_once('=').ok_or_else(|| format!("`{}` is not `burst=B`", printable(part)))?;
            if name.trim() != "burst" {
                return Err(format!("unknown option `{}`: only `burst` is known", printable(name.trim())));
            }
            if burst.is_some() {
                return Err("`burst` is given twice".into());
            }
            burst = Some(count_of(v.trim(), "the burst")?);
        }
        // One second's worth by default (a rate per minute or hour gets a burst of 1 or more).
        let default_burst = ((requests as u128 * 1000) / per.as_millis()).max(1) as u32;
        Ok(Some(Rate { requests, per, burst: burst.unwrap_or(default_burst) }))
    }
}

fn count_of(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} `{}` is not a whole number", printable(s)));
    }
    match s.parse::<u32>() {
        Ok(0) => Err(format!("{what} must be at least 1 (use `off` to turn limiting off)")),
        Ok(n) if n <= MAX_RATE => Ok(n),
        _ => Err(format!("{what} must be at most {MAX_RATE}")),
    }
}

/// A value echoed in an error, without control characters and cut short.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(32).collect()
}

/// Bounds on in-flight work (each a `KEEL_*` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShedConfig {
    /// In-flight REST requests (the command service) before new ones are shed with 503.
    pub commands: usize,
    /// In-flight GraphQL requests (the query service).
    pub queries: usize,
    /// Open subscription sockets.
    pub subscriptions: usize,
    /// In-flight requests of one tenant on the command path (its share of the writer pool).
    pub tenant_commands: usize,
    /// Requests of one tenant waiting for its share; past this they are shed at once.
    pub tenant_queue: usize,
    /// How long a request waits for its tenant's share before it is shed.
    pub tenant_wait: Duration,
}

impl Default for ShedConfig {
    fn default() -> Self {
        ShedConfig {
            commands: 1024,
            queries: 1024,
            subscriptions: 4096,
            tenant_commands: 8,
            tenant_queue: 256,
            tenant_wait: Duration::from_secs(5),
        }
    }
}

/// Where a shared limit lives. `Debug` hides the URL (it may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port/db` (no TLS).
    pub url: String,
    /// Prepended to every key (`<prefix>:tenant:<id>`), so instances of another deployment on
    /// the same Redis never share a budget.
    pub prefix: String,
    /// Every Redis call (connect and script) gives up after this and falls back to the local limiter.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"***")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The rate limit settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateConfig {
    /// The free plan's rate per tenant (`KEEL_RATE_LIMIT`); other plans multiply it
    /// (`PlanFactor`). `None`: no rate limit.
    pub tenant: Option<Rate>,
    /// With it, REST requests (the commands: writes) have a budget of their own at this rate
    /// (`KEEL_RATE_LIMIT_WRITES`), and `tenant` counts GraphQL (reads) only.
    pub writes: Option<Rate>,
    /// With it, the limit is shared by every process on that Redis.
    pub redis: Option<RedisConfig>,
}

/// Everything this module is configured with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficConfig {
    pub rate: RateConfig,
    pub shed: ShedConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let r = Rate::parse("50/s,burst=100").unwrap().unwrap();
        assert_eq!((r.requests, r.per, r.burst), (50, Duration::from_secs(1), 100));
        let r = Rate::parse("50/s").unwrap().unwrap();
        assert_eq!(r.burst, 50);
        let r = Rate::parse("30/m").unwrap().unwrap();
        assert_eq!((r.per, r.burst), (Duration::from_secs(60), 1));
        assert_eq!(Rate::parse("off").unwrap(), None);
        assert_eq!(Rate::parse(" 10/s , burst = 3 ").unwrap().unwrap().burst, 3);
    }

    #[test]
    fn refuses_hostile_rates() {
        for bad in [
            "",
            "50",
            "/s",
            "0/s",
            "-1/s",
            "1.5/s",
            "50/d",
            "50/s,burst=0",
            "50/s,burst=",
            "50/s,burst=1,burst=2",
            "50/s,limit=3",
            "99999999999999999999/s",
            "1000001/s",
            "50/s,burst=1000001",
            "５/s",
            "50/s\u{0}",
            "NaN/s",
            "+5/s",
            "5/s,",
            &"9".repeat(100),
        ] {
            let e = Rate::parse_setting("KEEL_RATE_LIMIT", bad).expect_err(bad);
            assert!(e.starts_with("KEEL_RATE_LIMIT: "), "{e}");
            assert!(!e.contains('\u{0}'), "{e}");
        }
    }
}
