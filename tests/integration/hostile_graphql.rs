//! What hostile GraphQL clients tried (issue 12), each refused cheaply with a GraphQL error while
//! Keel keeps answering: deep input values, fragment bombs, wide aliases, huge bodies, slow
//! requests, malformed GraphQL-over-HTTP requests; and standard introspection loads the schema.

use crate::helpers::{Options, spawn_app, spawn_app_with};
use crate::subscriptions::{next_json, subscribe};
use keel::EdgeLimits;
use serde_json::{Value, json};
use sqlx::Connection;
use std::time::Duration;
use uuid::Uuid;

async fn post_raw(app: &crate::helpers::TestApp, token: &str, body: String) -> (u16, String, Value) {
    let r = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, ct, body)
}

async fn healthy(app: &crate::helpers::TestApp) {
    let h = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(h.status, 200, "Keel still answers");
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn an_input_value_nested_100000_deep_is_refused_over_http_and_websocket() {
    let app = spawn_app().await;
    // A token for a tenant nobody is a member of: no membership is needed to send a document.
    let stranger = app.auth.issue("nobody", Some(Uuid::now_v7()), false, Duration::from_secs(600));
    let deep = format!("{{ project(id: {}\"x\"{}) {{ name }} }}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _, body) = post_raw(&app, &stranger, json!({ "query": deep }).to_string()).await;
    assert_eq!(
        (status, code(&body)),
        (200, "QUERY_TOO_COMPLEX"),
        "{}",
        &body.to_string()[..200.min(body.to_string().len())]
    );
    healthy(&app).await;

    // The same document as a subscription operation over graphql-transport-ws.
    let mut ws = subscribe(&app, &stranger, &deep).await;
    let answer = next_json(&mut ws, Duration::from_secs(10)).await.expect("an answer on the socket");
    assert!(answer.to_string().contains("QUERY_TOO_COMPLEX"), "{answer}");
    healthy(&app).await;
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_before_it_is_expanded() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("bomb").await;
    // Ten fragments a level, each spreading all ten of the next level, eight levels deep:
    // 640 bytes that expand to 10^8 fields.
    let mut q = String::from("{ ...A0 }\n");
    for level in 0..8 {
        for f in 0..10 {
            let spreads: String = (0..10).map(|g| format!("...{}{} ", (b'A' + g) as char, level + 1)).collect();
            q.push_str(&format!("fragment {}{level} on Query {{ {spreads}}}\n", (b'A' + f) as char));
        }
    }
    for f in 0..10 {
        q.push_str(&format!("fragment {}8 on Query {{ __typename }}\n", (b'A' + f) as char));
    }
    let r = app.graphql(&owner, &q, None).await;
    assert_eq!(code(&r.body), "QUERY_TOO_COMPLEX", "{}", r.body);
    assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("fragments are expanded"), "{}", r.body);
    // Found by the fuzz: one fragment spread eight times a level, ten levels (8^10). It took
    // 289 s in async-graphql's own recursion-depth check, which walks every expansion.
    let mut q = String::from("{ ...F0 }\n");
    for l in 0..10 {
        q.push_str(&format!("fragment F{l} on Query {{ me {{ userId }} {}}}\n", format!("...F{} ", l + 1).repeat(8)));
    }
    q.push_str("fragment F10 on Query { dashboard { overdueTasks } }\n");
    let r = app.graphql(&owner, &q, None).await;
    assert_eq!(code(&r.body), "QUERY_TOO_COMPLEX", "{}", r.body);
    healthy(&app).await;
}

#[tokio::test]
async fn complexity_counts_items_a_connection_may_return_and_the_body_is_bounded() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("wide").await;
    let one = "projects(first: 100) { edges { node { name description } } }";
    // 30 aliases: 150 fields, but up to 3,000 projects of 4 fields each.
    let aliases: String = (0..30).map(|i| format!("a{i}: {one} ")).collect();
    let r = app.graphql(&owner, &format!("{{ {aliases} }}"), None).await;
    assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("too complex"), "{}", r.body);
    assert!(r.body["data"].is_null());
    // One page of the same shape is fine.
    let r = app.graphql(&owner, &format!("{{ {one} }}"), None).await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
    // 300 KB of whitespace and a query: over the 256 KiB body limit.
    let big = json!({ "query": format!("{}{{ me {{ userId }} }}", " ".repeat(300_000)) }).to_string();
    let (status, ct, body) = post_raw(&app, &owner, big).await;
    assert_eq!((status, code(&body)), (413, "PAYLOAD_TOO_LARGE"), "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
}

