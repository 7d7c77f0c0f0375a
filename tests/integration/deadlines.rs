//! Issue #15, point 4: every statement runs under its role's `statement_timeout`, every pool
//! acquire under a timeout. A statement the database cancels is a 504 `dependency-timeout` (REST)
//! or `DEPENDENCY_TIMEOUT` (GraphQL), at the statement timeout, not the request deadline.

use crate::helpers::{Options, spawn_app_with};
use keel::EdgeLimits;
use keel_store::PoolTimeouts;
use serde_json::json;
use sqlx::Executor;
use std::time::{Duration, Instant};

fn limits() -> EdgeLimits {
    EdgeLimits {
        request_timeout: Duration::from_secs(20),
        db: PoolTimeouts {
            writer_statement: Duration::from_millis(400),
            reader_statement: Duration::from_millis(400),
            ..PoolTimeouts::default()
        },
        ..EdgeLimits::default()
    }
}

#[tokio::test]
async fn a_statement_past_the_writers_timeout_is_a_504_long_before_the_deadline() {
    let app = spawn_app_with(Options { limits: limits(), projector: false, ..Options::default() }).await;
    let (tenant, owner) = app.provision("stuck").await;
    let _ = tenant;
    // Another session holds the event log: the append waits on the lock until PostgreSQL cancels it.
    let mut blocker = app.db.superuser().await;
    blocker.execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let started = Instant::now();
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Stuck"})).await;
    let took = started.elapsed();
    blocker.execute("ROLLBACK").await.unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body["code"], "dependency-timeout", "{}", r.body);
    let text = r.body.to_string();
    assert!(!text.contains("57014") && !text.contains("canceling statement"), "no database text: {text}");
    assert!(took < Duration::from_secs(5), "answered at the statement timeout, not the deadline: {took:?}");
    // The lock gone, the same command goes through.
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Unstuck"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn a_query_past_the_readers_timeout_is_a_dependency_timeout_error() {
    let app = spawn_app_with(Options { limits: limits(), projector: false, ..Options::default() }).await;
    let (_, owner) = app.provision("slowread").await;
    let mut blocker = app.db.superuser().await;
    blocker.execute("BEGIN; LOCK TABLE rm_projects IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let started = Instant::now();
    let r = app.graphql(&owner, "{ projects(first: 5) { edges { node { name } } } }", None).await;
    let took = started.elapsed();
    blocker.execute("ROLLBACK").await.unwrap();
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "DEPENDENCY_TIMEOUT", "{}", r.body);
    assert!(took < Duration::from_secs(5), "{took:?}");
    let r = app.graphql(&owner, "{ projects(first: 5) { edges { node { name } } } }", None).await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
}

#[tokio::test]
async fn every_service_role_connection_carries_its_statement_timeout() {
    let db = crate::helpers::TestDb::new().await;
    let store = keel_store::Store::connect_with(
        &db.url,
        keel_store::PoolSizes { writer: 1, reader: 1, projector: 1 },
        PoolTimeouts {
            acquire: Duration::from_millis(300),
            writer_statement: Duration::from_millis(1234),
            reader_statement: Duration::from_millis(2345),
            projector_statement: Duration::from_millis(3456),
            ..PoolTimeouts::default()
        },
        None,
    )
    .await
    .unwrap();
    for (pool, want) in [(store.writer(), "1234ms"), (store.reader(), "2345ms"), (store.projector(), "3456ms")] {
        let got: String = sqlx::query_scalar("SHOW statement_timeout").fetch_one(pool).await.unwrap();
        assert_eq!(got, want);
        // A killed client's statements are cancelled within a second, not at their timeout.
        let check: String = sqlx::query_scalar("SHOW client_connection_check_interval").fetch_one(pool).await.unwrap();
        assert_eq!(check, "1s");
    }
    // A pool whose only connection is lent out answers within its acquire timeout.
    let held = store.writer().raw().acquire().await.unwrap();
    let started = Instant::now();
    let err = store.begin_write(keel_domain::TenantId::new_v7()).await.err().expect("no connection is free");
    assert!(err.is_pool_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    drop(held);
}
