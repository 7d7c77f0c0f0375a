//! Plan limits hold under concurrency, by the database.

use crate::helpers::spawn_app;
use serde_json::json;

#[tokio::test]
async fn twenty_parallel_creates_on_a_free_tenant_create_exactly_three() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("race-projects").await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let (client, base, token) = (app.client.clone(), app.base.clone(), owner.clone());
        calls.push(tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/projects"))
                .bearer_auth(token)
                .json(&json!({"name": format!("P{i}")}))
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
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 17, "{statuses:?}");
    let mut su = app.db.superuser().await;
    let (created, active): (i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE event_type = 'ProjectCreated'), (SELECT active_projects FROM tenants)",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert_eq!((created, active), (3, 3));
}

#[tokio::test]
async fn parallel_invitations_never_exceed_the_seat_limit() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("race-seats").await;
    let mut calls = Vec::new();
    for i in 0..10 {
        let (client, base, token) = (app.client.clone(), app.base.clone(), owner.clone());
        calls.push(tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/members"))
                .bearer_auth(token)
                .json(&json!({"user_id": format!("u{i}"), "email": format!("u{i}@x.test"), "name": "U", "role": "member"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for c in calls {
        if c.await.unwrap() == 201 {
            ok += 1;
        }
    }
    assert_eq!(ok, 2, "the owner holds one of the free plan's three seats");
    let mut su = app.db.superuser().await;
    let seats: i32 = sqlx::query_scalar("SELECT seats_used FROM tenants").fetch_one(&mut su).await.unwrap();
    assert_eq!(seats, 3);
}

#[tokio::test]
async fn a_downgrade_that_does_not_fit_names_the_limit() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("downgrade", "team").await;
    for u in ["a", "b", "c"] {
        app.invite(tenant, &owner, u, "member").await;
    }
    let platform = app.platform_token();
    let r = app.put(&format!("/api/v1/tenants/{}/plan", tenant.0), &platform, json!({"plan": "free"})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("seats")), "{}", r.body);
    let r = app.put(&format!("/api/v1/tenants/{}/plan", tenant.0), &platform, json!({"plan": "enterprise"})).await;
    assert_eq!(r.status, 200);
    let r =
        app.put(&format!("/api/v1/tenants/{}/plan", uuid::Uuid::now_v7()), &platform, json!({"plan": "free"})).await;
    assert_eq!(r.status, 404);
    let r = app.put(&format!("/api/v1/tenants/{}/plan", tenant.0), &platform, json!({"plan": "gold"})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("plan")));
}
