//! RecordUsage: idempotent records, monthly quota, cross-tenant isolation.

use crate::helpers::spawn_app;
use chrono::Utc;
use serde_json::{Value, json};

fn records(ids: &[&str], qty: i64) -> Value {
    let now = Utc::now().to_rfc3339();
    json!({"records": ids.iter().map(|id| json!({"id": id, "metric": "api.calls", "quantity": qty, "occurred_at": now})).collect::<Vec<_>>()})
}

#[tokio::test]
async fn records_are_idempotent_by_id_and_a_month_stays_within_quota() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("usage").await;
    let first = app.post("/api/v1/usage", &owner, records(&["a", "b"], 4000)).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let before = app.event_count().await;
    // The same records again: nothing new is appended or counted, and the answer is the batch
    // that recorded them, with its real version and position (never "0.0").
    let r = app.post("/api/v1/usage", &owner, records(&["a", "b"], 4000)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.event_count().await, before);
    assert_eq!(r.body, first.body, "the repeat answers with the recording batch");
    assert_ne!(r.body["position"], "0.0");
    assert!(r.body["version"].as_i64() > Some(0), "{}", r.body);
    assert_eq!(r.header("keel-position"), first.header("keel-position"));
    // 8,000 used: 2,001 more would pass the free plan's 10,000.
    let r = app.post("/api/v1/usage", &owner, records(&["c"], 2001)).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("usage_units")), "{}", r.body);
    // A call mixing an old and a new record counts only the new one.
    let r = app.post("/api/v1/usage", &owner, records(&["a", "d"], 2000)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut su = app.db.superuser().await;
    let units: i64 =
        sqlx::query_scalar("SELECT sum(units)::bigint FROM usage_counters").fetch_one(&mut su).await.unwrap();
    assert_eq!(units, 10_000);

    let r = app
        .post(
            "/api/v1/usage",
            &owner,
            json!({"records": [{"id": "x", "metric": "Bad Metric", "quantity": 0, "occurred_at": Utc::now()}]}),
        )
        .await;
    let fields: Vec<&str> = r.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!((r.status, fields), (422, vec!["records[0].metric", "records[0].quantity"]));
}

#[tokio::test]
async fn parallel_calls_never_push_a_month_over_its_quota() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("usage-race").await;
    // 20 calls of 1,000 units each against a quota of 10,000: exactly 10 fit.
    let mut calls = Vec::new();
    for i in 0..20 {
        let (client, base, token) = (app.client.clone(), app.base.clone(), owner.clone());
        calls.push(tokio::spawn(async move {
            let now = Utc::now();
            client
                .post(format!("{base}/api/v1/usage"))
                .bearer_auth(token)
                .json(&json!({"records": [{"id": format!("r{i}"), "metric": "api.calls", "quantity": 1000, "occurred_at": now}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 10, "{statuses:?}");
    let mut su = app.db.superuser().await;
    let units: i64 =
        sqlx::query_scalar("SELECT sum(units)::bigint FROM usage_counters").fetch_one(&mut su).await.unwrap();
    assert_eq!(units, 10_000);

    // The same record id sent by 8 calls at once is counted once.
    let mut calls = Vec::new();
    let (_, other) = app.provision("usage-dup").await;
    for _ in 0..8 {
        let (client, base, token) = (app.client.clone(), app.base.clone(), other.clone());
        calls.push(tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/usage"))
                .bearer_auth(token)
                .json(&json!({"records": [{"id": "same", "metric": "api.calls", "quantity": 7, "occurred_at": Utc::now()}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for c in calls {
        assert!([200, 201].contains(&c.await.unwrap()));
    }
    let units: i64 = sqlx::query_scalar(
        "SELECT units FROM usage_counters c JOIN tenants t USING (tenant_id) WHERE t.slug = 'usage-dup'",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert_eq!(units, 7);
}

#[tokio::test]
async fn usage_is_counted_per_tenant() {
    let app = spawn_app().await;
    let (_, a) = app.provision("usage-a").await;
    let (_, b) = app.provision("usage-b").await;
    assert_eq!(app.post("/api/v1/usage", &a, records(&["same-id"], 9000)).await.status, 201);
    // B's records with the same id are B's own, and A's 9,000 units do not count against B.
    assert_eq!(app.post("/api/v1/usage", &b, records(&["same-id"], 9000)).await.status, 201);
}
