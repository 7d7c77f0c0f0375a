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
    #[sqlx(try_from = "String")]
    pub state: EndpointState,
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
        "SELECT webhook_id, url, event_types, description, state, previous_valid_until, created_at, updated_at
           FROM webhook_endpoints WHERE tenant_id = $1 AND NOT deleted
          ORDER BY created_at, webhook_id",
    )
    .bind(tenant.0)
    .fetch_all(tx.conn())
    .await?)
}
