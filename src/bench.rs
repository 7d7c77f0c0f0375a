//! `keel bench`: Keel's speed as ratios against plain PostgreSQL doing the equivalent work on the
//! same server in the same run. Each case alternates short rounds (baseline, Keel, baseline,
//! Keel, ...) because the disk's flush speed drifts; the ratio is of the medians.

use crate::app::{App, AppConfig, Services};
use anyhow::Context;
use chrono::{DateTime, Utc};
use keel_domain::event::ProjectCreated;
use keel_domain::tenant::{OwnerInput, ProvisionTenant, Tenant, TenantCommand, TenantUsage};
use keel_domain::values::ProjectName;
use keel_domain::{Decide, Event, MemberId, ProjectId, TenantId};
use keel_gateway::auth::Secret;
use keel_gateway::{Authenticator, JwtConfig};
use keel_projections::{Projection, Runner, RunnerConfig};
use keel_store::{EventMetadata, PoolSizes, Store, log};
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub clients: usize,
    /// Length of one round.
    pub round: Duration,
    pub rounds: usize,
    /// Events written for the catch-up case.
    pub events: usize,
    /// `synchronous_commit = off` for the benchmark database: a CPU-bound ratio.
    pub async_commit: bool,
    /// Rate limits and shedding of the Keel under test (`KEEL_RATE_LIMIT`, `KEEL_REDIS_URL`, ...).
    pub traffic: keel_gateway::limits::TrafficConfig,
    /// The size of the scale cases (`--scale`): 1.0 is a tenant of 1,000,000 tasks.
    pub scale: f64,
    /// Only the cases whose names start with one of these (`--cases`); empty: every case.
    pub only: Vec<String>,
}

impl BenchOptions {
    /// Whether any of `names` is to run (`only`).
    fn runs(&self, names: &[&str]) -> bool {
        self.only.is_empty() || names.iter().any(|n| self.only.iter().any(|p| n.starts_with(p.as_str())))
    }

    /// The quiet tenants of `busy_neighbour` at this scale (at least 100).
    pub fn quiet_tenants(&self) -> usize {
        ((10_000.0 * self.scale) as usize).max(100)
    }

    /// The events already in the log for `append_large_log` at this scale (at least 10,000).
    pub fn large_log_events(&self) -> i64 {
        ((10_000_000.0 * self.scale) as i64).max(10_000)
    }

    /// The big tenant's tasks at this scale (at least 1,000).
    pub fn big_tenant_tasks(&self) -> i64 {
        ((1_000_000.0 * self.scale) as i64).max(1_000)
    }
}

impl BenchOptions {
    pub fn quick() -> BenchOptions {
        BenchOptions {
            clients: 4,
            round: Duration::from_millis(1200),
            rounds: 2,
            events: 3_000,
            async_commit: false,
            traffic: Default::default(),
            scale: 0.02,
            only: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub keel_ops_s: f64,
    pub baseline_ops_s: f64,
    pub ratio: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The baseline's p99 in the same rounds: what the server and disk alone give.
    pub baseline_p99_ms: f64,
    /// The baseline's p50 (for the scale cases, whose baseline is Keel itself at a small size).
    pub baseline_p50_ms: f64,
    /// The bench process's peak resident memory when the case ended (Keel in-process with the
    /// bench's own clients): which case makes it grow.
    pub peak_rss_kb: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cases: Vec<CaseResult>,
    pub machine: serde_json::Value,
}

/// What a load produced: operations, elapsed seconds, each operation's latency.
struct Sample {
    ops: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn percentile(lat: &mut [Duration], p: f64) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort();
    let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
    lat[i].as_secs_f64() * 1000.0
}

/// `clients` loops running `op` back to back for `round`.
async fn closed_loop<F, Fut>(clients: usize, round: Duration, op: F) -> anyhow::Result<Sample>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + round;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(c, n).await?;
                lat.push(t.elapsed());
                n += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Sample { ops: latencies.len() as u64, secs: started.elapsed().as_secs_f64(), latencies })
}

/// `op` started `rate` times a second for `round`, however long each takes.
async fn open_loop<F, Fut>(rate: u32, round: Duration, op: F) -> anyhow::Result<Sample>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < round {
        tick.tick().await;
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            op(n).await.map(|_| t.elapsed())
        }));
        n += 1;
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.push(t.await??);
    }
    Ok(Sample {
        ops: latencies.len() as u64,
        secs: started.elapsed().as_secs_f64().max(round.as_secs_f64()),
        latencies,
    })
}

/// Alternates baseline and Keel rounds and reports the ratio of the medians.
async fn alternate<B, BF, K, KF>(
    name: &str,
    opts: &BenchOptions,
    progress: &(dyn Fn(&str) + Sync),
    baseline: B,
    keel: K,
) -> anyhow::Result<CaseResult>
where
    B: Fn() -> BF,
    BF: Future<Output = anyhow::Result<Sample>>,
    K: Fn() -> KF,
    KF: Future<Output = anyhow::Result<Sample>>,
{
    let (mut b, mut k, mut lat, mut base_lat) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        progress(&format!("{name}: round {}/{} baseline", round + 1, opts.rounds));
        let s = baseline().await?;
        b.push(s.rate());
        base_lat.extend(s.latencies);
        progress(&format!("{name}: round {}/{} keel", round + 1, opts.rounds));
        let s = keel().await?;
        k.push(s.rate());
        lat.extend(s.latencies);
    }
    let (keel_ops_s, baseline_ops_s) = (median(k), median(b));
    Ok(CaseResult {
        name: name.to_owned(),
        keel_ops_s,
        baseline_ops_s,
        ratio: if baseline_ops_s > 0.0 { keel_ops_s / baseline_ops_s } else { 0.0 },
        p50_ms: percentile(&mut lat, 0.50),
        p99_ms: percentile(&mut lat, 0.99),
        baseline_p99_ms: percentile(&mut base_lat, 0.99),
        baseline_p50_ms: percentile(&mut base_lat, 0.50),
        peak_rss_kb: read_kb("/proc/self/status", "VmHWM:"),
    })
}

