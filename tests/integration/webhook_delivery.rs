//! Webhook delivery (issue 17, points 3, 4, 5, 6 and 8; docs/integration.md "Delivery") against
//! a real receiver on a loopback port: each endpoint gets its tenant's matching events after its
//! creation, signed, in log order; a receiver that was down gets everything it missed; the
//! schedule's end disables an endpoint and a change enables it again; a replay resends; a hung
//! endpoint delays no other; the connect-time address check refuses what the policy forbids;
//! every attempt is in the delivery log, which only its tenant reads.

use crate::helpers::{Options, TestApp, TestDb, spawn_app_with};
use crate::receiver::{Mode, Receiver};
use keel_domain::TenantId;
use keel_outbound::destination::DestinationPolicy;
use keel_outbound::schedule::RetryPolicy;
use keel_outbound::webhooks::{WebhookConfig, parse_schedule};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

const LOOPBACK: DestinationPolicy = DestinationPolicy { allow_http: true, allow_private: true };

fn options(schedule: &str, attempt_timeout: Duration) -> Options {
    Options {
        webhooks: keel_command::WebhookSettings {
            policy: keel_domain::webhook::UrlPolicy { allow_http: true, allow_private: true },
            ..Default::default()
        },
        outbound: keel_outbound::OutboundConfig {
            nats: None,
            webhooks: WebhookConfig {
                policy: LOOPBACK,
                attempt_timeout,
                retry: RetryPolicy { delays: parse_schedule(schedule).unwrap(), jitter: 0.0, failing_after: 3 },
                idle_poll: Duration::from_millis(500),
                ..WebhookConfig::default()
            },
        },
        ..Options::default()
    }
}

