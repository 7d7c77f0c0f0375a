//! The `EventStore` conformance suite (docs/scaling.md, "The log on KurrentDB"): one set of
//! promises, run against Keel's log in PostgreSQL always, and against KurrentDB when the crate
//! is built with `--features kurrentdb` and `KEEL_KURRENTDB_URL` names a server (otherwise that
//! test says it was skipped, and why).

use chrono::Utc;
use futures::StreamExt;
use keel_domain::event::{ProjectArchived, ProjectCreated, ProjectUpdated, TenantProvisioned};
use keel_domain::values::{ProjectName, Slug, TenantName};
use keel_domain::{Event, MemberId, Plan, ProjectId, TenantId};
use keel_store::event_store::{EventStore, PgEventStore, StoredEvent};
use keel_store::{EventMetadata, PoolSizes, Store, StoreError};
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

/// A tenant's first event: in PostgreSQL it makes the control-plane row its other events need.
fn provisioned(tenant: TenantId) -> Event {
    let slug = format!("es-{}", &tenant.0.simple().to_string()[20..]);
    Event::TenantProvisioned(TenantProvisioned {
        tenant_id: tenant,
        name: TenantName::parse("name", "Conformance").unwrap(),
        slug: Slug::parse("slug", &slug).unwrap(),
        plan: Plan::Enterprise,
        owner_member_id: MemberId(Uuid::now_v7()),
        at: Utc::now(),
    })
}

fn created(project: Uuid, name: &str) -> Event {
    Event::ProjectCreated(ProjectCreated {
        project_id: ProjectId(project),
        name: ProjectName::parse("name", name).unwrap(),
        description: None,
        at: Utc::now(),
    })
}

fn renamed(project: Uuid, name: &str) -> Event {
    Event::ProjectUpdated(ProjectUpdated {
        project_id: ProjectId(project),
        name: Some(ProjectName::parse("name", name).unwrap()),
        description: None,
        at: Utc::now(),
    })
}

fn archived(project: Uuid) -> Event {
    Event::ProjectArchived(ProjectArchived { project_id: ProjectId(project), at: Utc::now() })
}

