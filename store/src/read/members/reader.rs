//! The reader's queries of `rm_members`.

use crate::error::StoreError;

/// Members with one role, by join date: the list query `rm_members_role_idx` serves.
pub const BY_ROLE: &str = "SELECT member_id, user_id, email, name, role, status, joined_at
   FROM rm_members WHERE tenant_id = $1 AND role = $2 ORDER BY joined_at, member_id LIMIT $3";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub member_id: uuid::Uuid,
    pub user_id: String,
    pub email: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: keel_domain::Role,
    #[sqlx(try_from = "String")]
    pub status: keel_domain::member::MemberStatus,
    pub joined_at: chrono::DateTime<chrono::Utc>,
}

/// Members by join date after `(joined_at, member_id)`, optionally of one role.
pub async fn page(
    tx: &mut crate::TenantTx,
    role: Option<&str>,
    after: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>,
    limit: i64,
) -> Result<Vec<MemberRow>, StoreError> {
    let tenant = tx.tenant().0;
    let (at, id) = match after {
        Some((a, i)) => (Some(a), Some(i)),
        None => (None, None),
    };
    Ok(sqlx::query_as(
        "SELECT member_id, user_id, email, name, role, status, joined_at FROM rm_members
          WHERE tenant_id = $1 AND ($2::text IS NULL OR role = $2)
            AND ($3::timestamptz IS NULL OR (joined_at, member_id) > ($3, $4))
          ORDER BY joined_at, member_id LIMIT $5",
    )
    .bind(tenant)
    .bind(role)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// How many members match, counted up to `COUNT_CAP`.
pub async fn count(
    tx: &mut crate::TenantTx,
    role: Option<&str>,
    active_only: bool,
) -> Result<crate::read::Count, StoreError> {
    let tenant = tx.tenant().0;
    let sql = crate::read::capped_sql(
        "SELECT 1 FROM rm_members WHERE tenant_id = $1 AND ($2::text IS NULL OR role = $2)
            AND (NOT $3 OR status = 'active')",
    );
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(role)
        .bind(active_only)
        .fetch_one(tx.conn())
        .await?;
    Ok(crate::read::Count::from_limited(n))
}

/// Members by id, in one statement.
pub async fn by_ids(tx: &mut crate::TenantTx, ids: &[uuid::Uuid]) -> Result<Vec<MemberRow>, StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_as(
        "SELECT member_id, user_id, email, name, role, status, joined_at FROM rm_members
          WHERE tenant_id = $1 AND member_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(tx.conn())
    .await?)
}
