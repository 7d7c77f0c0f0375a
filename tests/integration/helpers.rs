//! `spawn_app()` and friends: a fresh database per test, migrated, and Keel on port 0.

use chrono::Utc;
use keel::{App, AppConfig, Services};
use keel_domain::tenant::{OwnerInput, ProvisionTenant, Tenant, TenantCommand, TenantUsage};
use keel_domain::{Decide, MemberId, TenantId};
use keel_gateway::auth::Secret;
use keel_gateway::{Authenticator, JwtConfig};
use keel_projections::RunnerConfig;
use keel_store::{EventMetadata, PoolSizes, Store, log};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const SECRET: &[u8] = b"integration-tests-secret-0123456789abcdef";

/// `keel serve` as a process of its own on `db_url`, on a fresh port, with the tests' JWT secret
/// and master key, JSON log lines at `info` into `log`, and `env` on top (later pairs win).
/// Returns the child (killed when dropped) and its address once it serves.
pub async fn keel_serve(db_url: &str, log: &std::path::Path, env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.arg("serve")
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env_remove("KEEL_CONFIG")
        .env("DATABASE_URL", db_url)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).expect("an ASCII secret"))
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .env("KEEL_LOG", "info")
        .env("KEEL_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(std::fs::File::create(log).unwrap()))
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    for _ in 0..240 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["fields"]["message"] == "serving")
            .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned));
        if let Some(a) = addr {
            return (child, a);
        }
        assert!(child.try_wait().unwrap().is_none(), "keel serve exited:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("keel serve logs its address:\n{}", std::fs::read_to_string(log).unwrap());
}

/// `keel audit verify --tenant` against `db_url` with the tests' master key: panics with its
/// output unless every hash chain of the tenant verifies.
pub fn assert_audit_verifies(db_url: &str, tenant: Uuid) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["audit", "verify", "--tenant", &tenant.to_string()])
        .env("DATABASE_URL", db_url)
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env_remove("KEEL_CONFIG")
        .env("KEEL_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A loopback port nothing listens on now (for a server the test starts next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A token signed with the tests' secret (`SECRET`), as `keel serve` processes check it.
pub fn signed_token(tenant: Option<Uuid>, user: &str, platform: bool) -> String {
    let auth = Authenticator::hs256(JwtConfig::hs256(Secret::new(SECRET.to_vec())));
    auth.issue(user, tenant, platform, Duration::from_secs(3600))
}

/// The server that test databases are created on (a superuser connection).
pub fn server_url() -> String {
    std::env::var("KEEL_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(db: &str) -> String {
    let base = server_url();
    let (head, _) = base.rsplit_once('/').expect("a URL with a database name");
    format!("{head}/{db}")
}

/// With `KEEL_TEST_LOG` set to a filter (tracing `EnvFilter` syntax: `debug`,
/// `keel=debug,sqlx=warn`), Keel's logs in this process go to the test's captured output, shown
/// for a failing test (or for all with `--nocapture`). Unset, nothing is installed.
fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("KEEL_TEST_LOG") {
            let filter = tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|e| panic!("KEEL_TEST_LOG={filter:?} is not a valid filter: {e}"));
            // Colours only on a terminal; another subscriber already installed keeps its place.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_test_writer().try_init();
        }
    });
}

/// A new, empty database; the names of earlier runs' databases are dropped first.
pub async fn fresh_database() -> (String, String) {
    init_test_log();
    static N: AtomicU32 = AtomicU32::new(0);
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let pid = std::process::id();
    CLEANED
        .get_or_init(|| async {
            let mut c = PgConnection::connect(&server_url()).await.expect("test PostgreSQL is reachable");
            let names: Vec<String> =
                sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'keel\\_t\\_%'")
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
            for name in names {
                let owner_pid: Option<u32> = name.split('_').nth(2).and_then(|p| p.parse().ok());
                if owner_pid.is_some_and(|p| p != pid && !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                    let _ =
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                            .execute(&mut c)
                            .await;
                }
            }
        })
        .await;
    let name = format!("keel_t_{pid}_{}", N.fetch_add(1, Ordering::SeqCst));
    let mut c = PgConnection::connect(&server_url()).await.expect("test PostgreSQL is reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut c).await.unwrap();
    (name.clone(), url_for(&name))
}

pub fn drop_database(name: &str) {
    let name = name.to_owned();
    // Drop runs inside the test's runtime; a thread with its own runtime does the async work.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            if let Ok(mut c) = PgConnection::connect(&server_url()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut c)
                    .await;
            }
        })
    })
    .join();
}

/// Drops the named database when it goes out of scope.
pub struct DropDatabase(pub String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        drop_database(&self.0);
    }
}

