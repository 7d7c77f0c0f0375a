//! `keel analyst create|list|revoke`: PostgreSQL logins for analysts, each bound to one tenant.

use crate::cli::AnalystCmd;
use anyhow::{Context, bail};
use keel_store::analyst::{self, LoginName};
use rand::Rng;
use sqlx::{Connection, PgConnection};

/// Query parameters of DATABASE_URL that say where and how to connect, and so are kept in an
/// analyst's connection string; every other one (`user`, `password`, `options`, client
/// certificates...) belongs to the owner and is left out.
const KEPT_PARAMS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcrl",
    "target_session_attrs",
    "connect_timeout",
];

pub async fn run(database_url: &str, command: AnalystCmd) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(database_url).await.context("cannot connect to DATABASE_URL")?;
    let result = match command {
        AnalystCmd::Create { tenant, login } => create(&mut conn, database_url, &tenant, login.as_deref()).await,
        AnalystCmd::List => list(&mut conn).await,
        AnalystCmd::Revoke { login } => revoke(&mut conn, &login).await,
    };
    let _ = conn.close().await;
    result.map_err(|e| {
        let text = format!("{e:#}");
        // A database without migration 0010 has no mapping table: say what to do about it.
        if text.contains("analyst_logins") && text.contains("does not exist") {
            e.context("the database has no analyst logins table (run keel migrate)")
        } else {
            e
        }
    })
}

async fn create(conn: &mut PgConnection, database_url: &str, tenant: &str, login: Option<&str>) -> anyhow::Result<()> {
    let info = crate::tenant_arg::find(conn, tenant).await?;
    if info.status == keel_domain::tenant::TenantStatus::Erased {
        bail!("tenant {} ({}) is erased: it has nothing to report", info.tenant_id, info.slug);
    }
    let login = match login {
        Some(l) => LoginName::parse(l)?,
        None => {
            LoginName::parse(&format!("keel_analyst_{}", random_chars(12, b"abcdefghijklmnopqrstuvwxyz0123456789")))?
        }
    };
    let password = random_chars(32, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
    // Built before the role exists, so a URL it cannot be built from leaves nothing behind.
    let url = connection_string(database_url, login.as_str(), &password)?;
    analyst::create(conn, &login, &password, info.tenant_id).await?;
    eprintln!(
        "keel: created analyst login {login} for tenant {} ({}); it reads only that tenant's rows in schema reporting",
        info.tenant_id, info.slug
    );
    println!("{url}");
    Ok(())
}

async fn list(conn: &mut PgConnection) -> anyhow::Result<()> {
    let logins = analyst::list(conn).await?;
    println!("{:<40} {:<36} {:<24} created", "login", "tenant", "slug");
    for l in logins {
        println!(
            "{:<40} {:<36} {:<24} {}{}",
            l.login,
            l.tenant_id,
            l.slug.as_deref().unwrap_or("-"),
            l.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            if l.role_exists { "" } else { " (role missing)" }
        );
    }
    Ok(())
}

async fn revoke(conn: &mut PgConnection, login: &str) -> anyhow::Result<()> {
    let login = LoginName::parse(login)?;
    let Some(r) = analyst::revoke(conn, &login).await? else {
        bail!("{login} is not an analyst login of this database (see keel analyst list)");
    };
    if let Some(e) = &r.terminate_error {
        eprintln!("keel: could not terminate the sessions of {login} ({e}); they read nothing from now on");
    }
    println!("revoked {login}: mapping and role dropped, {} session(s) terminated", r.sessions_terminated);
    Ok(())
}

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

/// `postgres://login:password@host:port/db` for an analyst: DATABASE_URL's host, port, database
/// and connection parameters, with the analyst's credentials instead of the owner's.
pub fn connection_string(database_url: &str, login: &str, password: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        bail!("DATABASE_URL is not a postgres:// URL");
    }
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| KEPT_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.set_username(login).and_then(|()| u.set_password(Some(password))).map_err(|()| {
        anyhow::anyhow!("DATABASE_URL names no host; give the analyst host, port and database by hand")
    })?;
    u.set_query(None);
    if !kept.is_empty() {
        u.query_pairs_mut().extend_pairs(kept);
    }
    u.set_fragment(None);
    Ok(u.into())
}

#[cfg(test)]
mod tests {
    use super::connection_string;

    #[test]
    fn the_connection_string_has_the_analysts_credentials_and_only_the_servers_parameters() {
        let url = connection_string(
            "postgres://owner:s3cret@db.example.com:6543/keel?sslmode=require&password=x&options=-c%20role%3Dpostgres&user=owner",
            "keel_analyst_ab12",
            "Pw0123456789abcdefXYZ",
        )
        .unwrap();
        assert_eq!(url, "postgres://keel_analyst_ab12:Pw0123456789abcdefXYZ@db.example.com:6543/keel?sslmode=require");
    }

    #[test]
    fn the_connection_string_keeps_a_url_without_parameters_plain() {
        let url = connection_string("postgresql://postgres@127.0.0.1:5432/keel_t_1_2", "a", "p").unwrap();
        assert_eq!(url, "postgresql://a:p@127.0.0.1:5432/keel_t_1_2");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused() {
        assert!(connection_string("mysql://u@h/db", "a", "p").is_err());
        assert!(connection_string("not a url", "a", "p").is_err());
    }
}
