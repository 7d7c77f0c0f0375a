//! The projection runner: batch and checkpoint in one transaction, woken by notifications,
//! and by polling when notifications are lost.

use crate::helpers::{Options, TestDb, meta, spawn_app_with};
use chrono::Utc;
use keel_domain::event::ProjectCreated;
use keel_domain::values::ProjectName;
use keel_domain::{Event, ProjectId, TenantId};
use keel_projections::{Projection, ProjectsProjection, Runner, RunnerConfig};
use keel_store::{RecordedEvent, StoreError, checkpoint, log};
use sqlx::PgConnection;
use std::time::{Duration, Instant};

async fn create_projects(db: &TestDb, tenant: TenantId, n: usize) -> Vec<ProjectId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let p = ProjectId::new_v7();
        let e = Event::ProjectCreated(ProjectCreated {
            project_id: p,
            name: ProjectName::parse("name", &format!("P{i}")).unwrap(),
            description: None,
            at: Utc::now(),
        });
        let mut tx = db.store.begin_write(tenant).await.unwrap();
        log::append(&mut tx, &[], &[e], &meta(), Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        ids.push(p);
    }
    ids
}

async fn projected(db: &TestDb) -> i64 {
    let mut su = db.superuser().await;
    sqlx::query_scalar("SELECT count(*) FROM rm_projects").fetch_one(&mut su).await.unwrap()
}

/// Fails on the `nth` project event it is given, to show a failed batch leaves no trace.
struct FailsOn {
    nth: usize,
    seen: std::sync::atomic::AtomicUsize,
}

impl Projection for FailsOn {
    fn name(&self) -> &'static str {
        ProjectsProjection::NAME
    }
    fn handles(&self, event_type: &str) -> bool {
        ProjectsProjection.handles(event_type)
    }
    async fn apply(&self, conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
        if self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.nth {
            return Err(StoreError::Invalid("injected failure".into()));
        }
        ProjectsProjection.apply(conn, recorded, event).await
    }
}

#[tokio::test]
async fn a_batch_and_its_checkpoint_commit_together() {
    let db = TestDb::new().await;
    let tenant = db.provision("batch", "ada").await;
    create_projects(&db, tenant, 5).await;
    let config = RunnerConfig { batch_size: 100, ..RunnerConfig::default() };
    // Other tests' transactions on this server may hold the gap-safe horizon back for a moment:
    // wait until all seven events are readable, so that each run below sees all of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = db.store.projector().acquire().await.unwrap();
        if log::read_all_after(&mut conn, keel_store::LogPosition::START, 100).await.unwrap().len() == 7 {
            break;
        }
        assert!(Instant::now() < deadline, "the events become readable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let failing = Runner::new(db.store.clone(), FailsOn { nth: 4, seen: 0.into() }, config);
    assert!(failing.run_once().await.is_err());
    assert_eq!(projected(&db).await, 0, "the failed batch applied nothing");
    assert_eq!(checkpoint::read(db.store.reader(), "projects").await.unwrap(), keel_store::LogPosition::START);

    let runner = Runner::new(db.store.clone(), ProjectsProjection, config);
    let n = runner.run_once().await.unwrap();
    assert_eq!(n, 7, "two provisioning events and five projects were read");
    assert_eq!(projected(&db).await, 5);
    let mut su = db.superuser().await;
    let (xid, pos): (String, i64) = sqlx::query_as(
        "SELECT transaction_id::text, position FROM events ORDER BY transaction_id, position DESC LIMIT 1",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    let cp = checkpoint::read(db.store.reader(), "projects").await.unwrap();
    let max_pos: i64 = sqlx::query_scalar("SELECT max(position) FROM events").fetch_one(&mut su).await.unwrap();
    assert_eq!(cp.position, max_pos, "the checkpoint is the last event applied (xid {xid}, pos {pos})");
    assert_eq!(runner.run_once().await.unwrap(), 0, "nothing is applied twice");
    assert_eq!(projected(&db).await, 5);
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
    let app = spawn_app_with(Options { poll_interval: Duration::from_secs(60), ..Options::default() }).await;
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
