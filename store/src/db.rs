//! Pools for the service roles, migrations, and transactions scoped to one tenant.

use crate::crypto::MasterKey;
use crate::error::StoreError;
use keel_domain::TenantId;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Row, Transaction};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Applies pending migrations over one connection as the `DATABASE_URL` user (the owner).
pub async fn migrate(database_url: &str) -> Result<(), StoreError> {
    let mut conn = primary_of(database_url).await?;
    MIGRATOR.run(&mut conn).await.map_err(|e| StoreError::Migration(e.to_string()))?;
    conn.close().await?;
    Ok(())
}

/// A connection to `database_url`, or with several hosts to the one that takes writes.
async fn primary_of(database_url: &str) -> Result<PgConnection, StoreError> {
    let urls = host_urls(database_url);
    if urls.len() == 1 {
        return Ok(PgConnection::connect(database_url).await?);
    }
    for u in &urls {
        let Ok(mut c) = PgConnection::connect(u).await else { continue };
        let primary: Result<bool, _> = sqlx::query_scalar("SELECT NOT pg_is_in_recovery()").fetch_one(&mut c).await;
        if primary.unwrap_or(false) {
            return Ok(c);
        }
        let _ = c.close().await;
    }
    Err(StoreError::Config(format!("none of the {} hosts of DATABASE_URL is a writable primary", urls.len())))
}

/// True when every migration this binary knows has been applied successfully.
pub async fn migrations_current(pool: &crate::RolePool) -> Result<bool, StoreError> {
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await?;
    Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
}

#[derive(Debug, Clone, Copy)]
pub struct PoolSizes {
    pub writer: u32,
    pub reader: u32,
    pub projector: u32,
}

impl Default for PoolSizes {
    fn default() -> Self {
        PoolSizes { writer: 16, reader: 16, projector: 8 }
    }
}

/// How long each service role may wait: for a connection from its pool (`acquire`), and for one
/// statement (`statement_timeout`, set on every connection after `SET ROLE`; zero disables it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolTimeouts {
    pub acquire: Duration,
    /// Commands: appends, inline tables, usage rows.
    pub writer_statement: Duration,
    /// Queries: GraphQL resolvers, memberships, checkpoints.
    pub reader_statement: Duration,
    /// Projection batches, rebuilds and erasure, which touch many rows at once.
    pub projector_statement: Duration,
    /// How the availability breaker probes the database (`breaker`).
    pub probe: crate::breaker::ProbeSettings,
    /// How long a command whose `COMMIT` lost its connection keeps asking whether it committed
    /// before it answers that the outcome is unknown (`Store::commit_outcome`).
    pub commit_resolve: Duration,
}

impl Default for PoolTimeouts {
    fn default() -> Self {
        PoolTimeouts {
            acquire: Duration::from_secs(5),
            writer_statement: Duration::from_secs(5),
            reader_statement: Duration::from_secs(5),
            projector_statement: Duration::from_secs(60),
            probe: crate::breaker::ProbeSettings::default(),
            commit_resolve: Duration::from_secs(5),
        }
    }
}

/// How often a service role's backend checks, while a statement runs, that Keel is still there.
const CLIENT_CHECK_MS: u32 = 1000;

/// Time a request waited for a connection of its pool and its `BEGIN`, in seconds (`pool` label).
pub const ACQUIRE_SECONDS: &str = "keel_db_acquire_seconds";

/// One of the service roles' pools (`Store::pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// `keel_writer`: appends and inline tables, one tenant per transaction.
    Writer,
    /// `keel_reader`: read tables, checkpoints and memberships, one tenant per transaction.
    Reader,
    /// `keel_projector`: every tenant's events, read tables, checkpoints, leases.
    Projector,
}

impl Pool {
    /// Its name in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Writer => "writer",
            Pool::Reader => "reader",
            Pool::Projector => "projector",
        }
    }
}

