//! Load shedding and bulkheads (`keel_gateway::limits::shed`): past a service's bound on
//! in-flight work, new requests get 503 `overloaded` with `Retry-After` at once while the
//! admitted ones finish; `/healthz`, `/readyz` and `/metrics` are never shed; a tenant whose
//! commands are slow holds at most its share of the command path. A tenant is made slow for
//! real: a superuser transaction locks its control-plane row, which every command of that tenant
//! waits for. Latency figures are printed, never asserted.

use crate::helpers::{Options, TestApp, spawn_app_with};
use keel::EdgeLimits;
use keel_domain::TenantId;
use keel_gateway::limits::{ShedConfig, TrafficConfig};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn shedding(shed: ShedConfig) -> Options {
    Options {
        projector: false,
        consistency_wait: Duration::from_secs(2),
        limits: EdgeLimits { traffic: TrafficConfig { shed, ..TrafficConfig::default() }, ..EdgeLimits::default() },
        ..Options::default()
    }
}

/// Locks `tenant`'s row until the returned transaction ends: its commands wait.
async fn make_slow(app: &TestApp, tenant: TenantId) -> PgConnection {
    let mut su = app.db.superuser().await;
    sqlx::query("BEGIN").execute(&mut su).await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE").bind(tenant.0).execute(&mut su).await.unwrap();
    su
}

