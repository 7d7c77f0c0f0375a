//! Webhook delivery's tables (`migrations/0013_webhook_delivery.sql`, docs/integration.md
//! "Delivery"): the routes and queue the fan-out consumer keeps in its checkpoint's transaction,
//! and the per-endpoint state, leases and delivery log of the delivery workers. Every statement
//! runs as the projector role and names the tenant of the rows it touches.

use crate::error::StoreError;
use crate::log::LogPosition;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use std::time::Duration;
use uuid::Uuid;

/// The channel the fan-out notifies at commit with the endpoints it queued for
/// (`<tenant>:<webhook>` separated by commas, or `*` for many); delivery workers LISTEN on it.
pub const CHANNEL: &str = "keel_webhooks";

/// An endpoint: its tenant and id.
pub type EndpointKey = (Uuid, Uuid);

/// One event as the fan-out hands it to `enqueue`.
#[derive(Debug, Clone, Copy)]
pub struct Queued<'a> {
    pub tenant_id: Uuid,
    pub at: LogPosition,
    pub event_id: Uuid,
    pub event_type: &'a str,
}

/// Queues `events` (a run in log order) for every active route of their tenant that takes their
/// type, at most `queue_max` rows waiting per endpoint (the rest are counted as dropped, with
/// the time the endpoint first dropped one). Returns the endpoints that got rows.
pub async fn enqueue(
    conn: &mut PgConnection,
    events: &[Queued<'_>],
    queue_max: i64,
) -> Result<Vec<EndpointKey>, StoreError> {
    if events.is_empty() {
        return Ok(vec![]);
    }
    let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let xids: Vec<String> = events.iter().map(|e| e.at.xid.to_string()).collect();
    let positions: Vec<i64> = events.iter().map(|e| e.at.position).collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let rows = sqlx::query(
        "WITH ev AS (
              SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::uuid[], $5::text[])
                         AS e(tenant_id, xid, position, event_id, event_type)),
         cand AS (
              SELECT r.tenant_id, r.webhook_id, e.xid::xid8 AS transaction_id, e.position, e.event_id, e.event_type,
                     row_number() OVER (PARTITION BY r.tenant_id, r.webhook_id ORDER BY e.xid::xid8, e.position) AS rn
                FROM ev e
                JOIN webhook_routes r ON r.tenant_id = e.tenant_id AND r.active
                                     AND (e.event_type = ANY (r.event_types) OR '*' = ANY (r.event_types))),
         judged AS (
              SELECT c.*, s.pending + c.rn <= $6 AS fits
                FROM cand c JOIN webhook_endpoint_state s ON s.tenant_id = c.tenant_id AND s.webhook_id = c.webhook_id),
         ins AS (
              INSERT INTO webhook_queue (tenant_id, webhook_id, transaction_id, position, event_id, event_type)
              SELECT tenant_id, webhook_id, transaction_id, position, event_id, event_type FROM judged WHERE fits
              ON CONFLICT DO NOTHING
              RETURNING tenant_id, webhook_id),
         added AS (SELECT tenant_id, webhook_id, count(*) AS n FROM ins GROUP BY 1, 2),
         counts AS (SELECT tenant_id, webhook_id, count(*) FILTER (WHERE NOT fits) AS dropped FROM judged GROUP BY 1, 2)
         UPDATE webhook_endpoint_state s
            SET pending = s.pending + COALESCE(a.n, 0),
                dropped = s.dropped + c.dropped,
                dropped_since = CASE WHEN c.dropped > 0 THEN COALESCE(s.dropped_since, now()) ELSE s.dropped_since END,
                updated_at = now()
           FROM counts c LEFT JOIN added a ON a.tenant_id = c.tenant_id AND a.webhook_id = c.webhook_id
          WHERE s.tenant_id = c.tenant_id AND s.webhook_id = c.webhook_id
      RETURNING s.tenant_id, s.webhook_id, COALESCE(a.n, 0) AS added",
    )
    .bind(&tenants)
    .bind(&xids)
    .bind(&positions)
    .bind(&ids)
    .bind(&types)
    .bind(queue_max)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        if r.try_get::<i64, _>("added")? > 0 {
            out.push((r.try_get("tenant_id")?, r.try_get("webhook_id")?));
        }
    }
    Ok(out)
}

