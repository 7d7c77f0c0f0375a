//! Several instances, one truth (docs/scaling.md, "Several instances"): two `keel serve`
//! processes on one database behind a real HAProxy (round robin), sharing the rate limit through
//! a real Redis. A mixed load through the balancer appends nothing twice and loses nothing,
//! quotas hold exactly, an idempotency key answers the same on either instance, subscriptions on
//! one instance hear changes made through the other, and each projection is applied once. Then
//! one instance is killed: the other takes its leases within the TTL and the balancer's clients
//! see no error.

use crate::helpers::{TestDb, free_port, keel_serve, signed_token};
use crate::subscriptions::{next_json, subscribe_at};
use crate::workers::{fresh_replay, read_tables};
use keel_store::checkpoint;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;
use uuid::Uuid;

/// The lease TTL both instances run with: a killed instance's projections pass within it.
const LEASE_TTL_SECS: u64 = 3;

/// HAProxy's binary: `KEEL_TEST_HAPROXY`, else `haproxy` where Debian puts it (`.ci/run`
/// installs the package).
fn haproxy_bin() -> PathBuf {
    let bin = std::env::var_os("KEEL_TEST_HAPROXY").map_or_else(|| PathBuf::from("/usr/sbin/haproxy"), PathBuf::from);
    assert!(bin.exists(), "no HAProxy at {} (apt-get install haproxy; .ci/run installs it)", bin.display());
    bin
}

