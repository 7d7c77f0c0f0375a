//! Failover loses nothing acknowledged (docs/scaling.md, "Failover"), in the form a failover
//! manager drives it: a primary with a synchronous standby, the primary's postmaster SIGKILLed
//! during a command load, the standby promoted (`pg_ctl promote`, what pg_auto_failover's keeper
//! runs). Keel, given both hosts in a multi-host `DATABASE_URL`, answers 503 (never a 500, never
//! past its deadline) while there is no primary, finds the promoted one by itself, and every
//! command answered 2xx is in the new primary's log exactly once.

use crate::helpers::{keel_serve, signed_token};
use crate::replica::{pair, standby_url};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::collections::HashMap;
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
    let (_keel, addr) = keel_serve(
        &both,
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
    // The primary dies at once: SIGKILL to its postmaster.
    let pid = pg.primary.postmaster_pid().expect("the primary runs");
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    let killed = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let standby = pg.standby.clone();
    tokio::task::spawn_blocking(move || standby.promote()).await.unwrap().unwrap();
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
        .filter(|s| s.status.is_some_and(|c| c < 300) && s.at > promoted)
        .map(|s| s.at + s.took - promoted)
        .min()
        .expect("2xx answers after the promotion");
    println!(
        "answers {by_status:?}; killed at {killed:?}, promoted at {promoted:?}, first 2xx {first_after:?} after the promotion"
    );
    assert!(by_status.get("503").copied().unwrap_or(0) > 0, "some requests met no primary: {by_status:?}");
    assert!(first_after < Duration::from_secs(10), "serving again within seconds: {first_after:?}");

    // Every command answered 2xx is in the new primary's log once; a 503 wrote nothing, or its
    // key, sent again now, answers what it wrote.
    let mut ids: HashMap<String, String> = HashMap::new();
    for s in &sent {
        let id = match (s.status, &s.id) {
            (Some(c), Some(id)) if c < 300 => id.clone(),
            _ => match create_task(&client, &tasks, &owner, &s.key).await {
                (Some(c), Some(id)) if c < 300 => id,
                other => panic!("{} sent again: {other:?}", s.key),
            },
        };
        ids.insert(s.key.clone(), id);
    }
    let promoted_url = standby_url(&pg);
    let mut db = PgConnection::connect(&promoted_url).await.unwrap();
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["audit", "verify", "--tenant", &tenant.to_string()])
        .env("DATABASE_URL", &promoted_url)
        .env("KEEL_MASTER_KEY", crate::helpers::MASTER_KEY)
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env("KEEL_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
