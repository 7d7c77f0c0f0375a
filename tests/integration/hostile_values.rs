//! Hostile values over REST: quantities that would overflow a counter, and text PostgreSQL
//! cannot store. Each is refused with a 422 naming the field, and nothing is half-written.

use crate::helpers::{Reply, TestApp, spawn_app};
use chrono::{DateTime, Utc};
use keel_domain::TenantId;
use keel_domain::usage::{MAX_MONTH_UNITS, MAX_QUANTITY};
use serde_json::{Value, json};

fn usage(records: &[(&str, i64)], at: DateTime<Utc>) -> Value {
    json!({"records": records.iter().map(|(id, q)| json!({"id": id, "metric": "api.calls", "quantity": q, "occurred_at": at})).collect::<Vec<_>>()})
}

fn fields(r: &Reply) -> Vec<String> {
    r.body["errors"]
        .as_array()
        .map_or_else(Vec::new, |e| e.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
}

#[track_caller]
fn assert_422(r: &Reply, field: &str) {
    assert_eq!(r.status, 422, "{field}: {}", r.body);
    assert!(fields(r).iter().any(|f| f == field), "422 names {field}: {}", r.body);
}

/// The month's units as the quota counter, the usage read model (over GraphQL, read after the
/// last write), its daily rows and a sum over the log each see them.
async fn units_everywhere(app: &TestApp, tenant: TenantId, owner: &str, last: &Reply) -> [i128; 4] {
    let mut su = app.db.superuser().await;
    let counter: i64 =
        sqlx::query_scalar("SELECT COALESCE(sum(units), 0)::bigint FROM usage_counters WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_one(&mut su)
            .await
            .unwrap();
    let log: String = sqlx::query_scalar(
        "SELECT COALESCE(sum((r->>'quantity')::numeric), 0)::text
           FROM events e, jsonb_array_elements(e.payload->'records') r
          WHERE e.tenant_id = $1 AND e.event_type = 'UsageRecorded'",
    )
    .bind(tenant.0)
    .fetch_one(&mut su)
    .await
    .unwrap();
    let position = last.body["position"].as_str().unwrap();
    let r = app.graphql(owner, "{ dashboard { usage { units } } }", Some(position)).await;
    assert!(r.body.get("errors").is_none() && r.body.get("extensions").is_none(), "{}", r.body);
    let read_model = r.body["data"]["dashboard"]["usage"]["units"].as_i64().unwrap();
    let daily: String =
        sqlx::query_scalar("SELECT COALESCE(sum(units), 0)::text FROM rm_usage_daily WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_one(&mut su)
            .await
            .unwrap();
    [counter.into(), log.parse().unwrap(), read_model.into(), daily.parse().unwrap()]
}

#[tokio::test]
async fn quantities_that_would_overflow_are_refused_and_counter_read_model_and_log_agree() {
    let app = spawn_app().await;
    let now = Utc::now();
    let max = MAX_QUANTITY as i64;

    // Free plan: two records of i64::MAX plus 2 wrapped the batch's sum to 0 under the quota.
    let (free, free_owner) = app.provision("huge-free").await;
    let r = app.post("/api/v1/usage", &free_owner, usage(&[("a", i64::MAX), ("b", i64::MAX), ("c", 2)], now)).await;
    assert_422(&r, "records[0].quantity");
    assert_eq!(fields(&r), vec!["records[0].quantity", "records[1].quantity"], "{}", r.body);
    assert_422(&app.post("/api/v1/usage", &free_owner, usage(&[("a", max + 1)], now)).await, "records[0].quantity");
    let ok = app.post("/api/v1/usage", &free_owner, usage(&[("a", 10_000)], now)).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(units_everywhere(&app, free, &free_owner, &ok).await, [10_000; 4]);

    // Enterprise: one such record broke every later call of the month; now it is refused and
    // the month goes on up to its ceiling.
    let (ent, owner) = app.provision_on("huge-enterprise", "enterprise").await;
    assert_422(&app.post("/api/v1/usage", &owner, usage(&[("x", i64::MAX)], now)).await, "records[0].quantity");
    let r = app.post("/api/v1/usage", &owner, usage(&[("one", 1)], now)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<String> = (0..999).map(|i| format!("big-{i}")).collect();
    let big: Vec<(&str, i64)> = ids.iter().map(|id| (id.as_str(), max)).collect();
    let r = app.post("/api/v1/usage", &owner, usage(&big, now)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // 999 * 10^12 + 1 recorded: 10^12 more would pass the 10^15 ceiling of the month.
    let r = app.post("/api/v1/usage", &owner, usage(&[("over", max)], now)).await;
    assert_422(&r, "usage_units");
    let last = app.post("/api/v1/usage", &owner, usage(&[("last", max - 1)], now)).await;
    assert_eq!(last.status, 201, "{}", last.body);
    let total = MAX_MONTH_UNITS as i128;
    assert_eq!(units_everywhere(&app, ent, &owner, &last).await, [total; 4]);
    // Later calls of the month answer, and are refused for the ceiling, not with a 500.
    let r = app.post("/api/v1/usage", &owner, usage(&[("later", 1)], now)).await;
    assert_422(&r, "usage_units");
}

#[tokio::test]
async fn a_nul_character_in_any_text_field_is_a_422_naming_it() {
    let app = spawn_app().await;
    let platform = app.platform_token();
    let (tenant, owner) = app.provision("nul-text").await;
    let nul = "bad\u{0}text";

    // Provisioning.
    let tenant_body = |name: &str, slug: &str, user_id: &str, email: &str, owner_name: &str| {
        json!({"name": name, "slug": slug, "plan": "free",
               "owner": {"user_id": user_id, "email": email, "name": owner_name}})
    };
    for (body, field) in [
        (tenant_body(nul, "nul-a", "u", "u@nul.test", "U"), "name"),
        (tenant_body("T", "nul-b\u{0}", "u", "u@nul.test", "U"), "slug"),
        (tenant_body("T", "nul-c", nul, "u@nul.test", "U"), "owner.user_id"),
        (tenant_body("T", "nul-d", "u", "\"u\u{0}\"@nul.test", "U"), "owner.email"),
        (tenant_body("T", "nul-e", "u", "u@nul.test", nul), "owner.name"),
    ] {
        assert_422(&app.post("/api/v1/tenants", &platform, body).await, field);
    }

    // Invitations.
    for (body, field) in [
        (json!({"user_id": nul, "email": "v@nul.test", "name": "V", "role": "member"}), "user_id"),
        (json!({"user_id": "v", "email": "\"v\u{0}\"@nul.test", "name": "V", "role": "member"}), "email"),
        (json!({"user_id": "v", "email": "v@nul.test", "name": nul, "role": "member"}), "name"),
    ] {
        assert_422(&app.post("/api/v1/members", &owner, body).await, field);
    }

    // Projects and tasks.
    assert_422(&app.post("/api/v1/projects", &owner, json!({"name": nul})).await, "name");
    assert_422(&app.post("/api/v1/projects", &owner, json!({"name": "P", "description": nul})).await, "description");
    assert_422(
        &app.post("/api/v1/projects", &owner, json!({"name": "P", "description": "\u{0}"})).await,
        "description",
    );
    let project = app.create_project(&owner, "P").await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/projects/{project}");
    assert_422(&app.patch(&path, &owner, json!({"description": nul})).await, "description");
    assert_422(&app.patch(&path, &owner, json!({"name": nul})).await, "name");
    let tasks = format!("/api/v1/projects/{project}/tasks");
    assert_422(&app.post(&tasks, &owner, json!({"title": nul})).await, "title");
    assert_422(&app.post(&tasks, &owner, json!({"title": "T", "description": nul})).await, "description");
    let r = app.post(&tasks, &owner, json!({"title": "T"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let task = format!("/api/v1/tasks/{}", r.body["id"].as_str().unwrap());
    assert_422(&app.patch(&task, &owner, json!({"description": nul})).await, "description");
    assert_422(&app.patch(&task, &owner, json!({"title": nul})).await, "title");

    // Usage records.
    let now = Utc::now();
    assert_422(&app.post("/api/v1/usage", &owner, usage(&[(nul, 1)], now)).await, "records[0].id");
    let r = app
        .post(
            "/api/v1/usage",
            &owner,
            json!({"records": [{"id": "ok", "metric": "api\u{0}calls", "quantity": 1, "occurred_at": now}]}),
        )
        .await;
    assert_422(&r, "records[0].metric");

    // Suspension reason (the platform).
    let suspend = format!("/api/v1/tenants/{}/suspend", tenant.0);
    assert_422(&app.post(&suspend, &platform, json!({"reason": nul})).await, "reason");

    // Nothing was written by any of them: one project, one task, the tenant's provisioning.
    let mut su = app.db.superuser().await;
    let types: Vec<String> = sqlx::query_scalar("SELECT event_type FROM events WHERE tenant_id = $1 ORDER BY position")
        .bind(tenant.0)
        .fetch_all(&mut su)
        .await
        .unwrap();
    assert_eq!(types, vec!["TenantProvisioned", "MemberInvited", "ProjectCreated", "TaskCreated"]);
    let r = app.post(&suspend, &platform, json!({"reason": "still a normal reason"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}