/// An endpoint was created: it takes `event_types` from here on.
pub async fn route_created(
    conn: &mut PgConnection,
    tenant: Uuid,
    webhook: Uuid,
    event_types: &[String],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_routes (tenant_id, webhook_id, event_types) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, webhook_id) DO UPDATE SET event_types = EXCLUDED.event_types, active = true",
    )
    .bind(tenant)
    .bind(webhook)
    .bind(event_types)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO webhook_endpoint_state (tenant_id, webhook_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(webhook)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An endpoint was changed (its URL, types or description): new types apply from here on, and
/// deliveries resume at once — a disabled endpoint is enabled again where it stopped (its queue
/// kept everything after), a failing one is tried now instead of at its next scheduled retry.
pub async fn route_updated(
    conn: &mut PgConnection,
    tenant: Uuid,
    webhook: Uuid,
    event_types: Option<&[String]>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_routes SET event_types = COALESCE($3, event_types) WHERE tenant_id = $1 AND webhook_id = $2",
    )
    .bind(tenant)
    .bind(webhook)
    .bind(event_types)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE webhook_endpoint_state
            SET state = CASE WHEN state = 'disabled' THEN 'active' ELSE state END,
                consecutive_failures = CASE WHEN state = 'disabled' THEN 0 ELSE consecutive_failures END,
                next_attempt_at = NULL, updated_at = now()
          WHERE tenant_id = $1 AND webhook_id = $2 AND state <> 'deleted'",
    )
    .bind(tenant)
    .bind(webhook)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An endpoint was deleted: it takes nothing more and what waited for it is dropped.
pub async fn route_deleted(conn: &mut PgConnection, tenant: Uuid, webhook: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE webhook_routes SET active = false WHERE tenant_id = $1 AND webhook_id = $2")
        .bind(tenant)
        .bind(webhook)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM webhook_queue WHERE tenant_id = $1 AND webhook_id = $2")
        .bind(tenant)
        .bind(webhook)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE webhook_endpoint_state
            SET state = 'deleted', pending = 0, next_attempt_at = NULL, lease_holder = NULL, lease_expires_at = NULL,
                updated_at = now()
          WHERE tenant_id = $1 AND webhook_id = $2",
    )
    .bind(tenant)
    .bind(webhook)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayStart {
    /// Events recorded at or after this time.
    Time(DateTime<Utc>),
    /// Events after this position.
    After(LogPosition),
}

/// A replay was asked at `upto` (the request's own position): the endpoint's queue becomes the
/// tenant's events it takes from `from` up to `upto`, in log order (at most `queue_max`; the
/// rest counted as dropped), and the endpoint is active again. Returns how many were queued.
pub async fn replay(
    conn: &mut PgConnection,
    tenant: Uuid,
    webhook: Uuid,
    from: ReplayStart,
    upto: LogPosition,
    queue_max: i64,
) -> Result<i64, StoreError> {
    sqlx::query("DELETE FROM webhook_queue WHERE tenant_id = $1 AND webhook_id = $2")
        .bind(tenant)
        .bind(webhook)
        .execute(&mut *conn)
        .await?;
    let (time, after_xid, after_position) = match from {
        ReplayStart::Time(t) => (Some(t), None, None),
        ReplayStart::After(p) => (None, Some(p.xid.to_string()), Some(p.position)),
    };
    // Every event before `upto` in log order has committed (the fan-out reads below the
    // gap-safe horizon), so this reads exactly what the endpoint would have taken.
    let row = sqlx::query(
        "WITH wanted AS (
              SELECT e.tenant_id, e.transaction_id, e.position, e.event_id, e.event_type
                FROM events e JOIN webhook_routes r ON r.tenant_id = e.tenant_id AND r.webhook_id = $2
               WHERE e.tenant_id = $1
                 AND (e.event_type = ANY (r.event_types) OR '*' = ANY (r.event_types))
                 AND ($3::timestamptz IS NULL OR e.recorded_at >= $3)
                 AND ($4::text IS NULL OR (e.transaction_id, e.position) > ($4::text::xid8, $5))
                 AND (e.transaction_id, e.position) <= ($6::text::xid8, $7)),
         total AS (SELECT count(*) AS n FROM wanted),
         ins AS (
              INSERT INTO webhook_queue (tenant_id, webhook_id, transaction_id, position, event_id, event_type)
              SELECT tenant_id, $2, transaction_id, position, event_id, event_type FROM wanted
               ORDER BY transaction_id, position LIMIT $8
              RETURNING 1)
         SELECT (SELECT count(*) FROM ins) AS queued, (SELECT n FROM total) AS total",
    )
    .bind(tenant)
    .bind(webhook)
    .bind(time)
    .bind(after_xid)
    .bind(after_position)
    .bind(upto.xid.to_string())
    .bind(upto.position)
    .bind(queue_max)
    .fetch_one(&mut *conn)
    .await?;
    let (queued, total): (i64, i64) = (row.try_get("queued")?, row.try_get("total")?);
    sqlx::query(
        "UPDATE webhook_endpoint_state
            SET state = 'active', consecutive_failures = 0, next_attempt_at = NULL, last_error = NULL,
                pending = $3, dropped = $4, dropped_since = CASE WHEN $4 > 0 THEN now() END, updated_at = now()
          WHERE tenant_id = $1 AND webhook_id = $2 AND state <> 'deleted'",
    )
    .bind(tenant)
    .bind(webhook)
    .bind(queued)
    .bind(total - queued)
    .execute(&mut *conn)
    .await?;
    Ok(queued)
}

