//! Subscriptions stop when access stops: a removed member, a suspended tenant, an expired token
//! each end the socket with the graphql-transport-ws close code and a fixed reason, and nothing
//! written after the access ended is pushed.

use crate::helpers::{TestApp, spawn_app};
use crate::subscriptions::{Socket, subscribe};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Every text message until the socket closes: the pushes seen and the close code and reason.
async fn until_closed(ws: &mut Socket, within: Duration) -> (Vec<Value>, Option<(u16, String)>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => seen.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (seen, frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Ok(Some(Ok(_))) => {}
            _ => return (seen, None),
        }
    }
}

async fn read_models_current(app: &TestApp, token: &str, members: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.graphql(token, "{ dashboard { memberCount } }", None).await.body["data"]["dashboard"]["memberCount"]
        != members
    {
        assert!(std::time::Instant::now() < deadline, "read models catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_removed_member_gets_no_further_pushes_and_is_closed_with_4403() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("subs-removed").await;
    let (bob, bob_token) = app.invite(tenant, &owner, "bob", "member").await;
    let project = app.create_project(&owner, "Public").await.body["id"].as_str().unwrap().to_owned();
    read_models_current(&app, &owner, 2).await;
    let q = format!("subscription {{ projectChanged(id: \"{project}\") {{ name }} }}");
    let mut follows = subscribe(&app, &bob_token, &q).await;
    let mut dash = subscribe(&app, &bob_token, "subscription { dashboardChanged { projectCount } }").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = app.delete(&format!("/api/v1/members/{bob}"), &owner).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.patch(&format!("/api/v1/projects/{project}"), &owner, json!({"name": "Secret plans"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    app.create_project(&owner, "Another secret").await;

    for ws in [&mut follows, &mut dash] {
        let (seen, closed) = until_closed(ws, Duration::from_secs(15)).await;
        assert_eq!(closed, Some((4403, "Forbidden".to_owned())), "closed as forbidden; seen {seen:?}");
        let text = serde_json::to_string(&seen).unwrap();
        assert!(!text.contains("Secret"), "nothing after the removal reaches the removed member: {text}");
        assert!(!text.contains("projectCount\":2"), "{text}");
    }
}

#[tokio::test]
async fn a_suspended_tenants_subscribers_are_closed_with_4403() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("subs-suspended").await;
    read_models_current(&app, &owner, 1).await;
    let mut dash = subscribe(&app, &owner, "subscription { dashboardChanged { projectCount } }").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app
        .post(&format!("/api/v1/tenants/{}/suspend", tenant.0), &app.platform_token(), json!({"reason": "unpaid"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, closed) = until_closed(&mut dash, Duration::from_secs(15)).await;
    assert_eq!(closed, Some((4403, "Forbidden".to_owned())));
}

#[tokio::test]
async fn a_subscription_ends_with_4401_when_its_token_expires() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("subs-expiry").await;
    read_models_current(&app, &owner, 1).await;
    let short = app.auth.issue("owner-subs-expiry", Some(tenant.0), false, Duration::from_secs(2));
    let mut dash = subscribe(&app, &short, "subscription { dashboardChanged { projectCount } }").await;
    let (_, closed) = until_closed(&mut dash, Duration::from_secs(15)).await;
    assert_eq!(closed, Some((4401, "Unauthorized".to_owned())));
}

async fn raw_socket(app: &TestApp) -> Socket {
    let mut req = format!("{}/graphql/ws", app.base.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    tokio_tungstenite::connect_async(req).await.expect("websocket connects").0
}

#[tokio::test]
async fn refused_tokens_and_bad_messages_close_with_fixed_reasons() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("subs-refused").await;
    let mut ws = raw_socket(&app).await;
    ws.send(Message::text(json!({"type": "connection_init", "payload": {"token": "forged.token.here"}}).to_string()))
        .await
        .unwrap();
    let (seen, closed) = until_closed(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(closed, Some((4403, "Forbidden".to_owned())), "{seen:?}");

    let mut ws = raw_socket(&app).await;
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "1", "payload": {"query": "{ me { userId } }"}}).to_string(),
    ))
    .await
    .unwrap();
    let (_, closed) = until_closed(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(closed, Some((4401, "Unauthorized".to_owned())), "subscribe before the acknowledgement");

    let mut ws = raw_socket(&app).await;
    ws.send(Message::text(json!({"type": "connection_init", "payload": {"token": owner}}).to_string())).await.unwrap();
    ws.send(Message::text(r#"{"type": "no-such-message"}"#)).await.unwrap();
    let (_, closed) = until_closed(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(closed, Some((4400, "Bad request".to_owned())));
}

#[tokio::test]
async fn a_role_that_loses_read_access_ends_that_subscription_only() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("subs-demoted").await;
    let (bob, bob_token) = app.invite(tenant, &owner, "bob", "member").await;
    let project = app.create_project(&owner, "Watched").await.body["id"].as_str().unwrap().to_owned();
    read_models_current(&app, &owner, 2).await;
    let q = format!("subscription {{ projectChanged(id: \"{project}\") {{ name }} }}");
    let mut follows = subscribe(&app, &bob_token, &q).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // An auditor reads the dashboard and the log, not the projects themselves.
    let r = app.put(&format!("/api/v1/members/{bob}/role"), &owner, json!({"role": "auditor"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.patch(&format!("/api/v1/projects/{project}"), &owner, json!({"name": "Renamed"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let msg = tokio::time::timeout_at(deadline, follows.next()).await.expect("the subscription ends");
        let Some(Ok(Message::Text(t))) = msg else { panic!("the socket stays open for other subscriptions: {msg:?}") };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "complete" {
            break;
        }
        seen.push(v);
    }
    let text = serde_json::to_string(&seen).unwrap();
    assert!(!text.contains("Renamed"), "{text}");
    assert!(text.contains("FORBIDDEN"), "the subscription says why it ended: {text}");
}
