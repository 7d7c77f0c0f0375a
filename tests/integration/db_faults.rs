//! Issue #16, points 1–4: how Keel answers while the database is in trouble. Faults are real:
//! a TCP proxy between Keel and PostgreSQL (`fault_proxy`) cuts connections at a chosen
//! statement or plays a database that is down, and `pg_terminate_backend` ends Keel's backends.

use crate::fault_proxy::{Cut, FaultProxy};
use crate::helpers::{Options, Reply, TestApp, server_url, spawn_app_on};
use keel_store::PoolTimeouts;
use serde_json::{Value, json};
use sqlx::Connection;
use std::time::{Duration, Instant};

fn upstream() -> String {
    let url = server_url();
    let after = url.split_once('@').map(|(_, h)| h).unwrap_or(&url);
    after.split('/').next().unwrap().to_owned()
}

/// Keel behind a fault proxy; `TestApp::db` still reaches the database directly.
pub(crate) async fn app_behind_proxy(projector: bool, timeouts: PoolTimeouts) -> (TestApp, FaultProxy) {
    let proxy = FaultProxy::start(&upstream()).await;
    let db = crate::helpers::TestDb::new().await;
    let mut o = Options { projector, database_url: Some(proxy.url(&db.url)), ..Options::default() };
    o.limits.db = timeouts;
    (spawn_app_on(db, o).await, proxy)
}

pub(crate) fn quick() -> PoolTimeouts {
    PoolTimeouts { commit_resolve: Duration::from_secs(2), ..PoolTimeouts::default() }
}

async fn post_keyed(app: &TestApp, path: &str, token: &str, body: Value, key: &str) -> Reply {
    app.send_with(reqwest::Method::POST, path, token, Some(body), &[("Idempotency-Key", key)]).await
}

/// Events whose payload names `name` (projects are created with unique names per test).
async fn events_named(app: &TestApp, name: &str) -> Vec<(uuid::Uuid, i64, String)> {
    let mut su = app.db.superuser().await;
    sqlx::query_as(
        "SELECT stream_id, stream_version, event_type FROM events WHERE payload->>'name' = $1 ORDER BY position",
    )
    .bind(name)
    .fetch_all(&mut su)
    .await
    .unwrap()
}

/// A database that answers late is slow, not away: while every round trip takes longer than
/// the availability probe waits for one (but less than three of its waits), commands go through,
/// late, and none is refused as `database-unavailable`. (The probe used to give up on its late
/// answer and open the breaker: under the whole suite's load on two cores, working requests got
/// 503s.)
#[tokio::test]
async fn a_database_that_answers_late_is_slow_not_away() {
    let probe = keel_store::breaker::ProbeSettings {
        timeout: Duration::from_millis(300),
        ..keel_store::breaker::ProbeSettings::default()
    };
    let (app, proxy) = app_behind_proxy(false, PoolTimeouts { probe, ..quick() }).await;
    let (_, owner) = app.provision_on("late", "enterprise").await;
    assert_eq!(app.create_project(&owner, "Before").await.status, 201);

    proxy.slow(Duration::from_millis(500));
    let started = Instant::now();
    let mut i = 0;
    // Long enough for several probes, each answered after 500 ms.
    while started.elapsed() < Duration::from_secs(4) {
        let r = app.post("/api/v1/projects", &owner, json!({"name": format!("Late-{i}")})).await;
        assert_eq!(r.status, 201, "a command while the database answers late: {}", r.body);
        i += 1;
    }
    let r = app.graphql(&owner, "{ projects(first: 50) { edges { node { name } } } }", None).await;
    assert!(r.body["errors"].is_null(), "a query while the database answers late: {}", r.body);
    assert!(proxy.delayed() > 2 * i, "the round trips were held back ({} for {i} commands)", proxy.delayed());
    proxy.slow(Duration::ZERO);
    assert_eq!(events_named(&app, "Late-0").await.len(), 1);
}

