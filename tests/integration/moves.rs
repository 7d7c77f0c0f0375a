//! `keel tenant move` (docs/tenancy.md, "Moving a tenant"): a tenant moved from the pool to a
//! dedicated database on a second PostgreSQL cluster and back while clients drive it; a move
//! stopped abruptly at each of its steps, with the dedicated cluster crashed there too, then run
//! again; the same with the pool's own cluster crashed and `keel serve` killed at each step.

use crate::helpers::{TestApp, TestDb, spawn_app_on};
use crate::tenancy::{events_of, keel, ok, scratch, small_pools, text};
use keel::embedded::{EmbeddedPg, StopMode, find_bindir};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A second PostgreSQL cluster of the test's own, on another port; stopped when dropped.
pub(crate) struct Cluster(Arc<EmbeddedPg>, std::path::PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.0.stop_with(StopMode::Immediate);
    }
}

impl Cluster {
    /// The server quits at once, as in a crash, and starts again (recovering from its WAL) on
    /// the same port.
    pub(crate) async fn crash_and_restart(&mut self) {
        self.0.stop_with(StopMode::Immediate).unwrap();
        let (d, bindir) = (self.1.clone(), find_bindir(None).unwrap());
        let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&d, &bindir)).await.unwrap().unwrap();
        assert_eq!(pg.port(), self.0.port(), "the cluster comes back on its port");
        self.0 = Arc::new(pg);
    }
}

pub(crate) async fn second_cluster(dir: &std::path::Path) -> (Cluster, String) {
    let bindir = find_bindir(None).expect("PostgreSQL's server binaries");
    let d = dir.to_path_buf();
    let pg = Arc::new(tokio::task::spawn_blocking(move || EmbeddedPg::start(&d, &bindir)).await.unwrap().unwrap());
    pg.ensure_database().await.unwrap();
    let url = pg.database_url();
    (Cluster(pg, dir.to_path_buf()), url)
}

/// A pool with a dedicated database on a second cluster registered, and a server on it.
async fn platform(name: &str) -> (Cluster, String, String, Arc<TestApp>) {
    let dir = scratch(name);
    let (cluster, dedicated) = second_cluster(&dir.join("dedicated")).await;
    let pool = TestDb::new().await;
    let pool_url = pool.url.clone();
    ok(&pool_url, &["databases", "add", "dedicated", &dedicated]).await;
    let app = Arc::new(spawn_app_on(pool, small_pools()).await);
    // The dedicated database's workers have connected (each a password login to the second
    // cluster, slow in a debug build) before the test's load starts.
    let mut su = <sqlx::PgConnection as sqlx::Connection>::connect(&dedicated).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints").fetch_one(&mut su).await.unwrap();
        if n >= keel_store::read::MODELS.len() as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "the dedicated database's projection workers start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (cluster, pool_url, dedicated, app)
}