fn redis_url() -> String {
    std::env::var("KEEL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// HAProxy in front of `backends`, round robin, checking each one's `/readyz`: a backend that
/// stops answering leaves the rotation, and a request whose connection it refused is sent to the
/// other (`retry-on conn-failure` resends only what never reached a server).
async fn balancer(dir: &Path, backends: &[&str]) -> (Child, String) {
    let port = free_port();
    let mut cfg = format!(
        "global\n  maxconn 512\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  timeout tunnel 1h\n\
         \x20 retries 3\n  option redispatch\n  retry-on conn-failure\n\
         frontend keel\n  bind 127.0.0.1:{port}\n  default_backend keels\n\
         backend keels\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n\
         \x20 default-server inter 300ms fall 2 rise 1\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("  server keel{i} {b} check\n"));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let child = tokio::process::Command::new(haproxy_bin())
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return (child, base);
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy answers on {base}: {}",
            std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `keel serve` with every role (API, projections, publishers), the shared Redis limit and a
/// short lease.
async fn instance(db: &TestDb, dir: &Path, name: &str, redis_prefix: &str) -> (Child, String) {
    let redis = redis_url();
    keel_serve(
        &db.url,
        &dir.join(format!("{name}.log")),
        &[
            ("KEEL_REDIS_URL", redis.as_str()),
            ("KEEL_REDIS_KEY_PREFIX", redis_prefix),
            ("KEEL_RATE_LIMIT", "60/m,burst=30"),
            ("KEEL_LEASE_TTL_SECS", &LEASE_TTL_SECS.to_string()),
            // The suite's PostgreSQL serves every test at once: small pools.
            ("KEEL_DB_WRITER_CONNECTIONS", "6"),
            ("KEEL_DB_READER_CONNECTIONS", "3"),
            ("KEEL_DB_PROJECTOR_CONNECTIONS", "4"),
        ],
    )
    .await
}

struct Answer {
    status: u16,
    body: Value,
}

async fn send(client: &reqwest::Client, url: String, token: &str, key: Option<&str>, body: Value) -> Answer {
    let mut req = client.post(url).bearer_auth(token).json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.expect("an answer (the balancer hides a dead instance)");
    let status = r.status().as_u16();
    Answer { status, body: r.json().await.unwrap_or(Value::Null) }
}

/// Provisions a tenant through `base` and returns its id and its owner's token.
async fn provision(client: &reqwest::Client, base: &str, slug: &str, plan: &str) -> (Uuid, String) {
    let platform = signed_token(None, "scale-operator", true);
    let owner = format!("owner-{slug}");
    let r = send(
        client,
        format!("{base}/api/v1/tenants"),
        &platform,
        None,
        json!({ "name": slug, "slug": slug, "plan": plan,
                "owner": { "user_id": owner, "email": format!("{owner}@scale.test"), "name": owner } }),
    )
    .await;
    assert_eq!(r.status, 201, "provisioning {slug}: {}", r.body);
    let id: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    (id, signed_token(Some(id), &owner, false))
}

/// The lease holder of every projection and publisher, by name (live leases only).
async fn holders(db: &TestDb) -> HashMap<String, Option<String>> {
    let mut su = db.superuser().await;
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT name, CASE WHEN lease_expires_at > now() THEN lease_holder END FROM projection_checkpoints",
    )
    .fetch_all(&mut su)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Waits until no projection or publisher is behind the log.
async fn caught_up(db: &TestDb, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut behind = Vec::new();
        for name in holders(db).await.into_keys() {
            let st = checkpoint::status(db.store.projector(), &name).await.unwrap();
            if st.lag_events > 0 {
                behind.push(format!("{name}: {}", st.lag_events));
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "projections caught up: {behind:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Requests each instance counted on its `/metrics` (any route, any status).
async fn served(client: &reqwest::Client, addr: &str) -> f64 {
    let m = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    m.lines()
        .filter(|l| l.starts_with("keel_http_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_haproxy_keep_one_truth_and_one_takes_over_when_the_other_dies() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("keel-scale-out-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("keel-scale-{}", Uuid::new_v4().simple());
    let (mut a, a_addr) = instance(&db, &dir, "a", &prefix).await;
    let (mut b, b_addr) = instance(&db, &dir, "b", &prefix).await;
    let (a_url, b_url) = (format!("http://{a_addr}"), format!("http://{b_addr}"));
    let (_lb, lb) = balancer(&dir, &[&a_addr, &b_addr]).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let (load_tenant, load) = provision(&client, &lb, "scale-load", "enterprise").await;
    let (_, quota) = provision(&client, &lb, "scale-quota", "free").await;
    let (_, limited) = provision(&client, &lb, "scale-rate", "free").await;
    let project = send(&client, format!("{lb}/api/v1/projects"), &load, None, json!({"name": "Scale"})).await;
    assert_eq!(project.status, 201, "{}", project.body);
    let project = project.body["id"].as_str().unwrap().to_owned();

    // Subscriptions on either instance hear what is done through the other.
    let q = format!("subscription {{ projectChanged(id: \"{project}\") {{ taskCounts {{ todo }} }} }}");
    let mut on_a = subscribe_at(&a_url, &load, &q).await;
    let mut on_b = subscribe_at(&b_url, &load, &q).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tasks_url = |base: &str| format!("{base}/api/v1/projects/{project}/tasks");
    for (n, (through, socket, side)) in
        [(&b_url, &mut on_a, "a change through B, on A"), (&a_url, &mut on_b, "a change through A, on B")]
            .into_iter()
            .enumerate()
    {
        let r = send(&client, tasks_url(through), &load, None, json!({"title": format!("live {n}")})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let msg = next_json(socket, deadline.saturating_duration_since(Instant::now()))
                .await
                .unwrap_or_else(|| panic!("{side}: no push"));
            assert_eq!(msg["type"], "next", "{side}: {msg}");
            if msg["payload"]["data"]["projectChanged"]["taskCounts"]["todo"] == n as u64 + 1 {
                break;
            }
        }
    }
    let mut created: HashSet<String> = HashSet::new();
    let mut answered = 0;

    // A mixed load through the balancer: keyed task creations, each key repeated on the other
    // instance directly (the same answer, no second event), with reads in between.
    let mut clients = Vec::new();
    for c in 0..6 {
        let (client, lb, load, tasks, tasks_a, tasks_b) =
            (client.clone(), lb.clone(), load.clone(), tasks_url(&lb), tasks_url(&a_url), tasks_url(&b_url));
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let key = format!("scale-{c}-{i}");
                let body = json!({"title": format!("task {c}.{i}")});
                let first = send(&client, tasks.clone(), &load, Some(&key), body.clone()).await;
                assert_eq!(first.status, 201, "{}", first.body);
                let other = if i % 2 == 0 { &tasks_a } else { &tasks_b };
                let again = send(&client, other.clone(), &load, Some(&key), body).await;
                assert_eq!((again.status, &again.body["id"]), (201, &first.body["id"]), "key {key} on the other");
                ids.push(first.body["id"].as_str().unwrap().to_owned());
                if i % 5 == 0 {
                    let g = client
                        .post(format!("{lb}/graphql"))
                        .bearer_auth(&load)
                        .json(&json!({"query": "{ projects(first: 5) { totalCount } }"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(g.status().as_u16(), 200);
                }
            }
            ids
        }));
    }
    // Quotas, with racing calls spread over both instances: the free plan's three projects and
    // its 10,000 usage units a month, exactly.
    let mut racing = Vec::new();
    for i in 0..10 {
        let (client, base, quota) = (client.clone(), [&a_url, &b_url][i % 2].clone(), quota.clone());
        racing.push(tokio::spawn(async move {
            send(&client, format!("{base}/api/v1/projects"), &quota, None, json!({"name": format!("q{i}")}))
                .await
                .status
        }));
    }
    let mut usage = Vec::new();
    for i in 0..14 {
        let (client, base, quota) = (client.clone(), [&a_url, &b_url][i % 2].clone(), quota.clone());
        usage.push(tokio::spawn(async move {
            let rec = json!({"records": [{"id": format!("u{i}"), "metric": "api.calls", "quantity": 1000,
                                          "occurred_at": chrono::Utc::now()}]});
            send(&client, format!("{base}/api/v1/usage"), &quota, None, rec).await.status
        }));
    }
    for c in clients {
        for id in c.await.unwrap() {
            assert!(created.insert(id.clone()), "task {id} answered twice as new");
            answered += 1;
        }
    }
    let mut project_statuses = Vec::new();
    for r in racing {
        project_statuses.push(r.await.unwrap());
    }
    let mut usage_statuses = Vec::new();
    for r in usage {
        usage_statuses.push(r.await.unwrap());
    }
    assert_eq!(project_statuses.iter().filter(|s| **s == 201).count(), 3, "{project_statuses:?}");
    assert!(project_statuses.iter().all(|s| [201, 422].contains(s)), "{project_statuses:?}");
    assert_eq!(usage_statuses.iter().filter(|s| **s == 201).count(), 10, "{usage_statuses:?}");
    assert!(usage_statuses.iter().all(|s| [201, 422].contains(s)), "{usage_statuses:?}");

    // The balancer spread the load: both instances served a good share.
    let (served_a, served_b) = (served(&client, &a_addr).await, served(&client, &b_addr).await);
    assert!(served_a > 60.0 && served_b > 60.0, "requests served: A {served_a}, B {served_b}");
    println!("requests served: A {served_a}, B {served_b}");

    // One rate-limit budget for both: alternating between the instances, the tenant gets its
    // burst of 30 once (plus a refill of one a second), not once per instance.
    let (mut ok, mut refused) = ([0, 0], [0, 0]);
    for i in 0..60 {
        let r = client
            .post(format!("{}/graphql", [&a_url, &b_url][i % 2]))
            .bearer_auth(&limited)
            .json(&json!({"query": "{ me { userId } }"}))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok[i % 2] += 1,
            429 => refused[i % 2] += 1,
            s => panic!("rate-limited tenant: {s}"),
        }
    }
    let budget = ok[0] + ok[1];
    assert!((30..=34).contains(&budget), "one shared budget: served {ok:?}, refused {refused:?}");
    assert!(refused[0] > 0 && refused[1] > 0, "both instances refuse: {refused:?}");
    println!("one budget over two instances: served {ok:?}, refused {refused:?}");

    // Nothing lost, nothing doubled: each 2xx task is in the log once, and the log has no other.
    let mut su = db.superuser().await;
    let logged: Vec<String> =
        sqlx::query_scalar("SELECT stream_id::text FROM events WHERE tenant_id = $1 AND event_type = 'TaskCreated'")
            .bind(load_tenant)
            .fetch_all(&mut su)
            .await
            .unwrap();
    let logged_set: HashSet<String> = logged.iter().cloned().collect();
    assert_eq!(logged.len(), logged_set.len(), "a task created twice in the log");
    let mut want = created.clone();
    assert_eq!(answered, 120);
    // The two tasks of the subscription check, too.
    assert_eq!(logged.len(), want.len() + 2, "every 2xx once, nothing else");
    want.retain(|id| !logged_set.contains(id));
    assert!(want.is_empty(), "answered 2xx but not in the log: {want:?}");

    // What two instances hold of the database after the load (docs/scaling.md's figure).
    let connections: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'keel'",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    println!("server connections of two instances after the load: {connections}");
    // Each projection and publisher has one holder, spread over the two instances or not.
    caught_up(&db, Duration::from_secs(30)).await;
    let before = holders(&db).await;
    assert!(before.values().all(Option::is_some), "every lease held: {before:?}");
    let a_pid = a.id().unwrap();
    let a_held: Vec<&String> = before
        .iter()
        .filter(|(_, h)| h.as_deref().is_some_and(|h| h.contains(&format!(":{a_pid}:"))))
        .map(|(n, _)| n)
        .collect();
    println!("leases before the kill: {} of {} held by A", a_held.len(), before.len());

    // Kill A. B takes every lease within the TTL (plus one renewal poll), and clients of the
    // balancer see no error meanwhile.
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let killed = Instant::now();
    let mut after_kill = Vec::new();
    for i in 0..20 {
        let r = send(&client, tasks_url(&lb), &load, Some(&format!("after-kill-{i}")), json!({"title": "after"})).await;
        assert_eq!(r.status, 201, "through the balancer after the kill: {}", r.body);
        after_kill.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let b_pid = b.id().unwrap();
    let took = loop {
        let now = holders(&db).await;
        if now.values().all(|h| h.as_deref().is_some_and(|h| h.contains(&format!(":{b_pid}:")))) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(LEASE_TTL_SECS + 5), "B holds every lease: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("B held every lease {took:?} after A was killed (TTL {LEASE_TTL_SECS} s)");
    assert!(took < Duration::from_secs(LEASE_TTL_SECS + 2), "taken over in {took:?}");
    // B's projections carry on: the tasks made after the kill are counted.
    caught_up(&db, Duration::from_secs(30)).await;
    let g = client
        .post(format!("{lb}/graphql"))
        .bearer_auth(&load)
        .json(&json!({"query": format!("{{ project(id: \"{project}\") {{ taskCounts {{ todo }} }} }}")}))
        .send()
        .await
        .unwrap();
    let body: Value = g.json().await.unwrap();
    assert_eq!(body["data"]["project"]["taskCounts"]["todo"], 142, "{body}");

    // Each projection applied each event once: the read tables equal a fresh replay.
    let mut term = std::process::Command::new("kill");
    term.arg("-TERM").arg(b_pid.to_string());
    assert!(term.status().unwrap().success());
    tokio::time::timeout(Duration::from_secs(30), b.wait()).await.expect("B drains and exits").unwrap();
    let live = read_tables(&db).await;
    assert_eq!(live, fresh_replay(&db).await, "the read tables equal a replay of the log");

    // The hash chains verify.
    crate::helpers::assert_audit_verifies(&db.url, load_tenant);
    let _ = std::fs::remove_dir_all(&dir);
}
