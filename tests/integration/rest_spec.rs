//! REST answers what HTTP and the OpenAPI document say (issue 12, points 9 and 10).

use crate::helpers::{Reply, spawn_app};
use reqwest::Method;
use serde_json::json;

fn problem(r: &Reply) -> (u16, Option<&str>, Option<&str>) {
    (r.status, r.header("content-type"), r.body["code"].as_str())
}

#[tokio::test]
async fn a_task_in_a_missing_or_another_tenants_project_is_the_same_404() {
    let app = spawn_app().await;
    let (_, a) = app.provision("spec-a").await;
    let (_, b) = app.provision("spec-b").await;
    let project = app.create_project(&a, "A").await.body["id"].as_str().unwrap().to_owned();
    let before = app.event_count().await;

    let foreign = app.post(&format!("/api/v1/projects/{project}/tasks"), &b, json!({"title": "T"})).await;
    let missing = uuid::Uuid::now_v7();
    let absent = app.post(&format!("/api/v1/projects/{missing}/tasks"), &b, json!({"title": "T"})).await;
    assert_eq!(problem(&foreign), (404, Some("application/problem+json"), Some("not-found")), "{}", foreign.body);
    assert_eq!(foreign.body, absent.body, "nothing tells another tenant's project from a missing one");
    assert_eq!(app.event_count().await, before, "nothing appended");

    // A task's id is not a project either.
    let task = app.post(&format!("/api/v1/projects/{project}/tasks"), &a, json!({"title": "T"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.post(&format!("/api/v1/projects/{task}/tasks"), &a, json!({"title": "T"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn if_match_compares_strongly_and_accepts_a_list() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("spec-etag").await;
    let id = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/projects/{id}");
    let patch = |name: &'static str, if_match: &'static str| {
        let (app, path, owner) = (&app, path.clone(), owner.clone());
        async move {
            app.send_with(Method::PATCH, &path, &owner, Some(json!({"name": name})), &[("if-match", if_match)]).await
        }
    };

    // The project is at version 1: a weak tag of it does not match (RFC 9110 §13.1.1).
    let r = patch("B", "W/\"1\"").await;
    assert_eq!(problem(&r), (412, Some("application/problem+json"), Some("precondition-failed")), "{}", r.body);
    // A tag that is not a version is well-formed and matches nothing.
    let r = patch("B", "\"abc\"").await;
    assert_eq!(r.status, 412, "{}", r.body);
    // Any strong tag of a list may match.
    let r = patch("B", "W/\"1\", \"7\", \"1\"").await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"2\"")), "{}", r.body);
    // Malformed: unquoted, unterminated, `*` inside a list.
    for bad in ["2", "\"2", "\"2\" x", "*, \"2\"", ""] {
        let r = patch("C", bad).await;
        assert_eq!(problem(&r), (400, Some("application/problem+json"), Some("bad-if-match")), "{bad:?}");
    }
}

#[tokio::test]
async fn if_match_star_means_the_resource_exists() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("spec-star").await;
    let id = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();

    let r = app
        .send_with(
            Method::PATCH,
            &format!("/api/v1/projects/{id}"),
            &owner,
            Some(json!({"name": "B"})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"2\"")), "{}", r.body);
    let r = app
        .send_with(
            Method::PUT,
            &format!("/api/v1/tenants/{}/plan", tenant.0),
            &app.platform_token(),
            Some(json!({"plan": "team"})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A resource that does not exist is 404 whatever If-Match says: the 404 takes precedence
    // over the precondition (RFC 9110 §13.2.1), and `*` does not make it exist.
    let missing = uuid::Uuid::now_v7();
    for if_match in ["*", "\"1\""] {
        let r = app
            .send_with(
                Method::PATCH,
                &format!("/api/v1/projects/{missing}"),
                &owner,
                Some(json!({"name": "B"})),
                &[("if-match", if_match)],
            )
            .await;
        assert_eq!(problem(&r), (404, Some("application/problem+json"), Some("not-found")), "{if_match}: {}", r.body);
        let r = app
            .send_with(
                Method::PUT,
                &format!("/api/v1/tasks/{missing}/status"),
                &owner,
                Some(json!({"status": "done"})),
                &[("if-match", if_match)],
            )
            .await;
        assert_eq!(r.status, 404, "{if_match}: {}", r.body);
        let r = app
            .send_with(Method::DELETE, &format!("/api/v1/members/{missing}"), &owner, None, &[("if-match", if_match)])
            .await;
        assert_eq!(r.status, 404, "{if_match}: {}", r.body);
    }
}

#[tokio::test]
async fn a_method_a_route_does_not_answer_is_405_problem_json_with_allow() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("spec-405").await;
    let id = uuid::Uuid::now_v7();
    for (method, path, allow) in [
        (Method::GET, "/api/v1/projects".to_owned(), "POST"),
        (Method::DELETE, format!("/api/v1/tasks/{id}"), "PATCH"),
        (Method::GET, format!("/api/v1/members/{id}/role"), "PUT"),
        (Method::PUT, "/api/v1/usage".to_owned(), "POST"),
        (Method::POST, "/api/v1/openapi.json".to_owned(), "GET,HEAD"),
    ] {
        for token in [Some(owner.as_str()), None] {
            let r = app.send(method.clone(), &path, token, None).await;
            assert_eq!(
                problem(&r),
                (405, Some("application/problem+json"), Some("method-not-allowed")),
                "{method} {path}: {}",
                r.body
            );
            assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
            assert_eq!(r.body["status"], 405);
        }
    }
}
