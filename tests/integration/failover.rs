//! Failover loses nothing acknowledged (docs/scaling.md, "Failover"): a primary with a
//! synchronous standby is killed with SIGKILL during a command load and the standby takes over —
//! promoted by a real pg_auto_failover formation (monitor and two keepers), and, as a smaller
//! form, by `pg_ctl promote` alone. Keel, given both hosts in a multi-host `DATABASE_URL`,
//! answers 503 (never a 500, never past its deadline) while there is no primary, finds the new
//! one by itself, and every command answered 2xx is in the new primary's log exactly once, with
//! its hash chain intact.

use crate::helpers::{free_port, keel_serve, signed_token};
use crate::replica::{pair, standby_url};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Keel's request deadline in this test: no answer may take longer (plus a margin).
const DEADLINE_MS: u64 = 5000;

#[derive(Debug)]
struct Sent {
    key: String,
    status: Option<u16>,
    id: Option<String>,
    at: Duration,
    took: Duration,
}

async fn create_task(client: &reqwest::Client, url: &str, token: &str, key: &str) -> (Option<u16>, Option<String>) {
    let r =
        client.post(url).bearer_auth(token).header("Idempotency-Key", key).json(&json!({"title": key})).send().await;
    match r {
        Err(_) => (None, None),
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (Some(status), body["id"].as_str().map(str::to_owned))
        }
    }
}

