//! Projection workers as separate `keel serve --role projector` processes: killed mid catch-up,
//! killed while holding a lease, and watched with `keel projections status`.

use crate::helpers::{SECRET, TestDb, meta};
use crate::projection::{all_readable, create_projects};
use keel_projections::{Projection, Runner, RunnerConfig};
use keel_store::log;
use keel_store::{Store, checkpoint};
use sqlx::Executor;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn projector(db: &TestDb, batch: u32) -> Child {
    Command::new(KEEL)
        .args(["serve", "--role", "projector"])
        .env("DATABASE_URL", &db.url)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("KEEL_MASTER_KEY", crate::helpers::MASTER_KEY)
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .env("KEEL_PROJECTION_BATCH", batch.to_string())
        .env("KEEL_LEASE_TTL_SECS", "3")
        .env("KEEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("keel serve starts")
}

/// Every read table, as text, in a stable order.
pub(crate) async fn read_tables(db: &TestDb) -> Vec<String> {
    read_tables_at(&db.url).await
}

/// `read_tables` of the database at `url` (as a superuser).
pub(crate) async fn read_tables_at(url: &str) -> Vec<String> {
    let mut su = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
    let mut out = Vec::new();
    for (table, key) in [
        ("rm_projects", "tenant_id, project_id"),
        ("rm_tasks", "tenant_id, task_id"),
        ("rm_members", "tenant_id, member_id"),
        ("rm_task_throughput", "tenant_id, day"),
        ("rm_task_completions", "tenant_id, task_id"),
        ("rm_usage_daily", "tenant_id, day, metric"),
        ("rm_usage_monthly", "tenant_id, month"),
        ("rm_tenants", "tenant_id"),
    ] {
        let sql = format!("SELECT '{table}:' || row_to_json(t)::text FROM (SELECT * FROM {table} ORDER BY {key}) t");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut su).await.unwrap();
        out.extend(rows);
    }
    out
}

async fn replay(store: &Store, p: Projection, batch_size: i64) {
    Runner::new(store.clone(), p, RunnerConfig { batch_size, ..RunnerConfig::default() }).run_once().await.unwrap();
}

/// Empties every read table and checkpoint, then replays the whole log in this process.
pub(crate) async fn fresh_replay(db: &TestDb) -> Vec<String> {
    replay_in_batches_of(db, 500).await
}

async fn replay_in_batches_of(db: &TestDb, n: i64) -> Vec<String> {
    replay_at(&db.url, &db.store, n).await
}

/// Empties every read table and checkpoint of the database at `url`, replays the whole log
/// through `store` (on that database) in batches of `n`, and returns the read tables.
pub(crate) async fn replay_at(url: &str, store: &Store, n: i64) -> Vec<String> {
    let mut su = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
    su.execute(
        "TRUNCATE rm_projects, rm_tasks, rm_members, rm_task_throughput, rm_task_completions, rm_usage_daily,
                  rm_usage_monthly, rm_tenants; DELETE FROM projection_checkpoints",
    )
    .await
    .unwrap();
    for projection in keel_projections::all() {
        replay(store, projection, n).await;
    }
    read_tables_at(url).await
}

