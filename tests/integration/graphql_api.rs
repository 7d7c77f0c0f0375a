//! The whole GraphQL read API: filters, orderings, pages, nested fields without N+1, dashboard,
//! usage, platform view, limits, and a role and a tenant check for every field.

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;

/// Seeds a team tenant: 3 projects (one archived), 6 tasks with due dates, priorities, statuses
/// and assignees, usage. Returns (owner token, project ids, bob's member id, last position).
async fn seed(app: &TestApp, slug: &str) -> (String, Vec<String>, String, String) {
    let (tenant, owner) = app.provision_on(slug, "team").await;
    let (bob, _) = app.invite(tenant, &owner, "bob", "member").await;
    let id = |r: crate::helpers::Reply| r.body["id"].as_str().unwrap().to_owned();
    let p: Vec<String> = vec![
        id(app.create_project(&owner, "Apollo").await),
        id(app.create_project(&owner, "Gemini").await),
        id(app.create_project(&owner, "Mercury").await),
    ];
    let tasks = [
        (0, "land", Some("2020-01-10"), "urgent", true, "todo"),
        (0, "orbit", Some("2030-05-01"), "low", false, "in_progress"),
        (0, "launch", None, "high", true, "done"),
        (1, "dock", Some("2030-01-01"), "medium", false, "todo"),
        (1, "walk", Some("2020-02-01"), "high", true, "done"),
        (2, "fly", Some("2030-03-03"), "low", false, "todo"),
    ];
    let mut last = String::new();
    for (pi, title, due, priority, assigned, status) in tasks {
        let mut body = json!({"title": title, "priority": priority});
        if let Some(d) = due {
            body["due_date"] = json!(d);
        }
        if assigned {
            body["assignee"] = json!(bob);
        }
        let t = id(app.post(&format!("/api/v1/projects/{}/tasks", p[pi]), &owner, body).await);
        if status != "todo" {
            let r = app.put(&format!("/api/v1/tasks/{t}/status"), &owner, json!({"status": status})).await;
            last = r.body["position"].as_str().unwrap().to_owned();
        }
    }
    app.post(
        "/api/v1/usage",
        &owner,
        json!({"records": [
        {"id": "u1", "metric": "api.calls", "quantity": 40, "occurred_at": chrono::Utc::now()},
        {"id": "u2", "metric": "storage.gb", "quantity": 2, "occurred_at": chrono::Utc::now()}]}),
    )
    .await;
    let r = app.post(&format!("/api/v1/projects/{}/archive", p[2]), &owner, json!({})).await;
    last = r.body["position"].as_str().map(str::to_owned).unwrap_or(last);
    (owner, p, bob, last)
}

fn titles(v: &Value) -> Vec<String> {
    v["edges"].as_array().unwrap().iter().map(|e| e["node"]["title"].as_str().unwrap().to_owned()).collect()
}