/// Notifies `CHANNEL` at the commit of the caller's transaction.
pub async fn notify(conn: &mut PgConnection, endpoints: &[EndpointKey]) -> Result<(), StoreError> {
    if endpoints.is_empty() {
        return Ok(());
    }
    let mut payload: String = endpoints.iter().map(|(t, w)| format!("{t}:{w}")).collect::<Vec<_>>().join(",");
    if payload.len() > 7000 {
        payload = "*".into();
    }
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(conn).await?;
    Ok(())
}

/// What a delivery worker needs to make its endpoint's next attempt.
#[derive(Debug, Clone)]
pub struct Work {
    pub state: String,
    pub consecutive_failures: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub url: String,
    /// Sealed, as stored (`crypto::open_secret` opens them).
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// The event at the head of the queue, if any.
    pub head: Option<Head>,
}

#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub at: LogPosition,
    pub event_id: Uuid,
}

/// The endpoint's state and the head of its queue; `None` when it is gone.
pub async fn work(conn: &mut PgConnection, endpoint: EndpointKey) -> Result<Option<Work>, StoreError> {
    let row = sqlx::query(
        "SELECT s.state, s.consecutive_failures, s.next_attempt_at, e.url, e.secret, e.previous_secret,
                e.previous_valid_until, q.transaction_id::text AS xid, q.position, q.event_id
           FROM webhook_endpoint_state s
           JOIN webhook_endpoints e ON e.tenant_id = s.tenant_id AND e.webhook_id = s.webhook_id
           LEFT JOIN LATERAL (
                SELECT transaction_id, position, event_id FROM webhook_queue q
                 WHERE q.tenant_id = s.tenant_id AND q.webhook_id = s.webhook_id
                 ORDER BY transaction_id, position LIMIT 1) q ON true
          WHERE s.tenant_id = $1 AND s.webhook_id = $2 AND NOT e.deleted",
    )
    .bind(endpoint.0)
    .bind(endpoint.1)
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let xid: Option<String> = r.try_get("xid")?;
    let head = match xid {
        Some(x) => Some(Head {
            at: LogPosition {
                xid: x.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {x}")))?,
                position: r.try_get("position")?,
            },
            event_id: r.try_get("event_id")?,
        }),
        None => None,
    };
    Ok(Some(Work {
        state: r.try_get("state")?,
        consecutive_failures: r.try_get("consecutive_failures")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        url: r.try_get("url")?,
        secret: r.try_get("secret")?,
        previous_secret: r.try_get("previous_secret")?,
        previous_valid_until: r.try_get("previous_valid_until")?,
        head,
    }))
}

/// One attempt, as the delivery log keeps it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub endpoint: EndpointKey,
    pub event_id: Uuid,
    pub event_type: String,
    pub at: LogPosition,
    /// 1 for the first attempt of this event.
    pub attempt: i32,
    pub attempted_at: DateTime<Utc>,
    pub delivered: bool,
    pub status_code: Option<i32>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// The endpoint's health after an attempt.
