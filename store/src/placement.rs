//! Bridge tenancy (docs/tenancy.md): the databases registered with the platform, the directory
//! of which tenant lives in which, and the routing of a tenant's work to its database.
//!
//! The platform's own database (`DATABASE_URL`) is the pool and holds the directory:
//! `keel_databases` (each dedicated database's URL, sealed with the master key) and
//! `tenant_placements` (a tenant with no row lives in the pool). A `Store` with a `Router`
//! hands each tenant's work to that tenant's database (`Store::for_tenant`).

use crate::error::StoreError;
use crate::{MasterKey, PoolSizes, PoolTimeouts, Store};
use chrono::{DateTime, Utc};
use keel_domain::TenantId;
use sqlx::PgConnection;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// How a placement's error begins when the database it names is not registered.
pub const UNKNOWN_DATABASE: &str = "no database named";

/// The name of the platform's own database in the directory.
pub const POOL: &str = "pool";

/// At most this many tenants' placements are cached per process; past it the cache starts over.
const CACHE_LIMIT: usize = 100_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Registered {
    pub name: String,
    pub added_at: DateTime<Utc>,
}

/// A consistency token: the log position, and after `@` the database whose log it is (none for
/// the pool's), so a token still means something after its tenant moved.
pub fn token(position: crate::LogPosition, database: &str) -> String {
    if database == POOL { position.to_string() } else { format!("{position}@{database}") }
}

/// A token as `token` writes it: its position and database.
pub fn parse_token(text: &str) -> Option<(crate::LogPosition, String)> {
    let (at, database) = match text.trim().split_once('@') {
        Some((at, db)) if db == POOL || valid_name(db) => (at, db.to_owned()),
        Some(_) => return None,
        None => (text, POOL.to_owned()),
    };
    Some((crate::LogPosition::parse(at)?, database))
}

/// A stored answer's token as it reads from `database`: an untagged one is that database's.
pub fn tag_token(text: &str, database: &str) -> String {
    if text.contains('@') || database == POOL { text.to_owned() } else { format!("{text}@{database}") }
}

/// Whether `name` may name a dedicated database.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    name != POOL
        && (1..=40).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn purpose(name: &str) -> String {
    format!("database-url:{name}")
}

/// Registers database `name` at `url` in the directory of `conn`'s database (the pool), its URL
/// sealed with `master`. The caller has migrated `url` first.
pub async fn add(conn: &mut PgConnection, master: &MasterKey, name: &str, url: &str) -> Result<(), StoreError> {
    if !valid_name(name) {
        return Err(StoreError::Placement(format!(
            "{name:?} is not a database name: 1 to 40 of a-z, 0-9, _ and -, starting with a letter, and not \"pool\""
        )));
    }
    let sealed = master.seal_setting(&purpose(name), url.as_bytes());
    let done = sqlx::query(
        "INSERT INTO keel_databases (name, url_sealed, key_id) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(sealed)
    .bind(master.id())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Placement(format!("a database named {name} is registered already")));
    }
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut *conn).await?;
    Ok(())
}

/// Seals every registered database's URL again under `new` (a master key rotation).
pub async fn reseal(conn: &mut PgConnection, old: &MasterKey, new: &MasterKey) -> Result<u64, StoreError> {
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT name, url_sealed FROM keel_databases ORDER BY name FOR UPDATE")
            .fetch_all(&mut *conn)
            .await?;
    for (name, sealed) in &rows {
        let url = old.open_setting(&purpose(name), sealed)?;
        sqlx::query("UPDATE keel_databases SET url_sealed = $2, key_id = $3 WHERE name = $1")
            .bind(name)
            .bind(new.seal_setting(&purpose(name), &url))
            .bind(new.id())
            .execute(&mut *conn)
            .await?;
    }
    Ok(rows.len() as u64)
}

pub async fn list(conn: &mut PgConnection) -> Result<Vec<Registered>, StoreError> {
    let rows: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT name, added_at FROM keel_databases ORDER BY name").fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(|(name, added_at)| Registered { name, added_at }).collect())
}