/// Connections for each service role. Every connection logs in with `DATABASE_URL` and then
/// `SET ROLE`s to a role the migrations created, which is neither superuser, nor owner of any
/// table, nor BYPASSRLS, so Row-Level Security applies to everything it does.
#[derive(Clone, Debug)]
pub struct Store {
    writer: RolePool,
    reader: RolePool,
    projector: RolePool,
    /// `keel_reader` on a streaming replica (`KEEL_READ_DATABASE_URL`): GraphQL and audit reads,
    /// and the checkpoints their consistency waits look at (`read_pool`).
    replica: Option<RolePool>,
    /// Behind a transaction pooler: where LISTEN connects, past the pooler
    /// (`KEEL_DIRECT_DATABASE_URL`).
    direct: Option<PgConnectOptions>,
    appended: std::sync::Arc<tokio::sync::Notify>,
    /// Woken when a projection worker of this process commits a checkpoint (`checkpoint_moved`).
    checkpoints: std::sync::Arc<tokio::sync::Notify>,
    /// Seals and opens personal data (`crypto`); without it, personal data cannot be written.
    master: Option<std::sync::Arc<MasterKey>>,
    /// Each tenant's storage footprint, measured at most once a minute (`tenant_footprints`).
    footprints: std::sync::Arc<crate::footprint::Cache>,
    /// Whether the database is reachable: requests are refused at once while it is not.
    breaker: std::sync::Arc<crate::breaker::Breaker>,
    pub(crate) commit_resolve: Duration,
    /// The dedicated databases and the directory (`placement`); `None` while every tenant lives
    /// in this database.
    pub(crate) router: Option<std::sync::Arc<crate::placement::Router>>,
    /// This database's name in the directory when it is a dedicated one (`None`: the pool).
    pub(crate) name: Option<std::sync::Arc<str>>,
}

/// What became of a transaction whose `COMMIT` got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// It did not commit and never will: the command can run again.
    Aborted,
    /// The database could not be asked within `PoolTimeouts::commit_resolve`.
    Unknown,
}

/// What `Store::commit_outcome` learns in one look.
struct Asked {
    /// `pg_xact_status`, or `never given out`.
    status: Option<String>,
    /// The transaction id's commit is visible to the look's snapshot.
    visible: bool,
    /// The witness is in the log.
    landed: bool,
    /// The tenant's rows in this database were retired by a move.
    retired: bool,
}

/// The URL of each host of a libpq-style multi-host URL (`postgres://u:p@h1:5432,h2:5433/db`),
/// or the URL alone. `target_session_attrs` is dropped: Keel always looks for the writable host.
pub(crate) fn host_urls(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else { return vec![url.to_owned()] };
    let (authority, tail) = rest.find(['/', '?']).map_or((rest, ""), |i| rest.split_at(i));
    let (userinfo, hosts) = authority.rfind('@').map_or(("", authority), |i| (&authority[..=i], &authority[i + 1..]));
    if !hosts.contains(',') {
        return vec![url.to_owned()];
    }
    let tail = match tail.split_once('?') {
        None => tail.to_owned(),
        Some((path, query)) => {
            let kept: Vec<&str> = query.split('&').filter(|kv| !kv.starts_with("target_session_attrs=")).collect();
            if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) }
        }
    };
    hosts.split(',').map(|h| format!("{scheme}://{userinfo}{h}{tail}")).collect()
}

#[cfg(test)]
mod host_tests {
    use super::host_urls;

    #[test]
    fn a_multi_host_url_is_one_url_per_host() {
        assert_eq!(
            host_urls("postgres://u:p@a:5432,b:5433/keel?target_session_attrs=read-write&sslmode=disable"),
            vec!["postgres://u:p@a:5432/keel?sslmode=disable", "postgres://u:p@b:5433/keel?sslmode=disable"]
        );
        assert_eq!(host_urls("postgres://a,b/keel"), vec!["postgres://a/keel", "postgres://b/keel"]);
        assert_eq!(host_urls("postgres://u@a:1/k?x=1"), vec!["postgres://u@a:1/k?x=1"]);
    }
}

/// A service role's pool. On a direct connection each connection takes its role and statement
/// timeout once, when it connects (`SET ROLE`). Behind a transaction pooler (PgBouncer in
/// transaction mode, `Store::connect_pooled`) a connection keeps nothing between transactions
/// and a statement outside one may run its two protocol steps on two server connections; so
/// there every unit of work is a transaction that sets the role and the timeout first
/// (`unit`, `begin_sql`), and prepared statements are not cached.
#[derive(Clone, Debug)]
pub struct RolePool {
    pool: PgPool,
    /// `SET LOCAL ROLE ..; SET LOCAL statement_timeout = ..; DEALLOCATE ALL` behind a pooler;
    /// `None` directly.
    local: Option<std::sync::Arc<str>>,
}

/// One unit of work on a `RolePool` outside any caller's transaction: the pool's connection as
/// it is, or behind a pooler a transaction that has set the role. `done` commits the latter; a
/// unit dropped without it writes nothing behind a pooler, so every unit that writes ends in
/// `done`.
pub enum Unit {
    Conn(sqlx::pool::PoolConnection<Postgres>),
    Tx(Transaction<'static, Postgres>),
}

impl std::ops::Deref for Unit {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Unit::Conn(c) => c,
            Unit::Tx(t) => t,
        }
    }
}