#[derive(Debug, Clone)]
pub struct Health {
    pub state: &'static str,
    pub consecutive_failures: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Records an attempt and the endpoint's new health in one transaction, and after a 2xx takes
/// the event off the queue. `false` (and nothing written) when `holder` no longer holds the
/// endpoint's lease.
pub async fn record(pool: &crate::RolePool, holder: &str, a: &Attempt, health: &Health) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let held = sqlx::query(
        "SELECT 1 FROM webhook_endpoint_state
          WHERE tenant_id = $1 AND webhook_id = $2 AND lease_holder = $3 AND lease_expires_at > now()
          FOR UPDATE",
    )
    .bind(a.endpoint.0)
    .bind(a.endpoint.1)
    .bind(holder)
    .fetch_optional(&mut *tx)
    .await?;
    if held.is_none() {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (tenant_id, webhook_id, event_id, event_type, position, attempt, attempted_at,
                                         outcome, status_code, latency_ms, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(a.endpoint.0)
    .bind(a.endpoint.1)
    .bind(a.event_id)
    .bind(&a.event_type)
    .bind(a.at.position)
    .bind(a.attempt)
    .bind(a.attempted_at)
    .bind(if a.delivered { "delivered" } else { "failed" })
    .bind(a.status_code)
    .bind(a.latency_ms)
    .bind(&a.error)
    .execute(&mut *tx)
    .await?;
    if a.delivered {
        let gone = sqlx::query(
            "DELETE FROM webhook_queue
              WHERE tenant_id = $1 AND webhook_id = $2 AND transaction_id = $3::text::xid8 AND position = $4",
        )
        .bind(a.endpoint.0)
        .bind(a.endpoint.1)
        .bind(a.at.xid.to_string())
        .bind(a.at.position)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE webhook_endpoint_state
                SET pending = greatest(pending - $3, 0), delivered_xid = $4::text::xid8, delivered_position = $5,
                    last_delivered_at = $6
              WHERE tenant_id = $1 AND webhook_id = $2",
        )
        .bind(a.endpoint.0)
        .bind(a.endpoint.1)
        .bind(gone as i64)
        .bind(a.at.xid.to_string())
        .bind(a.at.position)
        .bind(a.attempted_at)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE webhook_endpoint_state
            SET state = $3, consecutive_failures = $4, next_attempt_at = $5,
                last_error = CASE WHEN $6 THEN NULL ELSE $7 END, updated_at = now()
          WHERE tenant_id = $1 AND webhook_id = $2 AND state <> 'deleted'",
    )
    .bind(a.endpoint.0)
    .bind(a.endpoint.1)
    .bind(health.state)
    .bind(health.consecutive_failures)
    .bind(health.next_attempt_at)
    .bind(a.delivered)
    .bind(&a.error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Renews `holder`'s leases and takes free (or expired) ones up to `max` in all; returns the
/// endpoints `holder` holds now. Deleted endpoints are never leased (nor held on to).
pub async fn lease(
    pool: &crate::RolePool,
    holder: &str,
    ttl: Duration,
    max: i64,
) -> Result<Vec<EndpointKey>, StoreError> {
    let rows = sqlx::query(
        "WITH mine AS (
              UPDATE webhook_endpoint_state s SET lease_expires_at = now() + make_interval(secs => $2)
               WHERE lease_holder = $1 AND state <> 'deleted'
                 AND EXISTS (SELECT 1 FROM webhook_endpoints e
                              WHERE e.tenant_id = s.tenant_id AND e.webhook_id = s.webhook_id AND NOT e.deleted)
           RETURNING tenant_id, webhook_id),
         free AS (
              SELECT tenant_id, webhook_id FROM webhook_endpoint_state s
               WHERE state <> 'deleted' AND (lease_holder IS NULL OR lease_expires_at < now())
                 AND lease_holder IS DISTINCT FROM $1
                 -- An endpoint deleted a moment ago whose deletion the fan-out has not read yet.
                 AND EXISTS (SELECT 1 FROM webhook_endpoints e
                              WHERE e.tenant_id = s.tenant_id AND e.webhook_id = s.webhook_id AND NOT e.deleted)
               ORDER BY tenant_id, webhook_id
               LIMIT greatest($3 - (SELECT count(*) FROM mine), 0)
               FOR UPDATE SKIP LOCKED),
         took AS (
              UPDATE webhook_endpoint_state s SET lease_holder = $1, lease_expires_at = now() + make_interval(secs => $2)
                FROM free f WHERE s.tenant_id = f.tenant_id AND s.webhook_id = f.webhook_id
           RETURNING s.tenant_id, s.webhook_id)
         SELECT tenant_id, webhook_id FROM mine UNION ALL SELECT tenant_id, webhook_id FROM took",
    )
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .bind(max)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get("tenant_id")?, r.try_get("webhook_id")?))).collect()
}

