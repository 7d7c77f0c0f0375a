//! Analyst logins (`keel analyst create|list|revoke`): each is bound to one tenant by the
//! database, whatever the session sets or whichever role it switches to.

use crate::helpers::{TestApp, server_url, spawn_app};
use keel_domain::TenantId;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use std::process::Output;
use std::time::{Duration, Instant};
use uuid::Uuid;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Every relation an analyst can read, as `schema.name`; a new grant to keel_analyst fails the
/// test until it is listed here and shown to be bound to the tenant.
const ANALYST_RELATIONS: &[&str] = &[
    "public.rm_members",
    "public.rm_projects",
    "public.rm_task_throughput",
    "public.rm_tasks",
    "public.rm_tenants",
    "public.rm_usage_daily",
    "public.rm_usage_monthly",
    "reporting.members",
    "reporting.projects",
    "reporting.task_throughput_daily",
    "reporting.tasks",
    "reporting.tenant",
    "reporting.usage_daily",
    "reporting.usage_monthly",
];

/// Runs the `keel` binary against the test's database.
pub async fn keel(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(KEEL)
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env_remove("KEEL_MASTER_KEY")
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env("KEEL_LOG", "warn")
        .env("KEEL_DATA_DIR", std::env::temp_dir().join(format!("keel-analyst-{}", std::process::id())))
        .output()
        .await
        .expect("keel runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An analyst login made by `keel analyst create`; its role (cluster-wide, unlike the test's
/// database) is dropped when this is dropped.
pub struct AnalystLogin {
    pub login: String,
    pub url: String,
}

impl AnalystLogin {
    pub async fn create(app: &TestApp, tenant: &str, login: Option<&str>) -> AnalystLogin {
        let mut args = vec!["analyst", "create", "--tenant", tenant];
        if let Some(l) = login {
            args.extend(["--login", l]);
        }
        let out = keel(app, &args).await;
        assert!(out.status.success(), "analyst create: {}", text(&out.stderr));
        let url = text(&out.stdout).trim().to_owned();
        let login = url
            .strip_prefix("postgres://")
            .and_then(|r| r.split_once(':'))
            .map(|(l, _)| l.to_owned())
            .unwrap_or_else(|| panic!("a postgres:// URL with a login: {url}"));
        AnalystLogin { login, url }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("the analyst connects with the printed URL")
    }
}

impl Drop for AnalystLogin {
    fn drop(&mut self) {
        let login = self.login.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&server_url()).await {
                    let _ = c.execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{login}\""))).await;
                }
            })
        })
        .join();
    }
}

/// A unique login name for this process (roles are shared by every test database on the server).
pub fn test_login(tag: &str) -> String {
    format!("keel_t_an_{}_{tag}", std::process::id())
}

/// Two tenants with rows in every read table, projected.
async fn two_tenants(app: &TestApp, slug_a: &str, slug_b: &str) -> (TenantId, TenantId) {
    let mut tenants = vec![];
    for (slug, projects) in [(slug_a, 1), (slug_b, 2)] {
        let (t, owner) = app.provision(slug).await;
        for n in 0..projects {
            let p = app.create_project(&owner, &format!("{slug}-{n}")).await.body["id"].as_str().unwrap().to_owned();
            let r = app.post(&format!("/api/v1/projects/{p}/tasks"), &owner, json!({"title": "T"})).await;
            assert_eq!(r.status, 201);
        }
        let r = app
            .post(
                "/api/v1/usage",
                &owner,
                json!({"records": [{"id": "1", "metric": "api.calls", "quantity": 3, "occurred_at": chrono::Utc::now()}]}),
            )
            .await;
        assert_eq!(r.status, 201);
        tenants.push(t);
    }
    // Every read table has rows of both tenants (as a superuser sees them).
    let mut su = app.db.superuser().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for rel in ANALYST_RELATIONS.iter().filter(|r| r.starts_with("public.")) {
        loop {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(DISTINCT tenant_id) FROM {rel} WHERE tenant_id IN ($1, $2)"
            )))
            .bind(tenants[0].0)
            .bind(tenants[1].0)
            .fetch_one(&mut su)
            .await
            .unwrap();
            if n == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "{rel} has rows of both tenants");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (tenants[0], tenants[1])
}

