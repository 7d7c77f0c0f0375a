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

/// Empties the live `tables` of projection `name` and removes its checkpoint, in one
/// transaction, so that it replays the log from the start (as the owner; `keel bench`'s
/// catch-up case).
pub async fn reset_live(admin: &sqlx::PgPool, name: &str, tables: &[&str]) -> Result<(), StoreError> {
    let mut tx = admin.begin().await?;
    for t in tables {
        let sql = format!("TRUNCATE \"{}\"", t.replace('"', ""));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(name).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Points the caller's transaction at the rebuilt copies: unqualified table names resolve to
/// `keel_rebuild` first.
pub async fn use_rebuild_tables(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SET LOCAL search_path = keel_rebuild, public").execute(conn).await?;
    Ok(())
}

/// Runs the rest of the owner's transaction as `keel_projector` (the swap applies the last
/// events with the projector's rights) until `back_to_owner`.
pub async fn act_as_projector(admin: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SET LOCAL ROLE keel_projector").execute(&mut *admin).await?;
    Ok(())
}

/// Back to the owner and the live tables in the caller's transaction, for the swap's DDL.
pub async fn back_to_owner(admin: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("RESET ROLE").execute(&mut *admin).await?;
    sqlx::query("SET LOCAL search_path = public").execute(&mut *admin).await?;
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
