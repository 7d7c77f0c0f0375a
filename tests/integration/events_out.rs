//! Events out, end to end (issue 17, "Done when"; docs/integration.md): commands in two tenants
//! through Keel's REST API, while the real `keel` binary delivers (the projector role: the
//! webhook fan-out and delivery workers, and the NATS publisher) to a webhook receiver on a
//! loopback port and to the local NATS server — through a receiver outage, and a `kill -9` of
//! that process mid-stream and its restart. Each tenant's endpoints get their own tenant's
//! events only, signed, in log order; JetStream holds every event exactly once.

use crate::helpers::{MASTER_KEY, Options, SECRET, TestApp, TestDb, spawn_app_on};
use crate::nats::{assert_exactly_once_in_order, jetstream, prefix, read_all, stream_name, wait_for_messages};
use crate::receiver::{Mode, Receiver};
use crate::webhook_delivery::{create_hook, expected_in as expected};
use serde_json::json;
use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn deliverer(db: &TestDb, stream: &str) -> Child {
    Command::new(KEEL)
        .args(["serve", "--role", "projector"])
        .env("DATABASE_URL", &db.url)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .env("KEEL_PROJECTION_BATCH", "20")
        .env("KEEL_LEASE_TTL_SECS", "2")
        .env("KEEL_NATS_URL", "nats://127.0.0.1:4222")
        .env("KEEL_NATS_STREAM", stream)
        .env("KEEL_NATS_SUBJECT_PREFIX", prefix(stream))
        .env("KEEL_NATS_MAX_AGE_SECS", "3600")
        .env("KEEL_WEBHOOKS_ALLOW_HTTP", "true")
        .env("KEEL_WEBHOOKS_ALLOW_PRIVATE", "true")
        .env("KEEL_WEBHOOKS_RETRY_SCHEDULE", "0,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s")
        .env("KEEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("keel serve starts")
}

#[tokio::test]
async fn two_tenants_events_reach_their_own_endpoints_and_subjects_signed_in_order_through_an_outage_and_a_crash() {
    let rx = Receiver::start().await;
    let stream = stream_name();
    let js = jetstream().await;
    // Keel's API in this process (no projector); the deliverer is the real binary.
    let options = Options {
        projector: false,
        webhooks: keel_command::WebhookSettings {
            policy: keel_domain::webhook::UrlPolicy { allow_http: true, allow_private: true },
            ..Default::default()
        },
        ..Options::default()
    };
    let app = spawn_app_on(TestDb::new().await, options).await;
    let (a, owner_a) = app.provision_on("out-a", "enterprise").await;
    let (b, owner_b) = app.provision_on("out-b", "enterprise").await;
    let (a_all, secret_a_all) = create_hook(&app, &owner_a, &rx.url("a-all"), &["*"]).await;
    let (a_tasks, secret_a_tasks) = create_hook(&app, &owner_a, &rx.url("a-tasks"), &["TaskCreated"]).await;
    let (b_all, secret_b_all) = create_hook(&app, &owner_b, &rx.url("b-all"), &["*"]).await;

    let mut first = deliverer(&app.db, &stream);
    let app = std::sync::Arc::new(app);
    // A receiver outage from the start: a's "*" endpoint answers 503 for two seconds or more (below).
    rx.set("a-all", Mode::Status(503));
    let outage = Instant::now();
    // The load: both tenants at once (a: projects and tasks, b: projects, paced so the crash
    // below falls in the middle of it).
    let load_a = {
        let app = app.clone();
        let t = owner_a.clone();
        tokio::spawn(async move { drive_ref(&app, &t, 40, "a", true, Duration::from_millis(40)).await })
    };
    let load_b = {
        let app = app.clone();
        let t = owner_b.clone();
        tokio::spawn(async move { drive_ref(&app, &t, 40, "b", false, Duration::from_millis(100)).await })
    };

    // A crash mid-stream: kill -9 the deliverer while deliveries flow, then start another.
    rx.wait_delivered("b-all", 5, Duration::from_secs(20)).await;
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    let before_kill = rx.delivered("b-all").len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = deliverer(&app.db, &stream);

    // The outage lasts at least two seconds, and until the deliverers have met it twice (on a
    // loaded machine the first one may not have come to a's endpoint before it was killed).
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(outage.elapsed())).await;
    let failed = || rx.hits("a-all").iter().filter(|h| h.answered == 503).count();
    while failed() < 2 {
        assert!(outage.elapsed() < Duration::from_secs(60), "the outage was seen: {} attempts answered 503", failed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.set("a-all", Mode::Ok);

    let (ok_a, ok_b) = (load_a.await.unwrap(), load_b.await.unwrap());
    assert_eq!((ok_a, ok_b), (80, 40), "every command answered 2xx");

    // Everything arrives: per endpoint, each expected event, first seen in log order.
    let mut duplicates = 0;
    for (path, hook, tenant, types, secret) in [
        ("a-all", &a_all, a, None, &secret_a_all),
        ("a-tasks", &a_tasks, a, Some(&["TaskCreated"][..]), &secret_a_tasks),
        ("b-all", &b_all, b, None, &secret_b_all),
    ] {
        let want = expected(&app.db, tenant, hook, types).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let got = loop {
            let got = rx.delivered(path);
            let distinct: HashSet<&str> = got.iter().map(|h| h.id.as_str()).collect();
            if distinct.len() >= want.len() {
                break got;
            }
            assert!(Instant::now() < deadline, "{path}: {} of {} delivered", distinct.len(), want.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut seen = HashSet::new();
        let first_seen: Vec<String> = got.iter().filter(|h| seen.insert(h.id.clone())).map(|h| h.id.clone()).collect();
        assert_eq!(first_seen, want, "{path}: its tenant's events, in log order");
        duplicates += got.len() - first_seen.len();
        for h in &got {
            assert!(h.verify(secret), "{path}: signed with its own secret");
            assert_eq!(h.envelope["tenant_id"], tenant.0.to_string(), "{path}: its tenant only");
        }
        println!("{path}: {} events delivered in order ({} deliveries)", want.len(), got.len());
    }
    // At least once: a crash between a 2xx and its record resends that one event per endpoint.
    assert!(duplicates <= 3, "{duplicates} events delivered twice");
    assert!(before_kill > 0 && before_kill < 40, "killed mid-stream: b had {before_kill} of 40 deliveries");

    // NATS: every event of the log exactly once, on its tenant's subject, in order per stream.
    let total = crate::nats::log_events(&app.db).await.len() as u64;
    wait_for_messages(&js, &stream, total, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = read_all(&js, &stream).await;
    assert_exactly_once_in_order(&app.db, &stream, &received).await;
    println!("NATS: {total} events once each; webhooks: {duplicates} redelivered after the crash");
    second.start_kill().unwrap();
    crate::nats::drop_stream(&js, &stream).await;
}

async fn drive_ref(app: &TestApp, token: &str, rounds: usize, tag: &str, tasks: bool, pause: Duration) -> usize {
    let mut ok = 0;
    for i in 0..rounds {
        let p = app.create_project(token, &format!("{tag} {i}")).await;
        ok += 1;
        if tasks {
            let pid = p.body["id"].as_str().unwrap();
            let r =
                app.post(&format!("/api/v1/projects/{pid}/tasks"), token, json!({"title": format!("{tag} {i}")})).await;
            assert_eq!(r.status, 201, "{}", r.body);
            ok += 1;
        }
        tokio::time::sleep(pause).await;
    }
    ok
}
