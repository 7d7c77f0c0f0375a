//! Analyst logins: LOGIN roles in `keel_analyst`, each bound to one tenant by `analyst_logins`,
//! managed over a connection of the `DATABASE_URL` role (which owns the mapping and can create
//! roles).

use crate::error::StoreError;
use sqlx::{Connection, Executor, PgConnection, Row};
use uuid::Uuid;

/// A login role's name: lower-case letters, digits and `_`, starting with a letter or `_`, at
/// most 63 bytes, not reserved (`pg_`), so it is written into SQL as a plain quoted identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName(String);

impl LoginName {
    pub fn parse(s: &str) -> Result<LoginName, StoreError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && !s.starts_with("pg_")
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(StoreError::Analyst(format!(
                "login {s:?} must be 1 to 63 lower-case letters, digits and _, start with a letter or _, and not start with pg_"
            )));
        }
        Ok(LoginName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LoginName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant as the platform knows it (the inline `tenants` row).
#[derive(Debug, Clone)]
pub struct TenantInfo {
    pub tenant_id: Uuid,
    pub slug: String,
    /// active, suspended or erased.
    pub status: keel_domain::tenant::TenantStatus,
}

#[derive(Debug, Clone)]
pub struct AnalystLogin {
    pub login: String,
    pub tenant_id: Uuid,
    /// From the platform view (`rm_tenants`); `None` until its projection has the tenant.
    pub slug: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// False when the role was dropped by hand and only the mapping is left.
    pub role_exists: bool,
}

/// The tenant with this id, read with the tenant set (RLS applies to a non-superuser owner).
pub async fn tenant_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<TenantInfo>, StoreError> {
    let mut tx = conn.begin().await?;
    let info = tenant_in(&mut tx, id).await?;
    tx.rollback().await?;
    Ok(info)
}

async fn tenant_in(conn: &mut PgConnection, id: Uuid) -> Result<Option<TenantInfo>, StoreError> {
    sqlx::query("SELECT set_config('keel.tenant_id', $1, true)").bind(id.to_string()).execute(&mut *conn).await?;
    let row =
        sqlx::query("SELECT slug, status FROM tenants WHERE tenant_id = $1").bind(id).fetch_optional(conn).await?;
    row.map(|r| {
        let status = keel_domain::tenant::TenantStatus::try_from(r.try_get::<String, _>("status")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(TenantInfo { tenant_id: id, slug: r.try_get("slug")?, status })
    })
    .transpose()
}

/// The tenant with this slug. Slugs are found on the platform view (`rm_tenants`, as the
/// reader), which follows provisioning by a moment; the tenant row itself is then read.
pub async fn tenant_by_slug(conn: &mut PgConnection, slug: &str) -> Result<Option<TenantInfo>, StoreError> {
    let mut tx = conn.begin().await?;
    tx.execute("SET LOCAL ROLE keel_reader; SELECT set_config('keel.platform', 'on', true)").await?;
    let id: Option<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM rm_tenants WHERE slug = $1")
        .bind(slug)
        .fetch_optional(&mut *tx)
        .await?;
    tx.rollback().await?;
    match id {
        Some(id) => tenant_by_id(conn, id).await,
        None => Ok(None),
    }
}

/// Creates `login` (LOGIN, member of keel_analyst, nothing more) with `password` and binds it to
/// `tenant`, in one transaction: either both exist afterwards or neither. The server is sent a
/// SCRAM-SHA-256 verifier of the password, never the password itself, so it cannot appear in a
/// statement log or `pg_stat_statements`.
pub async fn create(
    conn: &mut PgConnection,
    login: &LoginName,
    password: &str,
    tenant: Uuid,
) -> Result<(), StoreError> {
    if password.len() < 16 || !password.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(StoreError::Analyst("an analyst password is at least 16 ASCII letters and digits".into()));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system provides randomness");
    let verifier = scram_sha256_verifier(password, &salt, SCRAM_ITERATIONS);
    let mut tx = conn.begin().await?;
    match tenant_in(&mut tx, tenant).await? {
        None => return Err(StoreError::Analyst(format!("there is no tenant {tenant}"))),
        Some(t) if t.status == keel_domain::tenant::TenantStatus::Erased => {
            return Err(StoreError::Analyst(format!(
                "tenant {tenant} ({}) is erased: it has nothing to report",
                t.slug
            )));
        }
        Some(_) => {}
    }
    let sql = format!(
        "CREATE ROLE \"{login}\" LOGIN PASSWORD '{verifier}' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
         NOBYPASSRLS INHERIT IN ROLE keel_analyst"
    );
    if let Err(e) = tx.execute(sqlx::AssertSqlSafe(sql)).await {
        if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42710") {
            return Err(StoreError::Analyst(format!("a role named {login} exists already")));
        }
        return Err(e.into());
    }
    sqlx::query("INSERT INTO analyst_logins (login, tenant_id) VALUES ($1, $2)")
        .bind(login.as_str())
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// PostgreSQL's default (and, before 16, only) SCRAM iteration count.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, 7677):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64. The password must need
/// no SASLprep normalisation (ASCII letters and digits do not).
pub fn scram_sha256_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let hmac = |key: &[u8], data: &[&[u8]]| -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
        for d in data {
            m.update(d);
        }
        m.finalize().into_bytes().into()
    };
    // PBKDF2-HMAC-SHA-256, one 32-byte block.
    let mut u = hmac(password.as_bytes(), &[salt, &1u32.to_be_bytes()]);
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &[&u]);
        salted.iter_mut().zip(u).for_each(|(s, x)| *s ^= x);
    }
    let stored_key = Sha256::digest(hmac(&salted, &[b"Client Key"]));
    let server_key = hmac(&salted, &[b"Server Key"]);
    format!("SCRAM-SHA-256${iterations}:{}${}:{}", B64.encode(salt), B64.encode(stored_key), B64.encode(server_key))
}

