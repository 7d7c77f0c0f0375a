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
    // A tag that is not a version, or not spelled as the ETag is, is well-formed and matches nothing.
    for other in ["\"abc\"", "\"01\"", "\"+1\""] {
        let r = patch("B", other).await;
        assert_eq!(r.status, 412, "{other}: {}", r.body);
    }
    // Any strong tag of a list may match.
    let r = patch("B", "W/\"1\", \"7\", \"1\"").await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"2\"")), "{}", r.body);
    // An empty list is well-formed and matches nothing.
    let r = patch("B", "").await;
    assert_eq!(r.status, 412, "{}", r.body);
    // Malformed: unquoted, unterminated, `*` inside a list, a lower-case weak prefix.
    for bad in ["2", "\"2", "\"2\" x", "*, \"2\"", "w/\"2\""] {
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

async fn openapi(app: &crate::helpers::TestApp) -> serde_json::Value {
    app.client.get(format!("{}/api/v1/openapi.json", app.base)).send().await.unwrap().json().await.unwrap()
}

fn operations(spec: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn every_operation_has_a_unique_operation_id_a_summary_and_who_may_call_it() {
    let app = spawn_app().await;
    let spec = openapi(&app).await;
    let ops = operations(&spec);
    assert_eq!(ops.len(), 23);
    let mut ids = std::collections::BTreeSet::new();
    for (method, path, op) in &ops {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has an operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} ({method} {path}) is unique");
        let summary = op["summary"].as_str().unwrap_or("");
        assert!(!summary.trim().is_empty(), "{method} {path} has a summary");
        let roles: Vec<&str> = op["x-keel-roles"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert!(!roles.is_empty(), "{method} {path} says who may call it");
        assert!(op["description"].as_str().unwrap().contains("Who may call"), "{method} {path}");
        let expected: &[&str] = if path.starts_with("/api/v1/tenants") {
            &["platform:admin"]
        } else if path.starts_with("/api/v1/members/{id}/erase") {
            &["owner"]
        } else if path.starts_with("/api/v1/members") || path.starts_with("/api/v1/webhooks") {
            &["owner", "admin"]
        } else {
            &["owner", "admin", "member"]
        };
        assert_eq!(roles, expected, "{method} {path}");
    }
}

#[tokio::test]
async fn each_operation_lists_only_the_responses_and_headers_it_can_give() {
    let app = spawn_app().await;
    let spec = openapi(&app).await;
    for (method, path, op) in operations(&spec) {
        let label = format!("{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        let has = |code: &str| responses.contains_key(code);
        let body = op.get("requestBody").is_some();
        let params: Vec<&str> =
            op["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        for code in ["429", "500", "503"] {
            assert!(has(code), "{label} documents {code}");
        }
        assert_eq!(has("415"), body, "{label}: 415 only where there is a body");
        assert_eq!(has("404"), path.contains("{id}"), "{label}: 404 only for a resource named in the path");
        let conditional = path.contains("{id}") && !path.ends_with("/tasks");
        assert_eq!(has("412"), conditional, "{label}: 412 only where If-Match is honoured");
        assert_eq!(params.contains(&"If-Match"), conditional, "{label}: If-Match as a parameter");
        assert!(params.contains(&"Idempotency-Key") && params.contains(&"X-Request-Id"), "{label}");
        let locked = !path.starts_with("/api/v1/tenants") && !path.ends_with("/erase");
        assert_eq!(has("423"), locked, "{label}: 423 only where a suspended tenant refuses it");
        for (code, r) in responses {
            assert_eq!(r["headers"]["X-Request-Id"]["required"], true, "{label} {code}");
            if code.starts_with('2') {
                assert_eq!(r["headers"]["ETag"]["required"], true, "{label} {code}");
            }
        }
    }
    let suspend = &spec["paths"]["/api/v1/tenants/{id}/suspend"]["post"];
    assert_eq!(suspend["requestBody"]["required"], false, "suspension's body is optional");
    let provision = &spec["paths"]["/api/v1/tenants"]["post"]["responses"];
    assert!(provision.get("423").is_none() && provision.get("404").is_none());
}

/// The schemas carry the value types' rules: enums, patterns, lengths, bounds, item counts.
#[tokio::test]
async fn the_schemas_carry_the_rules_of_the_value_types() {
    let app = spawn_app().await;
    let spec = openapi(&app).await;
    let s = &spec["components"]["schemas"];
    assert_eq!(s["ProvisionTenantBody"]["properties"]["plan"]["enum"], json!(["free", "team", "enterprise"]));
    assert_eq!(s["ProvisionTenantBody"]["properties"]["slug"]["pattern"], "^[a-z0-9][a-z0-9-]{1,62}$");
    assert_eq!(s["InviteBody"]["properties"]["role"]["enum"], json!(["owner", "admin", "member", "viewer", "auditor"]));
    assert_eq!(s["StatusBody"]["properties"]["status"]["enum"], json!(["todo", "in_progress", "done"]));
    assert_eq!(s["CreateTaskBody"]["properties"]["priority"]["enum"], json!(["low", "medium", "high", "urgent"]));
    assert_eq!(s["UsageRecordBody"]["properties"]["quantity"]["minimum"], 1);
    assert_eq!(s["UsageRecordBody"]["properties"]["metric"]["maxLength"], 64);
    assert_eq!(
        (
            s["RecordUsageBody"]["properties"]["records"]["minItems"].as_u64(),
            s["RecordUsageBody"]["properties"]["records"]["maxItems"].as_u64()
        ),
        (Some(1), Some(1000))
    );
    assert_eq!(s["UpdateTaskBody"]["minProperties"], 1);
    assert_eq!(s["OwnerBody"]["properties"]["user_id"]["maxLength"], 200);
    for (schema, field) in
        [("CreateProjectBody", "name"), ("CreateTaskBody", "title"), ("CreateProjectBody", "description")]
    {
        assert!(s[schema]["properties"][field]["pattern"].is_string(), "{schema}.{field} has a pattern");
    }
    // Fields that cannot be cleared are not nullable.
    assert_eq!(s["UpdateTaskBody"]["properties"]["title"]["type"], "string");
    assert_eq!(s["UpdateProjectBody"]["properties"]["name"]["type"], "string");
}

// Findings of schemathesis (.ci/fuzz-rest), each fixed in Keel.

/// JSON Schema counts `5.0` and `2e1` as integers; serde's i64 did not (422 on valid data).
#[tokio::test]
async fn a_quantity_written_with_an_empty_fraction_is_an_integer() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("spec-qty").await;
    let at = chrono::Utc::now().to_rfc3339();
    let r = app
        .post(
            "/api/v1/usage",
            &owner,
            json!({"records": [
            {"id": "a", "metric": "api.calls", "quantity": 5.0, "occurred_at": at},
            {"id": "b", "metric": "api.calls", "quantity": 2e1, "occurred_at": at}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut su = app.db.superuser().await;
    let quantities: Vec<i64> = sqlx::query_scalar(
        "SELECT (r->>'quantity')::bigint FROM events, jsonb_array_elements(payload->'records') r
          WHERE event_type = 'UsageRecorded' ORDER BY 1",
    )
    .fetch_all(&mut su)
    .await
    .unwrap();
    assert_eq!(quantities, vec![5, 20]);
    for bad in [json!(1.5), json!(1e19), json!("3")] {
        let r = app
            .post(
                "/api/v1/usage",
                &owner,
                json!({"records": [
                {"id": "c", "metric": "api.calls", "quantity": bad, "occurred_at": at}]}),
            )
            .await;
        assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("records[0].quantity")), "{bad}");
    }
}

/// A field that cannot be cleared was read as absent when `null`, so the rest of the update
/// applied and the client's `null` was silently dropped.
#[tokio::test]
async fn null_for_a_field_that_cannot_be_cleared_is_422_naming_it() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("spec-null").await;
    let project = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let r = app.patch(&format!("/api/v1/projects/{project}"), &owner, json!({"name": null, "description": "x"})).await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("name")), "{}", r.body);
    let task = app.post(&format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "T"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for field in ["title", "priority"] {
        let r = app.patch(&format!("/api/v1/tasks/{task}"), &owner, json!({field: null, "due_date": null})).await;
        assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some(field)), "{}", r.body);
    }
    // What may be cleared still may.
    let r = app.patch(&format!("/api/v1/tasks/{task}"), &owner, json!({"description": null})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// PostgreSQL cannot store U+0000: it reached the store and answered 500.
#[tokio::test]
async fn a_nul_character_in_any_string_is_422_naming_the_field() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("spec-nul").await;
    let before = app.event_count().await;
    let r = app.post("/api/v1/projects", &owner, json!({"name": "A", "description": "a\u{0}b"})).await;
    assert_eq!(problem(&r), (422, Some("application/problem+json"), Some("validation")), "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "description");
    let at = chrono::Utc::now().to_rfc3339();
    let r = app
        .post(
            "/api/v1/usage",
            &owner,
            json!({"records": [
            {"id": "ok", "metric": "api.calls", "quantity": 1, "occurred_at": at},
            {"id": "x\u{0}", "metric": "api.calls", "quantity": 1, "occurred_at": at}]}),
        )
        .await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("records[1].id")), "{}", r.body);
    let r = app
        .post(&format!("/api/v1/tenants/{}/suspend", tenant.0), &app.platform_token(), json!({"reason": "\u{0}"}))
        .await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("reason")), "{}", r.body);
    assert_eq!(app.event_count().await, before, "nothing appended");
}

