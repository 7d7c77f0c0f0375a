//! The read models' contents, their indexes at 100,000 rows, their metrics, and rebuilds that
//! never show a reader an empty or partial table.

use crate::helpers::{TestApp, spawn_app};
use crate::projection::create_projects;
use keel_projections::RunnerConfig;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

async fn wait_for(app: &TestApp, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut su = app.db.superuser().await;
        let n: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT ({sql})::bigint")))
            .fetch_one(&mut su)
            .await
            .unwrap();
        let n = n.unwrap_or(-1);
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql} reaches {want} (is {n})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_read_model_follows_the_commands() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("models", "team").await;
    let (bob, _) = app.invite(tenant, &owner, "bob", "member").await;
    let project = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for (title, due, priority) in
        [("A", "2027-01-01", "low"), ("B", "2027-02-01", "urgent"), ("C", "2027-03-01", "high")]
    {
        let r = app
            .post(
                &format!("/api/v1/projects/{project}/tasks"),
                &owner,
                json!({"title": title, "due_date": due, "priority": priority, "assignee": bob}),
            )
            .await;
        tasks.push(r.body["id"].as_str().unwrap().to_owned());
    }
    app.put(&format!("/api/v1/tasks/{}/status", tasks[0]), &owner, json!({"status": "done"})).await;
    app.put(&format!("/api/v1/tasks/{}/status", tasks[1]), &owner, json!({"status": "done"})).await;
    app.put(&format!("/api/v1/tasks/{}/status", tasks[1]), &owner, json!({"status": "in_progress"})).await;
    let now = chrono::Utc::now();
    app.post(
        "/api/v1/usage",
        &owner,
        json!({"records": [
        {"id": "1", "metric": "api.calls", "quantity": 5, "occurred_at": now},
        {"id": "2", "metric": "api.calls", "quantity": 7, "occurred_at": now},
        {"id": "3", "metric": "storage.gb", "quantity": 2, "occurred_at": now}]}),
    )
    .await;

    wait_for(&app, "SELECT tasks_todo * 100 + tasks_in_progress * 10 + tasks_done FROM rm_projects", 111).await;
    wait_for(&app, "SELECT count(*) FROM rm_tasks WHERE assignee IS NOT NULL AND priority_rank > 0", 3).await;
    wait_for(&app, "SELECT count(*) FROM rm_tasks WHERE status = 'done' AND completed_at IS NOT NULL", 1).await;
    wait_for(&app, "SELECT count(*) FROM rm_members WHERE status = 'active'", 2).await;
    wait_for(&app, "SELECT sum(created) * 10 + sum(completed) FROM rm_task_throughput", 31).await;
    wait_for(&app, "SELECT units FROM rm_usage_daily WHERE metric = 'api.calls'", 12).await;
    wait_for(&app, "SELECT units FROM rm_usage_monthly", 14).await;
    wait_for(&app, "SELECT seats_used * 10 + active_projects FROM rm_tenants WHERE plan = 'team'", 21).await;
}