/// graphql-js `getIntrospectionQuery()` (v16, descriptions on), as Apollo tooling and GraphiQL send it.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType {
  kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}
"#;

#[tokio::test]
async fn standard_introspection_loads_the_schema_while_deep_data_queries_stay_refused() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("intro").await;
    let r = app.graphql(&owner, INTROSPECTION, None).await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
    let types = r.body["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Project"), "the schema's types are there");
    assert_eq!(r.body["data"]["__schema"]["subscriptionType"]["name"], "Subscription");
    // Introspection beside a data field is a data query: held to depth and complexity.
    let mixed = INTROSPECTION.replacen("__schema {", "projects { totalCount } __schema {", 1);
    let r = app.graphql(&owner, &mixed, None).await;
    assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{}", r.body);
}

#[tokio::test]
async fn graphql_over_http_malformed_requests_get_json_errors_never_debug_text() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("over-http").await;
    for (body, want) in [
        ("{not json", "not valid JSON"),
        (r#"{"query": null}"#, "query must be a string"),
        (r#"[{"query": "{ me { userId } }"}]"#, "batched requests are not supported"),
        (r#"{"query": "{ me { userId } }", "variables": [1]}"#, "variables must be an object"),
        (r#""just a string""#, "must be a JSON object"),
    ] {
        let (status, ct, r) = post_raw(&app, &owner, body.into()).await;
        assert_eq!((status, code(&r)), (400, "BAD_REQUEST"), "{body}: {r}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains(want), "{body}: {r}");
        assert!(ct.starts_with("application/json"), "{ct}");
        let text = r.to_string();
        assert!(!text.contains("InvalidRequest") && !text.contains("Error("), "{text}");
    }
    let form = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(&owner)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("query=%7B%20me%20%7B%20userId%20%7D%20%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let r: Value = form.json().await.unwrap();
    assert_eq!(code(&r), "UNSUPPORTED_MEDIA_TYPE");

    // GET executes queries with Accept: application/json, never GraphiQL.
    let get = |q: &str, accept: &str| {
        app.client
            .get(format!("{}/graphql", app.base))
            .query(&[("query", q)])
            .bearer_auth(&owner)
            .header("accept", accept)
            .send()
    };
    let r = get("{ me { userId } }", "application/json").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["me"]["userId"], "owner-over-http");
    let r = get("mutation { nothing }", "application/json").await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "METHOD_NOT_ALLOWED");

    // application/graphql-response+json: its content type, and 400 for a document that cannot run.
    let post = |q: &str, accept: &'static str| {
        app.client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&owner)
            .header("accept", accept)
            .json(&json!({ "query": q }))
            .send()
    };
    let r = post("{ me { userId } }", "application/graphql-response+json").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/graphql-response+json");
    let r = post("{ noSuchField }", "application/graphql-response+json").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "GRAPHQL_VALIDATION_FAILED", "{v}");
    let r = post("{ noSuchField }", "application/json").await.unwrap();
    assert_eq!(r.status(), 200, "application/json answers 200 for a well-formed request");
    let r = post("{ me { userId } }", "text/plain").await.unwrap();
    assert_eq!(r.status(), 406);
}