/// Waits until `n` statements wait on a lock (the slow tenant's commands are in flight).
async fn until_waiting(app: &TestApp, n: i64) {
    let mut su = app.db.superuser().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut su)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{waiting} of {n} requests wait on the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_create(app: &TestApp, token: &str, name: &str) -> tokio::task::JoinHandle<(u16, Value)> {
    let (c, url, token, name) =
        (app.client.clone(), format!("{}/api/v1/projects", app.base), token.to_owned(), name.to_owned());
    tokio::spawn(async move {
        let r = c.post(url).bearer_auth(token).json(&json!({"name": name})).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

async fn shed_count(app: &TestApp, service: &str, reason: &str) -> f64 {
    let m = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let want = "keel_shed_total{";
    m.lines()
        .filter(|l| {
            l.starts_with(want)
                && l.contains(&format!("service=\"{service}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With the command service's bound taken by a slow tenant's requests, new REST requests (any
/// tenant's) get 503 at once; queries, health, readiness and metrics are served; the admitted
/// requests succeed once the tenant is fast again.
#[tokio::test]
async fn past_the_command_bound_requests_are_shed_at_once() {
    let app = spawn_app_with(shedding(ShedConfig { commands: 3, tenant_commands: 100, ..ShedConfig::default() })).await;
    let (a_id, a) = app.provision("slowpoke").await;
    let (_, b) = app.provision("bystander").await;
    let before = shed_count(&app, "commands", "in_flight").await;
    let lock = make_slow(&app, a_id).await;
    let admitted: Vec<_> = (0..3).map(|i| spawn_create(&app, &a, &format!("held {i}"))).collect();
    until_waiting(&app, 3).await;

    let mut times = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let r = app.post("/api/v1/projects", &b, json!({"name": format!("shed {i}")})).await;
        times.push(t.elapsed());
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.body["code"], "overloaded", "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    // Other services and the operator's endpoints are not shed.
    let q = app.graphql(&b, "{ me { userId } }", None).await;
    assert_eq!(q.status, 200, "{}", q.body);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert!(shed_count(&app, "commands", "in_flight").await - before >= 10.0, "the shed counter moved");

    lock.close().await.unwrap();
    for h in admitted {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 201, "an admitted request succeeds: {body}");
    }
    let r = app.post("/api/v1/projects", &b, json!({"name": "after"})).await;
    assert_eq!(r.status, 201, "slots are released: {}", r.body);
    times.sort();
    println!("shed REST answers: p50 {:?} max {:?}", times[times.len() / 2], times[times.len() - 1]);
}

/// The query service's bound: two GraphQL requests waiting for a consistency token that no
/// projection will reach (the projector is off) hold it; a third is shed with a GraphQL error
/// `UNAVAILABLE`; the two admitted ones are answered.
#[tokio::test]
async fn past_the_query_bound_graphql_is_shed_at_once() {
    let app = spawn_app_with(shedding(ShedConfig { queries: 2, ..ShedConfig::default() })).await;
    let (_, a) = app.provision("reader").await;
    let position = app.create_project(&a, "p").await.body["position"].as_str().unwrap().to_owned();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (c, url, a, position) =
                (app.client.clone(), format!("{}/graphql", app.base), a.clone(), position.clone());
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .bearer_auth(a)
                    .header("keel-consistency", position)
                    .json(&json!({"query": "{ projects { edges { node { id } } } }"}))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t = Instant::now();
    let r = app.graphql(&a, "{ me { userId } }", None).await;
    let shed_in = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "OVERLOADED", "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    // REST is its own bulkhead.
    assert_eq!(app.post("/api/v1/projects", &a, json!({"name": "q"})).await.status, 201);
    for h in waiting {
        assert_eq!(h.await.unwrap(), 200, "an admitted query is answered");
    }
    assert_eq!(app.graphql(&a, "{ me { userId } }", None).await.status, 200, "slots are released");
    println!("shed GraphQL answer in {shed_in:?} (the admitted ones waited ~2 s)");
}

/// The subscription bound: the second socket is refused with 503 while the first is open, and
/// accepted once it has closed.
#[tokio::test]
async fn past_the_subscription_bound_sockets_are_refused() {
    let app = spawn_app_with(shedding(ShedConfig { subscriptions: 1, ..ShedConfig::default() })).await;
    let (_, a) = app.provision("subscriber").await;
    let first = crate::subscriptions::subscribe(&app, &a, "subscription { dashboardChanged { __typename } }").await;
    let mut req = format!("{}/graphql/ws", app.base.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    match tokio_tungstenite::connect_async(req.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers().get("retry-after").unwrap(), "1");
        }
        other => panic!("the second socket is refused: {:?}", other.map(|(_, r)| r.status())),
    }
    let mut first = first;
    first.close(None).await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_tungstenite::connect_async(req.clone()).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "a socket is accepted after the first closed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A slow tenant holds at most its share of the command path: two of its commands run, one
/// waits, the rest are shed at once; another tenant's commands run meanwhile; the admitted and
/// the waiting one succeed when the tenant is fast again.
#[tokio::test]
async fn a_slow_tenant_holds_only_its_share() {
    let shed = ShedConfig {
        tenant_commands: 2,
        tenant_queue: 1,
        tenant_wait: Duration::from_secs(8),
        ..ShedConfig::default()
    };
    let app = spawn_app_with(shedding(shed)).await;
    let (a_id, a) = app.provision("hog").await;
    let (_, b) = app.provision("fair").await;
    let before = shed_count(&app, "commands", "tenant").await;
    let lock = make_slow(&app, a_id).await;
    let mut admitted: Vec<_> = (0..2).map(|i| spawn_create(&app, &a, &format!("run {i}"))).collect();
    until_waiting(&app, 2).await;
    admitted.push(spawn_create(&app, &a, "queued"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut shed_times = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let r = app.post("/api/v1/projects", &a, json!({"name": format!("shed {i}")})).await;
        shed_times.push(t.elapsed());
        assert_eq!(r.status, 503, "past its share and queue, the tenant is shed: {}", r.body);
        assert_eq!(r.body["code"], "overloaded", "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    let mut b_times = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let r = app.post("/api/v1/projects", &b, json!({"name": format!("fair {i}")})).await;
        b_times.push(t.elapsed());
        assert_eq!(r.status, 201, "the other tenant is served: {}", r.body);
    }
    assert!(shed_count(&app, "commands", "tenant").await - before >= 5.0, "the shed counter moved");
    lock.close().await.unwrap();
    for h in admitted {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 201, "admitted and queued requests succeed: {body}");
    }
    println!(
        "slow tenant: shed answers max {:?}; the other tenant's commands meanwhile: {:?}",
        shed_times.iter().max().unwrap(),
        b_times
    );
}