/// Every registered database with its URL opened.
pub async fn urls(conn: &mut PgConnection, master: Option<&MasterKey>) -> Result<Vec<(String, String)>, StoreError> {
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT name, url_sealed FROM keel_databases ORDER BY name").fetch_all(&mut *conn).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let master = master.ok_or_else(|| {
        StoreError::Config("dedicated databases are registered: their URLs open only with KEEL_MASTER_KEY".into())
    })?;
    rows.into_iter()
        .map(|(name, sealed)| {
            let url = master.open_setting(&purpose(&name), &sealed)?;
            let url = String::from_utf8(url).map_err(|_| StoreError::Key("a sealed URL is not UTF-8".into()))?;
            Ok((name, url))
        })
        .collect()
}

/// The URL of registered database `name`.
pub async fn url_of(conn: &mut PgConnection, master: Option<&MasterKey>, name: &str) -> Result<String, StoreError> {
    urls(conn, master)
        .await?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, u)| u)
        .ok_or_else(|| StoreError::Placement(format!("no database named {name} is registered (keel databases add)")))
}

/// Where a tenant lives, as the directory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `pool` or a registered name: where its commands are written.
    pub database: String,
    /// Right after a move, until its read models have caught up there: the database it left,
    /// whose read models serve its reads meanwhile.
    pub reads_from: Option<String>,
    /// After a move: this database's position of the last event copied, where a consistency
    /// token of the database it came from is satisfied.
    pub arrived: Option<crate::LogPosition>,
}

impl Placement {
    pub fn pool() -> Placement {
        Placement { database: POOL.to_owned(), reads_from: None, arrived: None }
    }

    /// The database whose read models serve the tenant's reads now.
    pub fn reads(&self) -> &str {
        self.reads_from.as_deref().unwrap_or(&self.database)
    }
}

/// Where `tenant` lives (the pool when the directory has no row).
pub async fn placement_of(conn: &mut PgConnection, tenant: Uuid) -> Result<Placement, StoreError> {
    type Row = (String, Option<String>, Option<String>, Option<i64>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT database, reads_from, arrived_xid, arrived_position FROM tenant_placements WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => Placement::pool(),
        Some((database, reads_from, xid, position)) => Placement {
            database,
            reads_from,
            arrived: match (xid.and_then(|x| x.parse().ok()), position) {
                (Some(xid), Some(position)) => Some(crate::LogPosition { xid, position }),
                _ => None,
            },
        },
    })
}

/// Every tenant placed in a dedicated database, by id.
pub async fn placements(conn: &mut PgConnection) -> Result<HashMap<Uuid, String>, StoreError> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, database FROM tenant_placements WHERE database <> 'pool'")
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Places a tenant that does not exist yet in `database` (a registered name, or `pool`). A tenant
/// placed already keeps its place: placing it again in the same database is a no-op, elsewhere an
/// error.
pub async fn place(conn: &mut PgConnection, tenant: Uuid, database: &str) -> Result<(), StoreError> {
    if database != POOL {
        let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM keel_databases WHERE name = $1)")
            .bind(database)
            .fetch_one(&mut *conn)
            .await?;
        if !known {
            return Err(StoreError::Placement(format!("{UNKNOWN_DATABASE} {database} is registered")));
        }
    }
    sqlx::query(
        "INSERT INTO tenant_placements (tenant_id, database) VALUES ($1, $2) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(database)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(tenant.to_string()).execute(&mut *conn).await?;
    let at = placement_of(conn, tenant).await?.database;
    if at != database {
        return Err(StoreError::Placement(format!("tenant {tenant} lives in {at} already")));
    }
    Ok(())
}

/// The dedicated databases' stores of one process, and a cache of the directory.
pub struct Router {
    shards: HashMap<String, Store>,
    cache: std::sync::Mutex<HashMap<Uuid, (Placement, std::time::Instant)>>,
    /// Moves on every `forget`: a lookup that began before one does not cache what it read.
    generation: std::sync::atomic::AtomicU64,
}