/// Every relation the session can read, as `schema.name`.
async fn readable(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
            AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
          ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// Reads every analyst relation: each has rows, all of them `tenant`'s.
async fn sees_only(conn: &mut PgConnection, tenant: TenantId, when: &str) {
    for rel in ANALYST_RELATIONS {
        let (all, foreign): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE tenant_id IS DISTINCT FROM $1) FROM {rel}"
        )))
        .bind(tenant.0)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{when}: {rel}: {e}"));
        assert_eq!(foreign, 0, "{when}: {rel} shows no other tenant");
        assert!(all > 0, "{when}: {rel} shows its own tenant's rows");
    }
}

#[tokio::test]
async fn an_analyst_login_reads_only_its_tenant_whatever_the_session_sets() {
    let app = spawn_app().await;
    let (a, b) = two_tenants(&app, "bound-a", "bound-b").await;

    // A by its id (generated login), B by its slug (a given login).
    let analyst_a = AnalystLogin::create(&app, &a.0.to_string(), None).await;
    assert!(analyst_a.login.starts_with("keel_analyst_"), "{}", analyst_a.login);
    assert!(analyst_a.url.ends_with(&format!("@127.0.0.1:5432/{}", app.db.name)), "{}", analyst_a.url);
    let analyst_b = AnalystLogin::create(&app, "bound-b", Some(&test_login("b"))).await;

    // The server stores a SCRAM verifier of the printed password (the test server trusts every
    // TCP login, so the password itself is checked here rather than by logging in).
    let password = analyst_a.url.split_once("@").unwrap().0.rsplit_once(':').unwrap().1.to_owned();
    assert_eq!(stored_verifier_for(&app, &analyst_a.login, &password).await, (true, true), "{}", analyst_a.url);

    let mut conn = analyst_a.connect().await;
    let who: (String, String) =
        sqlx::query_as("SELECT session_user::text, current_user::text").fetch_one(&mut conn).await.unwrap();
    assert_eq!(who, (analyst_a.login.clone(), analyst_a.login.clone()));
    assert_eq!(readable(&mut conn).await, ANALYST_RELATIONS, "what an analyst can read");
    // The views run as the analyst, so RLS of the tables beneath applies to it.
    let definer_views: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'reporting' AND c.relkind = 'v'
            AND NOT coalesce('security_invoker=true' = ANY(c.reloptions), false)",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(definer_views, Vec::<String>::new(), "every reporting view is security_invoker");

    sees_only(&mut conn, a, "as created").await;
    conn.execute(sqlx::AssertSqlSafe(format!("SET keel.tenant_id = '{}'", b.0))).await.unwrap();
    sees_only(&mut conn, a, "after SET keel.tenant_id = B").await;
    conn.execute(sqlx::AssertSqlSafe(format!("SELECT set_config('keel.tenant_id', '{}', false)", b.0))).await.unwrap();
    conn.execute("SET keel.platform = on").await.unwrap();
    sees_only(&mut conn, a, "with keel.platform = on").await;
    conn.execute("SET ROLE keel_analyst").await.unwrap();
    sees_only(&mut conn, a, "after SET ROLE keel_analyst").await;
    conn.execute("RESET ROLE").await.unwrap();
    sees_only(&mut conn, a, "after RESET ROLE").await;
    conn.execute("RESET ALL").await.unwrap();
    sees_only(&mut conn, a, "after RESET ALL").await;

    for sql in [
        "SET SESSION AUTHORIZATION postgres".to_owned(),
        format!("SET SESSION AUTHORIZATION {}", analyst_b.login),
        "SET ROLE keel_reader".to_owned(),
        "SET ROLE keel_writer".to_owned(),
        "SET ROLE keel_projector".to_owned(),
        "SET ROLE postgres".to_owned(),
        format!("SET ROLE {}", analyst_b.login),
        "SELECT * FROM analyst_logins".to_owned(),
        "UPDATE analyst_logins SET tenant_id = tenant_id".to_owned(),
        format!("ALTER ROLE {} RENAME TO {}", analyst_b.login, test_login("renamed")),
        format!("GRANT keel_reader TO {}", analyst_a.login),
    ] {
        let err = conn.execute(sqlx::AssertSqlSafe(sql.clone())).await.expect_err(&sql);
        let err = err.to_string();
        assert!(err.contains("permission denied") || err.contains("must have admin option"), "{sql}: {err}");
    }
    sees_only(&mut conn, a, "after the refused statements").await;

    // A temporary table of the same name does not stand in for the mapping.
    conn.execute("CREATE TEMP TABLE analyst_logins (login name, tenant_id uuid, created_at timestamptz)")
        .await
        .unwrap();
    sqlx::query("INSERT INTO analyst_logins VALUES (session_user, $1, now())")
        .bind(b.0)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute("SET search_path = pg_temp, public").await.unwrap();
    sees_only(&mut conn, a, "with a temporary analyst_logins mapping it to B").await;
    conn.execute("RESET search_path").await.unwrap();
    // The only function that runs with other rights which an analyst may call is the lookup.
    let definers: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND has_function_privilege(p.oid, 'EXECUTE')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(definers, ["keel_analyst_tenant"]);

    // The other analyst, made by slug, sees its own tenant and nothing of A.
    let mut conn_b = analyst_b.connect().await;
    conn_b.execute(sqlx::AssertSqlSafe(format!("SET keel.tenant_id = '{}'", a.0))).await.unwrap();
    sees_only(&mut conn_b, b, "B's analyst after SET keel.tenant_id = A").await;

    // list shows both with their tenants.
    let out = keel(&app, &["analyst", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let line = |login: &str| listed.lines().find(|l| l.starts_with(login)).map(str::to_owned);
    let la = line(&analyst_a.login).unwrap_or_else(|| panic!("{} listed:\n{listed}", analyst_a.login));
    assert!(la.contains(&a.0.to_string()) && la.contains("bound-a"), "{la}");
    let lb = line(&analyst_b.login).unwrap_or_else(|| panic!("{} listed:\n{listed}", analyst_b.login));
    assert!(lb.contains(&b.0.to_string()) && lb.contains("bound-b"), "{lb}");

    // revoke drops the login: its session is ended, it cannot connect again, the mapping is gone.
    let out = keel(&app, &["analyst", "revoke", &analyst_a.login]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 session(s) terminated"), "{}", text(&out.stdout));
    assert!(conn.execute("SELECT 1").await.is_err(), "the revoked login's session is over");
    let err = PgConnection::connect(&analyst_a.url).await.expect_err("a revoked login cannot connect");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let mut su = app.db.superuser().await;
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1), (SELECT count(*) FROM analyst_logins WHERE login = $1)",
    )
    .bind(&analyst_a.login)
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert_eq!(left, (0, 0), "neither the role nor the mapping is left");
    let out = keel(&app, &["analyst", "list"]).await;
    assert!(!text(&out.stdout).contains(&analyst_a.login), "{}", text(&out.stdout));
    // B's analyst is untouched.
    sees_only(&mut conn_b, b, "B's analyst after A's revoke").await;
    let out = keel(&app, &["analyst", "revoke", &analyst_a.login]).await;
    assert!(!out.status.success(), "a second revoke fails");
    assert!(text(&out.stderr).contains("is not an analyst login"), "{}", text(&out.stderr));
}

/// The role's stored SCRAM verifier, recomputed from `password` with its salt and iterations:
/// (it is a SCRAM-SHA-256 verifier, it matches).
async fn stored_verifier_for(app: &TestApp, role: &str, password: &str) -> (bool, bool) {
    use base64::Engine as _;
    let mut su = app.db.superuser().await;
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .fetch_one(&mut su)
        .await
        .unwrap();
    let Some((iterations, salt)) = stored
        .strip_prefix("SCRAM-SHA-256$")
        .and_then(|r| r.split_once('$'))
        .and_then(|(params, _)| params.split_once(':'))
    else {
        return (false, false);
    };
    let salt = base64::engine::general_purpose::STANDARD.decode(salt).unwrap();
    (true, keel_store::analyst::scram_sha256_verifier(password, &salt, iterations.parse().unwrap()) == stored)
}

#[tokio::test]
async fn the_scram_verifier_sent_for_an_analyst_is_the_one_postgresql_computes() {
    let app = spawn_app().await;
    let role = test_login("scram");
    let guard = AnalystLogin { login: role.clone(), url: String::new() };
    let mut su = app.db.superuser().await;
    su.execute("SET password_encryption = 'scram-sha-256'").await.unwrap();
    let password = "Pw0123456789abcdefXYZ";
    su.execute(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"))).await.unwrap();
    assert_eq!(stored_verifier_for(&app, &role, password).await, (true, true), "PostgreSQL's own hash");
    assert_eq!(stored_verifier_for(&app, &role, "another password").await, (true, false));
    drop(guard);
}

#[tokio::test]
async fn analyst_create_refuses_a_missing_or_erased_tenant_and_revoke_touches_no_other_role() {
    let app = spawn_app().await;
    let missing = Uuid::now_v7().to_string();
    for tenant in [missing.as_str(), "no-such-slug"] {
        let login = test_login("missing");
        let out = keel(&app, &["analyst", "create", "--tenant", tenant, "--login", &login]).await;
        assert!(!out.status.success(), "create for {tenant} fails");
        assert!(text(&out.stderr).contains("there is no tenant"), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "no connection string: {}", text(&out.stdout));
        let mut su = app.db.superuser().await;
        let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
            .bind(&login)
            .fetch_one(&mut su)
            .await
            .unwrap();
        assert_eq!(roles, 0, "no role was made");
    }

    // An erased tenant has nothing to report.
    let (erased, _) = app.provision("analyst-erased").await;
    let r = app.post(&format!("/api/v1/tenants/{}/erase", erased.0), &app.platform_token(), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let out =
        keel(&app, &["analyst", "create", "--tenant", &erased.0.to_string(), "--login", &test_login("erased")]).await;
    assert!(!out.status.success(), "create for an erased tenant fails");
    assert!(text(&out.stderr).contains("is erased"), "{}", text(&out.stderr));

    // Roles that are not this database's analyst logins are never dropped.
    for role in ["postgres", "keel_analyst", "keel_reader"] {
        let out = keel(&app, &["analyst", "revoke", role]).await;
        assert!(!out.status.success(), "revoke {role} fails");
        assert!(text(&out.stderr).contains("is not an analyst login"), "{}", text(&out.stderr));
    }
    let mut su = app.db.superuser().await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_roles WHERE rolname IN ('postgres', 'keel_analyst', 'keel_reader')",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn a_session_without_an_analyst_login_reads_nothing_even_with_keel_tenant_id_set() {
    let app = spawn_app().await;
    let (a, _) = two_tenants(&app, "unbound-a", "unbound-b").await;
    // A superuser session that becomes keel_analyst: its session user has no mapping.
    let mut conn = app.db.superuser().await;
    conn.execute("SET ROLE keel_analyst").await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("SET keel.tenant_id = '{}'", a.0))).await.unwrap();
    for rel in ANALYST_RELATIONS {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {rel}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "{rel} is empty for an unmapped session");
    }
}