async fn caught_up(store: &Store) -> bool {
    for name in keel_projections::names() {
        let s = checkpoint::status(store.projector(), name).await.unwrap();
        if s.lag_events > 0 || s.state != "running" {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn a_worker_killed_mid_catch_up_loses_nothing_and_applies_nothing_twice() {
    let db = TestDb::new().await;
    let tenant = db.provision("kill-9", "ada").await;
    create_projects(&db, tenant, 4000).await;
    all_readable(&db).await;

    let mut first = projector(&db, 10);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = checkpoint::status(db.store.projector(), "projects").await.unwrap();
        if s.checkpoint.position > 0 && s.lag_events > 1000 {
            break;
        }
        assert!(Instant::now() < deadline && s.lag_events > 0, "caught the worker part-way ({s:?})");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    let mut su = db.superuser().await;
    let partial: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_projects").fetch_one(&mut su).await.unwrap();
    assert!(partial > 0 && partial < 4000, "killed part-way: {partial} of 4000");

    let mut second = projector(&db, 500);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !caught_up(&db.store).await {
        assert!(Instant::now() < deadline, "the restarted worker catches up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.start_kill().unwrap();
    second.wait().await.unwrap();

    let after_crash = read_tables(&db).await;
    assert_eq!(after_crash.iter().filter(|r| r.starts_with("rm_projects:")).count(), 4000);
    assert_eq!(after_crash, fresh_replay(&db).await, "equal to a fresh replay");
}

fn pid_of(holder: &str) -> Option<u32> {
    holder.split(':').nth(1)?.parse().ok()
}

#[tokio::test]
async fn when_the_lease_holder_is_killed_another_process_takes_over_within_ten_seconds() {
    let db = TestDb::new().await;
    let tenant = db.provision("takeover", "ada").await;
    let mut a = projector(&db, 500);
    let mut b = projector(&db, 500);
    let (pa, pb) = (a.id().unwrap(), b.id().unwrap());

    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        let s = checkpoint::status(db.store.projector(), "projects").await.unwrap();
        if let Some(h) = s.lease_holder.as_deref().and_then(pid_of) {
            break h;
        }
        assert!(Instant::now() < deadline, "one of them takes the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(holder == pa || holder == pb);
    // Both run; exactly one holds each projection.
    for name in keel_projections::names() {
        let s = checkpoint::status(db.store.projector(), name).await.unwrap();
        assert!(
            s.lease_holder.as_deref().and_then(pid_of).is_some_and(|p| p == pa || p == pb) || s.lease_holder.is_none()
        );
    }

    let (victim, survivor) = if holder == pa { (&mut a, pb) } else { (&mut b, pa) };
    victim.start_kill().unwrap();
    victim.wait().await.unwrap();
    let killed_at = Instant::now();
    loop {
        let s = checkpoint::status(db.store.projector(), "projects").await.unwrap();
        if s.lease_holder.as_deref().and_then(pid_of) == Some(survivor) {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(10), "taken over within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The survivor projects what comes next.
    create_projects(&db, tenant, 5).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut su = db.superuser().await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_projects").fetch_one(&mut su).await.unwrap();
        if n == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the survivor applies new events");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn status_shows_checkpoint_lag_state_holder_and_dead_letters() {
    let db = TestDb::new().await;
    let tenant = db.provision("status", "ada").await;
    create_projects(&db, tenant, 3).await;
    // An event no projection can read (as if written by a newer Keel), inserted as a superuser.
    let mut su = db.superuser().await;
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, schema_version,
                             payload, metadata, recorded_at, hash)
         VALUES ($1, 'project', gen_random_uuid(), 1, gen_random_uuid(), 'ProjectCreated', 1, '{\"bogus\": 1}', '{}', now(),
                 sha256('x'))",
    )
    .bind(tenant.0)
    .execute(&mut su)
    .await
    .unwrap();
    all_readable(&db).await;
    Runner::new(
        db.store.clone(),
        Projection(&keel_store::read::projects::MODEL),
        RunnerConfig { max_attempts: 2, ..RunnerConfig::default() },
    )
    .run_once()
    .await
    .unwrap();
    let out = Command::new(KEEL)
        .args(["projections", "status"])
        .env("DATABASE_URL", &db.url)
        .env("KEEL_LOG", "error")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    for col in ["projection", "checkpoint", "lag", "lag (s)", "state", "lease holder", "dead"] {
        assert!(header.contains(col), "{header}");
    }
    let projects = text.lines().find(|l| l.starts_with("projects ")).unwrap();
    let cols: Vec<&str> = projects.split_whitespace().collect();
    assert_eq!((cols[2], cols[4], cols[6]), ("0", "running", "1"), "{text}");
    let tasks = text.lines().find(|l| l.starts_with("tasks ")).unwrap();
    let cols: Vec<&str> = tasks.split_whitespace().collect();
    assert!(cols[2].parse::<i64>().unwrap() >= 5, "tasks has not run: it lags: {text}");
    for name in keel_projections::names() {
        assert!(text.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} listed");
    }
}

/// Projects, runs of task creations across many streams, status changes in between: what the
/// batched path writes (a statement per run of similar events) equals applying one at a time.
#[tokio::test]
async fn a_batched_replay_writes_exactly_what_event_by_event_application_writes() {
    use keel_domain::event::{TaskCreated, TaskStatusChanged};
    use keel_domain::values::{Description, Priority, TaskStatus, TaskTitle};
    use keel_domain::{Event, MemberId, TaskId};

    let db = TestDb::new().await;
    let tenant = db.provision("batched", "ada").await;
    let other = db.provision("batched-2", "bob").await;
    let projects = crate::projection::create_projects(&db, tenant, 40).await;
    let day = |d: i64| chrono::Utc::now() - chrono::Duration::days(d);
    let mut tasks = Vec::new();
    for (i, p) in projects.iter().enumerate() {
        let events: Vec<Event> = (0..15)
            .map(|j| {
                let t = TaskId::new_v7();
                tasks.push((t, *p));
                Event::TaskCreated(TaskCreated {
                    task_id: t,
                    project_id: *p,
                    title: TaskTitle::parse("title", &format!("T{i}-{j}")).unwrap(),
                    description: Description::parse("description", if j % 3 == 0 { "" } else { "text" }).unwrap(),
                    assignee: (j % 4 == 0).then(MemberId::new_v7),
                    due_date: (j % 2 == 0).then(|| chrono::NaiveDate::from_ymd_opt(2027, 1, 1 + j as u32).unwrap()),
                    priority: if j % 5 == 0 { Priority::Urgent } else { Priority::Low },
                    at: day((j % 3) as i64),
                })
            })
            .collect();
        let mut tx = db.store.begin_write(tenant).await.unwrap();
        log::append(&mut tx, &[], &events, &meta(), chrono::Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        // Between the runs, some tasks finish: runs of one type alternate with others.
        let done: Vec<Event> = tasks[tasks.len() - 3..]
            .iter()
            .map(|(t, p)| {
                Event::TaskStatusChanged(TaskStatusChanged {
                    task_id: *t,
                    project_id: *p,
                    from: TaskStatus::Todo,
                    to: TaskStatus::Done,
                    completed_at: Some(day(1)),
                    at: day(1),
                })
            })
            .collect();
        let mut tx = db.store.begin_write(tenant).await.unwrap();
        let expected: Vec<(uuid::Uuid, i64)> = tasks[tasks.len() - 3..].iter().map(|(t, _)| (t.0, 1)).collect();
        log::append(&mut tx, &expected, &done, &meta(), chrono::Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
    }
    crate::projection::create_projects(&db, other, 30).await;
    all_readable(&db).await;

    let one_by_one = replay_in_batches_of(&db, 1).await;
    let batched = replay_in_batches_of(&db, 500).await;
    let tasks_rows = batched.iter().filter(|r| r.starts_with("rm_tasks:")).count();
    assert_eq!(tasks_rows, 600);
    assert!(batched.iter().any(|r| r.starts_with("rm_projects:") && r.contains("\"tasks_done\":3")));
    assert!(batched.iter().any(|r| r.starts_with("rm_task_throughput:")));
    assert_eq!(batched, one_by_one, "the batched path writes the same rows");
}
