//! Read tables: how projections write them and how the query side reads them.

pub mod members;
pub mod projects;
pub mod tasks;
pub mod tenants;
pub mod throughput;
pub mod usage;

/// Deletes the tenant's rows from a projection's tables (its answer to `TenantErased`).
pub(crate) async fn purge(
    conn: &mut sqlx::PgConnection,
    tenant: uuid::Uuid,
    tables: &[&'static str],
) -> Result<(), crate::StoreError> {
    for table in tables {
        // `table` is one of the fixed names the projections pass, never input.
        let sql = format!("DELETE FROM {table} WHERE tenant_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).execute(&mut *conn).await?;
    }
    Ok(())
}

/// One decoded event of a projection batch.
pub type Item<'a> = (&'a crate::log::RecordedEvent, keel_domain::Event);

/// Splits a batch into maximal runs of events of the same type, in log order: a run of creations
/// can be written with one statement without reordering anything.
pub fn runs<'a, 'b>(items: &'b [Item<'a>]) -> impl Iterator<Item = &'b [Item<'a>]> {
    items.chunk_by(|a, b| std::mem::discriminant(&a.1) == std::mem::discriminant(&b.1))
}