#[tokio::test]
async fn a_rebuilt_read_table_keeps_the_analyst_policies() {
    let app = spawn_app().await;
    let mut su = app.db.superuser().await;
    for rel in ANALYST_RELATIONS.iter().filter_map(|r| r.strip_prefix("public.")) {
        sqlx::query("SELECT keel_prepare_rebuild($1)").bind(rel).execute(&mut su).await.unwrap();
        let policies = |schema: &'static str| {
            sqlx::query_as::<_, (String, String, String, Vec<String>, Option<String>)>(
                "SELECT policyname::text, permissive, cmd, roles::text[], qual FROM pg_policies
                  WHERE schemaname = $1 AND tablename = $2 ORDER BY policyname",
            )
            .bind(schema)
            .bind(rel)
        };
        let live = policies("public").fetch_all(&mut su).await.unwrap();
        let rebuilt = policies("keel_rebuild").fetch_all(&mut su).await.unwrap();
        assert_eq!(rebuilt, live, "{rel}: the rebuilt table has the live table's policies");
        assert!(
            live.iter().any(|p| p.0 == format!("{rel}_analyst_only") && p.1 == "RESTRICTIVE"),
            "{rel}: the analyst's restrictive policy: {live:?}"
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE keel_rebuild.{rel}"))).execute(&mut su).await.unwrap();
    }
}