fn meta() -> EventMetadata {
    EventMetadata {
        actor: "user:bench".into(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        request_id: None,
        demo: false,
    }
}

async fn provision(store: &Store, slug: &str) -> anyhow::Result<TenantId> {
    let tenant = TenantId::new_v7();
    let cmd = ProvisionTenant {
        tenant_id: tenant,
        owner_member_id: MemberId::new_v7(),
        name: slug.into(),
        slug: slug.into(),
        plan: "enterprise".into(),
        owner: OwnerInput { user_id: "bench".into(), email: format!("bench@{slug}.test"), name: "Bench".into() },
    };
    let events = Tenant::default().decide(TenantCommand::Provision(cmd), &TenantUsage::default(), Utc::now())?;
    let mut tx = store.begin_write(tenant).await?;
    log::append(&mut tx, &[], &events, &meta(), Utc::now()).await?;
    tx.commit().await?;
    Ok(tenant)
}

fn project_created(name: &str) -> Event {
    project_created_with(ProjectId::new_v7(), name)
}

fn project_created_with(project_id: ProjectId, name: &str) -> Event {
    Event::ProjectCreated(ProjectCreated {
        project_id,
        name: ProjectName::parse("name", name).expect("valid"),
        description: None,
        at: Utc::now(),
    })
}

const PLAIN_SQL: &str = "CREATE TABLE bench_plain (
        position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, stream_id uuid NOT NULL,
        stream_version bigint NOT NULL, event_id uuid NOT NULL UNIQUE, event_type text NOT NULL, payload jsonb NOT NULL,
        metadata jsonb NOT NULL, recorded_at timestamptz NOT NULL, hash bytea NOT NULL,
        UNIQUE (tenant_id, stream_id, stream_version));
    CREATE TABLE bench_usage (tenant_id uuid NOT NULL, record_id text NOT NULL, metric text NOT NULL, quantity bigint NOT NULL,
        occurred_at timestamptz NOT NULL, PRIMARY KEY (tenant_id, record_id));
    CREATE TABLE bench_rm (tenant_id uuid NOT NULL, project_id uuid NOT NULL, name text NOT NULL, status text NOT NULL,
        created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, version bigint NOT NULL, PRIMARY KEY (tenant_id, project_id));";

async fn plain_insert(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO bench_plain (tenant_id, stream_id, stream_version, event_id, event_type, payload, metadata, recorded_at, hash)
         VALUES ($1, $2, 1, $3, 'ProjectCreated', $4, $5, now(), $6)",
    )
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(json!({"name": "P", "at": Utc::now()}))
    .bind(json!({"actor": "user:bench"}))
    .bind(vec![0u8; 32])
    .execute(pool)
    .await?;
    Ok(())
}

/// The append case's operation: one event (a new project's, which moves the tenant's counters)
/// to a new stream, as the write path's one call (`keel_append`: tenant setting, hash chain,
/// insert and counters, its own transaction).
async fn one_call_append(store: &Store, tenant: TenantId) -> anyhow::Result<()> {
    let mut conn = store.write_conn().await?;
    let guard = keel_store::log::ReadGuard::default();
    conn.append(tenant, &[], &[project_created("P")], &meta(), Utc::now(), &guard, None, None).await?;
    store.events_appended();
    Ok(())
}

/// REST `CreateTask` through the port, as the command cases send it.
async fn create_task(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    project: &str,
    title: &str,
) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/api/v1/projects/{project}/tasks"))
        .bearer_auth(token)
        .json(&json!({"title": title, "priority": "high"}))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "CreateTask answered {}", r.status());
    Ok(())
}

/// One GraphQL request that must answer without errors (the query cases' operation).
async fn graphql_ok(http: &reqwest::Client, base: &str, token: &str, query: &str) -> anyhow::Result<()> {
    let r: serde_json::Value = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query}))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(r.get("errors").is_none(), "query failed: {r}");
    Ok(())
}

/// A project made through REST as `token`'s tenant; its id.
async fn rest_project(http: &reqwest::Client, base: &str, token: &str, name: &str) -> anyhow::Result<String> {
    let r: serde_json::Value = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(token)
        .json(&json!({"name": name}))
        .send()
        .await?
        .json()
        .await?;
    Ok(r["id"].as_str().with_context(|| format!("project {name}: {r}"))?.to_owned())
}

/// Runs every case against a new database on the server of `admin_url`, dropped at the end.
pub async fn run(admin_url: &str, opts: &BenchOptions, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Report> {
    let db = format!("keel_bench_{}_{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..6]);
    let (head, _) = admin_url.rsplit_once('/').context("DATABASE_URL names a database")?;
    let url = format!("{head}/{db}");
    let mut admin = PgConnection::connect(admin_url).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .await
        .context("CREATE DATABASE (needs CREATEDB)")?;
    let result = run_in(&url, opts, progress).await;
    let _ = admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).await;
    let mut report = result?;
    if opts.runs(&["replica_lag"]) {
        report.cases.push(replica_lag_case(opts, progress).await?);
    }
    if opts.runs(&["import"]) {
        report.cases.push(import_case(admin_url, opts, progress).await?);
    }
    Ok(report)
}

/// A database of its own on the server of `admin_url` for the length of `work`, dropped after.
async fn with_scratch_database<T>(
    admin_url: &str,
    tag: &str,
    work: impl AsyncFnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let db = format!("keel_bench_{tag}_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let (head, _) = admin_url.rsplit_once('/').context("DATABASE_URL names a database")?;
    let mut admin = PgConnection::connect(admin_url).await?;
    admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).await?;
    let result = work(&format!("{head}/{db}")).await;
    let _ = admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).await;
    result
}