fn names(v: &Value) -> Vec<String> {
    v["edges"].as_array().unwrap().iter().map(|e| e["node"]["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn tasks_filter_order_and_page() {
    let app = spawn_app().await;
    let (owner, p, bob, pos) = seed(&app, "gql-tasks").await;
    // Wait for every projection once, then query freely.
    app.graphql(
        &owner,
        "{ dashboard { memberCount tasksByStatus { total } usage { units } } tasks { totalCount } }",
        Some(&pos),
    )
    .await;
    let q = |args: &str| {
        let args = if args.is_empty() { String::new() } else { format!("({args})") };
        format!(
            "{{ tasks{args} {{ totalCount edges {{ cursor node {{ title }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
        )
    };
    let run = |args: String| {
        let (app, owner) = (&app, owner.clone());
        async move {
            let r = app.graphql(&owner, &q(&args), None).await;
            assert!(r.body.get("errors").is_none(), "{args}: {}", r.body);
            r.body["data"]["tasks"].clone()
        }
    };
    assert_eq!(titles(&run("".into()).await), ["land", "orbit", "launch", "dock", "walk", "fly"]);
    assert_eq!(titles(&run(format!("filter: {{projectId: \"{}\"}}", p[0])).await), ["land", "orbit", "launch"]);
    assert_eq!(titles(&run("filter: {status: TODO}".into()).await), ["land", "dock", "fly"]);
    assert_eq!(titles(&run("filter: {priority: HIGH}".into()).await), ["launch", "walk"]);
    assert_eq!(titles(&run(format!("filter: {{assigneeId: \"{bob}\"}}")).await), ["land", "launch", "walk"]);
    assert_eq!(titles(&run("filter: {dueBefore: \"2021-01-01\"}".into()).await), ["land", "walk"]);
    assert_eq!(titles(&run("filter: {dueAfter: \"2030-02-01\"}".into()).await), ["orbit", "fly"]);
    assert_eq!(titles(&run("filter: {overdue: true}".into()).await), ["land"]);
    assert_eq!(
        titles(&run("orderBy: {field: DUE_DATE}".into()).await),
        ["land", "walk", "dock", "fly", "orbit", "launch"]
    );
    assert_eq!(
        titles(&run("orderBy: {field: DUE_DATE, direction: DESC}".into()).await),
        ["launch", "orbit", "fly", "dock", "walk", "land"]
    );
    assert_eq!(
        titles(&run("orderBy: {field: PRIORITY}".into()).await),
        ["land", "launch", "walk", "dock", "orbit", "fly"]
    );
    assert_eq!(
        titles(&run("orderBy: {field: CREATED_AT, direction: DESC}".into()).await),
        ["fly", "walk", "dock", "launch", "orbit", "land"]
    );

    // Every ordering pages through every task exactly once with its opaque cursors.
    for order in ["{field: DUE_DATE}", "{field: DUE_DATE, direction: DESC}", "{field: PRIORITY}", "{field: CREATED_AT}"]
    {
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = run(format!("first: 2, orderBy: {order}{after}")).await;
            assert_eq!(page["totalCount"], 6);
            seen.extend(titles(&page));
            if page["pageInfo"]["hasNextPage"] == false {
                break;
            }
            after = format!(", after: \"{}\"", page["pageInfo"]["endCursor"].as_str().unwrap());
        }
        let full = titles(&run(format!("orderBy: {order}")).await);
        assert_eq!(seen, full, "paging {order}");
    }
    // A cursor of one ordering is refused by another.
    let page = run("first: 1, orderBy: {field: DUE_DATE}".into()).await;
    let c = page["pageInfo"]["endCursor"].as_str().unwrap();
    let r = app.graphql(&owner, &q(&format!("after: \"{c}\", orderBy: {{field: PRIORITY}}")), None).await;
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn projects_and_members_filter_and_order() {
    let app = spawn_app().await;
    let (owner, _, _, pos) = seed(&app, "gql-projects").await;
    let r = app
        .graphql(&owner, "{ projects(filter: {status: ACTIVE}) { totalCount edges { node { name } } } }", Some(&pos))
        .await;
    assert_eq!(names(&r.body["data"]["projects"]), ["Apollo", "Gemini"]);
    let r = app.graphql(&owner, "{ projects(filter: {search: \"MIN\"}) { edges { node { name } } } }", None).await;
    assert_eq!(names(&r.body["data"]["projects"]), ["Gemini"]);
    let r = app
        .graphql(&owner, "{ projects(orderBy: {field: NAME, direction: DESC}) { edges { node { name } } } }", None)
        .await;
    assert_eq!(names(&r.body["data"]["projects"]), ["Mercury", "Gemini", "Apollo"]);
    let r = app
        .graphql(
            &owner,
            "{ projects(orderBy: {field: UPDATED_AT, direction: DESC}, first: 1) { edges { node { name } } } }",
            None,
        )
        .await;
    assert_eq!(names(&r.body["data"]["projects"]), ["Mercury"], "archived last, so updated last");
    let r = app
        .graphql(&owner, "{ members(role: MEMBER) { totalCount edges { node { userId role status email } } } }", None)
        .await;
    assert_eq!(
        r.body["data"]["members"],
        json!({"totalCount": 1, "edges": [{"node": {"userId": "bob", "role": "MEMBER", "status": "ACTIVE", "email": "bob@example.test"}}]})
    );
    let r = app.graphql(&owner, "{ members(first: 101) { totalCount } }", None).await;
    assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("between 0 and 100"));
}

#[tokio::test]
async fn nested_fields_load_without_n_plus_one() {
    let app = spawn_app_with(Options::default()).await;
    let (tenant, owner) = app.provision_on("gql-nplus1", "enterprise").await;
    let (bob, _) = app.invite(tenant, &owner, "bob", "member").await;
    let mut last = String::new();
    for i in 0..50 {
        let p = app.create_project(&owner, &format!("P{i:02}")).await.body["id"].as_str().unwrap().to_owned();
        for t in 0..2 {
            let r = app
                .post(
                    &format!("/api/v1/projects/{p}/tasks"),
                    &owner,
                    json!({"title": format!("T{i}-{t}"), "assignee": bob}),
                )
                .await;
            last = r.body["position"].as_str().unwrap().to_owned();
        }
    }
    let query = "{ projects(first: 50) { totalCount edges { node { name tasks(first: 5) { totalCount edges { node { title assignee { name } project { name } } } } } } } }";
    let ask = |q: &'static str, pos: Option<String>| {
        let (app, owner) = (&app, owner.clone());
        async move {
            let mut rb = app
                .client
                .post(format!("{}/graphql", app.base))
                .bearer_auth(owner)
                .header("keel-debug", "statements")
                .json(&json!({"query": q}));
            if let Some(p) = pos {
                rb = rb.header("keel-consistency", p);
            }
            rb.send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    let full = ask(query, Some(last)).await;
    assert!(full.get("errors").is_none(), "{full}");
    let edges = full["data"]["projects"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 50);
    for e in edges {
        let tasks = &e["node"]["tasks"];
        assert_eq!(tasks["totalCount"], 2);
        for t in tasks["edges"].as_array().unwrap() {
            assert_eq!(t["node"]["project"]["name"], e["node"]["name"]);
            assert_eq!(t["node"]["assignee"]["name"], "bob");
        }
    }
    // Unbatched, 50 projects with 100 nested tasks would run 250+ statements (four nested
    // fields a row); batched, a few per field, however long the page.
    let statements = full["extensions"]["sqlStatements"].as_u64().unwrap();
    assert!(statements <= 40, "{statements} statements for 50 projects with 100 nested tasks");
    let small = ask("{ projects(first: 2) { totalCount edges { node { name tasks(first: 5) { totalCount edges { node { title assignee { name } project { name } } } } } } } }", None).await;
    let small_statements = small["extensions"]["sqlStatements"].as_u64().unwrap();
    assert!(small_statements <= 40 && small_statements > 0, "{small_statements}");
}

#[tokio::test]
async fn dashboard_usage_and_tenant() {
    let app = spawn_app().await;
    let (owner, _, _, pos) = seed(&app, "gql-dash").await;
    let r = app
        .graphql(
            &owner,
            "{ dashboard { tasksByStatus { todo inProgress done total } completedPerDay(days: 3) { date count }
               overdueTasks activeProjects memberCount usage { units quota } } }",
            Some(&pos),
        )
        .await;
    let d = &r.body["data"]["dashboard"];
    assert!(r.body.get("errors").is_none(), "{}", r.body);
    assert_eq!(d["tasksByStatus"], json!({"todo": 3, "inProgress": 1, "done": 2, "total": 6}));
    assert_eq!(d["completedPerDay"].as_array().unwrap().len(), 3);
    assert_eq!(d["completedPerDay"][2]["count"], 2, "both completed today");
    assert_eq!(
        (d["overdueTasks"].as_i64(), d["activeProjects"].as_i64(), d["memberCount"].as_i64()),
        (Some(1), Some(2), Some(2))
    );
    assert_eq!(d["usage"], json!({"units": 42, "quota": 1_000_000}));
    let today = chrono::Utc::now().date_naive();
    let r = app
        .graphql(
            &owner,
            &format!(
                "{{ usage(from: \"{}\", to: \"{today}\", metric: \"api.calls\") {{ metric units }} }}",
                today - chrono::Days::new(7)
            ),
            None,
        )
        .await;
    assert_eq!(r.body["data"]["usage"], json!([{"metric": "api.calls", "units": 40}]));
    let r = app.graphql(&owner, "{ usage(from: \"2020-01-01\", to: \"2026-01-01\") { units } }", None).await;
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let r = app.graphql(&owner, "{ tenant { plan seatsUsed seatLimit activeProjects projectLimit } }", None).await;
    assert_eq!(
        r.body["data"]["tenant"],
        json!({"plan": "TEAM", "seatsUsed": 2, "seatLimit": 25, "activeProjects": 2, "projectLimit": 100})
    );
}

