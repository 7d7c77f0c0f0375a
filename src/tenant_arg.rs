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

/// The tenant named by id or slug as `(id, slug)`: looked up in the platform view, or, for an id
/// the view does not know, taken as it is when the directory places it in a dedicated database
/// (whose tenants the pool's platform view does not list).
pub async fn find_anywhere(database_url: &str, tenant: &str) -> anyhow::Result<(uuid::Uuid, String)> {
    let mut conn = PgConnection::connect(database_url).await.context("cannot connect to the database")?;
    let found = find(&mut conn, tenant).await;
    let result = match (found, tenant.trim().parse::<uuid::Uuid>()) {
        (Ok(info), _) => Ok((info.tenant_id, info.slug)),
        (Err(e), Ok(id)) => match keel_store::placement::placed(&mut conn, id).await? {
            Some(at) if at != keel_store::placement::POOL => Ok((id, format!("in {at}"))),
            _ => Err(e),
        },
        (Err(e), Err(_)) => Err(e),
    };
    let _ = conn.close().await;
    result
}