/// A cached placement is read again after this long, even if no notice of a move arrived.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The channel a directory change is announced on (payload: the tenant, or empty for all).
pub const CHANNEL: &str = "keel_placement";

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("databases", &self.shards.keys().collect::<Vec<_>>()).finish()
    }
}

impl Router {
    /// Connects a store to each registered database (pools of `sizes`, `timeouts`).
    pub async fn connect(
        pool: &Store,
        sizes: PoolSizes,
        timeouts: PoolTimeouts,
        master: Option<&MasterKey>,
    ) -> Result<Option<Arc<Router>>, StoreError> {
        let mut unit = pool.reader().unit().await?;
        let urls = urls(&mut unit, master).await?;
        unit.done().await?;
        if urls.is_empty() {
            return Ok(None);
        }
        let mut shards = HashMap::new();
        for (name, url) in urls {
            let mut store = Store::connect_with(&url, sizes, timeouts, master.cloned())
                .await
                .map_err(|e| StoreError::Placement(format!("cannot connect to database {name}: {e}")))?;
            store.name = Some(Arc::from(name.as_str()));
            shards.insert(name, store);
        }
        let router = Arc::new(Router { shards, cache: std::sync::Mutex::default(), generation: Default::default() });
        tokio::spawn(forget_on_notice(pool.clone(), Arc::downgrade(&router)));
        Ok(Some(router))
    }

    /// Each dedicated database's store, by name.
    pub fn shards(&self) -> impl Iterator<Item = (&str, &Store)> {
        self.shards.iter().map(|(n, s)| (n.as_str(), s))
    }

    fn cached(&self, tenant: Uuid) -> Option<Placement> {
        let c = self.cache.lock().expect("cache lock");
        c.get(&tenant).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(p, _)| p.clone())
    }

    fn remember(&self, tenant: Uuid, database: Placement) {
        let mut c = self.cache.lock().expect("cache lock");
        if c.len() >= CACHE_LIMIT {
            c.clear();
        }
        c.insert(tenant, (database, std::time::Instant::now()));
    }

    /// Drops the cached placement of `tenant` (all with `None`): the next request reads the
    /// directory.
    pub fn forget(&self, tenant: Option<Uuid>) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut c = self.cache.lock().expect("cache lock");
        match tenant {
            Some(t) => {
                c.remove(&t);
            }
            None => c.clear(),
        }
    }
}

/// Listens for directory changes on the pool and forgets what they touch, until the router is
/// dropped. A lost connection is retried; meanwhile the cache's TTL bounds how stale it gets.
async fn forget_on_notice(pool: Store, router: std::sync::Weak<Router>) {
    loop {
        let mut listener = match crate::listen(&pool, CHANNEL).await {
            Ok(l) => l,
            Err(e) => {
                if pool.reader().is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "cannot listen for placement changes; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if router.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        loop {
            let Some(r) = router.upgrade() else { return };
            drop(r);
            // `try_recv` says when the connection was lost (notices meanwhile are gone).
            match tokio::time::timeout(std::time::Duration::from_secs(5), listener.try_recv()).await {
                Err(_) => continue,
                Ok(Ok(Some(n))) => {
                    let Some(r) = router.upgrade() else { return };
                    r.forget(n.payload().parse().ok());
                }
                Ok(Ok(None)) => {
                    if let Some(r) = router.upgrade() {
                        r.forget(None);
                    }
                }
                Ok(Err(e)) => {
                    // Keel shutting down closes the store before its database stops: not a loss.
                    if pool.reader().is_closed() {
                        return;
                    }
                    tracing::warn!(error = %e, "lost the placement listener; reconnecting");
                    if let Some(r) = router.upgrade() {
                        r.forget(None);
                    }
                    break;
                }
            }
        }
    }
}

/// Whether `tenant` has a row in the directory, and where.
pub async fn placed(conn: &mut PgConnection, tenant: Uuid) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT database FROM tenant_placements WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?)
}

