//! Webhook delivery (docs/integration.md "Delivery"): the fan-out consumer queues each event for
//! the endpoints that take it (`fanout`), and per-endpoint workers deliver each queue in order
//! (`worker`). The parts they use live beside: `signature`, `schedule`, `destination`,
//! `safe_client`, `envelope`.

pub mod fanout;
pub mod worker;

use crate::destination::DestinationPolicy;
use crate::schedule::RetryPolicy;
use std::time::Duration;

/// How webhooks are delivered (`KEEL_WEBHOOKS_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Where a delivery may go (`KEEL_WEBHOOKS_ALLOW_HTTP`, `KEEL_WEBHOOKS_ALLOW_PRIVATE`),
    /// checked again at every connection.
    pub policy: DestinationPolicy,
    /// Deadline of one attempt (`KEEL_WEBHOOKS_TIMEOUT_MS`).
    pub attempt_timeout: Duration,
    /// The retry schedule (`KEEL_WEBHOOKS_RETRY_SCHEDULE`), with its jitter.
    pub retry: RetryPolicy,
    /// Attempts in flight in one process (`KEEL_WEBHOOKS_CONCURRENCY`).
    pub concurrency: usize,
    /// Attempts in flight for one tenant in one process (`KEEL_WEBHOOKS_TENANT_CONCURRENCY`).
    pub tenant_concurrency: usize,
    /// Projector connections delivery may hold at once (`KEEL_WEBHOOKS_DB_CONNECTIONS`).
    pub db_connections: usize,
    /// The most events waiting for one endpoint (`KEEL_WEBHOOKS_QUEUE_MAX`); later ones are
    /// counted as dropped until the queue has room (a replay resends them).
    pub queue_max: i64,
    /// How long the delivery log keeps an attempt (`KEEL_WEBHOOKS_DELIVERY_LOG_DAYS`).
    pub delivery_log_keep: Duration,
    /// The most endpoints one process delivers (`KEEL_WEBHOOKS_MAX_ENDPOINTS_PER_PROCESS`);
    /// the rest wait for another process.
    pub max_endpoints: i64,
    /// How long an endpoint's lease lasts without renewal (the runner's lease TTL).
    pub lease_ttl: Duration,
    /// How often an idle endpoint looks at its queue without a notification (a fallback: the
    /// fan-out notifies at every commit, and every task is woken when the listener reconnects).
    pub idle_poll: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            policy: DestinationPolicy::default(),
            attempt_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            concurrency: 64,
            tenant_concurrency: 4,
            db_connections: 2,
            queue_max: 100_000,
            delivery_log_keep: Duration::from_secs(30 * 24 * 3600),
            max_endpoints: 10_000,
            lease_ttl: Duration::from_secs(5),
            idle_poll: Duration::from_secs(30),
        }
    }
}

/// Parses a retry schedule: comma-separated waits before each attempt, the first usually `0`
/// (`0,5s,5m,30m,2h,5h,10h,10h`); units `ms`, `s`, `m`, `h`, `d`. 1 to 20 attempts, each wait at
/// most 7 days.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let waits: Result<Vec<Duration>, String> = s
        .split(',')
        .map(|w| {
            let w = w.trim();
            let split = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
            let (n, unit) = w.split_at(split);
            let n: u64 = n.parse().map_err(|_| format!("{w:?} is not a wait (a number and ms, s, m, h or d)"))?;
            let d = match unit {
                "ms" => Duration::from_millis(n),
                "" if n == 0 => Duration::ZERO,
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86_400)),
                _ => return Err(format!("{w:?} is not a wait (a number and ms, s, m, h or d)")),
            };
            if d > Duration::from_secs(7 * 86_400) {
                return Err(format!("{w:?} is longer than 7 days"));
            }
            Ok(d)
        })
        .collect();
    let waits = waits?;
    if waits.is_empty() || waits.len() > 20 {
        return Err("a schedule has 1 to 20 attempts".into());
    }
    Ok(waits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_reads_like_the_documented_one() {
        let d = parse_schedule("0,5s,5m,30m,2h,5h,10h,10h").unwrap();
        assert_eq!(d, crate::schedule::SCHEDULE.to_vec());
        assert_eq!(parse_schedule("0, 200ms, 1d").unwrap()[2], Duration::from_secs(86_400));
        for bad in ["", "5", "5x", "-1s", "8d", &vec!["1s"; 21].join(",")] {
            assert!(parse_schedule(bad).is_err(), "{bad:?}");
        }
    }
}