/// The figure after `label` in `out` ("writes paused 12 ms" → 12).
fn figure(out: &str, label: &str) -> u64 {
    let at = out.find(label).unwrap_or_else(|| panic!("{label} in {out}")) + label.len();
    out[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// A command's status, latency, task id, token and start.
type Write = (u16, Duration, Option<String>, Option<String>, Instant);

struct Load {
    writes: Vec<Write>,
    read_errors: Vec<String>,
}

/// Creates tasks in `project` as `token` until `stop`, reading its latest write back now and then.
fn drive(app: Arc<TestApp>, token: String, project: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Load> {
    tokio::spawn(async move {
        let mut load = Load { writes: Vec::new(), read_errors: Vec::new() };
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let started = Instant::now();
            let r =
                app.post(&format!("/api/v1/projects/{project}/tasks"), &token, json!({"title": format!("t{i}")})).await;
            if r.status != 201 && load.read_errors.len() < 3 {
                load.read_errors.push(format!("write {}: {}", r.status, r.body));
            }
            let id = r.body["id"].as_str().map(str::to_owned);
            let at = r.body["position"].as_str().map(str::to_owned);
            load.writes.push((r.status, started.elapsed(), id.clone(), at.clone(), started));
            if i % 5 == 0
                && let (Some(id), Some(at)) = (id, at)
            {
                let q = format!("{{ task(id: \"{id}\") {{ title }} }}");
                let read = app.graphql(&token, &q, Some(&at)).await;
                if !read.body["errors"].is_null() || read.body["data"]["task"].is_null() {
                    load.read_errors.push(read.body.to_string());
                }
            }
        }
        load
    })
}

async fn placed_in(pool_url: &str, tenant: Uuid) -> String {
    let mut su = <sqlx::PgConnection as sqlx::Connection>::connect(pool_url).await.unwrap();
    sqlx::query_scalar("SELECT database FROM tenant_placements WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&mut su)
        .await
        .unwrap()
        .unwrap_or_else(|| "pool".into())
}

/// The steps a move is stopped after (`--crash-after`): each, in both directions, then the
/// retirement of a move with `--purge`.
const STOPS: [&str; 11] = [
    "batch",
    "target-final",
    "departed",
    "switched",
    "serving",
    "batch",
    "target-final",
    "departed",
    "switched",
    "serving",
    "retired",
];

/// `keel tenant move` of `id` to `to`, its process stopped abruptly (abort) after `step`.
async fn stop_move_after(pool_url: &str, id: &str, to: &str, step: &str, purge: bool) {
    let mut args = vec!["tenant", "move", id, "--to", to, "--fence", "800ms", "--crash-after", step];
    if purge {
        args.push("--purge");
    }
    let crashed = keel(pool_url, &args).await;
    assert!(!crashed.status.success(), "{step}: the move stopped there: {}", text(&crashed.stderr));
    assert!(text(&crashed.stderr).contains(&format!(": {step} (")), "{step}: {}", text(&crashed.stderr));
}

/// The same move run again: it resumes and ends with every chain checked.
async fn resume_move(pool_url: &str, id: &str, to: &str, purge: bool) {
    let mut args = vec!["tenant", "move", id, "--to", to, "--fence", "800ms"];
    if purge {
        args.push("--purge");
    }
    let out = ok(pool_url, &args).await;
    assert!(out.contains("every hash chain holds"), "{to}: {out}");
}

#[tokio::test]
async fn a_tenant_moves_to_its_own_cluster_and_back_under_load_and_no_command_fails() {
    let (_cluster, pool_url, dedicated, app) = platform("moves-load").await;
    let (mover, mover_owner) = app.provision("mover").await;
    let (_stayer, stayer_owner) = app.provision("stayer").await;
    let before = app.create_project(&mover_owner, "Before").await;
    let before_token = before.body["position"].as_str().unwrap().to_owned();
    let before_id = before.body["id"].as_str().unwrap().to_owned();
    let stayer_project = app.create_project(&stayer_owner, "Stays").await.body["id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let movers: Vec<_> =
        (0..3).map(|_| drive(app.clone(), mover_owner.clone(), before_id.clone(), stop.clone())).collect();
    let stayer = drive(app.clone(), stayer_owner.clone(), stayer_project, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut moving = Vec::new();
    let began = Instant::now();
    let out = ok(
        &pool_url,
        &["tenant", "move", &mover.0.to_string(), "--to", "dedicated", "--fence", "800ms", "--catch-up", "60s"],
    )
    .await;
    moving.push((began, Instant::now()));
    let paused_out = figure(&out, "writes paused");
    assert_eq!(placed_in(&pool_url, mover.0).await, "dedicated");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A token of the dedicated period, for after the move back.
    let during = app.create_project(&mover_owner, "During").await;
    let during_token = during.body["position"].as_str().unwrap().to_owned();
    assert!(during_token.ends_with("@dedicated"), "a token names its database: {during_token}");
    let began = Instant::now();
    let back =
        ok(&pool_url, &["tenant", "move", &mover.0.to_string(), "--to", "pool", "--fence", "800ms", "--purge"]).await;
    moving.push((began, Instant::now()));
    let paused_back = figure(&back, "writes paused");
    assert_eq!(placed_in(&pool_url, mover.0).await, "pool");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    let mut mover_writes = Vec::new();
    let mut read_errors = Vec::new();
    for m in movers {
        let l = m.await.unwrap();
        mover_writes.extend(l.writes);
        read_errors.extend(l.read_errors);
    }
    let stayer = stayer.await.unwrap();
    let failed: Vec<_> = mover_writes.iter().filter(|w| w.0 != 201).map(|w| w.0).collect();
    assert!(failed.is_empty(), "no command of the moving tenant failed: {} of them: {read_errors:?}", failed.len());
    assert!(stayer.writes.iter().all(|w| w.0 == 201), "the neighbour saw no error");
    assert!(read_errors.is_empty(), "reads after writes answered: {read_errors:?}");
    let longest = mover_writes.iter().map(|w| w.1).max().unwrap();
    let stayer_longest = stayer.writes.iter().map(|w| w.1).max().unwrap();
    let through_dedicated = mover_writes.iter().filter(|w| w.3.as_deref().is_some_and(|t| t.contains('@'))).count();
    // The neighbour's latency while a move ran against the rest of the run (reported, not
    // asserted: tests do not fail on timings).
    let in_move = |w: &&Write| moving.iter().any(|(a, b)| w.4 >= *a && w.4 <= *b);
    let p99 = |mut v: Vec<Duration>| {
        v.sort();
        v.get((v.len().saturating_sub(1)) * 99 / 100).map_or(0, |d| d.as_millis())
    };
    let (inside, outside): (Vec<_>, Vec<_>) = stayer.writes.iter().partition(|w| in_move(w));
    eprintln!(
        "the neighbour: p99 {} ms over {} writes while a move ran, {} ms over {} writes otherwise",
        p99(inside.iter().map(|w| w.1).collect()),
        inside.len(),
        p99(outside.iter().map(|w| w.1).collect()),
        outside.len()
    );
    eprintln!(
        "moves under load: {} writes of the moving tenant ({} while it lived in the dedicated database), longest \
         {} ms; fences {} ms and {} ms; the neighbour's {} writes, longest {} ms",
        mover_writes.len(),
        through_dedicated,
        longest.as_millis(),
        paused_out,
        paused_back,
        stayer.writes.len(),
        stayer_longest.as_millis()
    );
    assert!(through_dedicated > 0, "the load ran while the tenant lived in the dedicated database");

    // Every acknowledged task is in the pool's log exactly once; nothing is left in the
    // dedicated database (the move back purged it).
    let events = events_of(&pool_url, mover.0).await;
    for (_, _, id, _, _) in &mover_writes {
        let id: Uuid = id.as_ref().unwrap().parse().unwrap();
        assert_eq!(events.iter().filter(|e| e.0 == id).count(), 1, "task {id} once in the log");
    }
    assert!(events_of(&dedicated, mover.0).await.is_empty(), "the dedicated copy was retired");
    let verify = ok(&pool_url, &["audit", "verify", "--tenant", &mover.0.to_string()]).await;
    assert!(verify.contains("every hash chain holds"), "{verify}");

    // Tokens from before either move still work: they wait for the copy of their write.
    for (token, name) in [(&before_token, "Before"), (&during_token, "During")] {
        let q = "{ projects(first: 10) { edges { node { name } } } }";
        let r = app.graphql(&mover_owner, q, Some(token)).await;
        assert!(r.body["extensions"]["consistency"].is_null(), "{token}: not stale: {}", r.body);
        assert!(r.body.to_string().contains(name), "{token}: {}", r.body);
    }

    // The read models equal a fresh replay of the log.
    let app = Arc::into_inner(app).expect("the load has ended");
    let mut app = app;
    app.shut_down().await.unwrap();
    let tables = crate::workers::read_tables_at(&pool_url).await;
    assert_eq!(crate::workers::replay_at(&pool_url, &app.db.store, 500).await, tables, "read models equal a replay");
}

#[tokio::test]
async fn a_move_stopped_at_any_step_leaves_the_tenant_in_one_place_and_runs_again_to_the_end() {
    let (mut cluster, pool_url, dedicated, app) = platform("moves-crash").await;
    let (tenant, owner) = app.provision("crashy").await;
    let project = app.create_project(&owner, "Crash").await.body["id"].as_str().unwrap().to_owned();
    for i in 0..20 {
        let r = app.post(&format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": format!("c{i}")})).await;
        assert_eq!(r.status, 201);
    }
    let id = tenant.0.to_string();
    let mut written = Vec::new();
    let mut here = "pool";
    for (n, step) in STOPS.iter().enumerate() {
        let to = if here == "pool" { "dedicated" } else { "pool" };
        let purge = *step == "retired";
        stop_move_after(&pool_url, &id, to, step, purge).await;
        // The second time round, the dedicated database (the move's target or its source)
        // crashes there too.
        let db_crash = n >= STOPS.len() / 2;
        if db_crash {
            cluster.crash_and_restart().await;
        }

        // Stopped there, the tenant is in one place: reads answer (once the server sees the
        // restarted database again), and a write made now (which may wait while the move runs
        // again) lands once.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = app.graphql(&owner, "{ projects(first: 5) { edges { node { name } } } }", None).await;
            if r.body["errors"].is_null() {
                break;
            }
            assert!(db_crash && Instant::now() < deadline, "{step}: reads answer: {}", r.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let write = {
            let (app, owner, project) = (app.clone(), owner.clone(), project.clone());
            // A 503 (the restarted database not seen again yet) wrote nothing: sent again with
            // the same key, as a client is told to.
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let r = app
                        .send_with(
                            reqwest::Method::POST,
                            &format!("/api/v1/projects/{project}/tasks"),
                            &owner,
                            Some(json!({"title": format!("after {n}")})),
                            &[("idempotency-key", &format!("after-{n}"))],
                        )
                        .await;
                    if r.status != 503 || Instant::now() > deadline {
                        return r;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        resume_move(&pool_url, &id, to, purge).await;
        let w = write.await.unwrap();
        assert_eq!(w.status, 201, "{step}: the write made while stopped lands: {}", w.body);
        written.push(w.body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        assert_eq!(placed_in(&pool_url, tenant.0).await, to, "{step}");
        here = to;

        // Everything written so far is in the tenant's database once, and its chains hold.
        let url = if to == "pool" { &pool_url } else { &dedicated };
        let events = events_of(url, tenant.0).await;
        for w in &written {
            assert_eq!(events.iter().filter(|e| e.0 == *w).count(), 1, "{step}: task {w} once");
        }
        let verify = ok(&pool_url, &["audit", "verify", "--tenant", &id]).await;
        assert!(verify.contains("every hash chain holds"), "{step}: {verify}");
    }

    // Without --purge the database left keeps the tenant's rows for the retention period;
    // `keel tenant retire` deletes them once it has passed (or at once with --now).
    let (to, left) = if here == "pool" { ("dedicated", &pool_url) } else { ("pool", &dedicated) };
    ok(&pool_url, &["tenant", "move", &id, "--to", to, "--retention", "1h"]).await;
    assert!(!events_of(left, tenant.0).await.is_empty(), "kept for the retention period");
    let none = ok(&pool_url, &["tenant", "retire"]).await;
    assert!(none.trim().is_empty(), "nothing is due yet: {none}");
    let retired = ok(&pool_url, &["tenant", "retire", "--now"]).await;
    assert!(retired.contains(&format!("retired tenant {id}")), "{retired}");
    assert!(events_of(left, tenant.0).await.is_empty(), "the rows left behind are gone");
    let r = app.post(&format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "after retiring"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let verify = ok(&pool_url, &["audit", "verify", "--tenant", &id]).await;
    assert!(verify.contains("every hash chain holds"), "{verify}");
}

/// A `keel serve` process of the test's own on the private pool cluster; killed when dropped.
struct Server {
    child: tokio::process::Child,
    base: String,
}

impl Server {
    async fn start(pool_url: &str, log: &std::path::Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("serve")
            .env("DATABASE_URL", pool_url)
            .env("KEEL_JWT_SECRET", std::str::from_utf8(crate::helpers::SECRET).unwrap())
            .env("KEEL_MASTER_KEY", crate::helpers::MASTER_KEY)
            .env_remove("KEEL_MASTER_KEY_FILE")
            .env_remove("KEEL_CONFIG")
            .env("KEEL_LISTEN", format!("127.0.0.1:{port}"))
            .env("KEEL_LOG", "warn")
            .stdout(std::process::Stdio::from(file.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{base}/readyz")).await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
            assert!(started.elapsed() < Duration::from_secs(60), "keel serve becomes ready: {}", log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child, base }
    }

    /// SIGKILL: no drain, no goodbye to the database.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// A request to `base`; status 0 when no answer came (the server or its database is down).
async fn call(
    base: &str,
    token: &str,
    path: &str,
    body: serde_json::Value,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(20))
        .json(&body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    match req.send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

#[tokio::test]
async fn a_move_survives_the_pool_database_and_the_keel_server_crashing_at_each_step() {
    use keel_gateway::auth::Secret;
    use keel_gateway::{Authenticator, JwtConfig};
    // Both databases are private clusters of the test: the pool's server is crashed here, which
    // the suite's shared server cannot be.
    let dir = scratch("moves-pool-crash");
    let (mut pool, pool_url) = second_cluster(&dir.join("pool")).await;
    let (_dedicated_cluster, dedicated) = second_cluster(&dir.join("dedicated")).await;
    ok(&pool_url, &["migrate"]).await;
    ok(&pool_url, &["databases", "add", "dedicated", &dedicated]).await;
    let log = dir.join("keel.log");
    let mut server = Server::start(&pool_url, &log).await;

    let auth = Authenticator::hs256(JwtConfig::hs256(Secret::new(crate::helpers::SECRET.to_vec())));
    let platform = auth.issue("operator", None, true, Duration::from_secs(3600));
    let (status, body) = call(
        &server.base,
        &platform,
        "/api/v1/tenants",
        json!({"name": "Crashing", "slug": "crashing", "plan": "team",
               "owner": {"user_id": "ada", "email": "ada@crashing.test", "name": "Ada"}}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let tenant: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let owner = auth.issue("ada", Some(tenant), false, Duration::from_secs(3600));
    let (status, body) = call(&server.base, &owner, "/api/v1/projects", json!({"name": "Crash"}), None).await;
    assert_eq!(status, 201, "{body}");
    let project = body["id"].as_str().unwrap().to_owned();
    let tasks = format!("/api/v1/projects/{project}/tasks");
    let mut written = Vec::new();
    for i in 0..20 {
        let (status, body) = call(&server.base, &owner, &tasks, json!({"title": format!("c{i}")}), None).await;
        assert_eq!(status, 201, "{body}");
        written.push(body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }

    let id = tenant.to_string();
    let mut here = "pool";
    for (n, step) in STOPS.iter().enumerate() {
        let to = if here == "pool" { "dedicated" } else { "pool" };
        let purge = *step == "retired";
        stop_move_after(&pool_url, &id, to, step, purge).await;

        // Keel's server is killed and the pool's PostgreSQL crashes (immediate stop: no
        // checkpoint, recovery from the WAL on the way up); both come back.
        server.kill().await;
        pool.crash_and_restart().await;
        server = Server::start(&pool_url, &log).await;

        // The tenant is in one place: reads answer, and a write made now (which may wait while
        // the move runs again) lands once.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = call(
                &server.base,
                &owner,
                "/graphql",
                json!({"query": "{ project(id: \"".to_owned() + &project + "\") { name } }"}),
                None,
            )
            .await;
            if status == 200 && body["errors"].is_null() && body["data"]["project"]["name"] == "Crash" {
                break;
            }
            assert!(Instant::now() < deadline, "{step}: reads answer: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let write = {
            let (base, owner, tasks) = (server.base.clone(), owner.clone(), tasks.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let key = format!("after-{n}");
                    let r = call(&base, &owner, &tasks, json!({"title": format!("after {n}")}), Some(&key)).await;
                    // No answer or a 503 wrote nothing: sent again with the same key.
                    if !matches!(r.0, 0 | 503) || Instant::now() > deadline {
                        return r;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        resume_move(&pool_url, &id, to, purge).await;
        let (status, body) = write.await.unwrap();
        assert_eq!(status, 201, "{step}: the write made while stopped lands: {body}");
        written.push(body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        assert_eq!(placed_in(&pool_url, tenant).await, to, "{step}");
        here = to;

        // Everything acknowledged so far is in the tenant's database once, none of it in the
        // other, and its chains hold.
        let (url, other) = if to == "pool" { (&pool_url, &dedicated) } else { (&dedicated, &pool_url) };
        let events = events_of(url, tenant).await;
        for w in &written {
            assert_eq!(events.iter().filter(|e| e.0 == *w).count(), 1, "{step}: task {w} once");
        }
        if purge {
            assert!(events_of(other, tenant).await.is_empty(), "{step}: the database left holds nothing");
        }
        let verify = ok(&pool_url, &["audit", "verify", "--tenant", &id]).await;
        assert!(verify.contains("every hash chain holds"), "{step}: {verify}");
    }

    // A move made while no Keel server runs copies, fences and switches, then waits for the
    // target's read models (built by a server's projection workers) and ends once a server is up.
    server.kill().await;
    let to = if here == "pool" { "dedicated" } else { "pool" };
    let mover = {
        let (url, id) = (pool_url.clone(), id.clone());
        tokio::spawn(async move { ok(&url, &["tenant", "move", &id, "--to", to, "--purge"]).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!mover.is_finished(), "the move waits for the read models of {to}");
    let server = Server::start(&pool_url, &log).await;
    let out = mover.await.unwrap();
    assert!(out.contains("every hash chain holds"), "{out}");
    assert_eq!(placed_in(&pool_url, tenant).await, to);

    // The read models of the tenant's last home hold every task.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) =
            call(&server.base, &owner, "/graphql", json!({"query": "{ tasks { totalCount } }"}), None).await;
        if status == 200 && body["data"]["tasks"]["totalCount"] == written.len() {
            break;
        }
        assert!(Instant::now() < deadline, "every task is read: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let verify = ok(&pool_url, &["audit", "verify", "--tenant", &id]).await;
    assert!(verify.contains("every hash chain holds"), "{verify}");
    server.kill().await;
}
