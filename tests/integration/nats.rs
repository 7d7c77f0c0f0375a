//! The NATS JetStream publisher (`docs/integration.md`) against the real NATS server on
//! 127.0.0.1:4222: two tenants' events on their own subjects, each once, in log order per
//! stream; `kill -9` between publish and checkpoint; a broker that is away; erased personal
//! data. Each test uses a stream of its own and deletes it at the end.

use crate::helpers::{Options, SECRET, TestApp, TestDb, spawn_app_with};
use crate::projection::{all_readable, create_projects};
use async_nats::jetstream;
use keel_outbound::{NatsConfig, NatsPublisher, nats::NAME};
use keel_runner::{Runner, RunnerConfig};
use keel_store::checkpoint;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use uuid::Uuid;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
const NATS: &str = "nats://127.0.0.1:4222";

/// A stream name no other test uses (`KEEL_TEST_<id>`); its subjects' prefix is `keeltest<id>`,
/// since JetStream streams may not overlap.
pub(crate) fn stream_name() -> String {
    format!("KEEL_TEST_{}", Uuid::new_v4().simple())
}

pub(crate) fn prefix(stream: &str) -> String {
    format!("keeltest{}", stream.trim_start_matches("KEEL_TEST_"))
}

pub(crate) fn config(url: &str, stream: &str) -> NatsConfig {
    NatsConfig {
        stream: stream.to_owned(),
        subject_prefix: prefix(stream),
        max_age: Duration::from_secs(3600),
        ..NatsConfig::new(url)
    }
}

pub(crate) async fn jetstream() -> jetstream::Context {
    let client = async_nats::connect(NATS).await.expect("the NATS server with JetStream listens on 127.0.0.1:4222");
    let mut js = jetstream::new(client);
    // The whole suite shares one broker and two cores: its answers can take seconds.
    js.set_timeout(Duration::from_secs(30));
    js
}

/// Removes a test's stream. Cleanup, not a check: a broker too busy to answer in time leaves
/// the stream to its `max_age` rather than failing the test that has already passed.
pub(crate) async fn drop_stream(js: &jetstream::Context, stream: &str) {
    if let Err(e) = js.delete_stream(stream).await {
        eprintln!("stream {stream} left to its max_age: {e}");
    }
}

/// One message as a consumer of the stream sees it.
#[derive(Debug)]
pub(crate) struct Received {
    subject: String,
    msg_id: String,
    pub(crate) envelope: Value,
}

async fn message_count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(s) => s.get_info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every message of `stream`, in stream order.
pub(crate) async fn read_all(js: &jetstream::Context, stream: &str) -> Vec<Received> {
    let s = js.get_stream(stream).await.unwrap();
    let state = s.get_info().await.unwrap().state;
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        out.push(Received {
            subject: m.subject.to_string(),
            msg_id: m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default(),
            envelope: serde_json::from_slice(&m.payload).unwrap(),
        });
    }
    out
}

