//! If-Match, and what happens to a write that loses a race.

use crate::helpers::{Reply, TestApp, spawn_app};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_stale_if_match_answers_412_and_a_current_one_applies() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("if-match").await;
    let id = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/projects/{id}");
    let r = app
        .send_with(reqwest::Method::PATCH, &path, &owner, Some(json!({"name": "B"})), &[("if-match", "\"1\"")])
        .await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"2\"")));
    let before = app.event_count().await;
    let r = app
        .send_with(reqwest::Method::PATCH, &path, &owner, Some(json!({"name": "C"})), &[("if-match", "\"1\"")])
        .await;
    assert_eq!((r.status, r.body["code"].as_str()), (412, Some("precondition-failed")));
    assert_eq!(app.event_count().await, before, "nothing appended");
    let r =
        app.send_with(reqwest::Method::POST, &format!("{path}/archive"), &owner, None, &[("if-match", "\"2\"")]).await;
    assert_eq!(r.status, 200);
    let r =
        app.send_with(reqwest::Method::PATCH, &path, &owner, Some(json!({"name": "D"})), &[("if-match", "two")]).await;
    assert_eq!(r.status, 400);
}

/// Holds every append of this database at the `INSERT INTO events` (after each command has
/// loaded its state) until `n` are waiting, then lets them all go at once.
struct Req {
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
    if_match: Option<&'static str>,
}

fn req(method: reqwest::Method, path: &str, body: Option<Value>, if_match: Option<&'static str>) -> Req {
    Req { method, path: path.to_owned(), body, if_match }
}

async fn race(app: &TestApp, token: &str, requests: Vec<Req>) -> Vec<Reply> {
    let n = requests.len();
    let mut su = PgConnection::connect(&app.db.url).await.unwrap();
    su.execute("BEGIN").await.unwrap();
    su.execute("LOCK TABLE events IN SHARE MODE").await.unwrap();
    let mut handles = Vec::new();
    for r in requests {
        let (client, base, token) = (app.client.clone(), app.base.clone(), token.to_owned());
        handles.push(tokio::spawn(async move {
            let mut rb = client.request(r.method, format!("{base}{}", r.path)).bearer_auth(token);
            if let Some(b) = r.body {
                rb = rb.json(&b);
            }
            if let Some(v) = r.if_match {
                rb = rb.header("if-match", v);
            }
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            Reply { status, headers, body: r.json().await.unwrap_or(Value::Null) }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&mut su)
        .await
        .unwrap();
        if waiting as usize >= n {
            break;
        }
        assert!(Instant::now() < deadline, "the writers reach the append");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    su.execute("COMMIT").await.unwrap();
    let mut replies = Vec::new();
    for h in handles {
        replies.push(h.await.unwrap());
    }
    replies
}

#[tokio::test]
async fn a_lost_race_is_retried_when_the_rule_still_holds_and_is_409_when_it_does_not() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("races").await;
    let id = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/projects/{id}");

    // Two renames load version 1 together; one appends version 2 first, the other loses, is
    // retried against version 2, and still holds: both succeed, one after the other.
    let replies = race(
        &app,
        &owner,
        vec![
            req(reqwest::Method::PATCH, &path, Some(json!({"name": "Left"})), None),
            req(reqwest::Method::PATCH, &path, Some(json!({"name": "Right"})), None),
        ],
    )
    .await;
    let mut versions: Vec<i64> = replies.iter().map(|r| r.body["version"].as_i64().unwrap_or(-1)).collect();
    versions.sort();
    assert_eq!(replies.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 200]);
    assert_eq!(versions, vec![2, 3]);

    // With If-Match, a lost race is not retried: the loser answers 412.
    let replies = race(
        &app,
        &owner,
        vec![
            req(reqwest::Method::PATCH, &path, Some(json!({"name": "Up"})), Some("\"3\"")),
            req(reqwest::Method::PATCH, &path, Some(json!({"name": "Down"})), Some("\"3\"")),
        ],
    )
    .await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 412]);

    // Two archives at once: an archive moves the tenant's counters, so it takes the tenant row
    // for update before it loads anything (two that raced to the append would deadlock
    // upgrading their share locks, see `tenant_locks`). The second loads after the first has
    // committed, finds the project archived, and the rule no longer holds: 409.
    let archive = format!("{path}/archive");
    let (a, b) = tokio::join!(
        app.send(reqwest::Method::POST, &archive, Some(&owner), None),
        app.send(reqwest::Method::POST, &archive, Some(&owner), None)
    );
    let replies = [a, b];
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 409], "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());

    let mut su = PgConnection::connect(&app.db.url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT stream_version FROM events WHERE stream_id = $1::uuid ORDER BY 1")
            .bind(&id)
            .fetch_all(&mut su)
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 2, 3, 4, 5], "no gap, no duplicate");
}
