//! The `reporting` schema and the analyst role: read-only, one tenant per login, documented.

use crate::analyst::{AnalystLogin, test_login};
use crate::helpers::spawn_app;
use serde_json::json;
use sqlx::Executor;
use std::time::{Duration, Instant};

const VIEWS: &[&str] =
    &["tenant", "projects", "tasks", "members", "task_throughput_daily", "usage_daily", "usage_monthly"];

#[tokio::test]
async fn the_analyst_reads_one_tenant_and_writes_nothing() {
    let app = spawn_app().await;
    let (a, owner_a) = app.provision("analyst-a").await;
    let (_, owner_b) = app.provision("analyst-b").await;
    let pa = app.create_project(&owner_a, "A1").await.body["id"].as_str().unwrap().to_owned();
    app.post(&format!("/api/v1/projects/{pa}/tasks"), &owner_a, json!({"title": "T", "due_date": "2020-01-01"})).await;
    app.post(
        "/api/v1/usage",
        &owner_a,
        json!({"records": [{"id": "1", "metric": "api.calls", "quantity": 3, "occurred_at": chrono::Utc::now()}]}),
    )
    .await;
    app.create_project(&owner_b, "B1").await;
    app.create_project(&owner_b, "B2").await;

    // Wait until the projections have caught up (as a superuser would see it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut su = app.db.superuser().await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_projects").fetch_one(&mut su).await.unwrap();
        let u: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_usage_monthly").fetch_one(&mut su).await.unwrap();
        let t: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_tasks").fetch_one(&mut su).await.unwrap();
        if n == 3 && u == 1 && t == 1 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let login = AnalystLogin::create(&app, &a.0.to_string(), Some(&test_login("reads_one"))).await;
    let mut analyst = login.connect().await;
    let rows: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, name FROM reporting.projects").fetch_all(&mut analyst).await.unwrap();
    assert_eq!(rows, vec![(a.0, "A1".to_owned())], "only the login's tenant");
    let quota: (i64, Option<i64>) =
        sqlx::query_as("SELECT units, quota FROM reporting.usage_monthly").fetch_one(&mut analyst).await.unwrap();
    assert_eq!(quota, (3, Some(10_000)));
    for v in VIEWS {
        let foreign: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM reporting.{v} WHERE tenant_id <> '{}'",
            a.0
        )))
        .fetch_one(&mut analyst)
        .await
        .unwrap();
        assert_eq!(foreign, 0, "reporting.{v} shows no other tenant");
    }

    for sql in [
        "INSERT INTO reporting.projects (tenant_id, project_id, name) VALUES (gen_random_uuid(), gen_random_uuid(), 'x')",
        "UPDATE reporting.projects SET name = 'x'",
        "DELETE FROM reporting.tasks",
        "UPDATE rm_projects SET name = 'x'",
        "DELETE FROM rm_members",
        "INSERT INTO events (tenant_id) VALUES (gen_random_uuid())",
        "SELECT count(*) FROM events",
        "SELECT count(*) FROM memberships",
        "CREATE TABLE reporting.mine (x int)",
    ] {
        let err = analyst.execute(sql).await.expect_err(sql);
        assert!(err.to_string().contains("permission denied"), "{sql}: {err}");
    }

    // Every view is documented.
    for v in VIEWS {
        let comment: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT obj_description('reporting.{v}'::regclass, 'pg_class')"
        )))
        .fetch_one(&mut analyst)
        .await
        .unwrap();
        assert!(comment.is_some_and(|c| !c.is_empty()), "reporting.{v} has a comment");
    }
}

#[tokio::test]
async fn the_example_queries_in_docs_reporting_md_run() {
    let app = spawn_app().await;
    let (a, _) = app.provision("docs-queries").await;
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reporting.md")).unwrap();
    let examples: Vec<&str> = doc
        .split("```sql")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|q| q.trim_start().starts_with("SELECT"))
        .collect();
    assert!(examples.len() >= 4, "the page shows example queries");
    let login = AnalystLogin::create(&app, &a.0.to_string(), Some(&test_login("docs"))).await;
    let mut analyst = login.connect().await;
    for q in examples {
        analyst.execute(sqlx::AssertSqlSafe(q.to_owned())).await.unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}
