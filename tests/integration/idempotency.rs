//! Idempotency-Key: a repeat returns the first response and appends nothing.

use crate::helpers::spawn_app;
use serde_json::json;

#[tokio::test]
async fn a_repeat_returns_the_first_response_and_appends_nothing() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("idem").await;
    let key = [("idempotency-key", "create-apollo-1")];
    let first =
        app.send_with(reqwest::Method::POST, "/api/v1/projects", &owner, Some(json!({"name": "Apollo"})), &key).await;
    assert_eq!(first.status, 201);
    let count = app.event_count().await;
    let again =
        app.send_with(reqwest::Method::POST, "/api/v1/projects", &owner, Some(json!({"name": "Apollo"})), &key).await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(app.event_count().await, count, "nothing appended");

    let other =
        app.send_with(reqwest::Method::POST, "/api/v1/projects", &owner, Some(json!({"name": "Gemini"})), &key).await;
    assert_eq!((other.status, other.body["code"].as_str()), (409, Some("idempotency-key-reused")), "{}", other.body);
    assert_eq!(other.body["errors"][0]["field"], "Idempotency-Key");

    let long = "k".repeat(256);
    let r = app
        .send_with(
            reqwest::Method::POST,
            "/api/v1/projects",
            &owner,
            Some(json!({"name": "X"})),
            &[("idempotency-key", &long)],
        )
        .await;
    assert_eq!(r.status, 400);
    let ok = "k".repeat(255);
    let r = app
        .send_with(
            reqwest::Method::POST,
            "/api/v1/projects",
            &owner,
            Some(json!({"name": "X"})),
            &[("idempotency-key", &ok)],
        )
        .await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn eight_concurrent_repeats_append_once() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("idem-race").await;
    let before = app.event_count().await;
    let bodies = eight_at_once(
        &app,
        reqwest::Method::POST,
        "/api/v1/projects",
        &owner,
        "same-key",
        json!({"name": "Once"}),
        201,
    )
    .await;
    assert!(bodies.iter().all(|b| *b == bodies[0]), "every repeat got the first response");
    assert_eq!(app.event_count().await, before + 1);
}

#[tokio::test]
async fn keys_are_per_tenant_and_provisioning_is_idempotent_too() {
    let app = spawn_app().await;
    let (_, a) = app.provision("idem-a").await;
    let (_, b) = app.provision("idem-b").await;
    let key = [("idempotency-key", "shared")];
    let ra = app.send_with(reqwest::Method::POST, "/api/v1/projects", &a, Some(json!({"name": "A"})), &key).await;
    let rb = app.send_with(reqwest::Method::POST, "/api/v1/projects", &b, Some(json!({"name": "B"})), &key).await;
    assert_eq!((ra.status, rb.status), (201, 201));
    assert_ne!(ra.body["id"], rb.body["id"], "the same key in another tenant is another request");

    let platform = app.platform_token();
    let body = json!({"name": "P", "slug": "idem-p", "plan": "free", "owner": {"user_id": "p", "email": "p@p.test", "name": "P"}});
    let first = app
        .send_with(
            reqwest::Method::POST,
            "/api/v1/tenants",
            &platform,
            Some(body.clone()),
            &[("idempotency-key", "prov-1")],
        )
        .await;
    let again = app
        .send_with(reqwest::Method::POST, "/api/v1/tenants", &platform, Some(body), &[("idempotency-key", "prov-1")])
        .await;
    assert_eq!((first.status, again.status), (201, 201), "{}", again.body);
    assert_eq!(first.body, again.body);
}

/// A task command or a project's update with a key runs as the write path's two calls: the read
/// looks the key up, the append stores it with the answer. Eight concurrent repeats append once
/// and all get the first answer; a key whose command changed nothing still answers the same after
/// the stream moved on; a key sent with another request is refused.
#[tokio::test]
async fn keys_on_the_two_call_path_answer_once_even_when_nothing_changed() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("idem-calls").await;
    let project = app.create_project(&owner, "Start").await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/projects/{project}");
    let before = app.event_count().await;
    let bodies =
        eight_at_once(&app, reqwest::Method::PATCH, &path, &owner, "rename-once", json!({"name": "Renamed"}), 200)
            .await;
    assert!(bodies.iter().all(|b| *b == bodies[0]), "every repeat got the first answer: {bodies:?}");
    assert_eq!(bodies[0]["version"], 2);
    assert_eq!(app.event_count().await, before + 1, "appended once");

    // Unchanged under a key, then the stream moves on: the key still answers version 2.
    const SAME: &[(&str, &str)] = &[("idempotency-key", "same-name")];
    let send = |name: &'static str, key: &'static [(&'static str, &'static str)]| {
        app.send_with(reqwest::Method::PATCH, &path, &owner, Some(json!({ "name": name })), key)
    };
    let unchanged = send("Renamed", SAME).await;
    assert_eq!((unchanged.status, &unchanged.body["version"]), (200, &json!(2)), "{}", unchanged.body);
    let moved = send("Moved", &[]).await;
    assert_eq!(moved.body["version"], 3, "{}", moved.body);
    let replay = send("Renamed", SAME).await;
    assert_eq!((replay.status, &replay.body), (200, &unchanged.body));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));

    let other = send("Else", SAME).await;
    assert_eq!((other.status, other.body["code"].as_str()), (409, Some("idempotency-key-reused")), "{}", other.body);
    assert_eq!(app.event_count().await, before + 2);
}

/// The same keyed request sent eight times at once; every answer must have `status`. Their bodies.
async fn eight_at_once(
    app: &crate::helpers::TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    key: &str,
    body: serde_json::Value,
    status: u16,
) -> Vec<serde_json::Value> {
    let mut calls = Vec::new();
    for _ in 0..8 {
        let request = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        calls.push(tokio::spawn(async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }));
    }
    let mut bodies = Vec::new();
    for c in calls {
        let (got, body) = c.await.unwrap();
        assert_eq!(got, status, "{body}");
        bodies.push(body);
    }
    bodies
}
