//! Operator statements of the composition root: readiness, the embedded server's database.

use crate::error::StoreError;
use sqlx::PgConnection;

/// Whether `pool` reaches the database (one trivial statement).
pub async fn reachable(pool: &crate::RolePool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Creates database `name` on the server `conn` reaches unless it exists (as a superuser, on
/// the maintenance database). Returns whether it created it.
pub async fn create_database_if_missing(conn: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    Ok(!exists)
}