impl Store {
    /// Where `tenant` lives: read from the directory once per tenant and process, then cached
    /// (at most `CACHE_TTL`, and forgotten at once on a notice of a move).
    pub async fn placement(&self, tenant: TenantId) -> Result<Placement, StoreError> {
        let Some(router) = self.router.as_ref() else { return Ok(Placement::pool()) };
        if let Some(p) = router.cached(tenant.0) {
            return Ok(p);
        }
        let generation = router.generation.load(std::sync::atomic::Ordering::SeqCst);
        let mut unit = self.guarded(self.reader().unit()).await?;
        let p = placement_of(&mut unit, tenant.0).await?;
        unit.done().await?;
        if router.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            router.remember(tenant.0, p.clone());
        }
        Ok(p)
    }

    /// The store of database `name` (`pool` is this one).
    pub fn database(&self, name: &str) -> Result<Store, StoreError> {
        if name == POOL {
            return Ok(self.clone());
        }
        self.router.as_ref().and_then(|r| r.shards.get(name)).cloned().ok_or_else(|| {
            StoreError::Placement(format!("database {name} is not connected in this process (restart it)"))
        })
    }

    /// The store of the database `tenant` lives in, where its commands are written: this one
    /// without dedicated databases or for a tenant of the pool.
    pub async fn for_tenant(&self, tenant: TenantId) -> Result<Store, StoreError> {
        if self.router.is_none() {
            return Ok(self.clone());
        }
        self.database(&self.placement(tenant).await?.database)
    }

    /// Forgets the cached placement of `tenant`: the next lookup reads the directory.
    pub fn forget_placement(&self, tenant: TenantId) {
        if let Some(r) = &self.router {
            r.forget(Some(tenant.0));
        }
    }

    /// The directory's name of this store's database: `pool` for the platform's own.
    pub fn database_name(&self) -> &str {
        self.name.as_deref().unwrap_or(POOL)
    }

    /// Places a tenant about to be provisioned (`place`) in this store's directory.
    pub async fn place_tenant(&self, tenant: TenantId, database: &str) -> Result<(), StoreError> {
        let mut unit = self.guarded(self.writer().unit()).await?;
        place(&mut unit, tenant.0, database).await?;
        unit.done().await?;
        self.forget_placement(tenant);
        Ok(())
    }

    /// Every tenant placed outside the pool, by id (the directory, read now).
    pub async fn directory(&self) -> Result<HashMap<Uuid, String>, StoreError> {
        let mut unit = self.reader().unit().await?;
        let all = placements(&mut unit).await?;
        unit.done().await?;
        Ok(all)
    }

    /// This store with the dedicated databases of `router`.
    pub fn with_router(mut self, router: Option<Arc<Router>>) -> Store {
        self.router = router;
        self
    }

    /// The dedicated databases' stores (none without a router).
    pub fn shards(&self) -> Vec<(String, Store)> {
        match &self.router {
            Some(r) => r.shards().map(|(n, s)| (n.to_owned(), s.clone())).collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_database_except_the_pools() {
        let at = crate::LogPosition { xid: 7, position: 42 };
        assert_eq!(token(at, POOL), "7.42");
        assert_eq!(token(at, "eu-1"), "7.42@eu-1");
        assert_eq!(parse_token("7.42"), Some((at, POOL.to_owned())));
        assert_eq!(parse_token("7.42@eu-1"), Some((at, "eu-1".to_owned())));
        assert_eq!(parse_token("7.42@pool"), Some((at, POOL.to_owned())));
        assert_eq!(parse_token("7.42@Bad Name"), None);
        assert_eq!(parse_token("x@eu-1"), None);
        assert_eq!(tag_token("7.42", "eu-1"), "7.42@eu-1");
        assert_eq!(tag_token("7.42@pool", "eu-1"), "7.42@pool");
        assert_eq!(tag_token("7.42", POOL), "7.42");
    }

    #[test]
    fn database_names_are_short_lowercase_words_and_never_pool() {
        assert!(valid_name("eu-acme"));
        assert!(valid_name("a1_b"));
        for bad in ["pool", "", "1abc", "Acme", "a b", "a;drop", &"a".repeat(41)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