/// Drops roles made by a test when it ends, in order (after the database they own).
struct Roles(Vec<String>);

impl Drop for Roles {
    fn drop(&mut self) {
        let roles = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&server_url()).await {
                    for r in roles {
                        let _ = c.execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{r}\""))).await;
                    }
                }
            })
        })
        .join();
    }
}

#[tokio::test]
async fn an_owner_that_is_not_a_superuser_manages_analyst_logins_and_rls_binds_them() {
    // Production's shape: DATABASE_URL is the database's owner, which can create roles but is
    // no superuser, so forced RLS applies to it (and to keel_analyst_tenant(), which runs as it).
    let owner = test_login("owner");
    let analyst = test_login("of_owner");
    let roles = Roles(vec![analyst.clone(), owner.clone()]);
    let mut su = PgConnection::connect(&server_url()).await.unwrap();
    su.execute(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{owner}\" LOGIN CREATEROLE"))).await.unwrap();
    let (name, su_url) = crate::helpers::fresh_database().await;
    su.execute(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" OWNER TO \"{owner}\""))).await.unwrap();
    let mut owner_url = url::Url::parse(&su_url).unwrap();
    owner_url.set_username(&owner).unwrap();
    let owner_url = owner_url.to_string();
    keel_store::migrate(&owner_url).await.expect("the owner migrates");
    let store = keel_store::Store::connect(
        &owner_url,
        keel_store::PoolSizes { writer: 2, reader: 1, projector: 1 },
        Some(crate::helpers::master_key()),
    )
    .await
    .unwrap();
    let db = crate::helpers::TestDb { name, url: owner_url.clone(), store };
    let (a, b) = (db.provision("owner-a", "ada").await, db.provision("owner-b", "bob").await);
    // Read rows of both tenants (written as a superuser: no projection runs here).
    let mut su_db = PgConnection::connect(&su_url).await.unwrap();
    sqlx::query(
        "INSERT INTO rm_projects (tenant_id, project_id, name, status, created_at, updated_at, version)
         VALUES ($1, gen_random_uuid(), 'A', 'active', now(), now(), 1), ($2, gen_random_uuid(), 'B', 'active', now(), now(), 1)",
    )
    .bind(a.0)
    .bind(b.0)
    .execute(&mut su_db)
    .await
    .unwrap();

    let run = |args: Vec<String>| {
        let url = owner_url.clone();
        async move {
            tokio::process::Command::new(KEEL)
                .args(&args)
                .env("DATABASE_URL", url)
                .env("KEEL_LOG", "warn")
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(vec![
        "analyst".into(),
        "create".into(),
        "--tenant".into(),
        a.0.to_string(),
        "--login".into(),
        analyst.clone(),
    ])
    .await;
    assert!(out.status.success(), "create as a non-superuser owner: {}", text(&out.stderr));
    let url = text(&out.stdout).trim().to_owned();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("SET keel.tenant_id = '{}'", b.0))).await.unwrap();
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, name FROM reporting.projects").fetch_all(&mut conn).await.unwrap();
    assert_eq!(rows, vec![(a.0, "A".to_owned())], "only A, after SET keel.tenant_id = B");
    let err = conn.execute("SELECT * FROM analyst_logins").await.expect_err("the mapping is the owner's");
    assert!(err.to_string().contains("permission denied"), "{err}");

    let out = run(vec!["analyst".into(), "list".into()]).await;
    assert!(text(&out.stdout).contains(&analyst), "{}{}", text(&out.stdout), text(&out.stderr));

    // The owner may not be allowed to end the login's sessions; the session then reads nothing.
    let out = run(vec!["analyst".into(), "revoke".into(), analyst.clone()]).await;
    assert!(out.status.success(), "revoke as a non-superuser owner: {}", text(&out.stderr));
    if let Ok(n) = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM reporting.projects").fetch_one(&mut conn).await {
        assert_eq!(n, 0, "a revoked login's surviving session reads nothing");
    }
    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&analyst)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(gone, 0);
    drop(conn);
    db.store.close().await;
    drop(su_db);
    drop(db);
    drop(roles);
}
