//! Suspended tenants read but do not write; bad input is refused whole.

use crate::helpers::spawn_app;
use serde_json::json;

#[tokio::test]
async fn a_suspended_tenant_reads_but_every_write_answers_423_until_reactivated() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("suspended").await;
    let project = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let (bob, _) = app.invite(tenant, &owner, "bob", "member").await;
    let platform = app.platform_token();
    let r = app.post(&format!("/api/v1/tenants/{}/suspend", tenant.0), &platform, json!({"reason": "unpaid"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.post(&format!("/api/v1/tenants/{}/suspend", tenant.0), &platform, json!({})).await;
    assert_eq!(r.status, 409, "already suspended");

    let before = app.event_count().await;
    let now = chrono::Utc::now();
    for (method, path, body) in [
        (reqwest::Method::POST, "/api/v1/projects".to_owned(), Some(json!({"name": "X"}))),
        (reqwest::Method::PATCH, format!("/api/v1/projects/{project}"), Some(json!({"name": "X"}))),
        (reqwest::Method::POST, format!("/api/v1/projects/{project}/archive"), None),
        (reqwest::Method::POST, format!("/api/v1/projects/{project}/tasks"), Some(json!({"title": "X"}))),
        (
            reqwest::Method::POST,
            "/api/v1/members".to_owned(),
            Some(json!({"user_id": "c", "email": "c@x.test", "name": "C", "role": "member"})),
        ),
        (reqwest::Method::PUT, format!("/api/v1/members/{bob}/role"), Some(json!({"role": "viewer"}))),
        (reqwest::Method::DELETE, format!("/api/v1/members/{bob}"), None),
        (
            reqwest::Method::POST,
            "/api/v1/usage".to_owned(),
            Some(json!({"records": [{"id": "r", "metric": "m", "quantity": 1, "occurred_at": now}]})),
        ),
    ] {
        let r = app.send(method.clone(), &path, Some(&owner), body).await;
        assert_eq!((r.status, r.body["code"].as_str()), (423, Some("tenant-suspended")), "{method} {path}: {}", r.body);
    }
    assert_eq!(app.event_count().await, before, "nothing appended while suspended");

    // Reads still work.
    let g = app.graphql(&owner, "{ tenant { status } projects { totalCount } }", None).await;
    assert_eq!(g.body["data"]["tenant"]["status"], "SUSPENDED", "{}", g.body);

    let r = app.post(&format!("/api/v1/tenants/{}/reactivate", tenant.0), &platform, json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.create_project(&owner, "Back").await.status, 201);
    // Platform routes are the platform's: a tenant token cannot suspend.
    let r = app.post(&format!("/api/v1/tenants/{}/suspend", tenant.0), &owner, json!({})).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn bad_input_is_refused_whole_with_a_clear_problem() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("bad-input").await;
    let before = app.event_count().await;
    let url = format!("{}/api/v1/projects", app.base);

    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let r = app
        .client
        .post(&url)
        .bearer_auth(&owner)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let r =
        app.client.post(&url).bearer_auth(&owner).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = app
        .client
        .post(&url)
        .bearer_auth(&owner)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let r = app.post("/api/v1/projects", &owner, json!({"name": "X", "colour": "red"})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("colour")));
    let r = app.post("/api/v1/projects", &owner, json!({"name": 7})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("name")));
    let r = app
        .post(
            "/api/v1/usage",
            &owner,
            json!({"records": [{"id": "a", "metric": "m", "quantity": "many", "occurred_at": chrono::Utc::now()}]}),
        )
        .await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("records[0].quantity")), "{}", r.body);

    assert_eq!(app.event_count().await, before, "nothing appended on any error");
}
