//! GraphQL reads: fields, Relay pagination, read-your-writes, and tenant isolation.

use crate::helpers::{Options, spawn_app, spawn_app_with};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn me_and_tenant_describe_the_caller() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("gql-me").await;
    let r = app
        .graphql(&owner, "{ me { userId tenantId role platform } tenant { id name slug plan status seatsUsed seatLimit activeProjects projectLimit } }", None)
        .await;
    assert_eq!(
        r.body["data"]["me"],
        json!({"userId": "owner-gql-me", "tenantId": tenant.0.to_string(), "role": "OWNER", "platform": false})
    );
    assert_eq!(
        r.body["data"]["tenant"],
        json!({"id": tenant.0.to_string(), "name": "Tenant gql-me", "slug": "gql-me", "plan": "FREE", "status": "ACTIVE",
               "seatsUsed": 1, "seatLimit": 3, "activeProjects": 0, "projectLimit": 3})
    );
}

#[tokio::test]
async fn projects_page_with_opaque_cursors_and_a_total() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("gql-pages").await;
    let mut ids = Vec::new();
    let mut last = String::new();
    for name in ["P1", "P2", "P3"] {
        let r = app.create_project(&owner, name).await;
        ids.push(r.body["id"].as_str().unwrap().to_owned());
        last = r.body["position"].as_str().unwrap().to_owned();
    }
    let page = |after: Option<String>| {
        let after = after.map(|a| format!(", after: \"{a}\"")).unwrap_or_default();
        format!(
            "{{ projects(first: 2{after}) {{ totalCount edges {{ cursor node {{ id name status taskCounts {{ total }} progress }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
        )
    };
    let r = app.graphql(&owner, &page(None), Some(&last)).await;
    let p = &r.body["data"]["projects"];
    assert_eq!(p["totalCount"], 3, "{}", r.body);
    assert_eq!(p["pageInfo"]["hasNextPage"], true);
    let first_ids: Vec<&str> =
        p["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap()).collect();
    assert_eq!(first_ids, vec![ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(p["edges"][0]["node"]["status"], "ACTIVE");
    assert_eq!(p["edges"][0]["node"]["taskCounts"]["total"], 0);

    let cursor = p["pageInfo"]["endCursor"].as_str().unwrap().to_owned();
    let r = app.graphql(&owner, &page(Some(cursor.clone())), None).await;
    let p = &r.body["data"]["projects"];
    assert_eq!(p["edges"].as_array().unwrap().len(), 1);
    assert_eq!(p["edges"][0]["node"]["id"], ids[2].as_str());
    assert_eq!(p["pageInfo"]["hasNextPage"], false);
    // Cursors are stable: the same cursor gives the same page.
    let again = app.graphql(&owner, &page(Some(cursor)), None).await;
    assert_eq!(again.body["data"], r.body["data"]);

    let r = app.graphql(&owner, "{ projects(first: 101) { totalCount } }", None).await;
    assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("between 0 and 100"), "{}", r.body);
    let r = app.graphql(&owner, "{ projects(after: \"garbage\") { totalCount } }", None).await;
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    let r = app.graphql(&owner, &format!("{{ project(id: \"{}\") {{ name }} }}", ids[1]), None).await;
    assert_eq!(r.body["data"]["project"]["name"], "P2");
}

#[tokio::test]
async fn another_tenants_project_is_null_and_its_list_empty() {
    let app = spawn_app().await;
    let (_, a) = app.provision("gql-a").await;
    let (_, b) = app.provision("gql-b").await;
    let r = app.create_project(&a, "A's secret").await;
    let (id, pos) = (r.body["id"].as_str().unwrap().to_owned(), r.body["position"].as_str().unwrap().to_owned());

    let seen_by_b = app
        .graphql(
            &b,
            &format!("{{ project(id: \"{id}\") {{ name }} projects {{ totalCount edges {{ node {{ id }} }} }} }}"),
            Some(&pos),
        )
        .await;
    assert_eq!(seen_by_b.body["data"], json!({"project": null, "projects": {"totalCount": 0, "edges": []}}));
    assert!(seen_by_b.body.get("errors").is_none());
    // The same query for an id that exists nowhere is indistinguishable.
    let missing = app
        .graphql(
            &b,
            &format!(
                "{{ project(id: \"{}\") {{ name }} projects {{ totalCount edges {{ node {{ id }} }} }} }}",
                uuid::Uuid::now_v7()
            ),
            None,
        )
        .await;
    assert_eq!(missing.body, seen_by_b.body);
    // A sees it.
    let seen_by_a = app.graphql(&a, &format!("{{ project(id: \"{id}\") {{ name }} }}"), Some(&pos)).await;
    assert_eq!(seen_by_a.body["data"]["project"]["name"], "A's secret");
    // B's tenant field is B's.
    let t = app.graphql(&b, "{ tenant { slug activeProjects } }", None).await;
    assert_eq!(t.body["data"]["tenant"], json!({"slug": "gql-b", "activeProjects": 0}));
}

#[tokio::test]
async fn consistency_waits_for_the_projection_then_answers_stale() {
    // No projector: the read model never catches up.
    let app = spawn_app_with(Options {
        projector: false,
        consistency_wait: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let (_, owner) = app.provision("stale").await;
    let pos = app.create_project(&owner, "Pending").await.body["position"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let r = app.graphql(&owner, "{ projects { totalCount } }", Some(&pos)).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
    assert_eq!(r.body["extensions"]["consistency"], "stale", "{}", r.body);
    assert_eq!(r.body["data"]["projects"]["totalCount"], 0);
    // Every field that reads a projection waits for it, and says so when it gave up.
    let today = chrono::Utc::now().date_naive();
    for q in [
        "{ tasks { totalCount } }".to_owned(),
        "{ members { totalCount } }".to_owned(),
        "{ dashboard { memberCount } }".to_owned(),
        "{ dashboard { completedPerDay(days: 1) { count } } }".to_owned(),
        format!("{{ usage(from: \"{today}\", to: \"{today}\") {{ units }} }}"),
        "{ task(id: \"00000000-0000-0000-0000-000000000000\") { title } }".to_owned(),
    ] {
        let r = app.graphql(&owner, &q, Some(&pos)).await;
        assert_eq!(r.body["extensions"]["consistency"], "stale", "{q}: {}", r.body);
    }
    // Without the header nothing waits and nothing is marked.
    let r = app.graphql(&owner, "{ projects { totalCount } }", None).await;
    assert!(r.body.get("extensions").is_none_or(|e| e.get("consistency").is_none()));
    // A malformed token is a client error.
    let r = app.graphql(&owner, "{ projects { totalCount } }", Some("yesterday")).await;
    assert_eq!(r.status, 400);
    // A field that reads no projection does not wait.
    let r = app.graphql(&owner, "{ me { userId } }", Some(&pos)).await;
    assert!(r.body.get("extensions").is_none_or(|e| e.get("consistency").is_none()), "{}", r.body);
}

#[tokio::test]
async fn a_command_is_visible_to_the_next_graphql_read_through_a_real_port() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("e2e").await;
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Apollo", "description": "to the moon"})).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let pos = r.header("keel-position").unwrap().to_owned();
    let q = format!("{{ project(id: \"{id}\") {{ id name description status version }} }}");
    let g = app.graphql(&owner, &q, Some(&pos)).await;
    assert!(g.body.get("extensions").is_none_or(|e| e.get("consistency").is_none()), "{}", g.body);
    assert_eq!(
        g.body["data"]["project"],
        json!({"id": id, "name": "Apollo", "description": "to the moon", "status": "ACTIVE", "version": 1})
    );

    let r = app.patch(&format!("/api/v1/projects/{id}"), &owner, json!({"description": null})).await;
    let pos = r.header("keel-position").unwrap().to_owned();
    let r = app.post(&format!("/api/v1/projects/{id}/archive"), &owner, json!({})).await;
    let archived_pos = r.header("keel-position").unwrap().to_owned();
    assert!(pos != archived_pos);
    let g = app.graphql(&owner, &q, Some(&archived_pos)).await;
    assert_eq!(g.body["data"]["project"]["description"], json!(null));
    assert_eq!(g.body["data"]["project"]["status"], "ARCHIVED");
    assert_eq!(g.body["data"]["project"]["version"], 3);
}
