//! Subscriptions over real websockets (graphql-transport-ws): pushed after the projection has
//! applied the change, and only to subscribers of that tenant.

use crate::helpers::{TestApp, spawn_app};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn subscribe(app: &TestApp, token: &str, query: &str) -> Socket {
    subscribe_at(&app.base, token, query).await
}

/// `subscribe` on the server at `base` (`http://host:port`).
pub(crate) async fn subscribe_at(base: &str, token: &str, query: &str) -> Socket {
    let mut req = format!("{}/graphql/ws", base.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("websocket connects");
    ws.send(Message::text(json!({"type": "connection_init", "payload": {"token": token}}).to_string())).await.unwrap();
    let ack = next_json(&mut ws, Duration::from_secs(5)).await.expect("an ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws.send(Message::text(json!({"id": "1", "type": "subscribe", "payload": {"query": query}}).to_string()))
        .await
        .unwrap();
    ws
}

pub(crate) async fn next_json(ws: &mut Socket, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??.ok()?;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "ping" {
                return Some(v);
            }
        }
    }
}

#[tokio::test]
async fn dashboard_and_project_changes_reach_only_their_tenant() {
    let app = spawn_app().await;
    let (_, a) = app.provision("subs-a").await;
    let (_, b) = app.provision("subs-b").await;
    // Let the provisioning's own changes reach the read models before anyone subscribes.
    for token in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while app.graphql(token, "{ dashboard { memberCount } }", None).await.body["data"]["dashboard"]["memberCount"]
            != 1
        {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut dash_a =
        subscribe(&app, &a, "subscription { dashboardChanged { activeProjects tasksByStatus { todo } } }").await;
    let mut dash_b = subscribe(&app, &b, "subscription { dashboardChanged { activeProjects } }").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // both are listening

    let project = app.create_project(&a, "Live").await.body["id"].as_str().unwrap().to_owned();
    // Each push comes after a projection applied a change of A's: the one for the project shows it.
    loop {
        let msg = next_json(&mut dash_a, Duration::from_secs(10)).await.expect("A is told");
        assert_eq!(msg["type"], "next", "{msg}");
        if msg["payload"]["data"]["dashboardChanged"]["activeProjects"] == 1 {
            break;
        }
    }
    assert!(next_json(&mut dash_b, Duration::from_millis(1500)).await.is_none(), "B hears nothing of A");

    let q = format!("subscription {{ projectChanged(id: \"{project}\") {{ name taskCounts {{ todo }} }} }}");
    let mut proj_a = subscribe(&app, &a, &q).await;
    let mut proj_b = subscribe(&app, &b, &q).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.post(&format!("/api/v1/projects/{project}/tasks"), &a, json!({"title": "T"})).await;
    let msg = next_json(&mut proj_a, Duration::from_secs(10)).await.expect("A is told about its project");
    assert_eq!(msg["payload"]["data"]["projectChanged"], json!({"name": "Live", "taskCounts": {"todo": 1}}), "{msg}");
    assert!(next_json(&mut proj_b, Duration::from_millis(1500)).await.is_none(), "B cannot follow A's project");

    // A connection without a valid token is refused.
    let mut req = format!("{}/graphql/ws", app.base.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(json!({"type": "connection_init", "payload": {"token": "forged"}}).to_string()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer");
    assert!(!matches!(answer, Some(Ok(Message::Text(ref t))) if t.contains("connection_ack")), "{answer:?}");
}

/// `keel subscribe` (the README's way to watch from a shell) prints each push as one JSON line,
/// and a token the server refuses ends it with exit code 1 and the reason, never a hang.
#[tokio::test]
async fn keel_subscribe_prints_pushes_and_fails_on_a_refused_token() {
    let app = spawn_app().await;
    // Team: room for the up to 20 projects made while a loaded machine subscribes the watcher.
    let (_, owner) = app.provision_on("cli-sub", "team").await;
    let keel = env!("CARGO_BIN_EXE_keel");
    let query = "subscription { dashboardChanged { activeProjects } }";
    let refused = tokio::process::Command::new(keel)
        .args(["subscribe", "--url", &app.base, "--token", "forged", "--timeout", "20s", query])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("4403") || stderr.contains("refused") || stderr.contains("closed"), "{stderr}");

    let mut watch = tokio::process::Command::new(keel)
        .args(["subscribe", "--url", &app.base, "--token", &owner, "--count", "1", "--timeout", "30s", query])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Changes until the watcher has one (it may subscribe after the first).
    let mut made = 0;
    while watch.try_wait().unwrap().is_none() && made < 20 {
        app.create_project(&owner, &format!("Watched {made}")).await;
        made += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = watch.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    let pushed: Value = serde_json::from_str(line.trim()).expect("one JSON line");
    let n = pushed["data"]["dashboardChanged"]["activeProjects"].as_i64().expect("the dashboard");
    // The first push may still be the provisioning's (its member projected after the watcher
    // subscribed, under load), before any project: 0 is a true dashboard too.
    assert!((0..=made).contains(&n) && line.trim().lines().count() == 1, "{line}");
}