/// import: `keel tenant import`'s rate (docs/tenancy.md). One tenant of `100,000 × scale`
/// events (at least 2,000: projects created, a thousand to a transaction) is exported once;
/// each round loads the archive into a new migrated database — COPY with every hash chain
/// checked, the inline tables derived and compared, the seal checked — against plain PostgreSQL:
/// COPY of the same event rows into a table like `events` (its indexes and constraints, no
/// checks). Rates are events per second; `p50_ms`/`p99_ms` are the rounds' median and longest
/// import, `baseline_p50_ms`/`baseline_p99_ms` the plain COPY's.
async fn import_case(
    admin_url: &str,
    opts: &BenchOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<CaseResult> {
    let n = ((100_000.0 * opts.scale) as usize).max(2_000);
    let master = keel_store::MasterKey::generate();
    progress(&format!("import: a tenant of {n} events, exported once"));
    let archive: Vec<u8> = with_scratch_database(admin_url, "import_src", async |url: &str| {
        keel_store::migrate(url).await?;
        let store = Store::connect(url, PoolSizes { writer: 2, reader: 1, projector: 1 }, Some(master.clone())).await?;
        let tenant = provision(&store, "import").await?;
        let mut left = n.saturating_sub(2);
        while left > 0 {
            let batch: Vec<Event> = (0..left.min(1000)).map(|i| project_created(&format!("P{i}"))).collect();
            let mut tx = store.begin_write(tenant).await?;
            log::append(&mut tx, &[], &batch, &meta(), Utc::now()).await?;
            tx.commit().await?;
            left -= batch.len();
        }
        store.close().await;
        let mut conn = PgConnection::connect(url).await?;
        let mut out = Vec::new();
        keel_store::archive::export(&mut conn, tenant, Some(&master), &mut out).await?;
        Ok(out)
    })
    .await?;
    let text = std::str::from_utf8(&archive).context("the archive is UTF-8")?;
    let start = text.find("@section events").context("an events section")?;
    let body = &text[start + text[start..].find('\n').context("a section line")? + 1..];
    let rows = &body[..body.find("\\.\n").context("the end of the events")?];
    let events = rows.lines().count() as f64;
    let (mut keel_s, mut base_s) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds.max(1) {
        progress(&format!("import: round {} of {}", round + 1, opts.rounds.max(1)));
        let (k, b) = with_scratch_database(admin_url, "import_dst", async |url: &str| {
            keel_store::migrate(url).await?;
            let mut conn = PgConnection::connect(url).await?;
            conn.execute("CREATE TABLE bench_copy (LIKE events INCLUDING ALL)").await?;
            let started = Instant::now();
            let mut copy = conn
                .copy_in_raw(&format!("COPY bench_copy ({}) FROM STDIN", keel_store::archive::EVENT_COLUMNS))
                .await?;
            for chunk in rows.as_bytes().chunks(1 << 20) {
                copy.send(chunk).await?;
            }
            copy.finish().await?;
            let b = started.elapsed();
            let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
            let input = std::io::Cursor::new(archive.clone());
            let started = Instant::now();
            let done = keel_store::archive::import(&pool, Some(master.clone()), input, "bench").await?;
            let k = started.elapsed();
            anyhow::ensure!(done.events as f64 == events, "imported {} of {events} events", done.events);
            pool.close().await;
            Ok((k, b))
        })
        .await?;
        keel_s.push(k);
        base_s.push(b);
    }
    let rate = |d: &Vec<Duration>| median(d.iter().map(|d| events / d.as_secs_f64().max(1e-9)).collect());
    let (keel_rate, base_rate) = (rate(&keel_s), rate(&base_s));
    Ok(CaseResult {
        name: "import".into(),
        keel_ops_s: keel_rate,
        baseline_ops_s: base_rate,
        ratio: keel_rate / base_rate.max(1e-9),
        p50_ms: percentile(&mut keel_s, 0.5),
        p99_ms: percentile(&mut keel_s, 1.0),
        baseline_p50_ms: percentile(&mut base_s, 0.5),
        baseline_p99_ms: percentile(&mut base_s, 1.0),
        peak_rss_kb: read_kb("/proc/self/status", "VmHWM:"),
    })
}

/// replica_lag: how far a streaming standby trails the primary under the write load. A private
/// primary and a hot standby (`pg_basebackup`, asynchronous, on this machine; not the server of
/// DATABASE_URL), with the append load (Keel's one-call append, then the plain insert, in
/// alternating rounds) on the primary while the primary's `pg_stat_replication.replay_lag` is
/// sampled every 20 ms. Its `keel_ops_s`/`baseline_ops_s`/`ratio` are the append rates with a
/// standby attached; its `p50_ms`/`p99_ms` are the standby's replay lag under Keel's load, and
/// `baseline_p50_ms`/`baseline_p99_ms` under the plain insert's.
async fn replica_lag_case(opts: &BenchOptions, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<CaseResult> {
    use std::sync::atomic::{AtomicU8, Ordering};
    progress("replica_lag: a private primary and standby");
    let bindir = crate::embedded::find_bindir(None)?;
    let dir = std::env::temp_dir().join(format!("keel-bench-replica-{}", Uuid::new_v4().simple()));
    let (d, b) = (dir.join("primary"), bindir.clone());
    let primary = Arc::new(tokio::task::spawn_blocking(move || crate::embedded::EmbeddedPg::start(&d, &b)).await??);
    let stop_all = |primary: Arc<crate::embedded::EmbeddedPg>, standby: Option<Arc<crate::embedded::EmbeddedPg>>| {
        if let Some(s) = standby {
            let _ = s.stop_with(crate::embedded::StopMode::Immediate);
        }
        let _ = primary.stop_with(crate::embedded::StopMode::Immediate);
        let _ = std::fs::remove_dir_all(&dir);
    };
    let measured = async {
        primary.ensure_database().await?;
        let url = primary.database_url();
        keel_store::migrate(&url).await?;
        let p = primary.clone();
        let sdir = dir.join("standby");
        let standby = Arc::new(tokio::task::spawn_blocking(move || p.start_standby(&sdir, None)).await??);
        let result = async {
            let mut owner = PgConnection::connect(&url).await?;
            owner.execute(PLAIN_SQL).await?;
            let plain = PgPoolOptions::new().max_connections(opts.clients as u32 + 2).connect(&url).await?;
            let sizes = PoolSizes { writer: opts.clients as u32 + 2, reader: 2, projector: 2 };
            let store = Store::connect(&url, sizes, Some(keel_store::MasterKey::generate())).await?;
            let mut tenants = Vec::new();
            for c in 0..opts.clients.max(1) {
                tenants.push(provision(&store, &format!("replica-{c}")).await?);
            }
            let tenants = Arc::new(tenants);
            // 1 while the baseline runs, 2 while Keel does; the sampler files each lag under it.
            let phase = Arc::new(AtomicU8::new(0));
            let lags: Arc<std::sync::Mutex<[Vec<Duration>; 3]>> = Arc::default();
            let sampler = {
                let (phase, lags, url) = (phase.clone(), lags.clone(), url.clone());
                tokio::spawn(async move {
                    let Ok(mut c) = PgConnection::connect(&url).await else { return };
                    loop {
                        let lag: Result<Option<f64>, _> = sqlx::query_scalar(
                            "SELECT (EXTRACT(epoch FROM max(replay_lag)) * 1000)::float8 FROM pg_stat_replication",
                        )
                        .fetch_one(&mut c)
                        .await;
                        let ms = lag.ok().flatten().unwrap_or(0.0);
                        let at = phase.load(Ordering::Relaxed) as usize;
                        lags.lock().expect("not poisoned")[at].push(Duration::from_secs_f64(ms / 1000.0));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            };
            let (ph_b, ph_k) = (phase.clone(), phase.clone());
            let mut case = alternate(
                "replica_lag",
                opts,
                progress,
                || {
                    ph_b.store(1, Ordering::Relaxed);
                    let p = plain.clone();
                    closed_loop(opts.clients, opts.round, move |_, _| {
                        let p = p.clone();
                        async move { plain_insert(&p).await }
                    })
                },
                || {
                    ph_k.store(2, Ordering::Relaxed);
                    let (s, t) = (store.clone(), tenants.clone());
                    closed_loop(opts.clients, opts.round, move |c, _| {
                        let (s, tenant) = (s.clone(), t[c]);
                        async move { one_call_append(&s, tenant).await }
                    })
                },
            )
            .await?;
            sampler.abort();
            let mut lags = std::mem::take(&mut *lags.lock().expect("not poisoned"));
            case.p50_ms = percentile(&mut lags[2], 0.50);
            case.p99_ms = percentile(&mut lags[2], 0.99);
            case.baseline_p50_ms = percentile(&mut lags[1], 0.50);
            case.baseline_p99_ms = percentile(&mut lags[1], 0.99);
            store.close().await;
            plain.close().await;
            owner.close().await?;
            Ok::<_, anyhow::Error>(case)
        }
        .await;
        Ok::<_, anyhow::Error>((result, standby))
    }
    .await;
    match measured {
        Ok((result, standby)) => {
            stop_all(primary, Some(standby));
            result
        }
        Err(e) => {
            stop_all(primary, None);
            Err(e)
        }
    }
}

async fn run_in(url: &str, opts: &BenchOptions, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Report> {
    progress("setting up");
    let mut owner = PgConnection::connect(url).await?;
    if opts.async_commit {
        owner.execute("SELECT set_config('synchronous_commit', 'off', false)").await?;
        let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut owner).await?;
        owner.execute(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{db}\" SET synchronous_commit = off"))).await?;
    }
    keel_store::migrate(url).await?;
    owner.execute(PLAIN_SQL).await?;
    let plain = PgPoolOptions::new().max_connections(opts.clients as u32 + 2).connect(url).await?;
    let secret = Uuid::new_v4().simple().to_string().repeat(2);
    let jwt = JwtConfig::hs256(Secret::new(secret.into_bytes()));
    let sizes = PoolSizes { writer: opts.clients as u32 + 2, reader: 16, projector: 8 };
    let app = App::build(AppConfig {
        database_url: url.into(),
        read_database_url: None,
        direct_database_url: None,
        listen: "127.0.0.1:0".into(),
        jwt: jwt.clone(),
        consistency_wait: Duration::from_secs(2),
        body_limit: 1 << 20,
        services: Services { command: true, query: true, projector: false },
        runner: RunnerConfig::default(),
        outbound: keel_outbound::OutboundConfig::default(),
        webhooks: keel_command::WebhookSettings::default(),
        pools: sizes,
        master_key: keel_store::MasterKey::generate(),
        // Its only clients are the bench's own, done by the time it stops: nothing to drain.
        limits: crate::EdgeLimits {
            traffic: opts.traffic.clone(),
            drain: Duration::ZERO,
            ..crate::EdgeLimits::default()
        },
        console: keel_console::ConsoleConfig::default(),
    })
    .await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let store = app.store().clone();
    let auth = Authenticator::hs256(jwt);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(app.run(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    }));
    let http = reqwest::Client::builder().pool_max_idle_per_host(opts.clients * 2).build()?;

    let mut tenants = Vec::new();
    for c in 0..opts.clients.max(1) {
        tenants.push(provision(&store, &format!("bench-{c}")).await?);
    }
    let tenants = Arc::new(tenants);
    let mut cases = Vec::new();
    let f = Fixture { opts, progress, store, plain, http, base, auth, tenants };
    if opts.runs(&["append"]) {
        append_case(&f, &mut cases).await?;
    }
    if opts.runs(&["command", "command_half_rate"]) {
        command_cases(&f, &mut cases).await?;
    }
    if opts.runs(&["usage_batch"]) {
        usage_batch_case(&f, &mut cases).await?;
    }
    if opts.runs(&["catch_up"]) {
        catch_up_case(&f, &mut cases).await?;
    }
    if opts.runs(&["query_projects", "query_tasks", "dashboard", "read_your_writes"]) {
        query_cases(&f, &mut cases).await?;
    }
    if opts.runs(&["big_first_page", "big_deep_page", "big_status_filter", "big_priority_filter"]) {
        big_tenant_cases(&f, &mut cases).await?;
    }
    if opts.runs(&["busy_neighbour"]) {
        busy_neighbour_case(&f, &mut cases).await?;
    }
    if opts.runs(&["append_large_log"]) {
        large_log_case(&f, &mut cases).await?;
    }
    let Fixture { plain, .. } = f;

    let _ = stop_tx.send(true);
    let _ = server.await;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&plain).await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&plain).await?;
    plain.close().await;
    owner.close().await?;
    let machine = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_kb": read_kb("/proc/meminfo", "MemTotal:"),
        "postgres": version,
        "synchronous_commit": sync,
        "clients": opts.clients,
        "round_seconds": opts.round.as_secs_f64(),
        "rounds": opts.rounds,
        "events": opts.events,
        "scale": opts.scale,
        "big_tenant_tasks": opts.big_tenant_tasks(),
        "large_log_events": opts.large_log_events(),
        "quiet_tenants": opts.quiet_tenants(),
        "peak_rss_kb": read_kb("/proc/self/status", "VmHWM:"),
    });
    Ok(Report { cases, machine })
}

