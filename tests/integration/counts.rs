//! Counts that cost the same at any size (issue 18, point 5; docs/api.md "Counts"): a task
//! list's `totalCount` comes from the projects read model's per-project counters when it is
//! unfiltered or filtered by project and status (exact, one row per project), and is counted up
//! to 1,000 otherwise (`totalCountCapped` says when it stopped there).

use crate::helpers::spawn_app;
use serde_json::{Value, json};

async fn count(app: &crate::helpers::TestApp, token: &str, args: &str, at: &str) -> (i64, bool) {
    let q = format!("{{ tasks{args} {{ totalCount totalCountCapped }} }}");
    let r = app.graphql(token, &q, Some(at)).await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
    let c = &r.body["data"]["tasks"];
    (c["totalCount"].as_i64().unwrap(), c["totalCountCapped"].as_bool().unwrap())
}

#[tokio::test]
async fn task_counts_from_counters_equal_the_rows_after_any_mix_of_commands() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("counts", "enterprise").await;
    let (_, other) = app.provision_on("counts-other", "enterprise").await;
    let mut projects = Vec::new();
    let mut last = String::new();
    for p in 0..3 {
        let id = app.create_project(&owner, &format!("p{p}")).await.body["id"].as_str().unwrap().to_owned();
        for t in 0..(4 + p) {
            let r = app.post(&format!("/api/v1/projects/{id}/tasks"), &owner, json!({"title": format!("t{t}")})).await;
            assert_eq!(r.status, 201, "{}", r.body);
            let task = r.body["id"].as_str().unwrap().to_owned();
            let to = ["todo", "in_progress", "done", "in_progress"][t % 4];
            if to != "todo" {
                let r = app.put(&format!("/api/v1/tasks/{task}/status"), &owner, json!({"status": to})).await;
                assert!(r.status < 300, "{}", r.body);
                last = r.body["position"].as_str().unwrap().to_owned();
            }
        }
        projects.push(id);
    }
    // The other tenant's tasks never count.
    let o = app.create_project(&other, "theirs").await.body["id"].as_str().unwrap().to_owned();
    app.post(&format!("/api/v1/projects/{o}/tasks"), &other, json!({"title": "theirs"})).await;

    let mut su = app.db.superuser().await;
    assert_eq!(count(&app, &owner, "", &last).await, (truth(&app.db, tenant.0, None, None).await, false));
    assert_eq!(truth(&app.db, tenant.0, None, None).await, 15);
    for (s, gql) in [("todo", "TODO"), ("in_progress", "IN_PROGRESS"), ("done", "DONE")] {
        let args = format!("(filter: {{status: {gql}}})");
        assert_eq!(
            count(&app, &owner, &args, &last).await,
            (truth(&app.db, tenant.0, None, Some(s)).await, false),
            "{s}"
        );
        let args = format!("(filter: {{projectId: \"{}\", status: {gql}}})", projects[2]);
        assert_eq!(
            count(&app, &owner, &args, &last).await,
            (truth(&app.db, tenant.0, Some(&projects[2]), Some(s)).await, false)
        );
    }
    // A filter no counter answers is counted (exactly, below the cap).
    let (n, capped) = count(&app, &owner, "(filter: {priority: MEDIUM})", &last).await;
    let medium: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_tasks WHERE tenant_id = $1 AND priority = 'medium'")
        .bind(tenant.0)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!((n, capped), (medium, false));
}

#[tokio::test]
async fn a_count_no_counter_answers_stops_at_a_thousand_and_says_so() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("capped", "enterprise").await;
    let project = app.create_project(&owner, "big").await;
    let pid = project.body["id"].as_str().unwrap().to_owned();
    let at = project.body["position"].as_str().unwrap().to_owned();
    // 1,050 high-priority tasks written straight into the read table (a read-side test: what
    // matters is how many rows a count reads, not how they came).
    let mut su = app.db.superuser().await;
    sqlx::query(
        "INSERT INTO rm_tasks (tenant_id, task_id, project_id, title, status, priority, priority_rank, created_at,
                               updated_at, version)
         SELECT $1, gen_random_uuid(), $2::uuid, 'seeded ' || i, 'todo', 'high', 3, now(), now(), 1
           FROM generate_series(1, 1050) i",
    )
    .bind(tenant.0)
    .bind(&pid)
    .execute(&mut su)
    .await
    .unwrap();
    assert_eq!(count(&app, &owner, "(filter: {priority: HIGH})", &at).await, (1_000, true));
    assert_eq!(count(&app, &owner, "(filter: {priority: LOW})", &at).await, (0, false));
    // The page itself is there at any depth, and a page that asks no count gets none counted.
    let r = app.graphql(&owner, "{ tasks(first: 50, filter: {priority: HIGH}) { edges { node { id } } pageInfo { hasNextPage endCursor } } }", Some(&at)).await;
    let page: &Value = &r.body["data"]["tasks"];
    assert_eq!(page["edges"].as_array().unwrap().len(), 50);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
}

async fn truth(db: &crate::helpers::TestDb, tenant: uuid::Uuid, project: Option<&str>, status: Option<&str>) -> i64 {
    let mut su = db.superuser().await;
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM rm_tasks WHERE tenant_id = $1 AND ($2::uuid IS NULL OR project_id = $2::uuid)
           AND ($3::text IS NULL OR status = $3)",
    )
    .bind(tenant)
    .bind(project)
    .bind(status)
    .fetch_one(&mut su)
    .await
    .unwrap()
}
