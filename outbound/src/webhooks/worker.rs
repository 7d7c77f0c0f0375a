//! Delivery workers: one task per endpoint this process holds the lease of (so one process in
//! the cluster delivers each endpoint), each taking the head of its endpoint's queue, signing it,
//! posting it through the `SafeClient` and recording the attempt — the event leaves the queue only
//! after a 2xx, so an endpoint receives its events in log order, at least once. A failure waits
//! the retry schedule (persisted: a restart keeps it); the schedule's last failure disables the
//! endpoint. No transaction is open while a receiver is waited for.
//!
//! Bulkheads: endpoints never wait for each other — each has its own task, and an attempt holds
//! a permit of its tenant (`tenant_concurrency`) and of the process (`concurrency`) only while it
//! posts; the tasks share at most `db_connections` of the projector pool, so delivery cannot take
//! the connections projections and the command path need.

use super::WebhookConfig;
use crate::envelope::Envelope;
use crate::safe_client::{Attempt, SafeClient, SafeClientConfig};
use crate::schedule::{EndpointState, Health, Next};
use crate::signature::{Headers, Secret};
use chrono::Utc;
use keel_store::webhook_delivery::{self as wd, EndpointKey, Work};
use keel_store::{Pool, Store, StoreError, log};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Delivery attempts by outcome (`delivered`, `failed`) and error kind (bounded).
pub const DELIVERIES: &str = "keel_webhook_deliveries_total";
/// From the start of an attempt to its end.
pub const ATTEMPT_SECONDS: &str = "keel_webhook_attempt_seconds";
/// Endpoints by state (`active`, `failing`, `disabled`).
pub const ENDPOINTS: &str = "keel_webhook_endpoints";
/// Events waiting in every endpoint's queue.
pub const PENDING: &str = "keel_webhook_pending_events";
/// Age of the oldest event waiting for any endpoint.
pub const LAG_SECONDS: &str = "keel_webhook_lag_seconds";

/// What an endpoint's task shares with the others.
struct Shared {
    store: Store,
    config: WebhookConfig,
    client: SafeClient,
    holder: String,
    /// Attempts in flight in this process.
    global: Arc<Semaphore>,
    /// Database work of delivery in flight (a bound on the projector connections it takes).
    db: Semaphore,
    /// Attempts in flight per tenant.
    tenants: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
    rng: Mutex<StdRng>,
}

impl Shared {
    fn tenant_permits(&self, tenant: Uuid) -> Arc<Semaphore> {
        let mut t = self.tenants.lock().expect("not poisoned");
        t.entry(tenant).or_insert_with(|| Arc::new(Semaphore::new(self.config.tenant_concurrency.max(1)))).clone()
    }
}