/// Drives keyed task creations through Keel on `both` (a multi-host URL) from four clients;
/// after two seconds runs `fail`, which kills the primary and returns once another host takes
/// writes; goes on for six seconds; then checks every answer against `new_primary`'s log.
async fn commands_through_a_failover<F, Fut>(dir: &Path, both: &str, new_primary: &str, fail: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let (keel, addr) = keel_serve(
        both,
        &dir.join("keel.log"),
        &[("KEEL_REQUEST_TIMEOUT_MS", &DEADLINE_MS.to_string()), ("KEEL_DB_PROBE_INTERVAL_MS", "200")],
    )
    .await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let platform = signed_token(None, "failover-operator", true);
    let r = client
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(&platform)
        .json(&json!({"name": "Failover", "slug": "failover", "plan": "enterprise",
                       "owner": {"user_id": "fay", "email": "fay@failover.test", "name": "Fay"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let tenant: Uuid = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let owner = signed_token(Some(tenant), "fay", false);
    let r = client.post(format!("{base}/api/v1/projects")).bearer_auth(&owner).json(&json!({"name": "F"})).send().await;
    let project = r.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let tasks = format!("{base}/api/v1/projects/{project}/tasks");

    // Four clients create tasks, each with a key of its own, until told to stop.
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, tasks, owner, stop) = (client.clone(), tasks.clone(), owner.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("f-{c}-{i}");
                let at = t0.elapsed();
                let (status, id) = create_task(&client, &tasks, &owner, &key).await;
                sent.push(Sent { key, status, id, at, took: t0.elapsed() - at });
                if status == Some(503) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                i += 1;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = t0.elapsed();
    fail().await;
    let promoted = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent: Vec<Sent> = Vec::new();
    for c in clients {
        sent.extend(c.await.unwrap());
    }

    // Answers: 2xx, or 503 while there was no primary; never a 500, never past the deadline.
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for s in &sent {
        *by_status.entry(s.status.map_or("no answer".into(), |c| c.to_string())).or_default() += 1;
        assert!(s.status.is_some_and(|c| c < 300 || c == 503), "{s:?}");
        assert!(s.took < Duration::from_millis(DEADLINE_MS + 1500), "past the deadline: {s:?}");
    }
    let first_after = sent
        .iter()
        .filter(|s| s.status.is_some_and(|c| c < 300) && s.at + s.took > promoted)
        .map(|s| (s.at + s.took).saturating_sub(promoted))
        .min()
        .expect("2xx answers after the new primary took writes");
    let last_before = sent
        .iter()
        .filter(|s| s.status.is_some_and(|c| c < 300) && s.at + s.took < killed + Duration::from_millis(500))
        .map(|s| s.at + s.took)
        .max()
        .unwrap_or_default();
    println!(
        "answers {by_status:?}; killed at {killed:?}, new primary writable at {promoted:?}, \
         first 2xx {first_after:?} after that; no 2xx from {last_before:?} until then"
    );
    assert!(by_status.get("503").copied().unwrap_or(0) > 0, "some requests met no primary: {by_status:?}");
    assert!(first_after < Duration::from_secs(10), "serving again within seconds: {first_after:?}");

    // Every command answered 2xx is in the new primary's log once; a 503 wrote nothing, or its
    // key, sent again now, answers what it wrote.
    let mut ids: HashMap<String, String> = HashMap::new();
    for s in &sent {
        let id = match (s.status, &s.id) {
            (Some(c), Some(id)) if c < 300 => id.clone(),
            _ => {
                // Sent again until it has a definite answer (a 503 is a moment without a
                // primary, or the breaker's look at the new one).
                let give_up = Instant::now() + Duration::from_secs(20);
                loop {
                    match create_task(&client, &tasks, &owner, &s.key).await {
                        (Some(c), Some(id)) if c < 300 => break id,
                        (Some(503), _) if Instant::now() < give_up => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        other => panic!("{} sent again: {other:?}", s.key),
                    }
                }
            }
        };
        ids.insert(s.key.clone(), id);
    }
    let mut db = PgConnection::connect(new_primary).await.unwrap();
    let logged: Vec<String> =
        sqlx::query_scalar("SELECT stream_id::text FROM events WHERE tenant_id = $1 AND event_type = 'TaskCreated'")
            .bind(tenant)
            .fetch_all(&mut db)
            .await
            .unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for l in &logged {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    for (key, id) in &ids {
        assert_eq!(counts.get(id.as_str()).copied(), Some(1), "{key}: task {id} once in the log");
    }
    assert_eq!(logged.len(), ids.len(), "no task without its key's answer");

    // The hash chains verify on the new primary.
    crate::helpers::assert_audit_verifies(new_primary, tenant);

    // The projections, on the new primary, applied each event once: once they are past the
    // last event and Keel has stopped, the read tables equal a fresh replay of the log.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let behind: Vec<(String, i64)> = sqlx::query_as(
            "SELECT c.name, (SELECT count(*) FROM events e
                              WHERE (e.transaction_id, e.position) > (c.last_xid, c.last_position))
               FROM projection_checkpoints c WHERE c.name = ANY($1)",
        )
        .bind(keel_projections::names().collect::<Vec<_>>())
        .fetch_all(&mut db)
        .await
        .unwrap();
        if behind.len() == keel_projections::names().count() && behind.iter().all(|(_, n)| *n == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the projections catch up on the new primary: {behind:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(keel);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = crate::workers::read_tables_at(new_primary).await;
    let store = keel_store::Store::connect(
        new_primary,
        keel_store::PoolSizes { writer: 2, reader: 2, projector: 2 },
        Some(crate::helpers::master_key()),
    )
    .await
    .unwrap();
    assert_eq!(live, crate::workers::replay_at(new_primary, &store, 500).await, "read tables equal a replay");
    store.close().await;
}

/// Whether `url`'s server takes writes now.
async fn writable(url: &str) -> bool {
    let Ok(mut c) = PgConnection::connect(url).await else { return false };
    let w: Result<bool, _> =
        sqlx::query_scalar("SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'")
            .fetch_one(&mut c)
            .await;
    let _ = c.close().await;
    w.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_loses_no_acknowledged_command_and_keel_finds_the_promoted_standby() {
    let dir = std::env::temp_dir().join(format!("keel-failover-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pg = pair(&dir, None).await;
    // Synchronous: a commit is acknowledged once the standby has it.
    let mut su = PgConnection::connect(&pg.primary.database_url()).await.unwrap();
    sqlx::query("ALTER SYSTEM SET synchronous_standby_names = '*'").execute(&mut su).await.unwrap();
    sqlx::query("SELECT pg_reload_conf()").execute(&mut su).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sync: Option<String> =
            sqlx::query_scalar("SELECT sync_state FROM pg_stat_replication").fetch_optional(&mut su).await.unwrap();
        if sync.as_deref() == Some("sync") {
            break;
        }
        assert!(Instant::now() < deadline, "the standby is synchronous: {sync:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    su.close().await.unwrap();
    // Both hosts in one URL, the standby second.
    let (p, s) = (pg.primary.port(), pg.standby.port());
    let both = pg.primary.database_url().replace(&format!(":{p}/"), &format!(":{p},127.0.0.1:{s}/"));
    let new_primary = standby_url(&pg);
    let (primary, standby) = (pg.primary.clone(), pg.standby.clone());
    commands_through_a_failover(&dir, &both, &new_primary, || async move {
        // The primary dies at once: SIGKILL to its postmaster. A second later the standby is
        // promoted, as a failover manager would.
        let pid = primary.postmaster_pid().expect("the primary runs");
        assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::spawn_blocking(move || standby.promote()).await.unwrap().unwrap();
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pg_auto_failover formation of this test's own: a monitor and two Postgres nodes, each run by
/// `pg_autoctl ... --run` as the unprivileged `postgres` user (Debian's `pg-auto-failover-cli`
/// and `postgresql-15-auto-failover`; `.ci/run` installs them), each in a process group of its
/// own. A keeper restarts a Postgres that died, so a node is killed whole: SIGKILL to its group.
struct Formation {
    /// Each `pg_autoctl` leads a process group of the same id.
    groups: Vec<i32>,
    children: Vec<std::process::Child>,
    ports: [u16; 3],
}

impl Drop for Formation {
    fn drop(&mut self) {
        for g in &self.groups {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{g}")]).status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

impl Formation {
    fn autoctl(&mut self, dir: &Path, args: &[String]) {
        use std::os::unix::process::CommandExt;
        let bindir = keel::embedded::find_bindir(None).expect("PostgreSQL's server binaries");
        let bin = std::env::var_os("KEEL_TEST_PG_AUTOCTL")
            .map_or_else(|| PathBuf::from("/usr/bin/pg_autoctl"), PathBuf::from);
        assert!(
            bin.exists(),
            "no pg_autoctl at {} (apt-get install pg-auto-failover-cli postgresql-15-auto-failover; .ci/run installs them)",
            bin.display()
        );
        let name = args[1].clone();
        let log = std::fs::File::create(dir.join(format!("{name}-{}.log", self.groups.len()))).unwrap();
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", bindir.display()))
            .env("HOME", dir.join("home"))
            .env("XDG_CONFIG_HOME", dir.join("home/config"))
            .env("XDG_DATA_HOME", dir.join("home/data"))
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        if nix::unistd::Uid::effective().is_root() {
            let user = nix::unistd::User::from_name("postgres").unwrap().expect("a postgres user");
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let child = cmd.spawn().expect("pg_autoctl starts");
        self.groups.push(child.id() as i32);
        self.children.push(child);
    }

    async fn start(dir: &Path) -> Formation {
        std::fs::create_dir_all(dir.join("home")).unwrap();
        if nix::unistd::Uid::effective().is_root() {
            let _ = std::process::Command::new("chown").args(["-R", "postgres"]).arg(dir).status();
        }
        let mut f =
            Formation { groups: Vec::new(), children: Vec::new(), ports: [free_port(), free_port(), free_port()] };
        let common = |pgdata: &str, port: u16| {
            vec![
                format!("--pgdata={}", dir.join(pgdata).display()),
                format!("--pgport={port}"),
                "--hostname=127.0.0.1".to_owned(),
                "--auth=trust".to_owned(),
                "--no-ssl".to_owned(),
                "--run".to_owned(),
            ]
        };
        let mut args = vec!["create".to_owned(), "monitor".to_owned()];
        args.extend(common("monitor", f.ports[0]));
        f.autoctl(dir, &args);
        // The monitor answers, then checks health every second and fails over after two.
        let monitor = format!("postgres://postgres@127.0.0.1:{}/pg_auto_failover", f.ports[0]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut m = loop {
            if let Ok(mut c) = PgConnection::connect(&monitor).await
                && sqlx::query("SELECT count(*) FROM pgautofailover.node").execute(&mut c).await.is_ok()
            {
                break c;
            }
            assert!(Instant::now() < deadline, "the monitor starts: {}", logs(dir));
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        for (k, v) in [
            ("health_check_period", "1000"),
            ("health_check_timeout", "1000"),
            ("health_check_max_retries", "1"),
            ("health_check_retry_delay", "500"),
            ("node_considered_unhealthy_timeout", "2000"),
            ("primary_demote_timeout", "3000"),
        ] {
            let sql = format!("ALTER SYSTEM SET pgautofailover.{k} = {v}");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut m).await.unwrap();
        }
        sqlx::query("SELECT pg_reload_conf()").execute(&mut m).await.unwrap();
        let monitor_uri = format!("postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable", f.ports[0]);
        for (i, want) in [(1usize, "primary"), (2, "secondary")] {
            let mut args = vec!["create".to_owned(), "postgres".to_owned(), "--dbname=keel".to_owned()];
            args.push(format!("--monitor={monitor_uri}"));
            args.extend(common(&format!("node{i}"), f.ports[i]));
            f.autoctl(dir, &args);
            let node1 = format!("postgres://postgres@127.0.0.1:{}/keel", f.ports[1]);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let states: Vec<(i32, String)> =
                    sqlx::query_as("SELECT nodeport, reportedstate::text FROM pgautofailover.node")
                        .fetch_all(&mut m)
                        .await
                        .unwrap();
                let at = states.iter().find(|(p, _)| *p == i32::from(f.ports[i])).map(|(_, s)| s.as_str());
                if at == Some(want) || (i == 1 && matches!(at, Some("single" | "wait_primary"))) {
                    break;
                }
                assert!(Instant::now() < deadline, "node {i} becomes {want}: {states:?}\n{}", logs(dir));
                // The standby's base backup waits for a checkpoint, which PostgreSQL spreads over
                // minutes unless asked: ask.
                if i == 2
                    && let Ok(mut c) = PgConnection::connect(&node1).await
                {
                    let _ = sqlx::query("CHECKPOINT").execute(&mut c).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        f
    }

    fn url(&self, node: usize) -> String {
        format!("postgres://postgres@127.0.0.1:{}/keel", self.ports[node])
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!(
                "--- {}\n{}\n",
                e.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_auto_failover_promotes_the_standby_and_keel_loses_no_acknowledged_command() {
    let dir = std::env::temp_dir().join(format!("keel-paf-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let formation = Formation::start(&dir).await;
    keel_store::migrate(&formation.url(1)).await.expect("migrations apply on the primary");
    // The standby is synchronous (pg_auto_failover's default for two nodes).
    // The monitor sets it on the primary once the standby is secondary: wait for it.
    let mut c = PgConnection::connect(&formation.url(1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sync: String = sqlx::query_scalar("SHOW synchronous_standby_names").fetch_one(&mut c).await.unwrap();
        if !sync.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "a synchronous standby: {}", logs(&dir));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.close().await.unwrap();
    let (p1, p2) = (formation.ports[1], formation.ports[2]);
    let both = format!("postgres://postgres@127.0.0.1:{p1},127.0.0.1:{p2}/keel");
    let (node1, node2) = (formation.groups[1], formation.url(2));
    let check = node2.clone();
    commands_through_a_failover(&dir, &both, &node2, || async move {
        // The primary's machine dies: its keeper and its Postgres, at once.
        assert!(
            std::process::Command::new("kill").args(["-KILL", "--", &format!("-{node1}")]).status().unwrap().success()
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        while !writable(&check).await {
            assert!(Instant::now() < deadline, "pg_auto_failover promotes the standby");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    drop(formation);
    let _ = std::fs::remove_dir_all(&dir);
}