impl std::ops::DerefMut for Unit {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Unit::Conn(c) => c,
            Unit::Tx(t) => t,
        }
    }
}

impl Unit {
    /// Ends the unit: commits it behind a pooler, returns the connection otherwise.
    pub async fn done(self) -> Result<(), StoreError> {
        if let Unit::Tx(t) = self {
            t.commit().await?;
        }
        Ok(())
    }
}

impl RolePool {
    /// The sqlx pool, for a statement that needs no role of its own (a probe, a NOTIFY) or for
    /// code that knows it runs directly (tests, the bench).
    pub fn raw(&self) -> &PgPool {
        &self.pool
    }

    /// Whether this pool sits behind a transaction pooler.
    pub fn pooled(&self) -> bool {
        self.local.is_some()
    }

    /// A connection for one unit of work (see `Unit`).
    pub async fn unit(&self) -> Result<Unit, StoreError> {
        match &self.local {
            None => Ok(Unit::Conn(self.pool.acquire().await?)),
            Some(local) => {
                let sql = format!("BEGIN; {local}");
                Ok(Unit::Tx(self.pool.begin_with(sqlx::AssertSqlSafe(sql)).await?))
            }
        }
    }

    /// A transaction on this pool, with its role set behind a pooler.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin_with(sqlx::AssertSqlSafe(self.begin_sql("BEGIN").into_owned())).await?)
    }

    /// A transaction's opening statement `begin` with, behind a pooler, the role and the timeout
    /// set for it; one simple query either way.
    pub(crate) fn begin_sql(&self, begin: &'static str) -> std::borrow::Cow<'static, str> {
        match &self.local {
            None => begin.into(),
            Some(local) => format!("{begin}; {local}").into(),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

/// A `RolePool` runs statements as a pool does: directly, each on a connection of the pool;
/// behind a pooler, each as a transaction of its own that sets the role first (its rows are read
/// whole before the commit). Code written against a pool stays correct behind PgBouncer.
impl<'p> sqlx::Executor<'p> for &'_ RolePool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures::stream::BoxStream<
        'e,
        Result<sqlx::Either<sqlx::postgres::PgQueryResult, sqlx::postgres::PgRow>, sqlx::Error>,
    >
    where
        'p: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        use futures::{StreamExt, TryStreamExt};
        let Some(local) = self.local.clone() else { return self.pool.fetch_many(query) };
        let pool = self.pool.clone();
        futures::stream::once(async move {
            let mut tx = pool.begin_with(sqlx::AssertSqlSafe(format!("BEGIN; {local}"))).await?;
            let items: Vec<_> = (&mut *tx).fetch_many(query).try_collect().await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(futures::stream::iter(items.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures::future::BoxFuture<'e, Result<Option<sqlx::postgres::PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        let Some(local) = self.local.clone() else { return self.pool.fetch_optional(query) };
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut tx = pool.begin_with(sqlx::AssertSqlSafe(format!("BEGIN; {local}"))).await?;
            let row = (&mut *tx).fetch_optional(query).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [sqlx::postgres::PgTypeInfo],
    ) -> futures::future::BoxFuture<'e, Result<sqlx::postgres::PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> futures::future::BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.describe(sql)
    }
}

/// The statements that set a service role and its statement timeout (milliseconds, formatted
/// here: no caller text reaches them): per connection, or per transaction with `LOCAL`.
fn role_settings(role: &'static str, statement: Duration, local: bool) -> String {
    let scope = if local { " LOCAL" } else { "" };
    format!("SET{scope} ROLE {role}; SET{scope} statement_timeout = {}", statement.as_millis())
}

async fn role_pool(
    options: &PgConnectOptions,
    role: &'static str,
    size: u32,
    acquire: Duration,
    statement: Duration,
    pooled: bool,
) -> Result<RolePool, StoreError> {
    debug_assert!(matches!(role, "keel_writer" | "keel_reader" | "keel_projector"));
    let builder = PgPoolOptions::new().max_connections(size).min_connections(0).acquire_timeout(acquire);
    let (pool, local) = if pooled {
        // sqlx names every prepared statement (`sqlx_s_<n>`, counted per client connection) and,
        // with its cache off, never reuses or closes one. A server connection passes from client
        // to client, so each transaction first drops the statements an earlier client left there
        // (`DEALLOCATE ALL`, in the same simple query as its BEGIN): its own names cannot clash.
        let options = options.clone().statement_cache_capacity(0);
        let pool = builder.connect_with(options).await?;
        let local = format!("{}; DEALLOCATE ALL", role_settings(role, statement, true));
        (pool, Some(std::sync::Arc::<str>::from(local)))
    } else {
        let pool = builder
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // A backend checks every second that its client is still there while a
                    // statement runs or waits on a lock: the statements of a process killed
                    // mid-request are cancelled within a second instead of holding their place in
                    // a lock queue (and the locks they get) until their statement timeout.
                    let set = format!(
                        "{}; SET client_connection_check_interval = {CLIENT_CHECK_MS}",
                        role_settings(role, statement, false)
                    );
                    conn.execute(sqlx::AssertSqlSafe(set)).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        (pool, None)
    };
    let pool = RolePool { pool, local };
    // Refuse to run with a role that would bypass Row-Level Security; behind a pooler, refuse a
    // login that could (a statement outside a unit would run as it).
    let check = "SELECT r.rolname::text AS name, r.rolsuper, r.rolbypassrls,
                EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = current_schema() AND t.tableowner = r.rolname) AS owns
         FROM pg_roles r WHERE r.rolname = ";
    let mut unit = pool.unit().await?;
    for (who, expect) in [("current_user", Some(role)), ("session_user", None)] {
        if who == "session_user" && !pooled {
            continue;
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{check}{who}"))).fetch_one(&mut *unit).await?;
        let (name, sup, bypass, owns): (String, bool, bool, bool) =
            (row.try_get("name")?, row.try_get("rolsuper")?, row.try_get("rolbypassrls")?, row.try_get("owns")?);
        if expect.is_some_and(|r| r != name) || sup || bypass || owns {
            let what = if who == "session_user" { "the pooled login" } else { "service role" };
            return Err(StoreError::Config(format!(
                "{what} for {role} is unsafe (user={name}, superuser={sup}, bypassrls={bypass}, owns tables={owns})"
            )));
        }
    }
    unit.done().await?;
    Ok(pool)
}

impl Store {
    pub async fn connect(database_url: &str, sizes: PoolSizes, master: Option<MasterKey>) -> Result<Store, StoreError> {
        Store::connect_with(database_url, sizes, PoolTimeouts::default(), master).await
    }

    /// `connect` with the pools' acquire and statement timeouts.
    pub async fn connect_with(
        database_url: &str,
        sizes: PoolSizes,
        timeouts: PoolTimeouts,
        master: Option<MasterKey>,
    ) -> Result<Store, StoreError> {
        Store::open(database_url, None, sizes, timeouts, master).await
    }

    /// `connect_with` through a transaction pooler at `pooled_url` (PgBouncer in transaction
    /// mode): every unit of work is a transaction that sets its role (`RolePool`), and LISTEN,
    /// which needs a session, connects past the pooler to `direct_url`. The pooled login must be
    /// neither superuser nor owner (migrations make `keel_pooled` for it).
    pub async fn connect_pooled(
        pooled_url: &str,
        direct_url: &str,
        sizes: PoolSizes,
        timeouts: PoolTimeouts,
        master: Option<MasterKey>,
    ) -> Result<Store, StoreError> {
        Store::open(pooled_url, Some(direct_url), sizes, timeouts, master).await
    }

    async fn open(
        database_url: &str,
        direct_url: Option<&str>,
        sizes: PoolSizes,
        timeouts: PoolTimeouts,
        master: Option<MasterKey>,
    ) -> Result<Store, StoreError> {
        let t = timeouts;
        let parse = |u: &str| {
            PgConnectOptions::from_str(u)
                .map_err(|e| StoreError::Config(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}")))
                .map(|o| o.application_name("keel"))
        };
        let urls = host_urls(database_url);
        let hosts = match urls.len() {
            1 => None,
            _ if direct_url.is_some() => {
                return Err(StoreError::Config(
                    "a multi-host DATABASE_URL names the servers themselves, not a pooler: unset KEEL_DIRECT_DATABASE_URL"
                        .into(),
                ));
            }
            _ => {
                let candidates = urls.iter().map(|u| parse(u)).collect::<Result<Vec<_>, _>>()?;
                Some(std::sync::Arc::new(
                    crate::breaker::Hosts::find(candidates, t.probe.timeout.max(t.acquire)).await?,
                ))
            }
        };
        let options = match &hosts {
            Some(h) => h.current(),
            None => parse(database_url)?,
        };
        let direct = match direct_url {
            None => None,
            Some(u) => Some(
                PgConnectOptions::from_str(u)
                    .map_err(|e| {
                        StoreError::Config(format!("KEEL_DIRECT_DATABASE_URL is not a valid PostgreSQL URL: {e}"))
                    })?
                    .application_name("keel"),
            ),
        };
        let pooled = direct.is_some();
        let writer = role_pool(&options, "keel_writer", sizes.writer, t.acquire, t.writer_statement, pooled).await?;
        let reader = role_pool(&options, "keel_reader", sizes.reader, t.acquire, t.reader_statement, pooled).await?;
        let projector =
            role_pool(&options, "keel_projector", sizes.projector, t.acquire, t.projector_statement, pooled).await?;
        if let Some(h) = &hosts {
            for p in [&writer, &reader, &projector] {
                h.follow(p.raw());
            }
        }
        let breaker = crate::breaker::Breaker::start(options.clone(), t.probe, hosts);
        let appended = std::sync::Arc::new(tokio::sync::Notify::new());
        tokio::spawn(notify_appends(writer.raw().clone(), appended.clone()));
        Ok(Store {
            writer,
            reader,
            projector,
            replica: None,
            direct,
            appended,
            checkpoints: std::sync::Arc::default(),
            master: master.map(std::sync::Arc::new),
            footprints: std::sync::Arc::default(),
            breaker,
            commit_resolve: t.commit_resolve,
            router: None,
            name: None,
        })
    }

    /// Whether this store sits behind a transaction pooler (`connect_pooled`).
    pub fn pooled(&self) -> bool {
        self.direct.is_some()
    }

    /// Where a LISTEN connection goes: past the pooler when there is one, else where the pools go.
    pub fn listen_options(&self) -> PgConnectOptions {
        match &self.direct {
            Some(d) => d.clone(),
            None => self.reader.raw().connect_options().as_ref().clone(),
        }
    }

    /// Sends the query side's reads (`begin_read`, `read_pool`) to a streaming replica of this
    /// database, as `keel_reader` with the reader's pool size and timeouts. The replica lags:
    /// whoever needs a command's effect waits on the replica's own checkpoints (`read_pool`),
    /// which it replays in commit order with the read tables they describe.
    pub async fn with_read_replica(
        mut self,
        replica_url: &str,
        size: u32,
        timeouts: PoolTimeouts,
    ) -> Result<Store, StoreError> {
        let options = PgConnectOptions::from_str(replica_url)
            .map_err(|e| StoreError::Config(format!("KEEL_READ_DATABASE_URL is not a valid PostgreSQL URL: {e}")))?
            .application_name("keel");
        let pooled = self.pooled();
        self.replica =
            Some(role_pool(&options, "keel_reader", size, timeouts.acquire, timeouts.reader_statement, pooled).await?);
        Ok(self)
    }

    /// Whether query-side reads go to a replica (`with_read_replica`).
    pub fn has_read_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Whether the database answered this process's last probe (`breaker`).
    pub fn available(&self) -> bool {
        !self.breaker.is_open()
    }

    /// Runs `work` unless the database is known to be unreachable (`Unavailable` at once, or the
    /// moment the breaker opens while `work` waits); a lost connection wakes the probe.
    pub async fn guarded<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        self.breaker.guard(work).await
    }

    /// Resolves when the database answers the probe (at once when it does now).
    pub async fn until_available(&self) {
        self.breaker.until_closed().await
    }

    /// A request lost its connection mid-statement: the probe looks at once.
    pub fn connection_lost(&self) {
        self.breaker.suspect();
    }

    /// Whether transaction `xid` of `tenant` committed, asked on a new connection until it is
    /// known or `PoolTimeouts::commit_resolve` has passed. For a `COMMIT` whose answer was lost:
    /// the server finishes (or aborts) a transaction whose client has gone, and `pg_xact_status`
    /// then says which.
    ///
    /// After a crash that is not enough: PostgreSQL gives out again the ids of transactions whose
    /// WAL was lost with it, so the lost transaction's id may read `committed` for another one,
    /// or lie ahead of every id given out since (then it was lost). So `committed` is believed
    /// only once that commit is visible and `witness` is in the log: the event when the
    /// transaction appended any, else the idempotency key it answered. A tenant whose rows here
    /// were retired by a move leaves nothing to look for: unknown.
    pub async fn commit_outcome(&self, tenant: TenantId, xid: u64, witness: &Witness) -> CommitOutcome {
        debug_assert!(witness.event_id.is_some() || witness.key.is_some(), "a commit to resolve wrote something");
        let deadline = tokio::time::Instant::now() + self.commit_resolve;
        loop {
            let asked = self
                .guarded(async {
                    let mut tx = TenantTx::begin(&self.writer, tenant).await?;
                    // One snapshot for the visibility and the rows; the status is the server's
                    // record now. An id at or past the next one given out is not asked about
                    // (`pg_xact_status` refuses ids "in the future").
                    let row = sqlx::query(
                        "SELECT CASE WHEN $1::text::xid8 >= pg_current_xact_id() THEN 'never given out'
                                     ELSE pg_xact_status($1::text::xid8) END AS status,
                                pg_visible_in_snapshot($1::text::xid8, pg_current_snapshot()) AS visible,
                                EXISTS (SELECT 1 FROM events WHERE event_id = $2) AS event_landed,
                                EXISTS (SELECT 1 FROM idempotency_keys k
                                         WHERE k.tenant_id = $3 AND k.key = $4 AND k.status IS NOT NULL
                                           AND k.xmin::text = ($1::bigint % 4294967296)::text) AS key_landed,
                                EXISTS (SELECT 1 FROM tenants_departed d
                                         WHERE d.tenant_id = $3 AND d.retired_at IS NOT NULL) AS retired",
                    )
                    .bind(xid.to_string())
                    .bind(witness.event_id)
                    .bind(tenant.0)
                    .bind(witness.key.as_deref())
                    .fetch_one(tx.conn())
                    .await?;
                    let _ = tx.rollback().await;
                    // The event decides when there is one: a retry of the same key may have
                    // answered it since, under the lost transaction's id given out again.
                    let landed = match witness.event_id {
                        Some(_) => row.try_get::<bool, _>("event_landed")?,
                        None => row.try_get::<bool, _>("key_landed")?,
                    };
                    Ok(Asked {
                        status: row.try_get("status")?,
                        visible: row.try_get("visible")?,
                        landed,
                        retired: row.try_get("retired")?,
                    })
                })
                .await;
            match asked {
                Ok(a) => match a.status.as_deref() {
                    Some("committed") if a.landed => return CommitOutcome::Committed,
                    // Committed, but not yet visible to a new snapshot: its rows may be next.
                    Some("committed") if !a.visible => {}
                    Some("committed") if a.retired => {
                        tracing::warn!(%tenant, xid, "the tenant's rows were retired from this database: cannot tell whether the commit landed");
                        return CommitOutcome::Unknown;
                    }
                    Some("committed") => {
                        tracing::warn!(%tenant, xid, "that transaction id committed, but without this transaction's rows: it was lost in a crash and its id given out again");
                        return CommitOutcome::Aborted;
                    }
                    Some("never given out") => {
                        tracing::warn!(%tenant, xid, "the database has not given that transaction id out since it restarted: the transaction was lost in a crash");
                        return CommitOutcome::Aborted;
                    }
                    Some("aborted") => return CommitOutcome::Aborted,
                    other => tracing::debug!(%tenant, xid, status = ?other, "commit still in progress"),
                },
                Err(e) => tracing::debug!(%tenant, xid, error = %e, "cannot ask about a commit yet"),
            }
            if tokio::time::Instant::now() >= deadline {
                return CommitOutcome::Unknown;
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_millis(50))).await;
        }
    }

    /// Tells projection workers, after a commit, that events were appended. Pokes that arrive
    /// while a notification is being sent are folded into the next one, so commits never queue
    /// on PostgreSQL's notification lock; a notification lost to a crash only delays a
    /// projection until its next poll.
    pub fn events_appended(&self) {
        self.appended.notify_one();
    }

    /// Tells readers waiting for a consistency token in this process that a projection's
    /// checkpoint moved (a worker calls it after each commit), so they look again at once instead
    /// of at their next poll. Readers in other processes poll.
    pub fn checkpoint_moved(&self) {
        self.checkpoints.notify_waiters();
    }

    /// Resolves at the next `checkpoint_moved` after it is enabled (`Notified::enable`).
    pub fn checkpoint_moves(&self) -> tokio::sync::futures::Notified<'_> {
        self.checkpoints.notified()
    }

    /// Every tenant's events and storage bytes (largest first), measured at most `max_age` ago;
    /// with the measurement's age. For platform operators only: it reads every tenant.
    pub async fn tenant_footprints(
        &self,
        max_age: Duration,
    ) -> Result<(std::sync::Arc<Vec<crate::footprint::TenantFootprint>>, Duration), StoreError> {
        self.footprints.get(&self.projector, max_age).await
    }

    /// The command side: appends and inline tables.
    pub fn writer(&self) -> &RolePool {
        &self.writer
    }

    /// The query side on the primary: read tables, checkpoints, memberships, LISTEN.
    pub fn reader(&self) -> &RolePool {
        &self.reader
    }

    /// Where GraphQL and audit reads run: the replica when there is one (`with_read_replica`),
    /// else `reader`. A consistency wait reads its checkpoints here too, so it waits for the
    /// copy it will read from.
    pub fn read_pool(&self) -> &RolePool {
        self.replica.as_ref().unwrap_or(&self.reader)
    }

    /// Projection workers: every tenant's events, read tables, checkpoints.
    pub fn projector(&self) -> &RolePool {
        &self.projector
    }

    /// The pool of one service role.
    pub fn pool(&self, pool: Pool) -> &RolePool {
        match pool {
            Pool::Writer => &self.writer,
            Pool::Reader => &self.reader,
            Pool::Projector => &self.projector,
        }
    }

    /// A transaction on one role's pool, its wait for a connection and `BEGIN` recorded as
    /// `keel_db_acquire_seconds{pool}` (the runner's batches start here).
    pub async fn begin(&self, pool: Pool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.begin_as(pool, "BEGIN").await
    }

    async fn begin_as(
        &self,
        pool: Pool,
        begin: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let started = std::time::Instant::now();
        let role = self.pool(pool);
        let tx = self
            .guarded(async {
                Ok(match role.begin_sql(begin) {
                    std::borrow::Cow::Borrowed(sql) => role.raw().begin_with(sql).await?,
                    std::borrow::Cow::Owned(sql) => role.raw().begin_with(sqlx::AssertSqlSafe(sql)).await?,
                })
            })
            .await;
        metrics::histogram!(ACQUIRE_SECONDS, "pool" => pool.name()).record(started.elapsed().as_secs_f64());
        tx
    }

    /// `begin` for a transaction that writes only what the log determines (a projection batch
    /// with its checkpoint, an outbound checkpoint): its commit does not wait for the disk
    /// (`synchronous_commit = off`). A database crash may lose its last fraction of a second of
    /// progress, checkpoint and rows together, and the worker applies those events again.
    pub async fn begin_derived(&self, pool: Pool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.begin_as(pool, "BEGIN; SET LOCAL synchronous_commit = off").await
    }

    pub async fn begin_write(&self, tenant: TenantId) -> Result<TenantTx, StoreError> {
        let started = std::time::Instant::now();
        let tx = self.guarded(TenantTx::begin(&self.writer, tenant)).await;
        metrics::histogram!(ACQUIRE_SECONDS, "pool" => Pool::Writer.name()).record(started.elapsed().as_secs_f64());
        Ok(TenantTx { master: self.master.clone(), ..tx? })
    }

    pub async fn begin_read(&self, tenant: TenantId) -> Result<TenantTx, StoreError> {
        let started = std::time::Instant::now();
        let tx = self.guarded(TenantTx::begin(self.read_pool(), tenant)).await;
        metrics::histogram!(ACQUIRE_SECONDS, "pool" => Pool::Reader.name()).record(started.elapsed().as_secs_f64());
        Ok(TenantTx { master: self.master.clone(), ..tx? })
    }

    /// A read-only transaction that sees one snapshot throughout (an export of many pages).
    pub async fn begin_read_snapshot(&self, tenant: TenantId) -> Result<TenantTx, StoreError> {
        let tx = self
            .guarded(TenantTx::begin_as(self.read_pool(), tenant, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            .await?;
        Ok(TenantTx { master: self.master.clone(), ..tx })
    }

    /// The master key, for opening personal data read outside a `TenantTx` (projections, audit).
    pub fn master_key(&self) -> Option<&MasterKey> {
        self.master.as_deref()
    }

    pub async fn close(&self) {
        self.breaker.stop();
        self.writer.close().await;
        self.reader.close().await;
        self.projector.close().await;
        if let Some(r) = &self.router {
            for (_, shard) in r.shards() {
                Box::pin(shard.close()).await;
            }
        }
        if let Some(r) = &self.replica {
            r.close().await;
        }
    }
}

/// Sends `NOTIFY keel_events` once per burst of `events_appended` pokes, until the pool closes.
async fn notify_appends(pool: PgPool, appended: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        appended.notified().await;
        if pool.is_closed() {
            return;
        }
        // A wake-up hint, not data: it does not wait for its commit to reach the disk (a lost
        // one only delays a projection until its next poll). One simple query, no parameters:
        // the channel is a constant.
        let sql = format!("SET LOCAL synchronous_commit = off; SELECT pg_notify('{}', '')", crate::EVENTS_CHANNEL);
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await {
            tracing::warn!(error = %e, "cannot notify projection workers; they will poll");
        }
    }
}

/// A transaction whose Row-Level Security context is one tenant. The setting is
/// transaction-local, so a pooled connection never carries a tenant into the next use.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    /// Statements run through this transaction, added to a caller's counter (per request).
    statements: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    master: Option<std::sync::Arc<MasterKey>>,
    /// The tenant row is locked `FOR UPDATE` in this transaction (`access`): an append that
    /// moves the tenant's counters must have taken that lock up front, or two such commands
    /// deadlock upgrading their share locks.
    pub(crate) tenant_locked: bool,
    /// The data keys the command's read found (`write_path::read_in`), for sealing its events.
    pub(crate) data_keys: Option<crate::crypto::DataKeys>,
    /// What this transaction wrote that no other can have: what tells, after a `COMMIT` whose
    /// answer was lost, whether it landed (`Store::commit_outcome`).
    pub(crate) witness: Witness,
}

/// A row only one transaction writes, looked for when its `COMMIT` got no answer: the id of an
/// event it appended (a UUIDv7 made for it), or the idempotency key whose answer it stored.
///
/// The transaction id alone does not tell: PostgreSQL hands out again, after a crash, the ids
/// of transactions whose WAL never reached the disk, so `pg_xact_status` of a lost
/// transaction's id can later read `committed` for another one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Witness {
    pub event_id: Option<Uuid>,
    pub key: Option<String>,
}

impl TenantTx {
    pub async fn begin(pool: &RolePool, tenant: TenantId) -> Result<TenantTx, StoreError> {
        Self::begin_as(pool, tenant, "BEGIN").await
    }

    async fn begin_as(pool: &RolePool, tenant: TenantId, begin: &'static str) -> Result<TenantTx, StoreError> {
        // One round trip for both: the tenant is a UUID (hex digits and dashes), so it can be
        // written into the statement.
        let sql = format!(
            "{}; SELECT set_config('keel.tenant_id', '{}', true)",
            pool.begin_sql(begin),
            tenant.0.hyphenated()
        );
        let tx = pool.raw().begin_with(sqlx::AssertSqlSafe(sql)).await?;
        Ok(TenantTx {
            tx,
            tenant,
            statements: None,
            master: None,
            tenant_locked: false,
            data_keys: None,
            witness: Witness::default(),
        })
    }

    /// A tenant transaction on a plain pool of the owner's login (no service role): what a bulk
    /// load (`archive::import`, a move) runs in, since COPY into a table with Row-Level Security
    /// needs a login that bypasses it.
    pub async fn begin_owner(
        pool: &PgPool,
        tenant: TenantId,
        master: Option<MasterKey>,
    ) -> Result<TenantTx, StoreError> {
        let role = RolePool { pool: pool.clone(), local: None };
        let tx = Self::begin_as(&role, tenant, "BEGIN").await?;
        Ok(TenantTx { master: master.map(std::sync::Arc::new), ..tx })
    }

    /// Counts every statement run through this transaction into `counter`.
    pub fn counting(mut self, counter: std::sync::Arc<std::sync::atomic::AtomicU64>) -> TenantTx {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed); // BEGIN with the tenant setting
        self.statements = Some(counter);
        self
    }

    /// Marks this transaction as serving a platform operator: read tables that have a platform
    /// policy (`rm_tenants`) show every tenant.
    pub async fn as_platform(mut self) -> Result<TenantTx, StoreError> {
        sqlx::query("SELECT set_config('keel.platform', 'on', true)").execute(self.conn()).await?;
        Ok(self)
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// What this transaction wrote that tells whether its `COMMIT` landed (`Witness`).
    pub fn witness(&self) -> Witness {
        self.witness.clone()
    }

    /// Whether this transaction locked its tenant's row `FOR UPDATE` (`access`).
    pub fn tenant_locked(&self) -> bool {
        self.tenant_locked
    }

    pub fn master_key(&self) -> Option<&MasterKey> {
        self.master.as_deref()
    }

    /// The master key as a shared handle (a reference count, not a copy of the key), for use
    /// beside `conn()`.
    pub(crate) fn master_handle(&self) -> Option<std::sync::Arc<MasterKey>> {
        self.master.clone()
    }

    /// The connection, for one statement (each call is counted as one).
    pub fn conn(&mut self) -> &mut PgConnection {
        if let Some(c) = &self.statements {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