/// Gives up `holder`'s leases (a worker that stops).
pub async fn release(pool: &crate::RolePool, holder: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_endpoint_state SET lease_holder = NULL, lease_expires_at = NULL WHERE lease_holder = $1",
    )
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes delivery log rows older than `keep`, in bounded chunks; returns how many.
pub async fn prune(pool: &crate::RolePool, keep: Duration) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE ctid IN (
                 SELECT ctid FROM webhook_deliveries
                  WHERE attempted_at < now() - make_interval(secs => $1) LIMIT 5000)",
        )
        .bind(keep.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 5000 {
            return Ok(total);
        }
    }
}

/// An endpoint as `keel outbound status` shows it.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    pub tenant_id: Uuid,
    pub webhook_id: Uuid,
    pub url: String,
    pub state: String,
    /// Events waiting (its lag in events).
    pub pending: i64,
    /// Age of the oldest waiting event (0 when none waits).
    pub lag_seconds: f64,
    pub consecutive_failures: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub dropped: i64,
    pub delivered: Option<LogPosition>,
    pub last_delivered_at: Option<DateTime<Utc>>,
    pub lease_holder: Option<String>,
}

/// Every endpoint that is not deleted, by tenant and creation.
pub async fn statuses(pool: &crate::RolePool) -> Result<Vec<EndpointStatus>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.tenant_id, s.webhook_id, e.url, s.state, s.pending, s.consecutive_failures, s.next_attempt_at,
                s.last_error, s.dropped, s.delivered_xid::text AS delivered_xid, s.delivered_position,
                s.last_delivered_at, CASE WHEN s.lease_expires_at > now() THEN s.lease_holder END AS lease_holder,
                COALESCE((SELECT EXTRACT(EPOCH FROM now() - ev.recorded_at)::float8
                            FROM webhook_queue q JOIN events ev ON ev.position = q.position
                           WHERE q.tenant_id = s.tenant_id AND q.webhook_id = s.webhook_id
                           ORDER BY q.transaction_id, q.position LIMIT 1), 0) AS lag_seconds
           FROM webhook_endpoint_state s
           JOIN webhook_endpoints e ON e.tenant_id = s.tenant_id AND e.webhook_id = s.webhook_id
          WHERE s.state <> 'deleted' AND NOT e.deleted
          ORDER BY s.tenant_id, e.created_at, s.webhook_id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let xid: Option<String> = r.try_get("delivered_xid")?;
            let delivered = match (xid, r.try_get::<Option<i64>, _>("delivered_position")?) {
                (Some(x), Some(position)) => Some(LogPosition {
                    xid: x.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {x}")))?,
                    position,
                }),
                _ => None,
            };
            Ok(EndpointStatus {
                tenant_id: r.try_get("tenant_id")?,
                webhook_id: r.try_get("webhook_id")?,
                url: r.try_get("url")?,
                state: r.try_get("state")?,
                pending: r.try_get("pending")?,
                lag_seconds: r.try_get::<f64, _>("lag_seconds")?.max(0.0),
                consecutive_failures: r.try_get("consecutive_failures")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
                last_error: r.try_get("last_error")?,
                dropped: r.try_get("dropped")?,
                delivered,
                last_delivered_at: r.try_get("last_delivered_at")?,
                lease_holder: r.try_get("lease_holder")?,
            })
        })
        .collect()
}

/// Endpoints by state, events waiting and the oldest wait, for `/metrics` (bounded labels).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub by_state: Vec<(String, i64)>,
    pub pending: i64,
    pub max_lag_seconds: f64,
}

pub async fn summary(pool: &crate::RolePool) -> Result<Summary, StoreError> {
    let rows = sqlx::query(
        "SELECT state, count(*) AS n, COALESCE(sum(pending), 0)::bigint AS pending FROM webhook_endpoint_state
          WHERE state <> 'deleted' GROUP BY state",
    )
    .fetch_all(pool)
    .await?;
    let mut s = Summary::default();
    for r in rows {
        s.pending += r.try_get::<i64, _>("pending")?;
        s.by_state.push((r.try_get("state")?, r.try_get("n")?));
    }
    s.max_lag_seconds = sqlx::query_scalar::<_, f64>(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(ev.recorded_at))::float8, 0)
           FROM (SELECT DISTINCT ON (tenant_id, webhook_id) position FROM webhook_queue
                  ORDER BY tenant_id, webhook_id, transaction_id, position) h
           JOIN events ev ON ev.position = h.position",
    )
    .fetch_one(pool)
    .await?
    .max(0.0);
    Ok(s)
}