/// Runs the delivery workers of this process until `shutdown`: takes endpoint leases (up to
/// `max_endpoints`), starts a task per endpoint held, wakes it on the fan-out's notifications,
/// prunes the delivery log, and reports metrics. Releases its leases on the way out.
pub async fn run(store: Store, config: WebhookConfig, holder: String, mut shutdown: watch::Receiver<bool>) {
    let client = match SafeClient::new(SafeClientConfig {
        policy: config.policy,
        deadline: config.attempt_timeout,
        max_body: 4 * 1024,
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; no webhook deliveries");
            return;
        }
    };
    let shared = Arc::new(Shared {
        global: Arc::new(Semaphore::new(config.concurrency.max(1))),
        db: Semaphore::new(config.db_connections.max(1)),
        tenants: Mutex::new(HashMap::new()),
        rng: Mutex::new(StdRng::from_os_rng()),
        store,
        config,
        client,
        holder,
    });
    let pool = shared.store.pool(Pool::Projector).clone();
    let mut tasks: HashMap<EndpointKey, (JoinHandle<()>, Arc<Notify>)> = HashMap::new();
    let mut listener = keel_store::listen(&shared.store, wd::CHANNEL).await.ok();
    let lease_every = (shared.config.lease_ttl / 3).max(Duration::from_millis(100));
    let mut next_lease = Instant::now();
    let mut next_metrics = Instant::now();
    let mut next_prune = Instant::now() + Duration::from_secs(60);
    tracing::info!(holder = %shared.holder, "webhook delivery started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        if Instant::now() >= next_lease {
            next_lease = Instant::now() + lease_every;
            match wd::lease(&pool, &shared.holder, shared.config.lease_ttl, shared.config.max_endpoints).await {
                Ok(held) => {
                    let held: std::collections::HashSet<EndpointKey> = held.into_iter().collect();
                    tasks.retain(|key, (task, _)| {
                        let keep = held.contains(key) && !task.is_finished();
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for key in held {
                        tasks.entry(key).or_insert_with(|| {
                            let wake = Arc::new(Notify::new());
                            let task = tokio::spawn(endpoint(shared.clone(), key, wake.clone(), shutdown.clone()));
                            tracing::info!(tenant_id = %key.0, webhook_id = %key.1, "delivering to webhook endpoint");
                            (task, wake)
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew webhook endpoint leases"),
            }
        }
        if Instant::now() >= next_metrics {
            next_metrics = Instant::now() + Duration::from_secs(5);
            if let Ok(s) = wd::summary(&pool).await {
                for state in ["active", "failing", "disabled"] {
                    let n = s.by_state.iter().find(|(k, _)| k == state).map_or(0, |(_, n)| *n);
                    metrics::gauge!(ENDPOINTS, "state" => state).set(n as f64);
                }
                metrics::gauge!(PENDING).set(s.pending as f64);
                metrics::gauge!(LAG_SECONDS).set(s.max_lag_seconds);
            }
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + Duration::from_secs(3600);
            match wd::prune(&pool, shared.config.delivery_log_keep).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned the webhook delivery log"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune the webhook delivery log"),
            }
        }
        let wait = next_lease.min(next_metrics).saturating_duration_since(Instant::now());
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            n = recv(&mut listener) => match n {
                Ok(payload) => {
                    for key in parse_payload(&payload) {
                        match key.and_then(|k| tasks.get(&k)) {
                            Some((_, wake)) => wake.notify_one(),
                            // A new endpoint (or "*"): lease now, and wake everyone.
                            None => {
                                next_lease = Instant::now();
                                tasks.values().for_each(|(_, w)| w.notify_one());
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook notification listener lost; polling until it is back");
                    listener = None;
                }
            },
        }
        if listener.is_none() {
            listener = keel_store::listen(&shared.store, wd::CHANNEL).await.ok();
            if listener.is_some() {
                // What was notified while it was away is looked at now.
                tasks.values().for_each(|(_, w)| w.notify_one());
            }
        }
    }
    for (_, (task, _)) in tasks.drain() {
        task.abort();
    }
    let _ = wd::release(&pool, &shared.holder).await;
    tracing::info!("webhook delivery stopped");
}

/// `<tenant>:<webhook>` pairs; `None` for `*` or anything unreadable (wake all).
fn parse_payload(payload: &str) -> Vec<Option<EndpointKey>> {
    payload
        .split(',')
        .map(|p| {
            let (t, w) = p.split_once(':')?;
            Some((t.parse().ok()?, w.parse().ok()?))
        })
        .collect()
}

async fn recv(listener: &mut Option<sqlx::postgres::PgListener>) -> Result<String, sqlx::Error> {
    match listener {
        Some(l) => l.recv().await.map(|n| n.payload().to_owned()),
        None => std::future::pending().await,
    }
}

/// One endpoint's deliveries, until its lease is lost, it is deleted, or `shutdown`.
async fn endpoint(shared: Arc<Shared>, key: EndpointKey, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let idle = shared.config.idle_poll;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let work = {
            let _db = shared.db.acquire().await.expect("never closed");
            match shared.store.pool(Pool::Projector).unit().await {
                Ok(mut conn) => match wd::work(&mut conn, key).await {
                    Ok(w) => conn.done().await.map(|()| w),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        };
        let wait = match work {
            Ok(None) => return,
            Ok(Some(w)) => match next_step(&w) {
                Step::Attempt => match attempt(&shared, key, &w).await {
                    Ok(true) => Duration::ZERO,
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(tenant_id = %key.0, webhook_id = %key.1, error = %e, "webhook delivery bookkeeping failed; retrying");
                        Duration::from_secs(1)
                    }
                },
                Step::Wait(d) => d.min(idle),
                Step::Idle => idle,
            },
            Err(e) => {
                tracing::warn!(tenant_id = %key.0, webhook_id = %key.1, error = %e, "cannot read the webhook queue; retrying");
                Duration::from_secs(1)
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

enum Step {
    Attempt,
    Wait(Duration),
    Idle,
}

fn next_step(w: &Work) -> Step {
    if w.head.is_none() || w.state == "disabled" || w.state == "deleted" {
        return Step::Idle;
    }
    match w.next_attempt_at {
        Some(t) if t > Utc::now() => Step::Wait((t - Utc::now()).to_std().unwrap_or_default()),
        _ => Step::Attempt,
    }
}

/// Makes one attempt of the head of the queue and records it. `Ok(false)`: the lease is gone.
async fn attempt(shared: &Shared, key: EndpointKey, w: &Work) -> Result<bool, StoreError> {
    let head = w.head.expect("checked");
    let (tenant, webhook) = key;
    // The event as the tenant may see it now: a retry after an erasure carries `[erased]`.
    let (recorded, secrets) = {
        let _db = shared.db.acquire().await.expect("never closed");
        let mut conn = shared.store.pool(Pool::Projector).unit().await?;
        let mut recorded = log::read_at(&mut conn, head.at.position)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("queued event {} is not in the log", head.at.position)))?;
        log::reveal(&mut conn, shared.store.master_key(), std::slice::from_mut(&mut recorded)).await?;
        let master = shared.store.master_key();
        let mut secrets = Vec::new();
        if let Some(s) = keel_store::crypto::open_secret(&mut conn, master, tenant, webhook, &w.secret).await? {
            secrets.push(s);
        }
        if let (Some(prev), Some(until)) = (&w.previous_secret, w.previous_valid_until)
            && until > Utc::now()
            && let Some(s) = keel_store::crypto::open_secret(&mut conn, master, tenant, webhook, prev).await?
        {
            secrets.push(s);
        }
        conn.done().await?;
        (recorded, secrets)
    };
    let attempted_at = Utc::now();
    let started = Instant::now();
    let secrets: Vec<Secret> = secrets.iter().filter_map(|s| Secret::parse(s).ok()).collect();
    let outcome: Attempt = match recorded.decode() {
        Err(e) => failed_locally(format!("event {} cannot be read: {e}", recorded.event_id)),
        Ok(_) if secrets.is_empty() => failed_locally("the endpoint's signing secret cannot be opened".into()),
        Ok(event) => {
            let body = Envelope::new(&recorded, &event).to_bytes();
            let refs: Vec<&Secret> = secrets.iter().collect();
            let headers = Headers::new(&refs, &recorded.event_id.to_string(), attempted_at.timestamp(), &body);
            let pairs = headers.pairs();
            let pairs: Vec<(&str, String)> = pairs.iter().map(|(k, v)| (*k, v.clone())).collect();
            let tenant_permits = shared.tenant_permits(tenant);
            let _t = tenant_permits.acquire().await.expect("never closed");
            let _g = shared.global.acquire().await.expect("never closed");
            shared.client.post(&w.url, &pairs, body).await
        }
    };
    let delivered = outcome.delivered();
    let before = Health {
        state: EndpointState::parse(&w.state).unwrap_or(EndpointState::Active),
        consecutive_failures: u32::try_from(w.consecutive_failures).unwrap_or(0),
    };
    let (after, next_at) = if delivered {
        (before.on_success(), None)
    } else {
        let (h, next) = before.on_failure(&shared.config.retry, &mut *shared.rng.lock().expect("not poisoned"));
        let at = match next {
            Next::RetryAfter(d) => Some(attempted_at + chrono::TimeDelta::from_std(d).unwrap_or_default()),
            Next::Exhausted => None,
        };
        (h, at)
    };
    let error = outcome.error.as_ref().map(|e| e.message.clone());
    let kind = outcome.kind().map_or("none", |k| k.as_str());
    metrics::counter!(DELIVERIES, "outcome" => if delivered { "delivered" } else { "failed" }, "error" => kind)
        .increment(1);
    metrics::histogram!(ATTEMPT_SECONDS).record(started.elapsed().as_secs_f64());
    if after.state != before.state {
        match after.state {
            EndpointState::Disabled => {
                tracing::warn!(tenant_id = %tenant, webhook_id = %webhook, error = ?error, "webhook endpoint disabled: the retry schedule ran out")
            }
            EndpointState::Failing => {
                tracing::warn!(tenant_id = %tenant, webhook_id = %webhook, error = ?error, "webhook endpoint failing")
            }
            EndpointState::Active => {
                tracing::info!(tenant_id = %tenant, webhook_id = %webhook, "webhook endpoint delivering again")
            }
        }
    }
    let record = wd::Attempt {
        endpoint: key,
        event_id: recorded.event_id,
        event_type: recorded.event_type.clone(),
        at: head.at,
        attempt: w.consecutive_failures.saturating_add(1),
        attempted_at,
        delivered,
        status_code: outcome.status.map(i32::from),
        latency_ms: outcome.latency.as_secs_f64() * 1000.0,
        error,
    };
    let health = wd::Health {
        state: after.state.as_str(),
        consecutive_failures: i32::try_from(after.consecutive_failures).unwrap_or(i32::MAX),
        next_attempt_at: next_at,
    };
    let _db = shared.db.acquire().await.expect("never closed");
    wd::record(shared.store.pool(Pool::Projector), &shared.holder, &record, &health).await
}

fn failed_locally(message: String) -> Attempt {
    Attempt {
        status: None,
        latency: Duration::ZERO,
        error: Some(crate::safe_client::AttemptError { kind: crate::safe_client::ErrorKind::Internal, message }),
        body: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_endpoints_or_everyone() {
        let (t, w) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(parse_payload(&format!("{t}:{w}")), vec![Some((t, w))]);
        assert_eq!(parse_payload(&format!("{t}:{w},{w}:{t}")), vec![Some((t, w)), Some((w, t))]);
        assert_eq!(parse_payload("*"), vec![None]);
    }
}