#[tokio::test]
async fn main_list_queries_use_an_index_at_100_000_rows() {
    let app = spawn_app().await;
    let mut su = app.db.superuser().await;
    // 100,000 rows in each table, over 50 tenants.
    su.execute(
        "INSERT INTO rm_projects (tenant_id, project_id, name, status, created_at, updated_at, version)
         SELECT ('00000000-0000-0000-0000-' || lpad((g % 50)::text, 12, '0'))::uuid, gen_random_uuid(), 'P' || g,
                'active', now() - g * interval '1 second', now(), 1
           FROM generate_series(1, 100000) g;
         INSERT INTO rm_tasks (tenant_id, task_id, project_id, title, status, priority, priority_rank, due_date,
                               created_at, updated_at, version)
         SELECT ('00000000-0000-0000-0000-' || lpad((g % 50)::text, 12, '0'))::uuid, gen_random_uuid(), gen_random_uuid(),
                'T' || g, (ARRAY['todo','in_progress','done'])[g % 3 + 1], 'medium', 2,
                current_date + (g % 365), now(), now(), 1
           FROM generate_series(1, 100000) g;
         INSERT INTO rm_members (tenant_id, member_id, user_id, email, name, role, status, joined_at, version)
         SELECT ('00000000-0000-0000-0000-' || lpad((g % 50)::text, 12, '0'))::uuid, gen_random_uuid(), 'u' || g,
                'u' || g || '@x.test', 'U', (ARRAY['owner','admin','member','viewer','auditor'])[g % 5 + 1], 'active',
                now(), 1
           FROM generate_series(1, 100000) g;
         ANALYZE rm_projects, rm_tasks, rm_members;",
    )
    .await
    .unwrap();
    let tenant = uuid::Uuid::parse_str("00000000-0000-0000-0000-000000000007").unwrap();
    let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
    conn.execute("SET ROLE keel_reader").await.unwrap();
    for (name, sql, arg) in [
        ("projects first page", keel_store::read::projects::FIRST_PAGE, None),
        ("tasks by status and due date", keel_store::read::tasks::BY_STATUS_DUE, Some("todo")),
        ("members by role", keel_store::read::members::BY_ROLE, Some("admin")),
    ] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('keel.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let explain = format!("EXPLAIN (FORMAT JSON) {sql}");
        let q = sqlx::query_scalar::<_, serde_json::Value>(sqlx::AssertSqlSafe(explain)).bind(tenant);
        let q = match arg {
            Some(a) => q.bind(a),
            None => q,
        };
        let plan = q.bind(50_i64).fetch_one(&mut *tx).await.unwrap().to_string();
        assert!(plan.contains("Index"), "{name} uses an index: {plan}");
        assert!(!plan.contains("Seq Scan"), "{name} scans no table sequentially: {plan}");
        // And it returns this tenant's rows only.
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn projection_metrics_are_exported() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("proj-metrics").await;
    app.create_project(&owner, "M").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
        let has = |metric: &str| m.lines().any(|l| l.starts_with(metric) && l.contains("projection=\"projects\""));
        if has("keel_projection_checkpoint")
            && has("keel_projection_lag_events")
            && has("keel_projection_lag_seconds")
            && has("keel_projection_dead_letters")
            && has("keel_projection_batch_seconds")
        {
            break;
        }
        assert!(Instant::now() < deadline, "projection metrics appear:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_rebuild_never_shows_readers_an_empty_partial_or_missing_table() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("rebuild-live", "enterprise").await;
    create_projects(&app.db, tenant, 1500).await;
    wait_for(&app, "SELECT count(*) FROM rm_projects", 1500).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (store, stop, reads) = (app.db.store.clone(), stop.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut tx = store.begin_read(tenant).await.expect("a read transaction");
                let n = keel_store::read::projects::count(&mut tx).await.expect("the table is there");
                let page = keel_store::read::projects::list(&mut tx, None, 10).await.expect("the table is there");
                tx.commit().await.unwrap();
                assert_eq!(n, 1500, "never empty or partial");
                assert_eq!(page.len(), 10);
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut seen = Vec::new();
    let replayed = keel_projections::rebuild::rebuild(
        &app.db.store,
        &app.db.url,
        "projects",
        RunnerConfig { batch_size: 100, ..RunnerConfig::default() },
        |p| seen.push((p.done, p.total, p.swapped)),
    )
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("no reader saw a missing, empty or partial table");
    }
    assert!(reads.load(Ordering::Relaxed) > 10, "readers ran during the rebuild");
    assert!(replayed >= 1500);
    assert!(seen.last().is_some_and(|(done, total, swapped)| *swapped && done == total), "{seen:?}");

    // The rebuilt table is live: new events land in it, and nothing is left behind.
    app.create_project(&owner, "After").await;
    wait_for(&app, "SELECT count(*) FROM rm_projects", 1501).await;
    wait_for(&app, "SELECT count(*) FROM pg_tables WHERE schemaname IN ('keel_rebuild', 'keel_retired')", 0).await;
    wait_for(&app, "SELECT count(*) FROM projection_checkpoints WHERE name LIKE '%@rebuild'", 0).await;
    let mut su = app.db.superuser().await;
    let forced: bool =
        sqlx::query_scalar("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.rm_projects'::regclass")
            .fetch_one(&mut su)
            .await
            .unwrap();
    assert!(forced, "the swapped-in table keeps RLS");
}