/// A migrated database and a `Store` on it, without a server.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub store: Store,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let (name, url) = fresh_database().await;
        keel_store::migrate(&url).await.expect("migrations apply");
        let store = Store::connect(&url, PoolSizes { writer: 8, reader: 8, projector: 4 }, Some(master_key()))
            .await
            .expect("store connects");
        TestDb { name, url, store }
    }

    /// A superuser connection to this database (for what the services may not do).
    pub async fn superuser(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// Provisions a tenant straight through the domain and the store.
    pub async fn provision(&self, slug: &str, owner: &str) -> TenantId {
        provision_on(&self.store, slug, owner).await
    }
}

/// Provisions a tenant straight through the domain and `store`.
pub async fn provision_on(store: &Store, slug: &str, owner: &str) -> TenantId {
    let tenant = TenantId::new_v7();
    let cmd = ProvisionTenant {
        tenant_id: tenant,
        owner_member_id: MemberId::new_v7(),
        name: format!("Tenant {slug}"),
        slug: slug.into(),
        plan: "free".into(),
        owner: OwnerInput { user_id: owner.into(), email: format!("{owner}@{slug}.test"), name: owner.into() },
    };
    let events = Tenant::default().decide(TenantCommand::Provision(cmd), &TenantUsage::default(), Utc::now()).unwrap();
    let mut tx = store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[], &events, &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    tenant
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

pub fn meta() -> EventMetadata {
    EventMetadata {
        actor: "user:test".into(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        request_id: None,
        demo: false,
    }
}

pub struct Options {
    pub projector: bool,
    pub listen: bool,
    pub poll_interval: Duration,
    pub consistency_wait: Duration,
    pub lease_ttl: Duration,
    pub limits: keel::EdgeLimits,
    /// The console's settings: by default `keel serve`'s (no development token).
    pub console: keel_console::ConsoleConfig,
    /// The token keys; by default HS256 with `SECRET`.
    pub jwt: Option<JwtConfig>,
    /// Keel reaches the test database through this URL (a `FaultProxy`'s) instead of directly;
    /// `TestApp::db` still reaches it directly.
    pub database_url: Option<String>,
    /// `KEEL_DIRECT_DATABASE_URL`: `database_url` is then a transaction pooler.
    pub direct_database_url: Option<String>,
    /// Events out (a NATS publisher); none by default.
    pub outbound: keel_outbound::OutboundConfig,
    /// What webhook URLs may name; https to public hosts only by default.
    pub webhooks: keel_command::WebhookSettings,
    /// The pools of each database the app connects to (8 of each by default).
    pub pools: PoolSizes,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            projector: true,
            listen: true,
            poll_interval: Duration::from_millis(200),
            consistency_wait: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(5),
            limits: keel::EdgeLimits::default(),
            console: keel_console::ConsoleConfig::default(),
            jwt: None,
            database_url: None,
            direct_database_url: None,
            outbound: keel_outbound::OutboundConfig::default(),
            webhooks: keel_command::WebhookSettings::default(),
            pools: PoolSizes { writer: 8, reader: 8, projector: 8 },
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub db: TestDb,
    pub auth: Arc<Authenticator>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The master key of every test database (and of `keel` processes the tests start).
pub const MASTER_KEY: &str = "7d1c4f0a9b2e8d3c6a5f4e1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d";

pub fn master_key() -> keel_store::MasterKey {
    keel_store::MasterKey::parse(MASTER_KEY).unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(o: Options) -> TestApp {
    spawn_app_on(TestDb::new().await, o).await
}

/// `spawn_app_with` on a database the caller made (to learn its URL first).
pub async fn spawn_app_on(db: TestDb, mut o: Options) -> TestApp {
    // `KEEL_TEST_VIA_PGBOUNCER=host:port` runs every in-process app through that PgBouncer (in
    // transaction mode, with `keel_pooled` in its auth file): the suite's flows behind a pooler.
    if let Ok(bouncer) = std::env::var("KEEL_TEST_VIA_PGBOUNCER")
        && o.database_url.is_none()
    {
        let mut su = db.superuser().await;
        sqlx::query("ALTER ROLE keel_pooled LOGIN").execute(&mut su).await.unwrap();
        let mut pooled = url::Url::parse(&db.url).unwrap();
        let (host, port) = bouncer.rsplit_once(':').expect("host:port");
        pooled.set_host(Some(host)).unwrap();
        pooled.set_port(Some(port.parse().unwrap())).unwrap();
        pooled.set_username("keel_pooled").unwrap();
        pooled.set_password(None).unwrap();
        o.database_url = Some(pooled.to_string());
        o.direct_database_url = Some(db.url.clone());
    }
    let config = AppConfig {
        database_url: o.database_url.unwrap_or_else(|| db.url.clone()).into(),
        read_database_url: None,
        direct_database_url: o.direct_database_url.map(Into::into),
        listen: "127.0.0.1:0".into(),
        jwt: o.jwt.unwrap_or_else(|| JwtConfig::hs256(Secret::new(SECRET.to_vec()))),
        consistency_wait: o.consistency_wait,
        body_limit: 1024 * 1024,
        services: Services { command: true, query: true, projector: o.projector },
        runner: RunnerConfig {
            batch_size: 500,
            poll_interval: o.poll_interval,
            listen: o.listen,
            lease_ttl: o.lease_ttl,
            ..RunnerConfig::default()
        },
        outbound: o.outbound,
        webhooks: o.webhooks,
        pools: o.pools,
        master_key: master_key(),
        limits: o.limits,
        console: o.console,
    };
    let app = App::build(config).await.expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let auth = app.authenticator();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    TestApp { base, db, auth, client: reqwest::Client::new(), stop: Some(stop), server: Some(server) }
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestApp {
    pub fn platform_token(&self) -> String {
        self.auth.issue("operator", None, true, Duration::from_secs(600))
    }

    pub fn token(&self, tenant: TenantId, user: &str) -> String {
        self.auth.issue(user, Some(tenant.0), false, Duration::from_secs(600))
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        into_reply(rb.send().await.expect("request is sent")).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PATCH, path, Some(token), Some(body)).await
    }

    /// POST /api/v1/tenants as the platform; returns the tenant and its owner's token.
    pub async fn provision(&self, slug: &str) -> (TenantId, String) {
        let r = self
            .post(
                "/api/v1/tenants",
                &self.platform_token(),
                json!({"name": format!("Tenant {slug}"), "slug": slug, "plan": "free",
                       "owner": {"user_id": format!("owner-{slug}"), "email": format!("owner@{slug}.test"), "name": "Owner"}}),
            )
            .await;
        assert_eq!(r.status, 201, "provision {slug}: {}", r.body);
        let tenant = TenantId(r.body["id"].as_str().unwrap().parse().unwrap());
        let token = self.token(tenant, &format!("owner-{slug}"));
        (tenant, token)
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, Some(token), None).await
    }

    /// A request with extra headers.
    pub async fn send_with(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut rb = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        into_reply(rb.send().await.expect("request is sent")).await
    }

    /// Provisions a tenant on `plan`; returns the tenant and its owner's token.
    pub async fn provision_on(&self, slug: &str, plan: &str) -> (TenantId, String) {
        let (tenant, owner) = self.provision(slug).await;
        if plan != "free" {
            let r = self
                .put(&format!("/api/v1/tenants/{}/plan", tenant.0), &self.platform_token(), json!({"plan": plan}))
                .await;
            assert_eq!(r.status, 200, "change plan: {}", r.body);
        }
        (tenant, owner)
    }

    /// Invites `user` with `role` as the owner; returns the member id and the user's token.
    pub async fn invite(&self, tenant: TenantId, owner: &str, user: &str, role: &str) -> (String, String) {
        let r = self
            .post(
                "/api/v1/members",
                owner,
                json!({"user_id": user, "email": format!("{user}@example.test"), "name": user, "role": role}),
            )
            .await;
        assert_eq!(r.status, 201, "invite {user}: {}", r.body);
        (r.body["id"].as_str().unwrap().to_owned(), self.token(tenant, user))
    }

    /// Events stored for this test's database, by a superuser.
    pub async fn event_count(&self) -> i64 {
        let mut su = self.db.superuser().await;
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut su).await.unwrap()
    }

    pub async fn create_project(&self, token: &str, name: &str) -> Reply {
        let r = self.post("/api/v1/projects", token, json!({"name": name})).await;
        assert_eq!(r.status, 201, "create project {name}: {}", r.body);
        r
    }

    /// Stops the app as a shutdown signal would and waits until `run` has returned.
    pub async fn shut_down(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.server.take() {
            Some(h) => h.await.expect("the server task does not panic"),
            None => Ok(()),
        }
    }

    pub async fn graphql(&self, token: &str, query: &str, consistency: Option<&str>) -> Reply {
        let mut rb =
            self.client.post(format!("{}/graphql", self.base)).bearer_auth(token).json(&json!({"query": query}));
        if let Some(c) = consistency {
            rb = rb.header("keel-consistency", c);
        }
        into_reply(rb.send().await.unwrap()).await
    }
}

async fn into_reply(r: reqwest::Response) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, headers, body }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}
