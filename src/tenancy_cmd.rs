//! `keel databases` and `keel tenant export|import|move|retire`: bridge tenancy from the command
//! line (docs/tenancy.md). The work is the store's (`placement`, `archive`, `relocate`); this
//! module finds the databases and prints what was done.

use crate::cli::{DatabasesCmd, TenantCmd};
use anyhow::{Context, bail};
use keel_store::placement::{self, POOL};
use keel_store::{MasterKey, archive, relocate};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::Instant;

/// `keel databases add|list` against the platform's database at `url`.
pub async fn databases(url: &str, key: Option<MasterKey>, command: DatabasesCmd) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await.context("cannot connect to the platform's database")?;
    match command {
        DatabasesCmd::Add { name, url: target } => {
            let key = key.context("a database's URL is sealed with the master key: set KEEL_MASTER_KEY")?;
            if !placement::valid_name(&name) {
                bail!(
                    "{name:?} is not a database name: 1 to 40 of a-z, 0-9, _ and -, starting with a letter, not \"pool\""
                );
            }
            keel_store::migrate(&target).await.with_context(|| format!("cannot migrate database {name}"))?;
            let mut t = PgConnection::connect(&target).await?;
            let version = archive::schema_version(&mut t).await?;
            let _ = t.close().await;
            placement::add(&mut conn, &key, &name, &target).await?;
            println!(
                "registered database {name} (migrated to schema version {version}); restart Keel's instances to serve it"
            );
        }
        DatabasesCmd::List => {
            let placed = placement::placements(&mut conn).await?;
            println!("{:<40} {:>8}  added", "name", "tenants");
            println!("{:<40} {:>8}  -", POOL, "-");
            for d in placement::list(&mut conn).await? {
                let n = placed.values().filter(|v| **v == d.name).count();
                println!("{:<40} {:>8}  {}", d.name, n, d.added_at.to_rfc3339());
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// A one-connection pool on `url` as its own login (the owner's): bulk loads bypass the
/// service roles.
async fn owner_pool(url: &str) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new().max_connections(2).connect(url).await?)
}

/// The URL of `database` (`pool` is the platform's own, `url`).
async fn url_of(url: &str, key: Option<&MasterKey>, database: &str) -> anyhow::Result<String> {
    if database == POOL {
        return Ok(url.to_owned());
    }
    let mut conn = PgConnection::connect(url).await?;
    let found = placement::url_of(&mut conn, key, database).await;
    let _ = conn.close().await;
    Ok(found?)
}

/// `keel tenant export|import|move|retire` against the platform's database at `url`.
pub async fn tenant(url: &str, key: Option<MasterKey>, command: TenantCmd) -> anyhow::Result<()> {
    match command {
        TenantCmd::Export { tenant, out } => {
            let mut conn = PgConnection::connect(url).await?;
            let database = placement::placement_of(&mut conn, tenant).await?.database;
            let _ = conn.close().await;
            let mut source = PgConnection::connect(&url_of(url, key.as_ref(), &database).await?).await?;
            let started = Instant::now();
            let done = match &out {
                Some(path) => {
                    let file =
                        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
                    archive::export(&mut source, keel_domain::TenantId(tenant), key.as_ref(), file).await?
                }
                None => {
                    archive::export(&mut source, keel_domain::TenantId(tenant), key.as_ref(), std::io::stdout().lock())
                        .await?
                }
            };
            if done.events == 0 {
                bail!("tenant {tenant} has no events in database {database}");
            }
            eprintln!(
                "keel: exported {} events ({} bytes) of tenant {tenant} from {database} in {:.2} s",
                done.events,
                done.bytes,
                started.elapsed().as_secs_f64()
            );
        }
        TenantCmd::Import { archive: path, database } => {
            let file = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            let input = std::io::BufReader::with_capacity(1 << 20, file);
            let mut conn = PgConnection::connect(url).await?;
            let header = archive::peek_tenant(&path)?;
            if let Some(at) = placement::placed(&mut conn, header).await? {
                bail!("tenant {header} is placed already, in {at}");
            }
            let target_url = url_of(url, key.as_ref(), &database).await?;
            if database != POOL && archive::has_events(&mut conn, header).await? {
                bail!("tenant {header} has events in the pool already");
            }
            let pool = owner_pool(&target_url).await?;
            let started = Instant::now();
            let done = archive::import(&pool, key.clone(), input, &format!("archive {}", path.display())).await?;
            let secs = started.elapsed().as_secs_f64();
            pool.close().await;
            if database != POOL {
                placement::place(&mut conn, done.tenant_id, &database).await?;
            }
            let _ = conn.close().await;
            println!(
                "imported tenant {} into {database}: {} events in {} streams, every hash chain holds ({:.2} s, {:.0} events/s)",
                done.tenant_id,
                done.events,
                done.streams,
                secs,
                done.events as f64 / secs.max(1e-9)
            );
        }
        TenantCmd::Move { tenant, to, fence, purge, retention, catch_up, crash_after } => {
            let key = key.context("a move opens personal data: set KEEL_MASTER_KEY")?;
            let control = owner_pool(url).await?;
            let from = match relocate::under_way(&control, tenant).await? {
                Some((from, under_way_to)) if under_way_to == to => from,
                Some((from, under_way_to)) => {
                    bail!(
                        "a move of tenant {tenant} from {from} to {under_way_to} is under way: run it again with --to {under_way_to}"
                    )
                }
                None => {
                    let mut conn = control.acquire().await?;
                    placement::placement_of(&mut conn, tenant).await?.database
                }
            };
            let ends = relocate::Ends {
                source: owner_pool(&url_of(url, Some(&key), &from).await?).await?,
                source_name: from.clone(),
                target: owner_pool(&url_of(url, Some(&key), &to).await?).await?,
                target_name: to.clone(),
                control,
                master: Some(key),
            };
            let started = Instant::now();
            let step = |s: &str| {
                eprintln!("keel: move of {tenant}: {s} ({:.1} s)", started.elapsed().as_secs_f64());
                if crash_after.as_deref() == Some(s) {
                    std::process::abort();
                }
            };
            let opts = relocate::MoveOptions { fence, purge, retention, catch_up, step: &step };
            let moved = relocate::run(&ends, tenant, &opts).await?;
            println!(
                "moved tenant {tenant} from {from} to {to}{}: {} events copied ({} under the fence), writes paused {} ms, \
                 {} fences abandoned, every hash chain holds ({:.1} s)",
                if moved.resumed { " (resumed)" } else { "" },
                moved.events,
                moved.fenced_events,
                moved.fence_ms,
                moved.fences_abandoned,
                started.elapsed().as_secs_f64()
            );
            if !purge {
                let until =
                    chrono::Utc::now() + chrono::Duration::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
                println!(
                    "the rows in {from} are kept until {}; `keel tenant retire` retires them then",
                    until.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
        TenantCmd::Retire { now } => {
            let mut conn = PgConnection::connect(url).await?;
            let names: Vec<String> = placement::list(&mut conn).await?.into_iter().map(|d| d.name).collect();
            let _ = conn.close().await;
            for name in std::iter::once(POOL.to_owned()).chain(names) {
                let pool = owner_pool(&url_of(url, key.as_ref(), &name).await?).await?;
                for t in relocate::retire_due(&pool, now).await? {
                    println!("retired tenant {t} from {name}");
                }
                pool.close().await;
            }
        }
        _ => bail!("not a bridge tenancy command"),
    }
    Ok(())
}
