//! The projection runner: batch and checkpoint in one transaction, retries then dead letters per
//! policy, woken by notifications, and by polling when notifications are lost.

use crate::helpers::{Options, TestDb, meta, spawn_app_with};
use chrono::Utc;
use keel_domain::event::ProjectCreated;
use keel_domain::values::ProjectName;
use keel_domain::{Event, ProjectId, TenantId};
use keel_projections::{FailurePolicy, Projection, RunError, Runner, RunnerConfig};
use keel_runner::{ConsumeError, Consumer};
use keel_store::read::projects::MODEL as PROJECTS;
use keel_store::{LogPosition, RecordedEvent, StoreError, checkpoint, log};
use sqlx::PgConnection;
use std::time::{Duration, Instant};

pub(crate) async fn create_projects(db: &TestDb, tenant: TenantId, n: usize) -> Vec<ProjectId> {
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let events: Vec<Event> = chunk
            .iter()
            .map(|i| {
                let p = ProjectId::new_v7();
                ids.push(p);
                Event::ProjectCreated(ProjectCreated {
                    project_id: p,
                    name: ProjectName::parse("name", &format!("P{i}")).unwrap(),
                    description: None,
                    at: Utc::now(),
                })
            })
            .collect();
        let mut tx = db.store.begin_write(tenant).await.unwrap();
        log::append(&mut tx, &[], &events, &meta(), Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
    }
    ids
}

async fn projected(db: &TestDb) -> i64 {
    let mut su = db.superuser().await;
    sqlx::query_scalar("SELECT count(*) FROM rm_projects").fetch_one(&mut su).await.unwrap()
}

/// Waits until every event of the database is below the gap-safe horizon (other tests'
/// transactions on this server may hold it back for a moment).
pub(crate) async fn all_readable(db: &TestDb) {
    let mut su = db.superuser().await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut su).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = db.store.projector().raw().acquire().await.unwrap();
        if log::read_all_after(&mut conn, LogPosition::START, 100_000).await.unwrap().len() as i64 == total {
            return;
        }
        assert!(Instant::now() < deadline, "the events become readable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A consumer of its own (the runner takes any): the projects projection, except that it fails
/// on the project named `poison`, every time, to show retries, parking and policies.
struct Poisoned {
    policy: FailurePolicy,
}

impl Consumer for Poisoned {
    fn name(&self) -> &'static str {
        PROJECTS.name
    }
    fn wants(&self, event_type: &str) -> bool {
        PROJECTS.reads(event_type)
    }
    fn on_failure(&self) -> FailurePolicy {
        self.policy
    }
    async fn consume(
        &self,
        conn: &mut PgConnection,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ConsumeError> {
        if recorded.payload["name"] == "poison" {
            return Err(StoreError::Corrupt("cannot project a poisoned name".into()).into());
        }
        Ok(PROJECTS.apply(conn, recorded, event).await.map(|_| ())?)
    }
}

fn config() -> RunnerConfig {
    RunnerConfig { batch_size: 100, max_attempts: 3, ..RunnerConfig::default() }
}

async fn seed_with_poison(db: &TestDb) -> TenantId {
    let tenant = db.provision("poison", "ada").await;
    create_projects(db, tenant, 3).await;
    let poison = Event::ProjectCreated(ProjectCreated {
        project_id: ProjectId::new_v7(),
        name: ProjectName::parse("name", "poison").unwrap(),
        description: None,
        at: Utc::now(),
    });
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[], &[poison], &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    create_projects(db, tenant, 2).await;
    all_readable(db).await;
    tenant
}

async fn dead_letters(db: &TestDb) -> Vec<(String, i32, String)> {
    let mut su = db.superuser().await;
    sqlx::query_as("SELECT projection, attempts, error FROM projection_dead_letters").fetch_all(&mut su).await.unwrap()
}

#[tokio::test]
async fn a_failing_event_is_retried_then_parked_and_skipped() {
    let db = TestDb::new().await;
    seed_with_poison(&db).await;
    let runner = Runner::new(db.store.clone(), Poisoned { policy: FailurePolicy::Skip }, config());
    runner.run_once().await.expect("the projection goes on past the parked event");
    assert_eq!(projected(&db).await, 5, "every project but the poisoned one");
    let parked = dead_letters(&db).await;
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].0.as_str(), parked[0].1), ("projects", 3), "parked after three attempts");
    assert!(parked[0].2.contains("poisoned"));
    let st = checkpoint::status(db.store.projector(), "projects").await.unwrap();
    assert_eq!((st.lag_events, st.dead_letters, st.state.as_str()), (0, 1, "running"));
}