/// What every case runs against: the options, the plain-PostgreSQL pool, Keel's store and HTTP
/// port, and one tenant per client.
struct Fixture<'a> {
    opts: &'a BenchOptions,
    progress: &'a (dyn Fn(&str) + Sync),
    store: Store,
    plain: PgPool,
    http: reqwest::Client,
    base: String,
    auth: Authenticator,
    tenants: Arc<Vec<TenantId>>,
}

/// append: one event, new stream, OCC + hash + counters, one call (its own transaction).
async fn append_case(f: &Fixture<'_>, cases: &mut Vec<CaseResult>) -> anyhow::Result<()> {
    let (opts, progress, store, plain, tenants) = (f.opts, f.progress, &f.store, &f.plain, &f.tenants);
    let (s, t, p) = (store.clone(), tenants.clone(), plain.clone());
    cases.push(
        alternate(
            "append",
            opts,
            progress,
            || {
                let p = p.clone();
                closed_loop(opts.clients, opts.round, move |_, _| {
                    let p = p.clone();
                    async move { plain_insert(&p).await }
                })
            },
            || {
                let (s, t) = (s.clone(), t.clone());
                closed_loop(opts.clients, opts.round, move |c, _| {
                    let (s, tenant) = (s.clone(), t[c]);
                    async move { one_call_append(&s, tenant).await }
                })
            },
        )
        .await?,
    );
    Ok(())
}