#[tokio::test]
async fn requests_past_their_deadline_are_cancelled_with_503() {
    let limits = EdgeLimits { request_timeout: Duration::from_millis(300), ..EdgeLimits::default() };
    let app = spawn_app_with(Options { consistency_wait: Duration::from_secs(30), limits, ..Options::default() }).await;
    let (tenant, owner) = app.provision("deadline").await;
    // A consistency token no projection will reach keeps the query waiting past its deadline.
    let r = app.graphql(&owner, "{ projects { totalCount } }", Some("999999999.999999999")).await;
    assert_eq!((r.status, code(&r.body)), (503, "TIMEOUT"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));

    // A command blocked on the tenant row (locked by someone else) is cut at its deadline.
    let mut lock = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.0)
        .execute(&mut lock)
        .await
        .unwrap();
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Blocked"})).await;
    assert_eq!((r.status, r.body["code"].as_str()), (503, Some("timeout")), "{}", r.body);
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    // Nothing was half written: the cancelled command left no project.
    let r = app.graphql(&owner, "{ projects { totalCount } }", None).await;
    assert_eq!(r.body["data"]["projects"]["totalCount"], 0, "{}", r.body);
    healthy(&app).await;
}

#[tokio::test]
async fn shutdown_cancels_in_flight_work_after_its_deadline() {
    let limits = EdgeLimits {
        request_timeout: Duration::from_secs(120),
        shutdown_timeout: Duration::from_millis(500),
        ..EdgeLimits::default()
    };
    let mut app =
        spawn_app_with(Options { consistency_wait: Duration::from_secs(120), limits, ..Options::default() }).await;
    let (_, owner) = app.provision("shutdown").await;
    let client = app.client.clone();
    let url = format!("{}/graphql", app.base);
    // Waits two minutes for a position no projection reaches, unless cancelled.
    let slow = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(owner)
            .header("keel-consistency", "999999999.999999999")
            .json(&json!({"query": "{ projects { totalCount } }"}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(60), app.shut_down()).await;
    assert!(stopped.is_ok(), "run returned although a request was still in flight");
    stopped.unwrap().unwrap();
    let answer = slow.await.unwrap().expect("the cancelled request is answered");
    assert_eq!(answer.status(), 503);
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["code"], "shutting-down", "{v}");
}

#[tokio::test]
async fn text_arguments_with_a_nul_are_bad_input_not_internal_errors() {
    // Found by the GraphQL fuzz: these answered INTERNAL (PostgreSQL refuses U+0000).
    let app = spawn_app().await;
    let (_, owner) = app.provision("gql-nul").await;
    let nul_cursor = {
        use base64::Engine;
        let c = json!({"o": "projects:Name:false", "k": "a\u{0}b", "i": Uuid::now_v7()});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string())
    };
    for q in [
        r#"{ projects(filter: {search: "a\u0000b"}) { totalCount } }"#.to_owned(),
        r#"{ events(filter: {actor: "a\u0000b"}) { totalCount } }"#.to_owned(),
        r#"{ events(filter: {eventType: "a\u0000b", streamType: "x\u0000"}) { totalCount } }"#.to_owned(),
        r#"{ usage(metric: "a\u0000b", from: "2026-01-01", to: "2026-01-31") { units } }"#.to_owned(),
        format!(r#"{{ projects(after: "{nul_cursor}", orderBy: {{field: NAME}}) {{ totalCount }} }}"#),
    ] {
        let r = app.graphql(&owner, &q, None).await;
        assert_eq!(code(&r.body), "BAD_USER_INPUT", "{q}: {}", r.body);
    }
}

#[tokio::test]
async fn every_route_answers_an_unknown_method_with_problem_json_and_allow() {
    let app = spawn_app().await;
    for (method, path) in [
        (reqwest::Method::PUT, "/graphql"),
        (reqwest::Method::POST, "/healthz"),
        (reqwest::Method::DELETE, "/readyz"),
        (reqwest::Method::POST, "/metrics"),
        (reqwest::Method::POST, "/"),
        (reqwest::Method::DELETE, "/api/v1/docs"),
        (reqwest::Method::POST, "/graphql/schema.graphql"),
        (reqwest::Method::PUT, "/console/assets/keel/console.css"),
    ] {
        let r = app.send(method.clone(), path, None, None).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.body["code"], "method-not-allowed", "{method} {path}: {}", r.body);
        assert!(r.header("allow").is_some_and(|a| a.contains("GET")), "{method} {path}");
    }
}
