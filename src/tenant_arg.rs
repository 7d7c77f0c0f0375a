//! A tenant named on the command line: by its id or by its slug, looked up through `store`.

use anyhow::Context;
use keel_store::analyst::{self, TenantInfo};
use sqlx::{Connection, PgConnection};

/// The tenant named by id or, failing that, by slug; a tenant that does not exist is an error
/// naming it.
pub async fn find(conn: &mut PgConnection, tenant: &str) -> anyhow::Result<TenantInfo> {
    match tenant.trim().parse::<uuid::Uuid>() {
        Ok(id) => analyst::tenant_by_id(conn, id).await?.with_context(|| format!("there is no tenant {id}")),
        Err(_) => analyst::tenant_by_slug(conn, tenant.trim()).await?.with_context(|| {
            format!(
                "there is no tenant with id or slug {tenant:?} (a tenant provisioned a moment ago may not be in the \
                 platform view yet: use its id)"
            )
        }),
    }
}

/// `find` on a connection of its own to `database_url`.
pub async fn find_at(database_url: &str, tenant: &str) -> anyhow::Result<TenantInfo> {
    let mut conn = PgConnection::connect(database_url).await.context("cannot connect to the database")?;
    let info = find(&mut conn, tenant).await;
    let _ = conn.close().await;
    info
}