pub(crate) async fn wait_for_messages(js: &jetstream::Context, stream: &str, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = message_count(js, stream).await;
        if got >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{got} of {n} events published to {stream} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of the log, in log order: (event id, tenant, stream type, stream id, version, type).
pub(crate) async fn log_events(db: &TestDb) -> Vec<(Uuid, Uuid, String, Uuid, i64, String)> {
    let mut su = db.superuser().await;
    sqlx::query_as(
        "SELECT event_id, tenant_id, stream_type, stream_id, stream_version, event_type FROM events
          ORDER BY transaction_id, position",
    )
    .fetch_all(&mut su)
    .await
    .unwrap()
}

/// Each event of the log exactly once, on its subject, with its id as `Nats-Msg-Id` and its
/// envelope's fields; per stream in version order. Returns the envelopes by event id.
pub(crate) async fn assert_exactly_once_in_order(
    db: &TestDb,
    stream: &str,
    received: &[Received],
) -> HashMap<Uuid, Value> {
    let prefix = prefix(stream);
    let events = log_events(db).await;
    assert_eq!(received.len(), events.len(), "one message per event of the log");
    let mut seen = HashSet::new();
    let mut last_version: HashMap<Uuid, i64> = HashMap::new();
    let mut by_id = HashMap::new();
    let by_event: HashMap<Uuid, _> = events.iter().map(|e| (e.0, e)).collect();
    for m in received {
        let id: Uuid = m.envelope["id"].as_str().unwrap().parse().unwrap();
        assert!(seen.insert(id), "event {id} published once");
        assert_eq!(m.msg_id, id.to_string(), "Nats-Msg-Id is the event id");
        let (_, tenant, stream_type, stream_id, version, event_type) = by_event[&id];
        assert_eq!(m.subject, format!("{prefix}.{tenant}.{stream_type}.{event_type}"));
        assert_eq!(m.envelope["specversion"], "keel.event.v1");
        assert_eq!(m.envelope["type"], json!(event_type));
        assert_eq!(m.envelope["tenant_id"], json!(tenant));
        assert_eq!(m.envelope["stream"], json!({"type": stream_type, "id": stream_id}));
        assert_eq!(m.envelope["version"], json!(version));
        let previous = last_version.insert(*stream_id, *version).unwrap_or(0);
        assert!(*version > previous, "stream {stream_id}: version {version} after {previous}, in log order");
        by_id.insert(id, m.envelope.clone());
    }
    by_id
}

async fn metrics(app: &TestApp) -> String {
    app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap()
}

async fn nats_app(stream: &str, url: &str) -> TestApp {
    spawn_app_with(Options {
        outbound: keel_outbound::OutboundConfig { nats: Some(config(url, stream)), ..Default::default() },
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn two_tenants_events_reach_their_own_subjects_once_in_log_order_with_the_envelope() {
    let stream = stream_name();
    let app = nats_app(&stream, NATS).await;
    let js = jetstream().await;
    let (a, owner_a) = app.provision("nats-a").await;
    let (b, owner_b) = app.provision("nats-b").await;
    let mut projects = HashMap::new();
    for (tenant, owner, slug) in [(a, &owner_a, "a"), (b, &owner_b, "b")] {
        for i in 0..3 {
            let name = format!("{slug}-project-{i}");
            let id = app.create_project(owner, &name).await.body["id"].as_str().unwrap().to_owned();
            projects.insert(id.clone(), (tenant, name));
            let r = app
                .patch(&format!("/api/v1/projects/{id}"), owner, json!({"name": format!("{slug}-renamed-{i}")}))
                .await;
            assert!(r.status < 300, "rename: {}", r.body);
        }
    }
    let total = app.event_count().await as u64;
    wait_for_messages(&js, &stream, total, Duration::from_secs(30)).await;
    let received = read_all(&js, &stream).await;
    let envelopes = assert_exactly_once_in_order(&app.db, &stream, &received).await;

    // The data is the command's, and each tenant's projects are on its own subjects only.
    for (id, (tenant, name)) in &projects {
        let created: Vec<&Value> = envelopes
            .values()
            .filter(|e| e["type"] == "ProjectCreated" && e["data"]["project_id"] == json!(id))
            .collect();
        assert_eq!(created.len(), 1, "project {id} created once");
        assert_eq!(created[0]["data"]["name"], json!(name));
        assert_eq!(created[0]["tenant_id"], json!(tenant.0));
        assert_eq!(created[0]["stream"]["type"], "project");
    }
    for (tenant, slug) in [(a, "a-"), (b, "b-")] {
        let on_subjects: Vec<&Received> =
            received.iter().filter(|m| m.subject.starts_with(&format!("{}.{}.", prefix(&stream), tenant.0))).collect();
        assert!(on_subjects.iter().all(|m| m.envelope["tenant_id"] == json!(tenant.0)));
        let names: Vec<&str> =
            on_subjects.iter().filter_map(|m| m.envelope["data"]["name"].as_str()).filter(|n| n.len() > 2).collect();
        assert!(names.iter().any(|n| n.starts_with(slug)), "{names:?}");
        assert!(
            names.iter().filter(|n| n.contains("-project-") || n.contains("-renamed-")).all(|n| n.starts_with(slug))
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = checkpoint::status(app.db.store.projector(), NAME).await.unwrap();
        if st.lag_events == 0 {
            assert_eq!(st.last_error, None, "{st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the checkpoint follows the acks: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop_stream(&js, &stream).await;
}

/// A TCP forwarder on `port` to the NATS server: the broker "coming back" at the URL Keel has.
async fn forward_to_nats(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the port is free again");
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:4222").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn with_nats_away_commands_succeed_the_lag_and_error_show_and_it_catches_up_when_back() {
    let stream = stream_name();
    // A port nothing listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    let app = nats_app(&stream, &url).await;
    let (_, owner) = app.provision("nats-away").await;
    // Commands go through while the broker is away (the free plan's three projects, renamed).
    for i in 0..3 {
        let id = app.create_project(&owner, &format!("away-{i}")).await.body["id"].as_str().unwrap().to_owned();
        let r =
            app.patch(&format!("/api/v1/projects/{id}"), &owner, json!({"name": format!("away-renamed-{i}")})).await;
        assert!(r.status < 300, "rename: {}", r.body);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = checkpoint::status(app.db.store.projector(), NAME).await.unwrap();
        if st.state == "failing" && st.last_error.is_some() && st.lag_events >= 6 {
            break st;
        }
        assert!(Instant::now() < deadline, "the publisher shows it cannot reach NATS: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(st.last_error.as_deref().unwrap().contains(&port.to_string()), "{st:?}");
    assert!(st.lag_seconds > 0.0, "{st:?}");
    // So does /metrics (the lag gauge is refreshed about once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(&app).await;
        let lag = m
            .lines()
            .find_map(|l| l.strip_prefix(&format!("keel_projection_lag_events{{projection=\"{NAME}\"}} ")))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if lag.is_some_and(|n| n >= 6.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the publisher's lag on /metrics: {lag:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The operator's view says the same.
    let out = std::process::Command::new(KEEL)
        .args(["projections", "status"])
        .env("DATABASE_URL", &app.db.url)
        .env("KEEL_NATS_URL", &url)
        .env("KEEL_LOG", "error")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with(NAME)).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("failing"), "{text}");
    assert!(text.contains("last error: nats: cannot connect"), "{text}");

    // NATS reachable at that address again: everything missed arrives, once, in order.
    let proxy = forward_to_nats(port).await;
    let js = jetstream().await;
    let total = app.event_count().await as u64;
    wait_for_messages(&js, &stream, total, Duration::from_secs(30)).await;
    assert_exactly_once_in_order(&app.db, &stream, &read_all(&js, &stream).await).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = checkpoint::status(app.db.store.projector(), NAME).await.unwrap();
        if st.lag_events == 0 && st.last_error.is_none() && st.state != "failing" {
            break;
        }
        assert!(Instant::now() < deadline, "caught up and no longer failing: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics(&app).await;
    assert!(
        m.lines().any(|l| l.starts_with("keel_outbound_published_total{")
            && l.contains("publisher=\"nats\"")
            && l.contains("outcome=\"published\"")),
        "{m}"
    );
    assert!(m.contains("keel_outbound_publish_seconds"), "{m}");
    proxy.abort();
    drop_stream(&js, &stream).await;
}

#[tokio::test]
async fn an_erased_members_personal_data_is_published_as_erased() {
    let app = spawn_app_with(Options::default()).await;
    let (tenant, owner) = app.provision("nats-erase").await;
    let (grace, _) = app.invite(tenant, &owner, "grace", "member").await;
    let (_ada, _) = app.invite(tenant, &owner, "ada", "member").await;
    let r = app.post(&format!("/api/v1/members/{grace}/erase"), &owner, json!({})).await;
    assert!(r.status < 300, "erase: {}", r.body);

    // The publisher reads the log after the erasure (a first run, a retry or a replay alike).
    let stream = stream_name();
    let runner = Runner::new(app.db.store.clone(), NatsPublisher::new(config(NATS, &stream)), RunnerConfig::default());
    let js = jetstream().await;
    // The log is read gap-safely: an older transaction anywhere in the cluster (another test's)
    // can hold the last events back for a moment.
    let total = app.event_count().await as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while message_count(&js, &stream).await < total {
        assert!(Instant::now() < deadline, "every event published");
        runner.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = read_all(&js, &stream).await;
    let envelopes = assert_exactly_once_in_order(&app.db, &stream, &received).await;
    let invited = |user: &str| {
        envelopes
            .values()
            .find(|e| e["type"] == "MemberInvited" && e["data"]["user_id"] == user)
            .unwrap_or_else(|| panic!("{user} invited"))
            .clone()
    };
    assert_eq!(
        (invited("grace")["data"]["email"].clone(), invited("grace")["data"]["name"].clone()),
        (json!("[erased]"), json!("[erased]"))
    );
    assert_eq!(invited("ada")["data"]["email"], "ada@example.test", "a member not erased is opened");
    for m in &received {
        let text = m.envelope.to_string();
        assert!(!text.contains("enc:v1:") && !text.contains("grace@example.test"), "{text}");
    }
    drop_stream(&js, &stream).await;
}

fn serve(db: &TestDb, stream: &str) -> Child {
    Command::new(KEEL)
        .args(["serve", "--role", "projector"])
        .env("DATABASE_URL", &db.url)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("KEEL_MASTER_KEY", crate::helpers::MASTER_KEY)
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .env("KEEL_PROJECTION_BATCH", "50")
        .env("KEEL_LEASE_TTL_SECS", "3")
        .env("KEEL_NATS_URL", NATS)
        .env("KEEL_NATS_STREAM", stream)
        .env("KEEL_NATS_SUBJECT_PREFIX", prefix(stream))
        .env("KEEL_NATS_MAX_AGE_SECS", "3600")
        .env("KEEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("keel serve starts")
}

/// Events the publisher's checkpoint covers.
async fn checkpointed(db: &TestDb) -> u64 {
    let at = checkpoint::read(db.store.projector(), NAME).await.unwrap();
    let mut su = db.superuser().await;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE (transaction_id, position) <= ($1::text::xid8, $2)")
            .bind(at.xid.to_string())
            .bind(at.position)
            .fetch_one(&mut su)
            .await
            .unwrap();
    n as u64
}

#[tokio::test]
async fn a_publisher_killed_between_publish_and_checkpoint_republishes_and_jetstream_keeps_each_event_once() {
    let db = TestDb::new().await;
    let stream = stream_name();
    let a = db.provision("nats-kill-a", "ada").await;
    let b = db.provision("nats-kill-b", "bob").await;
    create_projects(&db, a, 1000).await;
    create_projects(&db, b, 1000).await;
    all_readable(&db).await;
    let total = log_events(&db).await.len() as u64;
    let js = jetstream().await;

    // Kill it while JetStream holds events its checkpoint does not cover yet (a batch published,
    // not committed): the restart must publish them again. The batch may commit between the look
    // and the kill; then the next process is killed the same way.
    let mut caught = None;
    for _ in 0..10 {
        let mut victim = serve(&db, &stream);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let published = message_count(&js, &stream).await;
            if published > 0 && published < total && published > checkpointed(&db).await {
                break;
            }
            assert!(
                Instant::now() < deadline && published < total,
                "caught the publisher mid-batch ({published} of {total})"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        victim.start_kill().unwrap(); // SIGKILL
        victim.wait().await.unwrap();
        let (published, covered) = (message_count(&js, &stream).await, checkpointed(&db).await);
        if published > covered {
            caught = Some((published, covered));
            break;
        }
    }
    let (published, covered) = caught.expect("a publisher killed between publish and checkpoint");
    assert!(published < total, "killed part-way: {published} of {total} published, checkpoint at {covered}");

    let mut second = serve(&db, &stream);
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpointed(&db).await < total {
        assert!(Instant::now() < deadline, "the restarted publisher catches up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.start_kill().unwrap();
    second.wait().await.unwrap();

    let received = read_all(&js, &stream).await;
    assert_eq!(received.len() as u64, total, "republished events were dropped as duplicates");
    assert_exactly_once_in_order(&db, &stream, &received).await;
    drop_stream(&js, &stream).await;
}

/// A NATS address that accepts connections and never answers (a broker hung, or a black hole).
async fn hung_broker() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_hung_broker_holds_back_no_projection() {
    let (port, broker) = hung_broker().await;
    let stream = stream_name();
    // The publisher waits up to 30 s for each connection attempt to this broker.
    let nats =
        NatsConfig { connect_timeout: Duration::from_secs(30), ..config(&format!("nats://127.0.0.1:{port}"), &stream) };
    let app = spawn_app_with(Options {
        outbound: keel_outbound::OutboundConfig { nats: Some(nats), ..Default::default() },
        ..Options::default()
    })
    .await;
    let (_, owner) = app.provision("nats-hung").await;
    // Let the publisher start waiting on the broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id: Uuid = app.create_project(&owner, "Unhindered").await.body["id"].as_str().unwrap().parse().unwrap();
    // The read model follows within seconds, not after the broker's 30 s: the publisher waits
    // with no transaction open, so it holds back no reader of the log.
    let committed = Instant::now();
    let mut su = app.db.superuser().await;
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_projects WHERE project_id = $1")
            .bind(id)
            .fetch_one(&mut su)
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(committed.elapsed() < Duration::from_secs(10), "the project is projected while the broker hangs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = checkpoint::status(app.db.store.projector(), NAME).await.unwrap();
    assert_eq!(st.checkpoint.position, 0, "nothing published to a broker that never answered: {st:?}");
    broker.abort();
}