#[tokio::test]
async fn the_platform_view_is_for_operators_only() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("gql-plat-a").await;
    app.provision_on("gql-plat-b", "team").await;
    let platform = app.platform_token();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = app.graphql(&platform, "{ platform { tenants(first: 10) { totalCount edges { node { slug plan } } } tenantsByPlan { plan count } } }", None).await;
        let p = &r.body["data"]["platform"];
        if p["tenants"]["totalCount"] == 2
            && p["tenantsByPlan"] == json!([{"plan": "FREE", "count": 1}, {"plan": "TEAM", "count": 1}])
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = app.graphql(&owner, "{ platform { tenantsByPlan { plan count } } }", None).await;
    assert_eq!(
        (r.body["data"]["platform"].clone(), r.body["errors"][0]["extensions"]["code"].clone()),
        (Value::Null, json!("FORBIDDEN"))
    );
    for field in [
        "projects { totalCount }",
        "tasks { totalCount }",
        "members { totalCount }",
        "dashboard { memberCount }",
        "tenant { slug }",
    ] {
        let r = app.graphql(&platform, &format!("{{ {field} }}"), None).await;
        assert_eq!(r.body["errors"][0]["extensions"]["code"], "FORBIDDEN", "platform reading {field}");
    }
}

#[tokio::test]
async fn limits_refuse_deep_queries_before_they_run_and_errors_leak_nothing() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("gql-limits").await;
    // Cheap (one item a page) but deep.
    let deep = "{ tasks(first: 1) { edges { node { project { tasks(first: 1) { edges { node { project { tasks(first: 1) { edges { node { project { name } } } } } } } } } } } } }";
    let r = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(&owner)
        .header("keel-debug", "statements")
        .json(&json!({"query": deep}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.to_lowercase().contains("nested too deep"), "{body}");
    assert!(body.get("data").is_none_or(|d| d.is_null()));
    assert_eq!(body["extensions"]["sqlStatements"], json!(0), "refused before it ran: {body}");
    let r = app
        .graphql(&owner, "{ task(id: \"not-a-uuid\") { title } projects(after: \"' OR 1=1 --\") { totalCount } }", None)
        .await;
    let text = r.body.to_string().to_lowercase();
    for leak in ["select", "sqlx", "postgres", "panicked", "rm_"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let page = app
        .client
        .get(format!("{}/graphql", app.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.to_lowercase().contains("graphiql"));
    assert!(page.contains("/console/assets/graphiql@") && !page.contains("://"), "GraphiQL from Keel itself, no CDN");
}

#[tokio::test]
async fn schema_graphql_is_current() {
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap_or_default();
    assert!(
        file == keel_query::build_schema().sdl(),
        "schema.graphql is stale: run `cargo run -- graphql-schema --out schema.graphql`"
    );
    // Each root field's description is its own (a doc comment once drifted onto the next field).
    let described = |field: &str| {
        let lines: Vec<&str> = file.lines().collect();
        let query = lines.iter().position(|l| *l == "type Query {").expect("type Query");
        let at = query
            + lines[query..].iter().position(|l| l.trim_start().starts_with(field)).expect("the field is in Query");
        assert_eq!(lines[at - 1].trim(), "\"\"\"", "{field} has a description");
        let open = (0..at - 1).rev().find(|&i| lines[i].trim() == "\"\"\"").unwrap();
        lines[open + 1..at - 1].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
    };
    assert!(described("events(").starts_with("The tenant's event log"), "{}", described("events("));
    assert!(described("platform:").starts_with("The platform view"), "{}", described("platform:"));
}

/// Every field, every role: what each may read (`docs/domain.md`, "Members and roles"), and that another tenant's data never shows.
#[tokio::test]
async fn every_field_for_every_role_and_across_tenants() {
    let app = spawn_app().await;
    let (owner, p, _, pos) = seed(&app, "gql-roles").await;
    let (other_owner, other_projects, _, other_pos) = seed(&app, "gql-roles-other").await;
    let tenant = {
        let r = app.graphql(&owner, "{ me { tenantId } }", None).await;
        keel_domain::TenantId(r.body["data"]["me"]["tenantId"].as_str().unwrap().parse().unwrap())
    };
    let mut tokens = vec![("owner", owner.clone())];
    for role in ["admin", "member", "viewer", "auditor"] {
        let (_, t) = app.invite(tenant, &owner, &format!("r-{role}"), role).await;
        tokens.push((role, t));
    }
    tokens.push(("non-member", app.token(tenant, "stranger")));
    let today = chrono::Utc::now().date_naive();
    let fields = [
        ("me", "me { userId }".to_owned()),
        ("tenant", "tenant { slug }".to_owned()),
        ("members", "members { totalCount }".to_owned()),
        ("projects", "projects { totalCount }".to_owned()),
        ("project", format!("project(id: \"{}\") {{ name }}", p[0])),
        ("tasks", "tasks { totalCount }".to_owned()),
        ("task", "task(id: \"00000000-0000-0000-0000-000000000000\") { title }".to_owned()),
        ("dashboard", "dashboard { memberCount }".to_owned()),
        ("usage", format!("usage(from: \"{today}\", to: \"{today}\") {{ units }}")),
        ("platform", "platform { tenantsByPlan { count } }".to_owned()),
    ];
    app.graphql(&owner, "{ dashboard { memberCount } tasks { totalCount } members { totalCount } }", Some(&pos)).await;
    app.graphql(&other_owner, "{ dashboard { memberCount } }", Some(&other_pos)).await;
    for (role, token) in &tokens {
        for (field, q) in &fields {
            let allowed = match *field {
                "me" => true,
                "platform" => false,
                "tenant" | "dashboard" => *role != "non-member",
                "usage" => !matches!(*role, "non-member"),
                _ => matches!(*role, "owner" | "admin" | "member" | "viewer"),
            };
            let r = app.graphql(token, &format!("{{ {q} }}"), None).await;
            let denied = r.body["errors"][0]["extensions"]["code"] == "FORBIDDEN";
            assert_eq!(!denied, allowed, "{role} reading {field}: {}", r.body);
        }
    }
    // Across tenants: the owner of this tenant sees none of the other's rows.
    let r = app
        .graphql(
            &owner,
            &format!(
                "{{ project(id: \"{}\") {{ name }} task(id: \"{}\") {{ title }} projects {{ totalCount }} tasks {{ totalCount }}
                   members {{ totalCount }} dashboard {{ memberCount activeProjects tasksByStatus {{ total }} usage {{ units }} }} tenant {{ slug }} }}",
                other_projects[0], other_projects[1]
            ),
            None,
        )
        .await;
    assert_eq!(
        r.body["data"],
        json!({"project": null, "task": null, "projects": {"totalCount": 3}, "tasks": {"totalCount": 6},
               "members": {"totalCount": 6}, "dashboard": {"memberCount": 6, "activeProjects": 2, "tasksByStatus": {"total": 6}, "usage": {"units": 42}},
               "tenant": {"slug": "gql-roles"}}),
        "{}",
        r.body
    );
}