/// command: REST CreateTask through the port with JWT auth.
async fn command_cases(f: &Fixture<'_>, cases: &mut Vec<CaseResult>) -> anyhow::Result<()> {
    let (opts, progress, plain, http, base, auth, tenants) =
        (f.opts, f.progress, &f.plain, &f.http, &f.base, &f.auth, &f.tenants);
    let mut setup = Vec::new();
    for (c, tenant) in tenants.iter().enumerate() {
        let token = auth.issue("bench", Some(tenant.0), false, Duration::from_secs(3600));
        let project = rest_project(http, base, &token, &format!("Bench {c}")).await?;
        setup.push((token, project));
    }
    let setup = Arc::new(setup);
    let (h, b, p) = (http.clone(), base.clone(), plain.clone());
    cases.push(
        alternate(
            "command",
            opts,
            progress,
            || {
                let p = p.clone();
                closed_loop(opts.clients, opts.round, move |_, _| {
                    let p = p.clone();
                    async move { plain_insert(&p).await }
                })
            },
            || {
                let (h, b, setup) = (h.clone(), b.clone(), setup.clone());
                closed_loop(opts.clients, opts.round, move |c, n| {
                    let (h, b, setup) = (h.clone(), b.clone(), setup.clone());
                    async move {
                        let (token, project) = &setup[c];
                        create_task(&h, &b, token, project, &format!("T{n}")).await
                    }
                })
            },
        )
        .await?,
    );
    // The same command at half the rate Keel just sustained, started on a clock (open loop):
    // the latency a client sees when the service is not saturated.
    let half = (cases.last().map_or(2.0, |c: &CaseResult| c.keel_ops_s) / 2.0).max(1.0) as u32;
    let (h, b, p, clients) = (http.clone(), base.clone(), plain.clone(), opts.clients);
    cases.push(
        alternate(
            "command_half_rate",
            opts,
            progress,
            || {
                let p = p.clone();
                open_loop(half, opts.round, move |_| {
                    let p = p.clone();
                    async move { plain_insert(&p).await }
                })
            },
            || {
                let (h, b, setup) = (h.clone(), b.clone(), setup.clone());
                open_loop(half, opts.round, move |n| {
                    let (h, b, setup) = (h.clone(), b.clone(), setup.clone());
                    async move {
                        let (token, project) = &setup[n as usize % clients];
                        create_task(&h, &b, token, project, &format!("H{n}")).await
                    }
                })
            },
        )
        .await?,
    );
    Ok(())
}

/// usage_batch: RecordUsage with 100 records a call.
async fn usage_batch_case(f: &Fixture<'_>, cases: &mut Vec<CaseResult>) -> anyhow::Result<()> {
    let (opts, progress, plain, http, base, auth, tenants) =
        (f.opts, f.progress, &f.plain, &f.http, &f.base, &f.auth, &f.tenants);
    let counter = Arc::new(AtomicU64::new(0));
    let tokens: Arc<Vec<String>> =
        Arc::new(tenants.iter().map(|t| auth.issue("bench", Some(t.0), false, Duration::from_secs(3600))).collect());
    let (h, b, p, tn) = (http.clone(), base.clone(), plain.clone(), tenants.clone());
    cases.push(
            alternate(
                "usage_batch",
                opts,
                progress,
                || {
                    let (p, counter, tn) = (p.clone(), counter.clone(), tn.clone());
                    closed_loop(opts.clients, opts.round, move |c, _| {
                        let (p, counter, tenant) = (p.clone(), counter.clone(), tn[c]);
                        async move {
                            let base = counter.fetch_add(100, Ordering::Relaxed);
                            let ids: Vec<String> = (base..base + 100).map(|i| format!("b{i}")).collect();
                            sqlx::query(
                                "INSERT INTO bench_usage (tenant_id, record_id, metric, quantity, occurred_at)
                                 SELECT $1, r, 'api.calls', 1, now() FROM UNNEST($2::text[]) r",
                            )
                            .bind(tenant.0)
                            .bind(&ids)
                            .execute(&p)
                            .await?;
                            Ok(())
                        }
                    })
                },
                || {
                    let (h, b, counter, tokens) = (h.clone(), b.clone(), counter.clone(), tokens.clone());
                    closed_loop(opts.clients, opts.round, move |c, _| {
                        let (h, b, counter, tokens) = (h.clone(), b.clone(), counter.clone(), tokens.clone());
                        async move {
                            let base = counter.fetch_add(100, Ordering::Relaxed);
                            let now = Utc::now();
                            let records: Vec<_> = (base..base + 100)
                                .map(|i| json!({"id": format!("k{i}"), "metric": "api.calls", "quantity": 1, "occurred_at": now}))
                                .collect();
                            let r = h
                                .post(format!("{b}/api/v1/usage"))
                                .bearer_auth(&tokens[c])
                                .json(&json!({"records": records}))
                                .send()
                                .await?;
                            anyhow::ensure!(r.status().as_u16() == 201, "RecordUsage answered {}", r.status());
                            Ok(())
                        }
                    })
                },
            )
            .await?,
        );
    Ok(())
}

