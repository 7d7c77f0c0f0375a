//! The DDL side of a read-model rebuild, run as the database owner (`DATABASE_URL`).

use crate::error::StoreError;
use sqlx::PgConnection;

/// Fresh, empty copies of `tables` in `keel_rebuild`, protected like the originals.
pub async fn prepare(admin: &mut PgConnection, tables: &[&str]) -> Result<(), StoreError> {
    for t in tables {
        sqlx::query("SELECT keel_prepare_rebuild($1)").bind(*t).execute(&mut *admin).await?;
    }
    Ok(())
}

/// Moves the rebuilt `tables` into `public` (in the caller's transaction) and points the
/// reporting views at them.
pub async fn swap(admin: &mut PgConnection, tables: &[&str]) -> Result<(), StoreError> {
    for t in tables {
        sqlx::query("SELECT keel_swap_rebuilt($1)").bind(*t).execute(&mut *admin).await?;
    }
    sqlx::query("SELECT keel_reporting_views()").execute(&mut *admin).await?;
    Ok(())
}

/// Drops the tables a swap retired.
pub async fn drop_retired(admin: &mut PgConnection, tables: &[&str]) -> Result<(), StoreError> {
    for t in tables {
        let sql = format!("DROP TABLE IF EXISTS keel_retired.\"{}\"", t.replace('"', ""));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *admin).await?;
    }
    Ok(())
}

/// Drops the copies a rebuild made in `keel_rebuild` (a failed or interrupted rebuild).
pub async fn discard(admin: &mut PgConnection, tables: &[&str]) -> Result<(), StoreError> {
    for t in tables {
        let sql = format!("DROP TABLE IF EXISTS keel_rebuild.\"{}\"", t.replace('"', ""));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *admin).await?;
    }
    Ok(())
}
