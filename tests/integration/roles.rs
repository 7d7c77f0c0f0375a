//! Every role over every route, against the table in `docs/domain.md` ("Members and roles").

use crate::helpers::{TestApp, spawn_app};
use chrono::Utc;
use keel_domain::TenantId;
use reqwest::Method;
use serde_json::{Value, json};

struct Fixtures {
    project: String,
    archived: String,
    task: String,
    member: String,
    removable: String,
}

async fn fixtures(app: &TestApp, tenant: TenantId, owner: &str, n: usize) -> Fixtures {
    let id = |r: crate::helpers::Reply| r.body["id"].as_str().unwrap().to_owned();
    let project = id(app.create_project(owner, &format!("P{n}")).await);
    let archived = id(app.create_project(owner, &format!("Q{n}")).await);
    assert_eq!(app.post(&format!("/api/v1/projects/{archived}/archive"), owner, json!({})).await.status, 200);
    let task = id(app.post(&format!("/api/v1/projects/{project}/tasks"), owner, json!({"title": "T"})).await);
    let (member, _) = app.invite(tenant, owner, &format!("m{n}"), "member").await;
    let (removable, _) = app.invite(tenant, owner, &format!("r{n}"), "member").await;
    Fixtures { project, archived, task, member, removable }
}

#[tokio::test]
async fn every_role_over_every_route() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("roles", "enterprise").await;
    let t = tenant.0;
    let mut actors: Vec<(&str, String)> = vec![("owner", owner.clone())];
    for role in ["admin", "member", "viewer", "auditor"] {
        let (_, token) = app.invite(tenant, &owner, &format!("the-{role}"), role).await;
        actors.push((role, token));
    }
    actors.push(("platform", app.platform_token()));
    actors.push(("non-member", app.token(tenant, "stranger")));

    for (n, (who, token)) in actors.iter().enumerate() {
        let f = fixtures(&app, tenant, &owner, n).await;
        let writer = matches!(*who, "owner" | "admin" | "member");
        let manager = matches!(*who, "owner" | "admin");
        let platform = *who == "platform";
        let expect = |ok: bool, status: u16| if ok { status } else { 403 };
        let now = Utc::now();
        let calls: Vec<(Method, String, Option<Value>, u16)> = vec![
            (
                Method::POST,
                "/api/v1/tenants".into(),
                Some(
                    json!({"name": "N", "slug": format!("roles-new-{n}"), "plan": "free", "owner": {"user_id": "o", "email": "o@o.test", "name": "O"}}),
                ),
                expect(platform, 201),
            ),
            (
                Method::PUT,
                format!("/api/v1/tenants/{t}/plan"),
                Some(json!({"plan": "enterprise"})),
                expect(platform, 200),
            ),
            (Method::POST, format!("/api/v1/tenants/{t}/suspend"), None, expect(platform, 200)),
            (Method::POST, format!("/api/v1/tenants/{t}/reactivate"), None, expect(platform, 200)),
            (
                Method::POST,
                "/api/v1/members".into(),
                Some(
                    json!({"user_id": format!("new-{n}"), "email": format!("new-{n}@x.test"), "name": "N", "role": "viewer"}),
                ),
                expect(manager, 201),
            ),
            (
                Method::PUT,
                format!("/api/v1/members/{}/role", f.member),
                Some(json!({"role": "viewer"})),
                expect(manager, 200),
            ),
            (Method::DELETE, format!("/api/v1/members/{}", f.removable), None, expect(manager, 200)),
            (Method::POST, "/api/v1/projects".into(), Some(json!({"name": "New"})), expect(writer, 201)),
            (
                Method::PATCH,
                format!("/api/v1/projects/{}", f.project),
                Some(json!({"name": "Renamed"})),
                expect(writer, 200),
            ),
            (
                Method::POST,
                format!("/api/v1/projects/{}/tasks", f.project),
                Some(json!({"title": "New"})),
                expect(writer, 201),
            ),
            (
                Method::PATCH,
                format!("/api/v1/tasks/{}", f.task),
                Some(json!({"priority": "high"})),
                expect(writer, 200),
            ),
            (
                Method::PUT,
                format!("/api/v1/tasks/{}/assignee", f.task),
                Some(json!({"member_id": f.member})),
                expect(writer, 200),
            ),
            (
                Method::PUT,
                format!("/api/v1/tasks/{}/status", f.task),
                Some(json!({"status": "done"})),
                expect(writer, 200),
            ),
            (Method::POST, format!("/api/v1/projects/{}/archive", f.project), None, expect(writer, 200)),
            (Method::POST, format!("/api/v1/projects/{}/restore", f.archived), None, expect(writer, 200)),
            (
                Method::POST,
                "/api/v1/usage".into(),
                Some(
                    json!({"records": [{"id": format!("u{n}"), "metric": "api.calls", "quantity": 1, "occurred_at": now}]}),
                ),
                expect(writer, 201),
            ),
        ];
        for (method, path, body, want) in calls {
            let r = app.send(method.clone(), &path, Some(token), body).await;
            assert_eq!(r.status, want, "{who}: {method} {path}: {}", r.body);
        }
    }
}