#[tokio::test]
async fn while_the_database_is_away_every_request_is_a_fast_503_and_recovery_is_prompt() {
    let (app, proxy) = app_behind_proxy(true, PoolTimeouts::default()).await;
    let (_, owner) = app.provision_on("away", "enterprise").await;
    app.create_project(&owner, "Before").await;

    proxy.down();
    // The first request may be the one that finds out (at most the probe's timeout).
    let started = Instant::now();
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Away-0"})).await;
    let first = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["code"], "database-unavailable", "{}", r.body);
    assert!(first < Duration::from_secs(4), "the first request found out in {first:?}");

    // Once known down, every request is answered at once, with Retry-After.
    let mut slowest = Duration::ZERO;
    for i in 1..=10 {
        let started = Instant::now();
        let r = app.post("/api/v1/projects", &owner, json!({"name": format!("Away-{i}")})).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.body["code"], "database-unavailable", "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    assert!(slowest < Duration::from_secs(1), "commands while known down took up to {slowest:?}");

    let started = Instant::now();
    let r = app.graphql(&owner, "{ projects(first: 5) { edges { node { name } } } }", None).await;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "UNAVAILABLE", "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(took < Duration::from_secs(1), "GraphQL took {took:?}");

    let started = Instant::now();
    let r = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(took < Duration::from_secs(2), "/readyz took {took:?}");

    // Long enough away for the projection workers' retry backoff to have grown to its 5 s cap
    // (20 ms doubling: 5.1 s in all before the first 5 s wait).
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Back: the first command goes through within moments.
    proxy.up();
    let back = Instant::now();
    let recovered = loop {
        let r = app.post("/api/v1/projects", &owner, json!({"name": "After"})).await;
        if r.status == 201 {
            break back.elapsed();
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(back.elapsed() < Duration::from_secs(10), "no 2xx 10 s after the database returned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The projections follow: the read model shows the command made after the return.
    let caught_up = loop {
        let r = app.graphql(&owner, "{ projects(first: 20) { edges { node { name } } } }", None).await;
        if r.body.to_string().contains("\"After\"") {
            break back.elapsed();
        }
        assert!(back.elapsed() < Duration::from_secs(20), "projections did not catch up: {}", r.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "first request {first:?}, known-down answers up to {slowest:?}, first 2xx {recovered:?} and read model \
         current {caught_up:?} after the database returned"
    );
    assert!(recovered < Duration::from_secs(3), "recovered in {recovered:?}");
    assert!(caught_up < Duration::from_millis(2500), "the read model was current {caught_up:?} after the return");
    let r = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Nothing answered 503 was written; what was answered 201 was, once.
    for i in 0..=10 {
        assert!(events_named(&app, &format!("Away-{i}")).await.is_empty(), "Away-{i} was written");
    }
    assert_eq!(events_named(&app, "Before").await.len(), 1);
    assert_eq!(events_named(&app, "After").await.len(), 1);
    // And the projections follow again: a read at the head is served, not stale.
    let token = consistency_of(&app, &owner).await;
    let r = app.graphql(&owner, "{ projects(first: 20) { edges { node { name } } } }", Some(&token)).await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
    assert!(r.body["extensions"]["consistency"].is_null(), "stale after recovery: {}", r.body);
    let names: Vec<&str> = r.body["data"]["projects"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"After") && names.contains(&"Probe"), "{names:?}");
}

/// A consistency token at the current head (one more command).
async fn consistency_of(app: &TestApp, owner: &str) -> String {
    let r = app.create_project(owner, "Probe").await;
    r.body["position"].as_str().expect("a position").to_owned()
}

/// Every statement of a command before its commit, cut before the server has it and after it
/// ran: the command is retried and lands exactly once.
#[tokio::test]
async fn a_connection_cut_at_any_step_before_the_commit_is_retried_not_a_500() {
    let (app, proxy) = app_behind_proxy(false, quick()).await;
    let (_, owner) = app.provision_on("cuts", "enterprise").await;
    let steps = [
        ("begin and tenant setting", "SELECT set_config('keel.tenant_id'"),
        ("read: membership, tenant row and key claim", "keel_command_read("),
        ("append with the key's answer", "keel_append("),
    ];
    for (step, needle) in steps {
        for cut in [Cut::Before, Cut::After] {
            let name = format!("{step} {cut:?}");
            proxy.cut_on(needle, cut);
            let fired = proxy.fired();
            let r =
                post_keyed(&app, "/api/v1/projects", &owner, json!({"name": name}), &uuid::Uuid::new_v4().to_string())
                    .await;
            assert_eq!(proxy.fired(), fired + 1, "{name}: the fault was not injected");
            assert_eq!(r.status, 201, "{name}: {}", r.body);
            let landed = events_named(&app, &name).await;
            assert_eq!(landed.len(), 1, "{name}: {landed:?}");
            assert_eq!(landed[0].0.to_string(), r.body["id"].as_str().unwrap(), "{name}");
        }
    }
}

/// A command on the write path's two calls (a project's update, no key), cut at either call
/// before the server has it or after it ran: the read is made again, and an append whose answer
/// was lost is resolved by asking the database once its server process has gone. It lands once.
#[tokio::test]
async fn a_two_call_command_cut_at_either_call_lands_exactly_once() {
    let (app, proxy) = app_behind_proxy(false, quick()).await;
    let (_, owner) = app.provision_on("twocuts", "enterprise").await;
    let created = app.create_project(&owner, "Start").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let mut version = 1;
    for (step, needle) in [("read", "keel_command_read("), ("append", "keel_append(")] {
        for cut in [Cut::Before, Cut::After] {
            let name = format!("{step} {cut:?}");
            proxy.cut_on(needle, cut);
            let fired = proxy.fired();
            let r = app.patch(&format!("/api/v1/projects/{id}"), &owner, json!({"name": name})).await;
            assert_eq!(proxy.fired(), fired + 1, "{name}: the fault was not injected");
            assert_eq!(r.status, 200, "{name}: {}", r.body);
            version += 1;
            assert_eq!(r.body["version"], version, "{name}: {}", r.body);
            let landed = events_named(&app, &name).await;
            assert_eq!(landed.len(), 1, "{name}: {landed:?}");
            assert_eq!((landed[0].0.to_string(), landed[0].1), (id.clone(), version), "{name}");
        }
    }
}

/// The connection drops with `COMMIT` in flight: Keel asks the database and answers the truth.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_resolved_never_answered_as_failed() {
    let (app, proxy) = app_behind_proxy(false, quick()).await;
    let (_, owner) = app.provision_on("commits", "enterprise").await;

    // The commit landed: 201 with the id and version that are in the log (no key: asked by xid).
    proxy.cut_on("COMMIT", Cut::After);
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Landed"})).await;
    assert_eq!(proxy.fired(), 1);
    assert_eq!(r.status, 201, "{}", r.body);
    let landed = events_named(&app, "Landed").await;
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert_eq!((landed[0].0.to_string().as_str(), landed[0].1), (r.body["id"].as_str().unwrap(), 1));

    // The commit never reached the server: the command runs again and lands once.
    proxy.cut_on("COMMIT", Cut::Before);
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Lost"})).await;
    assert_eq!(proxy.fired(), 2);
    assert_eq!(r.status, 201, "{}", r.body);
    let lost = events_named(&app, "Lost").await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].0.to_string(), r.body["id"].as_str().unwrap());

    // An archive (the command once answered 500 with its event in the log).
    let id = r.body["id"].as_str().unwrap().to_owned();
    proxy.cut_on("COMMIT", Cut::After);
    let r = app.post(&format!("/api/v1/projects/{id}/archive"), &owner, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 2, "{}", r.body);

    // The database stays away after the cut: the outcome cannot be known, and the answer says
    // so; a repeat with the same key once it is back gives the one true result.
    for (cut, name) in [(Cut::After, "Unknown landed"), (Cut::Before, "Unknown lost")] {
        let key = uuid::Uuid::new_v4().to_string();
        proxy.cut_and_go_down_on("COMMIT", cut);
        let started = Instant::now();
        let r = post_keyed(&app, "/api/v1/projects", &owner, json!({"name": name}), &key).await;
        assert_eq!(r.status, 503, "{name}: {}", r.body);
        assert_eq!(r.body["code"], "outcome-unknown", "{name}: {}", r.body);
        assert!(r.body["detail"].as_str().unwrap().contains("Idempotency-Key"), "{}", r.body);
        assert!(started.elapsed() < Duration::from_secs(8), "{name}: {:?}", started.elapsed());
        let expected = usize::from(cut == Cut::After);
        assert_eq!(events_named(&app, name).await.len(), expected, "{name}");
        proxy.up();
        let again = loop {
            let again = post_keyed(&app, "/api/v1/projects", &owner, json!({"name": name}), &key).await;
            if again.status != 503 {
                break again;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(again.status, 201, "{name}: {}", again.body);
        let events = events_named(&app, name).await;
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(events[0].0.to_string(), again.body["id"].as_str().unwrap(), "{name}");
    }
}

/// Backends ended by the server under load (`57P01`): no 500, and every 2xx is in the log once.
#[tokio::test]
async fn terminated_backends_under_load_are_retried() {
    let (app, _proxy) = app_behind_proxy(false, quick()).await;
    let (_, owner) = app.provision_on("storm", "enterprise").await;
    let db = app.db.name.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let (stop, url) = (stop.clone(), app.db.url.clone());
        tokio::spawn(async move {
            let mut su = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut ended = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                      WHERE datname = $1 AND application_name = 'keel' AND pid <> pg_backend_pid()",
                )
                .bind(&db)
                .fetch_one(&mut su)
                .await
                .unwrap();
                ended += n;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            ended
        })
    };
    let app = std::sync::Arc::new(app);
    let mut clients = Vec::new();
    for c in 0..6 {
        let (app, owner) = (app.clone(), owner.clone());
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..25 {
                let name = format!("storm-{c}-{i}");
                let r = app.post("/api/v1/projects", &owner, json!({"name": name})).await;
                answers.push((name, r.status, r.body));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ended = storm.await.unwrap();
    let (mut ok, mut unavailable) = (0, 0);
    for (name, status, body) in &answers {
        let landed = events_named(&app, name).await;
        match status {
            201 => {
                ok += 1;
                assert_eq!(landed.len(), 1, "{name}: {landed:?}");
                assert_eq!(landed[0].0.to_string(), body["id"].as_str().unwrap());
            }
            503 => {
                // Cut at every one of its tries: refused as unavailable, and nothing written.
                unavailable += 1;
                assert_eq!(body["code"], "database-unavailable", "{body}");
                assert!(landed.is_empty(), "{name} answered 503 but is in the log");
            }
            other => panic!("{name}: {other} {body}"),
        }
    }
    println!("{ended} backends terminated; {ok} created, {unavailable} refused as unavailable");
    assert!(ended > 0, "the storm ended no backend");
    // A command cut at every one of its four tries is refused (and wrote nothing, as checked
    // above). How many are depends on how long a command takes against the storm's cadence,
    // that is on the machine's load (150 of 150 created on a quiet machine, 62 under a CI run
    // beside a chaos run and two builds): what is asserted is the answers, not the ratio.
    assert!(ok > 0, "no command got through the storm");
}
