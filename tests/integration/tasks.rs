//! Task commands through the API.

use crate::helpers::spawn_app;
use serde_json::json;

#[tokio::test]
async fn a_task_lives_in_an_active_project_with_an_active_assignee() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("tasks").await;
    let project = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let (bob, _) = app.invite(tenant, &owner, "bob", "member").await;

    let r = app
        .post(
            &format!("/api/v1/projects/{project}/tasks"),
            &owner,
            json!({"title": "Land", "assignee": bob, "due_date": "2027-07-20", "priority": "urgent"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let task = r.body["id"].as_str().unwrap().to_owned();

    let r = app
        .patch(&format!("/api/v1/tasks/{task}"), &owner, json!({"title": "Land on the moon", "due_date": null}))
        .await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(2)));
    let r = app.put(&format!("/api/v1/tasks/{task}/assignee"), &owner, json!({"member_id": null})).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(3)));
    let r = app.put(&format!("/api/v1/tasks/{task}/status"), &owner, json!({"status": "done"})).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(4)));
    let r = app.put(&format!("/api/v1/tasks/{task}/status"), &owner, json!({"status": "todo"})).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(5)));
    let mut su = app.db.superuser().await;
    let (to, completed): (String, serde_json::Value) = sqlx::query_as(
        "SELECT payload->>'to', payload->'completed_at' FROM events WHERE event_type = 'TaskStatusChanged' ORDER BY position DESC LIMIT 1",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert_eq!((to.as_str(), completed), ("todo", serde_json::Value::Null), "leaving done reopens");

    // The assignee must be an active member; the project must exist here and be active.
    app.delete(&format!("/api/v1/members/{bob}"), &owner).await;
    let r = app.put(&format!("/api/v1/tasks/{task}/assignee"), &owner, json!({"member_id": bob})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("member_id")));
    let r = app
        .post(&format!("/api/v1/projects/{}/tasks", uuid::Uuid::now_v7()), &owner, json!({"title": "Nowhere"}))
        .await;
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("not-found")));
    app.post(&format!("/api/v1/projects/{project}/archive"), &owner, json!({})).await;
    let r = app.post(&format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "Late"})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("project_id")));
    let r = app.put(&format!("/api/v1/tasks/{task}/status"), &owner, json!({"status": "done"})).await;
    assert_eq!(r.status, 409, "tasks of an archived project are read-only");

    let r = app
        .post(
            &format!("/api/v1/projects/{project}/tasks"),
            &owner,
            json!({"title": "", "priority": "asap", "due_date": "tomorrow"}),
        )
        .await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("due_date")), "{}", r.body);
}

#[tokio::test]
async fn another_tenants_task_and_project_answer_404_or_name_the_field() {
    let app = spawn_app().await;
    let (_, a) = app.provision("tasks-a").await;
    let (_, b) = app.provision("tasks-b").await;
    let project = app.create_project(&a, "A").await.body["id"].as_str().unwrap().to_owned();
    let task = app.post(&format!("/api/v1/projects/{project}/tasks"), &a, json!({"title": "T"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let missing = uuid::Uuid::now_v7().to_string();
    for (method, path, body) in [
        (reqwest::Method::PATCH, "/api/v1/tasks/{}", json!({"title": "X"})),
        (reqwest::Method::PUT, "/api/v1/tasks/{}/assignee", json!({"member_id": null})),
        (reqwest::Method::PUT, "/api/v1/tasks/{}/status", json!({"status": "done"})),
    ] {
        let foreign = app.send(method.clone(), &path.replace("{}", &task), Some(&b), Some(body.clone())).await;
        let absent = app.send(method, &path.replace("{}", &missing), Some(&b), Some(body)).await;
        assert_eq!(foreign.status, 404, "{path}");
        assert_eq!(foreign.body, absent.body, "{path}");
    }
    // Creating a task in A's project from B: the project does not exist in B.
    let foreign = app.post(&format!("/api/v1/projects/{project}/tasks"), &b, json!({"title": "T"})).await;
    let absent = app.post(&format!("/api/v1/projects/{missing}/tasks"), &b, json!({"title": "T"})).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.body, absent.body);
}

/// A date that is not `YYYY-MM-DD` is refused with the format, on REST and GraphQL alike.
#[tokio::test]
async fn a_bad_date_is_refused_naming_the_format() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("bad-dates").await;
    let project = app.create_project(&owner, "Dates").await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/projects/{project}/tasks");
    for bad in [json!("31/03/2025"), json!("2025-02-30"), json!("soon"), json!(20250331)] {
        let r = app.post(&path, &owner, json!({"title": "T", "due_date": bad})).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with("due_date:") && detail.contains("YYYY-MM-DD"), "{bad}: {}", r.body);
        assert!(!detail.contains("invalid characters"), "{}", r.body);
    }
    let r = app.post(&path, &owner, json!({"title": "T", "due_date": "2025-03-31"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let task = r.body["id"].as_str().unwrap().to_owned();
    let r = app.patch(&format!("/api/v1/tasks/{task}"), &owner, json!({"due_date": "next week"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body["detail"].as_str().unwrap_or_default().contains("YYYY-MM-DD"), "{}", r.body);
    let r = app
        .post(
            "/api/v1/usage",
            &owner,
            json!({"records": [{"id": "1", "metric": "api.calls", "quantity": 1, "occurred_at": "yesterday"}]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body["detail"].as_str().unwrap_or_default().contains("RFC 3339"), "{}", r.body);

    for query in [
        r#"{ usage(from: "2025-13-01", to: "2025-12-31") { date } }"#,
        r#"{ tasks(filter: {dueBefore: "tomorrow"}) { totalCount } }"#,
    ] {
        let g = app.graphql(&owner, query, None).await;
        let message = g.body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("YYYY-MM-DD"), "{query}: {}", g.body);
    }
    let g = app.graphql(&owner, r#"{ usage(from: "2025-03-01", to: "2025-03-31") { date } }"#, None).await;
    assert!(g.body["errors"].is_null(), "{}", g.body);
}
