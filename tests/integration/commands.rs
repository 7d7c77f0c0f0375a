//! The REST command API through a real port: success shapes, errors, limits, tenant isolation.

use crate::helpers::{TestApp, spawn_app};
use serde_json::{Value, json};

fn owner_body(slug: &str) -> Value {
    json!({"name": "Acme", "slug": slug, "plan": "free", "owner": {"user_id": "ada", "email": "ada@acme.test", "name": "Ada"}})
}

#[tokio::test]
async fn provisioning_answers_201_with_version_etag_and_position() {
    let app = spawn_app().await;
    let r = app.post("/api/v1/tenants", &app.platform_token(), owner_body("acme")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.header("etag"), Some("\"1\""));
    let position = r.body["position"].as_str().expect("position is an opaque string");
    assert_eq!(r.header("keel-position"), Some(position));
    // The owner's membership was written with the tenant: the owner can act at once.
    let tenant = keel_domain::TenantId(r.body["id"].as_str().unwrap().parse().unwrap());
    let token = app.token(tenant, "ada");
    assert_eq!(app.post("/api/v1/projects", &token, json!({"name": "First"})).await.status, 201);
}

#[tokio::test]
async fn provisioning_rejects_bad_input_naming_each_field() {
    let app = spawn_app().await;
    let platform = app.platform_token();
    assert_eq!(app.post("/api/v1/tenants", &platform, owner_body("taken")).await.status, 201);
    let r = app.post("/api/v1/tenants", &platform, owner_body("taken")).await;
    assert_eq!((r.status, r.body["code"].as_str()), (409, Some("taken")), "{}", r.body);
    assert_eq!(r.body["errors"], json!([{"field": "slug", "message": "is already taken"}]));

    let r = app
        .post(
            "/api/v1/tenants",
            &platform,
            json!({"name": " ", "slug": "Bad Slug", "plan": "gold", "owner": {"user_id": "", "email": "nope", "name": "Ada"}}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let fields: Vec<&str> = r.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["name", "slug", "plan", "owner.user_id", "owner.email"]);
    for key in ["type", "title", "status", "detail"] {
        assert!(r.body.get(key).is_some(), "problem has {key}");
    }

    let mut unknown = owner_body("fresh");
    unknown["owner"]["age"] = json!(3);
    let r = app.post("/api/v1/tenants", &platform, unknown).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("owner.age")));

    let r = app.post("/api/v1/tenants", &platform, json!({"name": "Acme", "slug": "fresh"})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("plan")));

    let malformed = app
        .client
        .post(format!("{}/api/v1/tenants", app.base))
        .bearer_auth(&platform)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    assert_eq!(malformed.headers()["content-type"], "application/problem+json");

    let text = app
        .client
        .post(format!("{}/api/v1/tenants", app.base))
        .bearer_auth(&platform)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);

    // Nothing of the refused requests was written: only the first tenant's two events.
    let mut su = app.db.superuser().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut su).await.unwrap();
    assert_eq!(n, 2);
}

async fn project(app: &TestApp, token: &str, name: &str) -> String {
    app.create_project(token, name).await.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_project_goes_through_its_life_with_versions() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("life").await;
    let created = app.create_project(&owner, "Apollo").await;
    assert_eq!((created.body["version"].as_i64(), created.header("etag")), (Some(1), Some("\"1\"")));
    let id = created.body["id"].as_str().unwrap();

    let r =
        app.patch(&format!("/api/v1/projects/{id}"), &owner, json!({"name": "Apollo 11", "description": "Moon"})).await;
    assert_eq!((r.status, r.body["version"].as_i64(), r.header("etag")), (200, Some(2), Some("\"2\"")));
    assert!(r.header("keel-position").is_some());

    let r = app.patch(&format!("/api/v1/projects/{id}"), &owner, json!({"name": "   "})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("name")));

    let r = app.post(&format!("/api/v1/projects/{id}/archive"), &owner, json!({})).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(3)));
    let r = app.post(&format!("/api/v1/projects/{id}/archive"), &owner, json!({})).await;
    assert_eq!((r.status, r.body["code"].as_str()), (409, Some("rule-violated")));
    let r = app.patch(&format!("/api/v1/projects/{id}"), &owner, json!({"name": "Nope"})).await;
    assert_eq!(r.status, 409, "an archived project is read-only");

    let r = app.send(reqwest::Method::POST, &format!("/api/v1/projects/{id}/restore"), Some(&owner), None).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(4)));

    let r = app.patch(&format!("/api/v1/projects/{}", uuid::Uuid::now_v7()), &owner, json!({"name": "X"})).await;
    assert_eq!(r.status, 404);
    let r = app.patch("/api/v1/projects/not-a-uuid", &owner, json!({"name": "X"})).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn the_free_plan_allows_three_active_projects() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("limits").await;
    let first = project(&app, &owner, "P1").await;
    project(&app, &owner, "P2").await;
    project(&app, &owner, "P3").await;
    let r = app.post("/api/v1/projects", &owner, json!({"name": "P4"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["code"], "limit-exceeded");
    assert_eq!(r.body["errors"][0]["field"], "active_projects");

    // Archiving frees a slot; restoring checks the limit again.
    assert_eq!(app.post(&format!("/api/v1/projects/{first}/archive"), &owner, json!({})).await.status, 200);
    project(&app, &owner, "P4").await;
    let r = app.post(&format!("/api/v1/projects/{first}/restore"), &owner, json!({})).await;
    assert_eq!((r.status, r.body["code"].as_str()), (422, Some("limit-exceeded")));
}

#[tokio::test]
async fn another_tenants_project_answers_404_exactly_like_a_missing_one() {
    let app = spawn_app().await;
    let (_, a) = app.provision("tenant-a").await;
    let (_, b) = app.provision("tenant-b").await;
    let theirs = project(&app, &a, "Secret").await;
    let missing = uuid::Uuid::now_v7().to_string();

    for (method, suffix, body) in [
        (reqwest::Method::PATCH, "", Some(json!({"name": "Hijack"}))),
        (reqwest::Method::POST, "/archive", None),
        (reqwest::Method::POST, "/restore", None),
    ] {
        let foreign =
            app.send(method.clone(), &format!("/api/v1/projects/{theirs}{suffix}"), Some(&b), body.clone()).await;
        let absent = app.send(method.clone(), &format!("/api/v1/projects/{missing}{suffix}"), Some(&b), body).await;
        assert_eq!(foreign.status, 404, "{method} {suffix}");
        assert_eq!(foreign.body, absent.body, "{method} {suffix}: indistinguishable from missing");
    }
    // And A's project is untouched.
    let mut su = app.db.superuser().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = $1")
        .bind(uuid::Uuid::parse_str(&theirs).unwrap())
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(n, 1);
}
