//! A tenant's webhook endpoints as the query side reads them (`webhook_endpoints`, inline):
//! never the secrets, which the reader role cannot select.

use crate::db::TenantTx;
use crate::error::StoreError;
use chrono::{DateTime, Utc};
use keel_domain::webhook::EndpointState;
use uuid::Uuid;

/// One endpoint, without its secrets.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub webhook_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// Its delivery health (`webhook_endpoint_state`; `active` before its first delivery).
    #[sqlx(try_from = "String")]
    pub state: EndpointState,
    /// Events waiting to be delivered.
    pub pending: i64,
    /// Why the last attempt failed (cleared by a 2xx).
    pub last_error: Option<String>,
    /// Until when the secret before the last rotation still signs.
    pub previous_valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The transaction's tenant's endpoints that are not deleted, oldest first (at most
/// `keel_domain::webhook::MAX_ENDPOINTS`).
pub async fn list(tx: &mut TenantTx) -> Result<Vec<WebhookRow>, StoreError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as::<_, WebhookRow>(
        "SELECT e.webhook_id, e.url, e.event_types, e.description, COALESCE(s.state, 'active') AS state,
                COALESCE(s.pending, 0) AS pending, s.last_error, e.previous_valid_until, e.created_at, e.updated_at
           FROM webhook_endpoints e
           LEFT JOIN webhook_endpoint_state s ON s.tenant_id = e.tenant_id AND s.webhook_id = e.webhook_id
          WHERE e.tenant_id = $1 AND NOT e.deleted
          ORDER BY e.created_at, e.webhook_id",
    )
    .bind(tenant.0)
    .fetch_all(tx.conn())
    .await?)
}

/// One delivery attempt, as `webhooks { deliveries }` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub position: i64,
    pub attempt: i32,
    pub attempted_at: DateTime<Utc>,
    /// `delivered` or `failed`.
    pub outcome: String,
    pub status_code: Option<i32>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// The newest `limit` attempts of each of `webhooks` (the transaction's tenant's), newest first.
pub async fn deliveries(tx: &mut TenantTx, webhooks: &[Uuid], limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as::<_, DeliveryRow>(
        "SELECT webhook_id, event_id, event_type, position, attempt, attempted_at, outcome, status_code, latency_ms, error
           FROM (SELECT d.*, row_number() OVER (PARTITION BY d.webhook_id ORDER BY d.attempted_at DESC, d.id DESC) AS rn
                   FROM webhook_deliveries d WHERE d.tenant_id = $1 AND d.webhook_id = ANY ($2)) x
          WHERE rn <= $3
          ORDER BY webhook_id, attempted_at DESC",
    )
    .bind(tenant.0)
    .bind(webhooks)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}