#[tokio::test]
async fn a_stop_policy_parks_the_event_and_stops_before_it() {
    let db = TestDb::new().await;
    seed_with_poison(&db).await;
    let runner = Runner::new(db.store.clone(), Poisoned { policy: FailurePolicy::Stop }, config());
    let err = runner.run_once().await.unwrap_err();
    assert!(matches!(err, RunError::Stopped { .. }), "{err}");
    assert_eq!(projected(&db).await, 3, "the events before it were applied, nothing after");
    let st = checkpoint::status(db.store.projector(), "projects").await.unwrap();
    assert_eq!((st.state.as_str(), st.dead_letters, st.lag_events), ("stopped", 1, 3));
    assert!(st.last_error.unwrap().contains("poisoned"));
    // After a fix (here: the real projection) and a restart, it goes on from where it stopped.
    Runner::new(db.store.clone(), Projection(&PROJECTS), config()).run_once().await.unwrap();
    assert_eq!(projected(&db).await, 6);
}

#[tokio::test]
async fn a_batch_and_its_checkpoint_commit_together() {
    let db = TestDb::new().await;
    let tenant = db.provision("batch", "ada").await;
    create_projects(&db, tenant, 5).await;
    all_readable(&db).await;
    let runner = Runner::new(db.store.clone(), Projection(&PROJECTS), config());
    let n = runner.run_once().await.unwrap();
    assert_eq!(n, 7, "two provisioning events and five projects were read");
    assert_eq!(projected(&db).await, 5);
    let mut su = db.superuser().await;
    let max_pos: i64 = sqlx::query_scalar("SELECT max(position) FROM events").fetch_one(&mut su).await.unwrap();
    let cp = checkpoint::read(db.store.reader(), "projects").await.unwrap();
    assert_eq!(cp.position, max_pos, "the checkpoint is the last event applied");
    assert_eq!(runner.run_once().await.unwrap(), 0, "nothing is applied twice");
    assert_eq!(projected(&db).await, 5);
}

#[tokio::test]
async fn two_workers_never_hold_one_projection_and_events_apply_once() {
    let db = TestDb::new().await;
    let tenant = db.provision("leases", "ada").await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for holder in ["worker-a", "worker-b"] {
        let c = RunnerConfig { holder: holder.into(), poll_interval: Duration::from_millis(50), ..config() };
        workers.push(tokio::spawn(Runner::new(db.store.clone(), Projection(&PROJECTS), c).run(stop.clone())));
    }
    for round in 0..5 {
        create_projects(&db, tenant, 40).await;
        let st = checkpoint::status(db.store.projector(), "projects").await.unwrap();
        assert!(matches!(st.lease_holder.as_deref(), Some("worker-a" | "worker-b") | None), "round {round}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while projected(&db).await < 200 {
        assert!(Instant::now() < deadline, "the projection catches up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holder = checkpoint::status(db.store.projector(), "projects").await.unwrap().lease_holder;
    assert!(holder.is_some(), "one of them holds the lease");
    stop_tx.send(true).unwrap();
    for w in workers {
        w.await.unwrap();
    }
    // Each project exactly once, with the counters the inline side also has.
    let mut su = db.superuser().await;
    let (rows, distinct): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT project_id) FROM rm_projects")
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!((rows, distinct), (200, 200));
    let released = checkpoint::status(db.store.projector(), "projects").await.unwrap().lease_holder;
    assert_eq!(released, None, "the lease is released on shutdown");
}

async fn appears_within(app: &crate::helpers::TestApp, token: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let r = app.graphql(token, "{ projects { totalCount } }", None).await;
        if r.body["data"]["projects"]["totalCount"] == 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn a_notification_wakes_the_projection_long_before_its_poll() {
    // A long lease too: the holder also wakes to renew it, which would look like a poll.
    let app = spawn_app_with(Options {
        poll_interval: Duration::from_secs(60),
        lease_ttl: Duration::from_secs(600),
        ..Options::default()
    })
    .await;
    let (_, owner) = app.provision("notified").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the runner is listening and idle
    app.create_project(&owner, "Woken").await;
    assert!(appears_within(&app, &owner, Duration::from_secs(10)).await, "projected without waiting for the 60 s poll");
}

#[tokio::test]
async fn without_notifications_polling_still_catches_up() {
    let app =
        spawn_app_with(Options { listen: false, poll_interval: Duration::from_millis(100), ..Options::default() })
            .await;
    let (_, owner) = app.provision("polled").await;
    app.create_project(&owner, "Polled").await;
    assert!(appears_within(&app, &owner, Duration::from_secs(10)).await, "projected by polling alone");
}