/// Commands without a body answered 415 or 422 about a body they do not take; now they
/// take nothing or `{}` and refuse anything else with 400, whatever its content type.
#[tokio::test]
async fn a_command_without_a_body_never_answers_415_or_422_for_one() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("spec-bare").await;
    let project = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let archive = format!("{}/api/v1/projects/{project}/archive", app.base);
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut rb = app.client.post(&archive).bearer_auth(&owner).body(body);
        if let Some(c) = content_type {
            rb = rb.header("content-type", c);
        }
        async move {
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    for (content_type, body) in
        [(Some("text/plain"), "archive it"), (Some("application/json"), "{\"x\": 1}"), (None, "[]")]
    {
        let (status, body) = send(content_type, body).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("unexpected-body")), "{content_type:?}: {body}");
    }
    let (status, _) = send(Some("text/plain"), " {} ").await;
    assert_eq!(status, 200, "an empty object is no body");
}

/// A schema-violating body with an If-Match that does not hold answered 412: the request's
/// shape is now refused first (422), and only a well-formed request meets the precondition.
#[tokio::test]
async fn invalid_input_is_422_even_when_if_match_does_not_hold() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("spec-order").await;
    let id = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/projects/{id}");
    for body in [json!({}), json!({"name": "   "})] {
        let r = app.send_with(Method::PATCH, &path, &owner, Some(body.clone()), &[("if-match", "\"7\"")]).await;
        assert_eq!((r.status, r.body["code"].as_str()), (422, Some("validation")), "{body}: {}", r.body);
    }
    let r = app
        .send_with(
            Method::PUT,
            &format!("/api/v1/tenants/{}/plan", tenant.0),
            &app.platform_token(),
            Some(json!({"plan": "gold"})),
            &[("if-match", "\"7\"")],
        )
        .await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (422, Some("plan")), "{}", r.body);
    // A well-formed request whose precondition fails is 412, even when its rule would fail too.
    let r = app.send_with(Method::PATCH, &path, &owner, Some(json!({"name": "B"})), &[("if-match", "\"7\"")]).await;
    assert_eq!(r.status, 412, "{}", r.body);
    app.post(&format!("{path}/archive"), &owner, json!({})).await;
    let r = app.send_with(Method::POST, &format!("{path}/archive"), &owner, None, &[("if-match", "\"1\"")]).await;
    assert_eq!(r.status, 412, "{}", r.body);
}