pub(crate) async fn create_hook(app: &TestApp, token: &str, url: &str, types: &[&str]) -> (String, String) {
    let r = app.post("/api/v1/webhooks", token, json!({"url": url, "event_types": types})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    (r.body["id"].as_str().unwrap().to_owned(), r.body["secret"].as_str().unwrap().to_owned())
}

/// The ids of `tenant`'s events after webhook `hook`'s creation, in log order, of `types` (or all).
pub(crate) async fn expected_in(db: &TestDb, tenant: TenantId, hook: &str, types: Option<&[&str]>) -> Vec<String> {
    let mut su = db.superuser().await;
    let types: Option<Vec<String>> = types.map(|t| t.iter().map(|s| s.to_string()).collect());
    sqlx::query_scalar(
        "SELECT e.event_id::text FROM events e,
                (SELECT transaction_id, position FROM events WHERE stream_id = $2::uuid AND stream_version = 1) c
          WHERE e.tenant_id = $1 AND (e.transaction_id, e.position) > (c.transaction_id, c.position)
            AND ($3::text[] IS NULL OR e.event_type = ANY ($3))
          ORDER BY e.transaction_id, e.position",
    )
    .bind(tenant.0)
    .bind(hook)
    .bind(types)
    .fetch_all(&mut su)
    .await
    .unwrap()
}

async fn expected(app: &TestApp, tenant: TenantId, hook: &str, types: Option<&[&str]>) -> Vec<String> {
    expected_in(&app.db, tenant, hook, types).await
}

async fn hooks(app: &TestApp, token: &str) -> Value {
    let r = app
        .graphql(
            token,
            "{ webhooks { id state pending lastError deliveries(first: 100) { eventId eventType attempt outcome statusCode latencyMs error attemptedAt position } } }",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["errors"].is_null(), "{}", r.body);
    r.body["data"]["webhooks"].clone()
}

async fn hook_view(app: &TestApp, token: &str, id: &str) -> Value {
    hooks(app, token).await.as_array().unwrap().iter().find(|h| h["id"] == id).cloned().expect("listed")
}

async fn wait_state(app: &TestApp, token: &str, id: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let h = hook_view(app, token, id).await;
        if h["state"] == state {
            return h;
        }
        assert!(Instant::now() < deadline, "{id} not {state} within {within:?}: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn some_commands(app: &TestApp, token: &str, n: usize, tag: &str) {
    for i in 0..n {
        let p = app.create_project(token, &format!("{tag} {i}")).await;
        let pid = p.body["id"].as_str().unwrap().to_owned();
        let r = app
            .post(&format!("/api/v1/projects/{pid}/tasks"), token, json!({"title": format!("{tag} task {i}")}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

fn ids(hits: &[crate::receiver::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

#[tokio::test]
async fn each_endpoint_gets_its_tenants_matching_events_after_its_creation_signed_in_log_order() {
    let rx = Receiver::start().await;
    let app = spawn_app_with(options("0,100ms,200ms", Duration::from_secs(5))).await;
    let (a, owner_a) = app.provision_on("whd-a", "enterprise").await;
    let (b, owner_b) = app.provision_on("whd-b", "enterprise").await;
    some_commands(&app, &owner_a, 2, "before").await; // before any endpoint: not delivered
    let (all_a, secret_all_a) = create_hook(&app, &owner_a, &rx.url("all-a"), &["*"]).await;
    let (tasks_a, secret_tasks_a) = create_hook(&app, &owner_a, &rx.url("tasks-a"), &["TaskCreated"]).await;
    let (all_b, secret_all_b) = create_hook(&app, &owner_b, &rx.url("all-b"), &["*"]).await;
    some_commands(&app, &owner_a, 5, "a").await;
    some_commands(&app, &owner_b, 3, "b").await;

    let want_all_a = expected(&app, a, &all_a, None).await;
    let want_tasks_a = expected(&app, a, &tasks_a, Some(&["TaskCreated"])).await;
    let want_all_b = expected(&app, b, &all_b, None).await;
    // a's "*" endpoint also hears the creation of a's second endpoint, after its own.
    assert_eq!(want_all_a.len(), 1 + 5 * 2, "{want_all_a:?}");
    assert_eq!(want_tasks_a.len(), 5);
    assert_eq!(want_all_b.len(), 3 * 2);

    for (path, want, secret, tenant) in [
        ("all-a", &want_all_a, &secret_all_a, a),
        ("tasks-a", &want_tasks_a, &secret_tasks_a, a),
        ("all-b", &want_all_b, &secret_all_b, b),
    ] {
        let got = rx.wait_delivered(path, want.len(), Duration::from_secs(20)).await;
        assert_eq!(&ids(&got), want, "{path}: the tenant's matching events, once each, in log order");
        for h in &got {
            assert!(h.verify(secret), "{path}: signed with the endpoint's secret");
            assert_eq!(h.envelope["id"], h.id.as_str(), "webhook-id is the event id");
            assert_eq!(h.envelope["tenant_id"], tenant.0.to_string(), "{path}: only its tenant's events");
            assert_eq!(h.envelope["specversion"], "keel.event.v1");
            for other in [&secret_all_a, &secret_tasks_a, &secret_all_b].into_iter().filter(|s| *s != secret) {
                assert!(!h.verify(other), "{path}: not signed with another endpoint's secret");
            }
        }
    }
    // Nothing more arrives (no duplicate of a delivered event).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hits("all-a").len(), want_all_a.len());

    // The delivery log: every attempt, its tenant's only.
    let hook = hook_view(&app, &owner_a, &tasks_a).await;
    assert_eq!(hook["state"], "ACTIVE");
    assert_eq!(hook["pending"], 0);
    let log = hook["deliveries"].as_array().unwrap();
    assert_eq!(log.len(), 5);
    for d in log {
        assert_eq!(
            (d["outcome"].as_str(), d["statusCode"].as_i64(), d["attempt"].as_i64()),
            (Some("delivered"), Some(204), Some(1))
        );
        assert_eq!(d["eventType"], "TaskCreated");
        assert!(d["latencyMs"].as_f64().unwrap() >= 0.0 && d["error"].is_null());
    }
    let b_view = hooks(&app, &owner_b).await;
    assert_eq!(b_view.as_array().unwrap().len(), 1, "b lists only its endpoint: {b_view}");
    assert!(!b_view.to_string().contains(&all_a) && !b_view.to_string().contains(&want_all_a[0]));
    // Under the reader role with b's tenant set, a's delivery rows do not exist.
    let mut tx = app.db.store.begin_read(b).await.unwrap();
    let rows = keel_store::webhooks::deliveries(&mut tx, &[all_a.parse::<Uuid>().unwrap()], 100).await.unwrap();
    assert!(rows.is_empty(), "RLS keeps a's delivery log from b");
    // Bounds of the new field.
    for bad in [0, 101, -1] {
        let r =
            app.graphql(&owner_a, &format!("{{ webhooks {{ deliveries(first: {bad}) {{ eventId }} }} }}"), None).await;
        assert!(
            r.body["errors"][0]["message"].as_str().unwrap_or_default().contains("between 1 and 100"),
            "{}",
            r.body
        );
    }
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_everything_in_order_then_the_schedules_end_disables_and_a_change_enables() {
    let rx = Receiver::start().await;
    let app = spawn_app_with(options("0,100ms,100ms,100ms,200ms", Duration::from_secs(5))).await;
    let (a, owner) = app.provision_on("whd-down", "enterprise").await;
    let (hook, secret) = create_hook(&app, &owner, &rx.url("down"), &["*"]).await;

    // Down (503): the first event is tried on the schedule, the endpoint is failing after three.
    rx.set("down", Mode::Status(503));
    some_commands(&app, &owner, 3, "while down").await;
    rx.wait_hits("down", 3, Duration::from_secs(10)).await;
    let h = wait_state(&app, &owner, &hook, "FAILING", Duration::from_secs(10)).await;
    assert_eq!(h["pending"], 6, "{h}");
    let failed = h["deliveries"].as_array().unwrap();
    assert!(failed.iter().all(|d| d["outcome"] == "failed" && d["statusCode"] == 503), "{h}");
    let first = rx.hits("down")[0].id.clone();
    assert!(rx.hits("down").iter().all(|x| x.id == first), "in order: only the head is retried");
    assert!(h["lastError"].as_str().unwrap().contains("503"), "{h}");

    // Back before the schedule ran out: everything it missed, in order, once.
    rx.set("down", Mode::Ok);
    let want = expected(&app, a, &hook, None).await;
    let got = rx.wait_delivered("down", want.len(), Duration::from_secs(10)).await;
    assert_eq!(ids(&got), want);
    assert!(got.iter().all(|x| x.verify(&secret)));
    let h = wait_state(&app, &owner, &hook, "ACTIVE", Duration::from_secs(5)).await;
    assert_eq!(h["pending"], 0);
    assert!(h["lastError"].is_null());

    // Down through the whole schedule (five attempts): disabled; events go on queueing.
    rx.set("down", Mode::Status(500));
    some_commands(&app, &owner, 1, "disable").await;
    let h = wait_state(&app, &owner, &hook, "DISABLED", Duration::from_secs(10)).await;
    let head_attempts: Vec<i64> = h["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["outcome"] == "failed" && d["statusCode"] == 500)
        .map(|d| d["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(head_attempts, vec![5, 4, 3, 2, 1], "five attempts, newest first: {h}");
    let tries = rx.hits("down").len();
    some_commands(&app, &owner, 2, "while disabled").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.hits("down").len(), tries, "a disabled endpoint is not tried");
    let h = hook_view(&app, &owner, &hook).await;
    assert_eq!(h["pending"], 2 + 4, "nothing is lost while disabled: {h}");

    // The owner fixes it (any change): enabled again where it stopped.
    rx.set("down", Mode::Ok);
    let r = app.patch(&format!("/api/v1/webhooks/{hook}"), &owner, json!({"description": "fixed"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let want = expected(&app, a, &hook, None).await;
    let got = rx.wait_delivered("down", want.len(), Duration::from_secs(10)).await;
    assert_eq!(ids(&got), want, "every event, in order, the update included");
    wait_state(&app, &owner, &hook, "ACTIVE", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_replay_resends_from_a_position_or_a_time_in_order() {
    let rx = Receiver::start().await;
    let app = spawn_app_with(options("0,100ms", Duration::from_secs(5))).await;
    let (a, owner) = app.provision_on("whd-replay", "enterprise").await;
    let (hook, _) = create_hook(&app, &owner, &rx.url("replay"), &["ProjectCreated"]).await;
    let mut positions = Vec::new();
    for i in 0..4 {
        positions
            .push(app.create_project(&owner, &format!("p{i}")).await.body["position"].as_str().unwrap().to_owned());
    }
    let first_round = rx.wait_delivered("replay", 4, Duration::from_secs(10)).await;
    // From the position of the second command: the third and fourth again, in order.
    let r = app.post(&format!("/api/v1/webhooks/{hook}/replay"), &owner, json!({"from": positions[1]})).await;
    assert!(r.status < 300, "{}", r.body);
    let got = rx.wait_delivered("replay", 6, Duration::from_secs(10)).await;
    assert_eq!(ids(&got[4..]), ids(&first_round[2..4]));
    // From a time before everything: all four again.
    let r = app.post(&format!("/api/v1/webhooks/{hook}/replay"), &owner, json!({"from": "2000-01-01T00:00:00Z"})).await;
    assert!(r.status < 300, "{}", r.body);
    let got = rx.wait_delivered("replay", 10, Duration::from_secs(10)).await;
    assert_eq!(ids(&got[6..]), ids(&first_round));
    assert_eq!(ids(&first_round), expected(&app, a, &hook, Some(&["ProjectCreated"])).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.hits("replay").len(), 10, "nothing else");
}

#[tokio::test]
async fn one_endpoint_hanging_30s_delays_no_other_endpoint_or_tenant() {
    let rx = Receiver::start().await;
    let app = spawn_app_with(options("0,1s", Duration::from_secs(10))).await;
    let (_a, owner_a) = app.provision_on("whd-bulk-a", "enterprise").await;
    let (_b, owner_b) = app.provision_on("whd-bulk-b", "enterprise").await;
    rx.set("slow", Mode::Sleep(Duration::from_secs(30)));
    rx.set("slow-b", Mode::Sleep(Duration::from_secs(30)));
    create_hook(&app, &owner_a, &rx.url("slow"), &["ProjectCreated"]).await;
    create_hook(&app, &owner_b, &rx.url("slow-b"), &["ProjectCreated"]).await;
    create_hook(&app, &owner_a, &rx.url("healthy"), &["ProjectCreated"]).await;
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let r = app.create_project(&owner_a, &format!("bulk {i}")).await;
        let committed = Instant::now();
        let stream = r.body["id"].as_str().unwrap().to_owned();
        let deadline = committed + Duration::from_secs(5);
        let arrived = loop {
            if let Some(h) = rx.delivered("healthy").into_iter().find(|h| h.envelope["stream"]["id"] == stream.as_str())
            {
                break h.at;
            }
            assert!(Instant::now() < deadline, "project {i} not delivered to the healthy endpoint within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        worst = worst.max(arrived.saturating_duration_since(committed));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("healthy endpoint: worst delay after commit {worst:?} while two endpoints hang");
    assert!(worst < Duration::from_secs(1), "the healthy endpoint waited {worst:?}");
    assert!(rx.hits("slow").is_empty(), "the slow endpoint has answered nothing yet");
}

#[tokio::test]
async fn the_address_is_checked_at_connect_time_and_a_refusal_is_in_the_delivery_log() {
    let rx = Receiver::start().await;
    // Commands accept loopback URLs (as a name that resolves there would pass), delivery does not.
    let mut o = options("0,100ms,100ms", Duration::from_secs(5));
    o.outbound.webhooks.policy = DestinationPolicy { allow_http: true, allow_private: false };
    let app = spawn_app_with(o).await;
    let (_a, owner) = app.provision_on("whd-refuse", "enterprise").await;
    let url = rx.url("private").replace("127.0.0.1", "localhost");
    let (hook, _) = create_hook(&app, &owner, &url, &["*"]).await;
    app.create_project(&owner, "p").await;
    let h = wait_state(&app, &owner, &hook, "DISABLED", Duration::from_secs(10)).await;
    assert!(rx.hits("private").is_empty(), "nothing reached the loopback receiver");
    let d = &h["deliveries"][0];
    assert_eq!(d["outcome"], "failed");
    assert!(d["statusCode"].is_null());
    assert!(d["error"].as_str().unwrap().contains("loopback"), "{h}");
}

#[tokio::test]
async fn a_retry_after_erasure_carries_erased_never_the_old_value() {
    let rx = Receiver::start().await;
    let app =
        spawn_app_with(options("0,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms", Duration::from_secs(5)))
            .await;
    let (tenant, owner) = app.provision_on("whd-erase", "enterprise").await;
    let (_hook, _) = create_hook(&app, &owner, &rx.url("erase"), &["MemberInvited"]).await;
    rx.set("erase", Mode::Status(503));
    let (member_id, _) = app.invite(tenant, &owner, "erin", "member").await;
    rx.wait_hits("erase", 1, Duration::from_secs(10)).await;
    assert!(
        rx.hits("erase")[0].envelope.to_string().contains("erin@"),
        "opened before erasure: {}",
        rx.hits("erase")[0].envelope
    );
    let r = app.send(reqwest::Method::POST, &format!("/api/v1/members/{member_id}/erase"), Some(&owner), None).await;
    assert!(r.status < 300, "{}", r.body);
    rx.set("erase", Mode::Ok);
    let got = rx.wait_delivered("erase", 1, Duration::from_secs(10)).await;
    let text = got[0].envelope.to_string();
    assert!(text.contains("[erased]") && !text.contains("erin@") && !text.contains("enc:v1"), "{text}");
}

#[tokio::test]
async fn outbound_status_lists_every_endpoint_with_its_lag_and_last_error() {
    let rx = Receiver::start().await;
    let app = spawn_app_with(options("0,10m", Duration::from_secs(5))).await;
    let (a, owner) = app.provision_on("whd-status", "enterprise").await;
    rx.set("status", Mode::Status(500));
    let (hook, _) = create_hook(&app, &owner, &rx.url("status"), &["*"]).await;
    some_commands(&app, &owner, 2, "s").await;
    rx.wait_hits("status", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["outbound", "status"])
        .env("DATABASE_URL", &app.db.url)
        .env("KEEL_MASTER_KEY", crate::helpers::MASTER_KEY)
        .env("KEEL_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("outbound.webhooks"), "the fan-out is listed: {text}");
    let line = text.lines().find(|l| l.contains(&hook)).unwrap_or_else(|| panic!("endpoint listed: {text}"));
    assert!(line.contains(&a.0.to_string()) && line.contains("active") && line.contains(" 4 "), "{line}");
    assert!(text.contains("last error: ") && text.contains("500"), "{text}");
    let m = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("keel_webhook_deliveries_total{outcome=\"failed\",error=\"status\"}"), "{m}");
    assert!(m.contains("keel_webhook_attempt_seconds"), "{m}");
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_after_the_grace_only_the_new_one() {
    let rx = Receiver::start().await;
    let mut o = options("0,100ms", Duration::from_secs(5));
    o.webhooks.rotation_grace = Duration::from_secs(3600);
    let app = spawn_app_with(o).await;
    let (_a, owner) = app.provision_on("whd-rotate", "enterprise").await;
    let (hook, old) = create_hook(&app, &owner, &rx.url("rotate"), &["ProjectCreated"]).await;
    app.create_project(&owner, "before").await;
    let got = rx.wait_delivered("rotate", 1, Duration::from_secs(10)).await;
    assert!(got[0].verify(&old) && got[0].signature.split(' ').count() == 1);

    let r = app.post(&format!("/api/v1/webhooks/{hook}/rotate-secret"), &owner, json!({})).await;
    assert!(r.status < 300, "{}", r.body);
    let new = r.body["secret"].as_str().unwrap().to_owned();
    app.create_project(&owner, "during").await;
    let got = rx.wait_delivered("rotate", 2, Duration::from_secs(10)).await;
    assert_eq!(got[1].signature.split(' ').count(), 2, "two signatures: {}", got[1].signature);
    assert!(got[1].verify(&old) && got[1].verify(&new), "a receiver holding either secret verifies");

    // The grace ends (set in the past as the superuser): only the new secret signs.
    let mut su = app.db.superuser().await;
    sqlx::query(
        "UPDATE webhook_endpoints SET previous_valid_until = now() - interval '1 second' WHERE webhook_id = $1::uuid",
    )
    .bind(&hook)
    .execute(&mut su)
    .await
    .unwrap();
    app.create_project(&owner, "after").await;
    let got = rx.wait_delivered("rotate", 3, Duration::from_secs(10)).await;
    assert!(got[2].verify(&new) && !got[2].verify(&old), "the old secret no longer signs");
}

#[tokio::test]
async fn the_delivery_log_keeps_attempts_for_its_retention_only() {
    let rx = Receiver::start().await;
    let app = spawn_app_with(options("0,100ms", Duration::from_secs(5))).await;
    let (_a, owner) = app.provision_on("whd-retain", "enterprise").await;
    let (hook, _) = create_hook(&app, &owner, &rx.url("retain"), &["ProjectCreated"]).await;
    app.create_project(&owner, "one").await;
    app.create_project(&owner, "two").await;
    rx.wait_delivered("retain", 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut su = app.db.superuser().await;
    // One attempt is 31 days old.
    sqlx::query(
        "UPDATE webhook_deliveries SET attempted_at = now() - interval '31 days'
          WHERE id = (SELECT min(id) FROM webhook_deliveries WHERE webhook_id = $1::uuid)",
    )
    .bind(&hook)
    .execute(&mut su)
    .await
    .unwrap();
    let pruned =
        keel_store::webhook_delivery::prune(app.db.store.projector(), Duration::from_secs(30 * 86_400)).await.unwrap();
    assert_eq!(pruned, 1);
    let left = hook_view(&app, &owner, &hook).await["deliveries"].as_array().unwrap().len();
    assert_eq!(left, 1, "the attempt within 30 days stays");
}