fn meta() -> EventMetadata {
    EventMetadata {
        actor: "user:conformance".into(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        request_id: None,
        demo: false,
    }
}

fn conflict_actual<P>(r: &Result<P, StoreError>) -> Option<i64> {
    match r {
        Err(StoreError::Conflict { actual, .. }) => Some(*actual),
        _ => None,
    }
}

/// Every promise of `EventStore`, on a store that may hold other events already.
async fn conformance<S: EventStore>(s: &S) {
    let since = s.end().await.unwrap();
    let (a, b) = (TenantId(Uuid::now_v7()), TenantId(Uuid::now_v7()));
    let (p, q) = (Uuid::now_v7(), Uuid::now_v7());
    let ours = |e: &StoredEvent<S::Position>| e.stream_id == p || e.stream_id == q;
    for t in [a, b] {
        s.append(t, t.0, 0, &[provisioned(t)], &meta()).await.unwrap();
    }

    // A new stream: expected 0. Both events land, in order.
    let first = vec![created(p, "Alpha"), renamed(p, "Alpha 2")];
    let at = s.append(a, p, 0, &first, &meta()).await.unwrap();
    assert!(at > since);
    assert!(at == s.end().await.unwrap(), "the end is the last append");

    // A wrong expected version writes nothing and says where the stream is.
    assert_eq!(conflict_actual(&s.append(a, p, 0, &[created(p, "Again")], &meta()).await), Some(2));
    assert_eq!(conflict_actual(&s.append(a, p, 1, &[renamed(p, "Stale")], &meta()).await), Some(2));

    // Two appends expecting the same version: one lands, the other is a conflict.
    let (left, right, m) = ([renamed(p, "Left")], [renamed(p, "Right")], meta());
    let (x, y) = tokio::join!(s.append(a, p, 2, &left, &m), s.append(a, p, 2, &right, &m));
    assert_eq!([x.is_ok(), y.is_ok()].iter().filter(|ok| **ok).count(), 1, "{x:?} {y:?}");
    let loser = if x.is_ok() { &y } else { &x };
    assert_eq!(conflict_actual(loser), Some(3), "{loser:?}");
    let winner = if x.is_ok() { "Left" } else { "Right" };

    // An append names one stream.
    let mixed = s.append(a, p, 3, &[renamed(p, "Mixed"), created(q, "Other")], &meta()).await;
    assert!(matches!(mixed, Err(StoreError::Config(_))), "{mixed:?}");
    s.append(b, q, 0, &[created(q, "Beta")], &meta()).await.unwrap();

    // A stream reads back in version order, and only under its own tenant.
    let stream = s.read_stream(a, p).await.unwrap();
    let got: Vec<(i64, Event)> = stream.iter().map(|e| (e.version, e.event.clone())).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!((got[0].0, &got[0].1), (1, &first[0]));
    assert_eq!((got[1].0, &got[1].1), (2, &first[1]));
    assert_eq!(got[2].0, 3);
    assert!(matches!(&got[2].1, Event::ProjectUpdated(u) if u.name.as_ref().unwrap().as_str() == winner));
    assert!(stream.iter().all(|e| e.tenant_id == a && e.stream_id == p));
    assert!(s.read_stream(b, p).await.unwrap().is_empty(), "another tenant cannot read the stream");
    assert!(s.read_stream(a, q).await.unwrap().is_empty(), "nor the other way round");
    assert!(s.read_stream(a, Uuid::now_v7()).await.unwrap().is_empty(), "a stream with no events is empty");

    // The whole log: every tenant's events once each, in commit order, after the position.
    let all: Vec<StoredEvent<S::Position>> =
        s.read_all(since, 1000).await.unwrap().into_iter().filter(|e| ours(e)).collect();
    let order: Vec<(TenantId, Uuid, i64)> = all.iter().map(|e| (e.tenant_id, e.stream_id, e.version)).collect();
    assert_eq!(order, vec![(a, p, 1), (a, p, 2), (a, p, 3), (b, q, 1)]);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position), "positions grow");
    let ids: std::collections::HashSet<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 4, "event ids are unique");
    let rest: Vec<(Uuid, i64)> = s
        .read_all(all[1].position, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| ours(e))
        .map(|e| (e.stream_id, e.version))
        .collect();
    assert_eq!(rest, vec![(p, 3), (q, 1)], "strictly after the position");
    let two = s.read_all(since, 2).await.unwrap();
    assert!(two.len() <= 2, "at most max");

    // A subscription gives what is there, then what comes.
    let mut sub = s.subscribe(since).filter(|e| futures::future::ready(e.as_ref().map_or(true, ours)));
    for want in &all {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("an event").unwrap().unwrap();
        assert_eq!((e.event_id, e.position), (want.event_id, want.position));
    }
    s.append(a, p, 3, &[archived(p)], &meta()).await.unwrap();
    let live =
        tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("the live event").unwrap().unwrap();
    assert_eq!((live.stream_id, live.version), (p, 4));
    assert!(matches!(live.event, Event::ProjectArchived(_)));
}

/// A new database on the test server, migrated; dropped by `Drop`.
struct Fresh {
    name: String,
    server: String,
}

fn server_url() -> String {
    std::env::var("KEEL_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl Fresh {
    async fn new() -> (Fresh, String) {
        let server = server_url();
        let name = format!("keel_es_{}", Uuid::now_v7().simple());
        let mut c = PgConnection::connect(&server).await.expect("the test PostgreSQL (KEEL_TEST_DATABASE_URL)");
        keel_store::ops::create_database_if_missing(&mut c, &name).await.unwrap();
        let url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
        keel_store::migrate(&url).await.unwrap();
        (Fresh { name, server }, url)
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async move {
                if let Ok(mut c) = PgConnection::connect(&server).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                }
            })
        })
        .join();
    }
}

#[tokio::test]
async fn postgresql_keeps_every_promise_of_the_event_store() {
    let (_db, url) = Fresh::new().await;
    let store = Store::connect(&url, PoolSizes { writer: 4, reader: 2, projector: 2 }, None).await.unwrap();
    conformance(&PgEventStore::new(store.clone())).await;
    store.close().await;
}

#[cfg(feature = "kurrentdb")]
#[tokio::test]
async fn kurrentdb_keeps_every_promise_of_the_event_store() {
    let Ok(url) = std::env::var("KEEL_KURRENTDB_URL") else {
        println!("SKIPPED: KEEL_KURRENTDB_URL is not set; the KurrentDB conformance run needs a server");
        return;
    };
    let store = keel_store::kurrent::KurrentStore::connect(&url).unwrap();
    conformance(&store).await;
}

#[cfg(not(feature = "kurrentdb"))]
#[test]
fn kurrentdb_keeps_every_promise_of_the_event_store() {
    println!("SKIPPED: built without the cargo feature kurrentdb (cargo test -p keel-store --features kurrentdb)");
}