/// schemathesis (seed 235503402161494616953020390201785837641): `PUT /members/{id}/role` with a
/// role that is no role and an If-Match that did not hold answered 412, because the member's
/// state was consulted before the role was read. Every aggregate now checks the command alone
/// first (`Decide::check_input`), so bad input is 422 in any state, whatever If-Match says.
#[tokio::test]
async fn bad_input_is_422_in_any_state_of_any_aggregate() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("spec-states", "team").await;
    let stale = [("if-match", "\"9\"")];
    let (bob, _) = app.invite(tenant, &owner, "bob", "member").await;
    let r = app.send(Method::DELETE, &format!("/api/v1/members/{bob}"), Some(&owner), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let project = app.create_project(&owner, "Apollo").await.body["id"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "T"})).await;
    let task = r.body["id"].as_str().unwrap().to_owned();
    app.post(&format!("/api/v1/projects/{project}/archive"), &owner, json!({})).await;
    let cases = [
        (Method::PUT, format!("/api/v1/members/{bob}/role"), json!({"role": "wizard"}), "role"),
        (Method::PUT, format!("/api/v1/tasks/{task}/status"), json!({"status": "someday"}), "status"),
        (Method::PATCH, format!("/api/v1/tasks/{task}"), json!({"priority": "whenever"}), "priority"),
        (Method::PATCH, format!("/api/v1/projects/{project}"), json!({"name": "  "}), "name"),
    ];
    for (method, path, body, field) in cases {
        for headers in [&stale[..], &[]] {
            let r = app.send_with(method.clone(), &path, &owner, Some(body.clone()), headers).await;
            assert_eq!(
                (r.status, r.body["errors"][0]["field"].as_str()),
                (422, Some(field)),
                "{method} {path} {body} {headers:?}: {}",
                r.body
            );
        }
    }
    // Well-formed, the same requests meet the precondition and then the state.
    let r = app
        .send_with(Method::PUT, &format!("/api/v1/members/{bob}/role"), &owner, Some(json!({"role": "admin"})), &stale)
        .await;
    assert_eq!(r.status, 412, "{}", r.body);
}
