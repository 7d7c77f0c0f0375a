//! The reader's queries of `rm_tenants`.

use crate::error::StoreError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlatformTenantRow {
    pub tenant_id: uuid::Uuid,
    pub name: String,
    pub slug: String,
    #[sqlx(try_from = "String")]
    pub plan: keel_domain::Plan,
    #[sqlx(try_from = "String")]
    pub status: keel_domain::tenant::TenantStatus,
    pub seats_used: i32,
    pub active_projects: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Every tenant (a platform transaction), oldest first, after `(created_at, tenant_id)`.
pub async fn page(
    tx: &mut crate::TenantTx,
    plan: Option<&str>,
    after: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>,
    limit: i64,
) -> Result<Vec<PlatformTenantRow>, StoreError> {
    let (at, id) = match after {
        Some((a, i)) => (Some(a), Some(i)),
        None => (None, None),
    };
    Ok(sqlx::query_as(
        "SELECT tenant_id, name, slug, plan, status, seats_used, active_projects, created_at FROM rm_tenants
          WHERE ($1::text IS NULL OR plan = $1) AND ($2::timestamptz IS NULL OR (created_at, tenant_id) > ($2, $3))
          ORDER BY created_at, tenant_id LIMIT $4",
    )
    .bind(plan)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// How many tenants (of `plan`) there are, counted up to `COUNT_CAP`.
pub async fn count(tx: &mut crate::TenantTx, plan: Option<&str>) -> Result<crate::read::Count, StoreError> {
    let sql = crate::read::capped_sql("SELECT 1 FROM rm_tenants WHERE ($1::text IS NULL OR plan = $1)");
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(plan).fetch_one(tx.conn()).await?;
    Ok(crate::read::Count::from_limited(n))
}

pub async fn by_plan(tx: &mut crate::TenantTx) -> Result<Vec<(keel_domain::Plan, i64)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT plan, count(*) FROM rm_tenants GROUP BY plan ORDER BY plan")
        .fetch_all(tx.conn())
        .await?;
    rows.into_iter()
        .map(|(plan, n)| Ok((keel_domain::Plan::try_from(plan).map_err(|e| StoreError::Corrupt(e.to_string()))?, n)))
        .collect()
}