/// Every analyst login of this database, oldest first, with its tenant's slug where the
/// platform view has it.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<AnalystLogin>, StoreError> {
    let mut tx = conn.begin().await?;
    let rows = sqlx::query(
        "SELECT a.login::text AS login, a.tenant_id, a.created_at,
                EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = a.login) AS role_exists
           FROM analyst_logins a ORDER BY a.created_at, a.login",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.execute("SET LOCAL ROLE keel_reader; SELECT set_config('keel.platform', 'on', true)").await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.try_get("tenant_id")).collect::<Result<_, _>>()?;
    let slugs: Vec<(Uuid, String)> = sqlx::query_as("SELECT tenant_id, slug FROM rm_tenants WHERE tenant_id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    tx.rollback().await?;
    rows.iter()
        .map(|r| {
            let tenant_id: Uuid = r.try_get("tenant_id")?;
            Ok(AnalystLogin {
                login: r.try_get("login")?,
                tenant_id,
                slug: slugs.iter().find(|(t, _)| *t == tenant_id).map(|(_, s)| s.clone()),
                created_at: r.try_get("created_at")?,
                role_exists: r.try_get("role_exists")?,
            })
        })
        .collect()
}

/// What `revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Sessions of the login that were terminated.
    pub sessions_terminated: i64,
    /// Set when its sessions could not be terminated (the owner may not signal them); they
    /// read nothing from then on, since the mapping is gone.
    pub terminate_error: Option<String>,
}

/// Removes an analyst login of this database: the mapping goes and the role stops accepting
/// logins in one transaction (from its next statement a live session reads no row), then its
/// sessions are terminated and the role dropped. `None` when this database has no such analyst
/// login: a role that is not in `analyst_logins` here is never touched.
pub async fn revoke(conn: &mut PgConnection, login: &LoginName) -> Result<Option<Revoked>, StoreError> {
    let mut tx = conn.begin().await?;
    let found: Option<String> = sqlx::query_scalar("DELETE FROM analyst_logins WHERE login = $1 RETURNING login::text")
        .bind(login.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if found.is_none() {
        tx.rollback().await?;
        return Ok(None);
    }
    // Only a plain member of keel_analyst is dropped, whatever the mapping says.
    let role: Option<(i64, bool)> = sqlx::query_as(
        "SELECT oid::bigint, (NOT rolsuper AND pg_has_role(oid, 'keel_analyst', 'MEMBER')) FROM pg_roles WHERE rolname = $1",
    )
    .bind(login.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let oid = match role {
        None => {
            tx.commit().await?;
            return Ok(Some(Revoked { sessions_terminated: 0, terminate_error: None }));
        }
        Some((_, false)) => {
            return Err(StoreError::Analyst(format!(
                "role {login} is not a plain member of keel_analyst; it is left alone (nothing changed)"
            )));
        }
        Some((oid, true)) => oid,
    };
    tx.execute(sqlx::AssertSqlSafe(format!("ALTER ROLE \"{login}\" NOLOGIN"))).await?;
    tx.commit().await?;

    let terminated: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
          WHERE usesysid = $1::bigint::oid AND pid <> pg_backend_pid()",
    )
    .bind(oid)
    .fetch_one(&mut *conn)
    .await;
    let (sessions_terminated, terminate_error) = match terminated {
        Ok(n) => (n, None),
        Err(e) => (0, Some(e.to_string())),
    };
    conn.execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{login}\""))).await?;
    Ok(Some(Revoked { sessions_terminated, terminate_error }))
}