/// catch_up: the projects projection applying pre-written events from checkpoint 0.
async fn catch_up_case(f: &Fixture<'_>, cases: &mut Vec<CaseResult>) -> anyhow::Result<()> {
    let (opts, progress, store, plain) = (f.opts, f.progress, &f.store, &f.plain);
    progress(&format!("catch_up: writing {} events", opts.events));
    // A tenant of its own: the query cases below measure an ordinary tenant.
    let tenant = provision(store, "bench-catch-up").await?;
    let mut written = 0;
    while written < opts.events {
        let n = (opts.events - written).min(1000);
        let events: Vec<Event> = (0..n).map(|i| project_created(&format!("C{}", written + i))).collect();
        let mut tx = store.begin_write(tenant).await?;
        log::append(&mut tx, &[], &events, &meta(), Utc::now()).await?;
        tx.commit().await?;
        written += n;
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(plain).await?;
    let (s, p) = (store.clone(), plain.clone());
    cases.push(
            alternate(
                "catch_up",
                opts,
                progress,
                || {
                    let p = p.clone();
                    async move {
                        sqlx::query("TRUNCATE bench_rm").execute(&p).await?;
                        let started = Instant::now();
                        let mut conn = p.acquire().await?;
                        let mut last = 0i64;
                        let mut ops = 0u64;
                        loop {
                            let mut tx = conn.begin().await?;
                            let rows: Vec<(i64, Uuid, serde_json::Value, chrono::DateTime<Utc>, i64)> = sqlx::query_as(
                                "SELECT position, tenant_id, payload, recorded_at, stream_version FROM events
                                  WHERE position > $1 ORDER BY position LIMIT 500",
                            )
                            .bind(last)
                            .fetch_all(&mut *tx)
                            .await?;
                            let Some(l) = rows.last() else { break };
                            last = l.0;
                            for (_, tenant, payload, at, v) in &rows {
                                sqlx::query(
                                    "INSERT INTO bench_rm (tenant_id, project_id, name, status, created_at, updated_at, version)
                                     VALUES ($1, $2, $3, 'active', $4, $4, $5)
                                     ON CONFLICT (tenant_id, project_id) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version",
                                )
                                .bind(tenant)
                                .bind(payload["project_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_else(Uuid::now_v7))
                                .bind(payload["name"].as_str().unwrap_or(""))
                                .bind(at)
                                .bind(v)
                                .execute(&mut *tx)
                                .await?;
                            }
                            tx.commit().await?;
                            ops += rows.len() as u64;
                        }
                        Ok(Sample { ops, secs: started.elapsed().as_secs_f64(), latencies: Vec::new() })
                    }
                },
                || {
                    let (s, p) = (s.clone(), p.clone());
                    async move {
                        let model = &keel_store::read::projects::MODEL;
                        keel_store::rebuild::reset_live(&p, model.name, model.tables).await?;
                        let started = Instant::now();
                        let runner = Runner::new(s, Projection(model), RunnerConfig { batch_size: 500, ..RunnerConfig::default() });
                        let n = runner.run_once().await?;
                        Ok(Sample { ops: n as u64, secs: started.elapsed().as_secs_f64(), latencies: Vec::new() })
                    }
                },
            )
            .await?,
        );
    let _ = total;
    Ok(())
}

/// The query cases (projects, tasks, dashboard) and read-your-writes, on read models kept
/// current by the workers.
async fn query_cases(f: &Fixture<'_>, cases: &mut Vec<CaseResult>) -> anyhow::Result<()> {
    let (opts, progress, store, plain, http, base, auth) =
        (f.opts, f.progress, &f.store, &f.plain, &f.http, &f.base, &f.auth);
    // The read models for the query cases, kept current by the workers from here on.
    progress("query: preparing read models");
    let (workers_stop, workers_rx) = watch::channel(false);
    let workers = keel_projections::spawn_all(store, &RunnerConfig::default(), &workers_rx);
    // Every projection first catches up with the whole log (the catch-up case's events too), so
    // that no catch-up competes with the measured queries.
    loop {
        let mut behind = 0;
        for name in keel_projections::names() {
            behind += keel_store::checkpoint::status(store.projector(), name).await?.lag_events;
        }
        if behind == 0 {
            break;
        }
        progress(&format!("query: waiting for the projections ({behind} events behind)"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let qtenant = provision(store, "bench-query").await?;
    let qtoken = auth.issue("bench", Some(qtenant.0), false, Duration::from_secs(3600));
    {
        let project = rest_project(http, base, &qtoken, "Query").await?;
        let mut last = String::new();
        for i in 0..200 {
            let r: serde_json::Value = http
                .post(format!("{base}/api/v1/projects/{project}/tasks"))
                .bearer_auth(&qtoken)
                .json(&json!({"title": format!("Q{i}"), "due_date": format!("2027-01-{:02}", i % 28 + 1)}))
                .send()
                .await?
                .json()
                .await?;
            last = r["position"].as_str().unwrap_or_default().to_owned();
        }
        // Wait for every projection to reach the last write.
        http.post(format!("{base}/graphql"))
            .bearer_auth(&qtoken)
            .header("keel-consistency", last)
            .json(&json!({"query": "{ dashboard { memberCount tasksByStatus { total } completedPerDay(days: 1) { count } usage { units } } projects { totalCount } }"}))
            .send()
            .await?;
    }
    let graphql = |query: &'static str| {
        let (h, b, t) = (http.clone(), base.clone(), qtoken.clone());
        move |_: u64| {
            let (h, b, t) = (h.clone(), b.clone(), t.clone());
            async move { graphql_ok(&h, &b, &t, query).await }
        }
    };
    let plain_sql = |sql: &'static str| {
        let (p, t) = (plain.clone(), qtenant.0);
        move |_: u64| {
            let p = p.clone();
            async move {
                sqlx::query(sql).bind(t).fetch_all(&p).await?;
                Ok(())
            }
        }
    };
    for (name, gql, sql) in [
        (
            "query_projects",
            "{ projects(first: 50) { totalCount edges { node { id name status taskCounts { total } progress } } } }",
            "SELECT project_id, name, status, tasks_todo + tasks_in_progress + tasks_done FROM rm_projects WHERE tenant_id = $1 ORDER BY created_at, project_id LIMIT 51",
        ),
        (
            "query_tasks",
            "{ tasks(first: 50, filter: {status: TODO}, orderBy: {field: DUE_DATE}) { totalCount edges { node { id title dueDate } } } }",
            "SELECT task_id, title, due_date FROM rm_tasks WHERE tenant_id = $1 AND status = 'todo' ORDER BY due_date, task_id LIMIT 51",
        ),
        (
            "dashboard",
            "{ dashboard { tasksByStatus { todo inProgress done } completedPerDay(days: 14) { count } overdueTasks activeProjects memberCount usage { units quota } } }",
            "SELECT count(*) FILTER (WHERE status = 'todo'), count(*) FILTER (WHERE status = 'done') FROM rm_tasks WHERE tenant_id = $1",
        ),
    ] {
        let (g, p) = (graphql(gql), plain_sql(sql));
        cases.push(
            alternate(
                name,
                opts,
                progress,
                || open_loop(100, opts.round, p.clone()),
                || open_loop(100, opts.round, g.clone()),
            )
            .await?,
        );
    }

    // read_your_writes: a command, then a GraphQL read of it with Keel-Consistency.
    {
        let (h, b, t, p) = (http.clone(), base.clone(), qtoken.clone(), plain.clone());
        cases.push(
            alternate(
                "read_your_writes",
                opts,
                progress,
                || {
                    let p = p.clone();
                    closed_loop(1, opts.round, move |_, _| {
                        let p = p.clone();
                        async move {
                            plain_insert(&p).await?;
                            sqlx::query("SELECT * FROM bench_plain ORDER BY position DESC LIMIT 1")
                                .fetch_one(&p)
                                .await?;
                            Ok(())
                        }
                    })
                },
                || {
                    let (h, b, t) = (h.clone(), b.clone(), t.clone());
                    closed_loop(1, opts.round, move |_, n| {
                        let (h, b, t) = (h.clone(), b.clone(), t.clone());
                        async move {
                            let r: serde_json::Value = h
                                .post(format!("{b}/api/v1/projects"))
                                .bearer_auth(&t)
                                .json(&json!({"name": format!("RYW {n}")}))
                                .send()
                                .await?
                                .json()
                                .await?;
                            let (id, pos) = (r["id"].as_str().unwrap_or(""), r["position"].as_str().unwrap_or(""));
                            let g: serde_json::Value = h
                                .post(format!("{b}/graphql"))
                                .bearer_auth(&t)
                                .header("keel-consistency", pos)
                                .json(&json!({"query": format!("{{ project(id: \"{id}\") {{ name }} }}")}))
                                .send()
                                .await?
                                .json()
                                .await?;
                            anyhow::ensure!(g["data"]["project"]["name"].is_string(), "read your write failed: {g}");
                            Ok(())
                        }
                    })
                },
            )
            .await?,
        );
    }
    let _ = workers_stop.send(true);
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

/// `busy_neighbour`: `BenchOptions::quiet_tenants` tenants (10,000 at scale 1); quiet ones read
/// their projects (GraphQL `projects(first: 10)`, 50 requests/s spread over 16 of them, open
/// loop) while one busy tenant sends `CreateTask` from 16 clients back to back. The baseline is
/// the same quiet reads with no busy tenant, in alternating rounds: compare `p99_ms` with
/// `baseline_p99_ms` (the ratio is of rates, 1 by construction).
async fn busy_neighbour_case(f: &Fixture<'_>, cases: &mut Vec<CaseResult>) -> anyhow::Result<()> {
    let (opts, progress, store, http, base, auth) = (f.opts, f.progress, &f.store, &f.http, &f.base, &f.auth);
    let n = opts.quiet_tenants();
    let mut quiet = Vec::with_capacity(n);
    for i in 0..n {
        if i % 1000 == 0 {
            progress(&format!("busy_neighbour: provisioning tenants ({i} of {n})"));
        }
        quiet.push(provision(store, &format!("quiet-{i}")).await?);
    }
    let tokens: Arc<Vec<String>> = Arc::new(
        quiet
            .iter()
            .step_by((n / 16).max(1))
            .take(16)
            .map(|t| auth.issue("bench", Some(t.0), false, Duration::from_secs(3600)))
            .collect(),
    );
    let busy = provision(store, "busy").await?;
    let busy_token = auth.issue("bench", Some(busy.0), false, Duration::from_secs(3600));
    let project = rest_project(http, base, &busy_token, "Busy").await?;
    let reads = {
        let (h, b, t) = (http.clone(), base.clone(), tokens.clone());
        move |i: u64| {
            let (h, b) = (h.clone(), b.clone());
            let t = t[i as usize % t.len()].clone();
            async move { graphql_ok(&h, &b, &t, "{ projects(first: 10) { edges { node { id name } } } }").await }
        }
    };
    let busy_load = {
        let (h, b, t, p) = (http.clone(), base.clone(), busy_token.clone(), project.clone());
        move || {
            let (h, b, t, p) = (h.clone(), b.clone(), t.clone(), p.clone());
            closed_loop(opts.clients, opts.round, move |c, n| {
                let (h, b, t, p) = (h.clone(), b.clone(), t.clone(), p.clone());
                async move { create_task(&h, &b, &t, &p, &format!("busy {c} {n}")).await }
            })
        }
    };
    cases.push(
        alternate(
            "busy_neighbour",
            opts,
            progress,
            || open_loop(50, opts.round, reads.clone()),
            || {
                let (reads, busy_load) = (reads.clone(), busy_load.clone());
                async move {
                    let busy = tokio::spawn(busy_load());
                    let quiet = open_loop(50, opts.round, reads).await;
                    busy.await??;
                    quiet
                }
            },
        )
        .await?,
    );
    Ok(())
}

/// `append_large_log`: the append case's store append (16 clients, one event to a new stream)
/// with `BenchOptions::large_log_events` (10,000,000 at scale 1) of another tenant's events in
/// the log, against the same append measured just before they were written: its ratio is the
/// rate on the large log over the rate on the small one, and `baseline_p50_ms` the small log's
/// p50. The filler events are written straight into the log (one statement): what is measured is
/// what an append costs beside them. It runs last, since no projection has to read them.
async fn large_log_case(f: &Fixture<'_>, cases: &mut Vec<CaseResult>) -> anyhow::Result<()> {
    let (opts, progress, store, plain, tenants) = (f.opts, f.progress, &f.store, &f.plain, &f.tenants);
    let append = || {
        let (s, t) = (store.clone(), tenants.clone());
        closed_loop(opts.clients, opts.round, move |c, _| {
            let (s, tenant) = (s.clone(), t[c]);
            async move { one_call_append(&s, tenant).await }
        })
    };
    let (mut small, mut small_lat) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        progress(&format!("append_large_log: round {}/{} on the small log", round + 1, opts.rounds));
        let s = append().await?;
        small.push(s.rate());
        small_lat.extend(s.latencies);
    }
    let n = opts.large_log_events();
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(plain).await?;
    progress(&format!("append_large_log: writing {n} events into the log ({before} there)"));
    let filler = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, schema_version,
                             payload, metadata, recorded_at, prev_hash, hash)
         SELECT $1, 'project', gen_random_uuid(), 1, gen_random_uuid(), 'ProjectCreated', 1,
                '{\"name\": \"filler\"}', '{}', now(), NULL, sha256(i::text::bytea)
           FROM generate_series(1, $2) i",
    )
    .bind(filler)
    .bind(n)
    .execute(plain)
    .await?;
    sqlx::query("ANALYZE events").execute(plain).await?;
    let (mut large, mut large_lat) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        progress(&format!("append_large_log: round {}/{} on the large log", round + 1, opts.rounds));
        let s = append().await?;
        large.push(s.rate());
        large_lat.extend(s.latencies);
    }
    let (keel_ops_s, baseline_ops_s) = (median(large), median(small));
    cases.push(CaseResult {
        name: "append_large_log".into(),
        keel_ops_s,
        baseline_ops_s,
        ratio: if baseline_ops_s > 0.0 { keel_ops_s / baseline_ops_s } else { 0.0 },
        p50_ms: percentile(&mut large_lat, 0.50),
        p99_ms: percentile(&mut large_lat, 0.99),
        baseline_p99_ms: percentile(&mut small_lat, 0.99),
        baseline_p50_ms: percentile(&mut small_lat, 0.50),
        peak_rss_kb: read_kb("/proc/self/status", "VmHWM:"),
    });
    Ok(())
}

/// Where a plain keyset page starts (`None`: at the first row).
type After = Option<(DateTime<Utc>, Uuid)>;

/// A tenant of `BenchOptions::big_tenant_tasks` tasks (1,000,000 at scale 1) in 100 projects:
/// GraphQL pages at the start and 90% deep, filters, and `totalCount`, at 100 requests/s each,
/// against the plain keyset `SELECT` of the same page. The tasks are written straight into the
/// read tables (and the projects' task counters set to match): what is measured is how a page
/// and a count of that tenant cost, not how its tasks came.
async fn big_tenant_cases(f: &Fixture<'_>, cases: &mut Vec<CaseResult>) -> anyhow::Result<()> {
    let (opts, progress, store, plain, http, base, auth) =
        (f.opts, f.progress, &f.store, &f.plain, &f.http, &f.base, &f.auth);
    let n = opts.big_tenant_tasks();
    progress(&format!("big tenant: writing {n} tasks"));
    let (workers_stop, workers_rx) = watch::channel(false);
    let workers = keel_projections::spawn_all(store, &RunnerConfig::default(), &workers_rx);
    let tenant = provision(store, "bench-big").await?;
    let token = auth.issue("bench", Some(tenant.0), false, Duration::from_secs(3600));
    let mut projects = Vec::new();
    for i in 0..100 {
        let mut tx = store.begin_write(tenant).await?;
        let id = ProjectId::new_v7();
        let e = project_created_with(id, &format!("Big {i}"));
        log::append(&mut tx, &[], &[e], &meta(), Utc::now()).await?;
        tx.commit().await?;
        projects.push(id.0);
    }
    store.events_appended();
    // The projects read model has them all before the tasks are written beside it.
    loop {
        let s = keel_store::checkpoint::status(store.projector(), "projects").await?;
        if s.lag_events == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = workers_stop.send(true);
    for w in workers {
        let _ = w.await;
    }
    sqlx::query(
        "INSERT INTO rm_tasks (tenant_id, task_id, project_id, title, status, priority, priority_rank, assignee,
                               due_date, created_at, updated_at, version)
         SELECT $1, gen_random_uuid(), ($2::uuid[])[1 + i % 100], 'Task ' || i,
                (ARRAY['todo', 'in_progress', 'done'])[1 + i % 3], (ARRAY['low', 'medium', 'high', 'urgent'])[1 + i % 4],
                1 + i % 4, NULL, DATE '2027-01-01' + (i % 365)::int,
                timestamptz '2026-01-01' + i * interval '1 second', now(), 1
           FROM generate_series(0, $3 - 1) i",
    )
    .bind(tenant.0)
    .bind(&projects)
    .bind(n)
    .execute(plain)
    .await?;
    sqlx::query(
        "UPDATE rm_projects p SET tasks_todo = c.todo, tasks_in_progress = c.in_progress, tasks_done = c.done
           FROM (SELECT project_id, count(*) FILTER (WHERE status = 'todo')::int AS todo,
                        count(*) FILTER (WHERE status = 'in_progress')::int AS in_progress,
                        count(*) FILTER (WHERE status = 'done')::int AS done
                   FROM rm_tasks WHERE tenant_id = $1 GROUP BY project_id) c
          WHERE p.tenant_id = $1 AND p.project_id = c.project_id",
    )
    .bind(tenant.0)
    .execute(plain)
    .await?;
    sqlx::query("ANALYZE rm_tasks").execute(plain).await?;
    let (deep_at, deep_id): (DateTime<Utc>, Uuid) = sqlx::query_as(
        "SELECT created_at, task_id FROM rm_tasks WHERE tenant_id = $1 ORDER BY created_at, task_id OFFSET $2 LIMIT 1",
    )
    .bind(tenant.0)
    .bind(n * 9 / 10)
    .fetch_one(plain)
    .await?;
    let deep = keel_query::task_cursor_by_creation(deep_at, deep_id);
    let graphql = |query: String| {
        let (h, b, t) = (http.clone(), base.clone(), token.clone());
        move |_: u64| {
            let (h, b, t, q) = (h.clone(), b.clone(), t.clone(), query.clone());
            async move { graphql_ok(&h, &b, &t, &q).await }
        }
    };
    let plain_sql = |sql: &'static str, at: After| {
        let (p, t) = (plain.clone(), tenant.0);
        move |_: u64| {
            let p = p.clone();
            async move {
                let q = sqlx::query(sql).bind(t);
                let q = match at {
                    Some((c, i)) => q.bind(c).bind(i),
                    None => q,
                };
                q.fetch_all(&p).await?;
                Ok(())
            }
        }
    };
    let page = "edges { cursor node { id title status } } pageInfo { hasNextPage }";
    let list: [(&str, String, &'static str, After); 4] = [
        (
            "big_first_page",
            format!("{{ tasks(first: 50) {{ totalCount {page} }} }}"),
            "SELECT task_id, title, status FROM rm_tasks WHERE tenant_id = $1 ORDER BY created_at, task_id LIMIT 51",
            None,
        ),
        (
            "big_deep_page",
            format!("{{ tasks(first: 50, after: \"{deep}\") {{ totalCount {page} }} }}"),
            "SELECT task_id, title, status FROM rm_tasks WHERE tenant_id = $1 AND (created_at, task_id) > ($2, $3)
              ORDER BY created_at, task_id LIMIT 51",
            Some((deep_at, deep_id)),
        ),
        (
            "big_status_filter",
            format!(
                "{{ tasks(first: 50, filter: {{status: DONE}}, orderBy: {{field: DUE_DATE}}) {{ totalCount {page} }} }}"
            ),
            "SELECT task_id, title, status FROM rm_tasks WHERE tenant_id = $1 AND status = 'done'
              ORDER BY due_date, task_id LIMIT 51",
            None,
        ),
        (
            "big_priority_filter",
            format!("{{ tasks(first: 50, filter: {{priority: HIGH}}) {{ totalCount totalCountCapped {page} }} }}"),
            "SELECT task_id, title, status FROM rm_tasks WHERE tenant_id = $1 AND priority = 'high'
              ORDER BY created_at, task_id LIMIT 51",
            None,
        ),
    ];
    for (name, gql, sql, at) in list {
        let (g, p) = (graphql(gql), plain_sql(sql, at));
        cases.push(
            alternate(
                name,
                opts,
                progress,
                || open_loop(100, opts.round, p.clone()),
                || open_loop(100, opts.round, g.clone()),
            )
            .await?,
        );
    }
    Ok(())
}

fn read_kb(file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// The report as the table `keel bench` prints.
pub fn table(report: &Report) -> String {
    let mut s = format!(
        "{:<20} {:>12} {:>14} {:>7} {:>9} {:>9} {:>13} {:>12}\n",
        "case", "keel ops/s", "baseline ops/s", "ratio", "p50 ms", "p99 ms", "base p99 ms", "peak RSS MB"
    );
    for c in &report.cases {
        let rss = c.peak_rss_kb.map_or_else(|| "-".to_owned(), |kb| format!("{:.0}", kb as f64 / 1024.0));
        s.push_str(&format!(
            "{:<20} {:>12.0} {:>14.0} {:>7.2} {:>9.2} {:>9.2} {:>13.2} {:>12}\n",
            c.name, c.keel_ops_s, c.baseline_ops_s, c.ratio, c.p50_ms, c.p99_ms, c.baseline_p99_ms, rss
        ));
    }
    s
}
