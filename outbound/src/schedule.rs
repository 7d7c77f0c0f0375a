//! When a failed webhook delivery is tried again, and what an endpoint's state becomes: the
//! Standard Webhooks retry schedule with jitter (docs/integration.md "Retries"). Pure: the
//! caller passes the random source and keeps the counts.

use rand::Rng;
use std::time::Duration;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The wait before each attempt of one event, the first being immediate: immediately, 5 s,
/// 5 min, 30 min, 2 h, 5 h, 10 h, 10 h — eight attempts over about 27.6 hours.
pub const SCHEDULE: [Duration; 8] =
    [secs(0), secs(5), secs(5 * 60), secs(30 * 60), secs(2 * 3600), secs(5 * 3600), secs(10 * 3600), secs(10 * 3600)];

/// How retries are spaced and when an endpoint counts as failing.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The wait before attempt `i + 1` (index 0: the first attempt); its length is the number
    /// of attempts per event.
    pub delays: Vec<Duration>,
    /// Each wait is scaled by a uniform factor in `1 ± jitter`, so endpoints that failed
    /// together do not all retry in the same second.
    pub jitter: f64,
    /// Consecutive failed attempts after which an endpoint is `Failing`.
    pub failing_after: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { delays: SCHEDULE.to_vec(), jitter: 0.2, failing_after: 3 }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Try the same event again after this wait.
    RetryAfter(Duration),
    /// That was the last attempt of the schedule.
    Exhausted,
}

impl RetryPolicy {
    /// The number of attempts an event gets.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX)
    }

    /// After `failed` attempts of one event have failed (1 after the first), the wait before
    /// the next one, jittered with `rng`, or `Exhausted`.
    pub fn after_failure(&self, failed: u32, rng: &mut impl Rng) -> Next {
        match self.delays.get(failed as usize) {
            Some(base) => Next::RetryAfter(jittered(*base, self.jitter, rng)),
            None => Next::Exhausted,
        }
    }

    /// The schedule's total wait without jitter (from the first attempt to the last).
    pub fn span(&self) -> Duration {
        self.delays.iter().sum()
    }
}

/// `base` scaled by a uniform factor in `[1 - jitter, 1 + jitter]` (jitter clamped to 0..1).
pub fn jittered(base: Duration, jitter: f64, rng: &mut impl Rng) -> Duration {
    let j = jitter.clamp(0.0, 1.0);
    if base.is_zero() || j == 0.0 {
        return base;
    }
    base.mul_f64(rng.random_range(1.0 - j..=1.0 + j))
}

/// An endpoint's delivery state, as the delivery log and `keel outbound status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Delivering, or retrying fewer than `failing_after` times in a row.
    Active,
    /// `failing_after` or more attempts in a row failed; still retried on the schedule.
    Failing,
    /// The last attempt of the schedule failed: no more deliveries until an admin enables it
    /// again (its checkpoint stays, so nothing after it is lost).
    Disabled,
}

impl EndpointState {
    /// The state stored as `name` (`active`, `failing`, `disabled`).
    pub fn parse(name: &str) -> Option<EndpointState> {
        [EndpointState::Active, EndpointState::Failing, EndpointState::Disabled]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Active => "active",
            EndpointState::Failing => "failing",
            EndpointState::Disabled => "disabled",
        }
    }
}

/// An endpoint's health: its state and the failed attempts in a row. Deliveries are in order,
/// so these are the attempts of the event at the head of its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub state: EndpointState,
    pub consecutive_failures: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health { state: EndpointState::Active, consecutive_failures: 0 }
    }
}

impl Health {
    /// A 2xx: the count resets and a failing endpoint is enabled again.
    pub fn on_success(self) -> Health {
        Health::default()
    }

    /// A failed attempt: the new health and when to retry. The last attempt of the schedule
    /// disables the endpoint.
    pub fn on_failure(self, policy: &RetryPolicy, rng: &mut impl Rng) -> (Health, Next) {
        let failures = self.consecutive_failures.saturating_add(1);
        let next = policy.after_failure(failures, rng);
        let state = match next {
            Next::Exhausted => EndpointState::Disabled,
            Next::RetryAfter(_) if failures >= policy.failing_after => EndpointState::Failing,
            Next::RetryAfter(_) => EndpointState::Active,
        };
        (Health { state, consecutive_failures: failures }, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn no_jitter() -> RetryPolicy {
        RetryPolicy { jitter: 0.0, ..RetryPolicy::default() }
    }

    #[test]
    fn the_schedule_is_the_specifications() {
        let p = no_jitter();
        let mut rng = StdRng::seed_from_u64(1);
        let waits: Vec<Next> = (1..=8).map(|n| p.after_failure(n, &mut rng)).collect();
        assert_eq!(
            waits,
            [
                Next::RetryAfter(secs(5)),
                Next::RetryAfter(secs(300)),
                Next::RetryAfter(secs(1800)),
                Next::RetryAfter(secs(7200)),
                Next::RetryAfter(secs(18_000)),
                Next::RetryAfter(secs(36_000)),
                Next::RetryAfter(secs(36_000)),
                Next::Exhausted,
            ]
        );
        assert_eq!(p.attempts(), 8);
        assert_eq!(p.span(), secs(5 + 300 + 1800 + 7200 + 18_000 + 36_000 + 36_000));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_spreads() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(17);
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let Next::RetryAfter(d) = p.after_failure(2, &mut rng) else { panic!("retry") };
            assert!(d >= secs(240) && d <= secs(360), "{d:?} outside 5 min ± 20%");
            seen.push(d);
        }
        let below = seen.iter().filter(|d| **d < secs(300)).count();
        assert!((300..700).contains(&below), "{below} of 1000 below the base: not spread");
        // The same seed gives the same waits: a worker's schedule can be replayed in a test.
        let again: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(17);
            (0..1000).map(|_| p.after_failure(2, &mut rng)).collect()
        };
        assert_eq!(again, seen.into_iter().map(Next::RetryAfter).collect::<Vec<_>>());
        assert_eq!(jittered(Duration::ZERO, 0.2, &mut rng), Duration::ZERO);
    }

    #[test]
    fn an_endpoint_fails_after_three_in_a_row_and_is_disabled_after_the_last_attempt() {
        let p = no_jitter();
        let mut rng = StdRng::seed_from_u64(3);
        let mut h = Health::default();
        let mut states = Vec::new();
        for _ in 0..8 {
            let (next, _) = h.on_failure(&p, &mut rng);
            h = next;
            states.push(h.state);
        }
        use EndpointState::*;
        assert_eq!(states, [Active, Active, Failing, Failing, Failing, Failing, Failing, Disabled]);
        assert_eq!(h.consecutive_failures, 8);
    }

    #[test]
    fn a_success_resets_the_count_and_enables_a_failing_endpoint() {
        let p = no_jitter();
        let mut rng = StdRng::seed_from_u64(4);
        let mut h = Health::default();
        for _ in 0..4 {
            h = h.on_failure(&p, &mut rng).0;
        }
        assert_eq!(h.state, EndpointState::Failing);
        h = h.on_success();
        assert_eq!(h, Health::default());
        // The count starts again: one failure after a success is not failing.
        let (h, next) = h.on_failure(&p, &mut rng);
        assert_eq!((h.state, next), (EndpointState::Active, Next::RetryAfter(secs(5))));
        assert_eq!(EndpointState::Failing.as_str(), "failing");
    }
}
