//! Issue #15, points 5 and 6 against a real `keel serve` process: an incoming `traceparent` is
//! continued and the request's spans reach a real OTLP/HTTP receiver with their tenant; log lines
//! carry the trace and span ids; the per-tenant series of `/metrics` stay within N + 1 labels.

use crate::helpers::{MASTER_KEY, TestDb};
use axum::body::Bytes;
use axum::routing::post;
use keel_gateway::auth::Secret;
use keel_gateway::{Authenticator, JwtConfig};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// The request span of a JSON log line: the `spans` list holds it whatever span is current.
fn request_fields(line: &Value) -> Value {
    line["spans"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "request")).cloned().unwrap_or(Value::Null)
}
const SECRET: &str = "observability-secret-0123456789abcdef";

/// An OTLP/HTTP (protobuf) receiver on a loopback port: every span it is sent, kept.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
                let mut k = kept.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        k.extend(ss.spans);
                    }
                }
                ([("content-type", "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), spans)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    })
}

/// `keel serve` on a fresh port with `env` and this file's JWT secret.
async fn serve(db: &TestDb, log: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut all = vec![("KEEL_JWT_SECRET", SECRET)];
    all.extend_from_slice(env);
    crate::helpers::keel_serve(&db.url, log, &all).await
}

fn token(tenant: uuid::Uuid, user: &str) -> String {
    let auth = Authenticator::hs256(JwtConfig::hs256(Secret::new(SECRET.as_bytes().to_vec())));
    auth.issue(user, Some(tenant), false, Duration::from_secs(600))
}

#[tokio::test]
async fn a_request_is_traced_end_to_end_and_its_log_lines_carry_the_trace() {
    let db = TestDb::new().await;
    let tenant = db.provision("traced", "olive").await;
    let (otlp, spans) = receiver().await;
    let dir = std::env::temp_dir().join(format!("keel-otlp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serve.log");
    // The endpoint without a path: Keel sends to its standard `/v1/traces`.
    let (mut child, addr) = serve(
        &db,
        &log,
        &[("KEEL_LOG_FORMAT", "json"), ("KEEL_OTLP_ENDPOINT", &otlp), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    )
    .await;
    let client = reqwest::Client::new();
    let token = token(tenant.0, "olive");

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = client
        .post(format!("http://{addr}/api/v1/projects"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .header("x-request-id", "traced-request-1")
        .json(&json!({"name": "Traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let answered = r.headers()["traceresponse"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[1], parts[3]), (4, "00", trace, "01"), "{answered}");
    let request_span = parts[2].to_owned();
    assert_eq!(request_span.len(), 16);
    assert_ne!(request_span, parent, "the server's span is a child of the caller's");

    // Without a traceparent a new trace starts.
    let g = client
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "{ projects(first: 5) { edges { node { name } } } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(g.status().as_u16(), 200);
    let fresh = g.headers()["traceresponse"].to_str().unwrap().to_owned();
    assert!(fresh.starts_with("00-") && !fresh.contains(trace), "{fresh}");
    let fresh_trace = fresh.split('-').nth(1).unwrap().to_owned();

    // The spans arrive at the receiver.
    let want_trace = hex::decode(trace).unwrap();
    let want_fresh = hex::decode(&fresh_trace).unwrap();
    // A deadline, not a count of tries: under the whole suite's load an export can take a while.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        seen = spans.lock().unwrap().clone();
        let names: HashSet<&str> = seen.iter().filter(|s| s.trace_id == want_trace).map(|s| s.name.as_str()).collect();
        let resolvers = seen.iter().any(|s| s.trace_id == want_fresh && s.name == "resolver");
        let batches = seen.iter().any(|s| s.name == "projection_batch");
        if ["request", "load", "decide", "append"].iter().all(|n| names.contains(n)) && resolvers && batches {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let in_trace: Vec<&Span> = seen.iter().filter(|s| s.trace_id == want_trace).collect();
    let names: HashSet<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    for n in ["request", "load", "decide", "append"] {
        assert!(names.contains(n), "span {n} in the continued trace: {names:?}");
    }
    let request = in_trace.iter().find(|s| s.name == "request").unwrap();
    assert_eq!(hex::encode(&request.parent_span_id), parent, "the request span continues the caller's span");
    assert_eq!(hex::encode(&request.span_id), request_span, "traceresponse names the request span");
    assert_eq!(attr(request, "tenant_id").as_deref(), Some(tenant.0.to_string().as_str()), "{request:?}");
    assert_eq!(attr(request, "request_id").as_deref(), Some("traced-request-1"));
    let append = in_trace.iter().find(|s| s.name == "append").unwrap();
    let load = in_trace.iter().find(|s| s.name == "load").unwrap();
    assert!(append.parent_span_id == request.span_id || in_trace.iter().any(|s| s.span_id == append.parent_span_id));
    assert!(load.start_time_unix_nano <= append.start_time_unix_nano);
    let resolvers: Vec<String> = seen
        .iter()
        .filter(|s| s.trace_id == want_fresh && s.name == "resolver")
        .filter_map(|s| attr(s, "graphql.field"))
        .collect();
    assert!(!resolvers.iter().any(|f| f.starts_with("ProjectConnection")), "no span for edges: {resolvers:?}");
    let resolver = seen.iter().find(|s| {
        s.trace_id == want_fresh
            && s.name == "resolver"
            && attr(s, "graphql.field").as_deref() == Some("Query.projects")
    });
    let resolver = resolver.unwrap_or_else(|| {
        let all: Vec<(String, &str)> = seen.iter().map(|s| (hex::encode(&s.trace_id), s.name.as_str())).collect();
        panic!("a resolver span in the GraphQL trace {fresh_trace}: {resolvers:?} {all:?}")
    });
    assert_eq!(attr(resolver, "graphql.field").as_deref(), Some("Query.projects"));
    assert!(seen.iter().any(|s| s.name == "projection_batch"), "a projection batch span");

    // The append's latency is measured.
    let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("keel_append_duration_seconds_count ")), "{metrics}");

    // Every line logged inside the request carries its request id beside the trace and span ids.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| request_fields(v)["request_id"] == "traced-request-1")
        .collect();
    assert!(!lines.is_empty(), "the request logged lines:\n{text}");
    for l in &lines {
        let r = request_fields(l);
        assert_eq!(r["trace_id"], trace, "{l}");
        assert_eq!(r["span_id"], request_span.as_str(), "{l}");
        assert_eq!(r["tenant_id"], tenant.0.to_string(), "{l}");
        assert_eq!(r["actor"], "user:olive", "{l}");
    }
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn pretty_log_lines_carry_the_trace_too() {
    let db = TestDb::new().await;
    let tenant = db.provision("pretty", "pia").await;
    let dir = std::env::temp_dir().join(format!("keel-pretty-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pretty = dir.join("pretty.log");
    let mut cmd = Command::new(KEEL);
    cmd.arg("serve")
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env("DATABASE_URL", &db.url)
        .env("KEEL_JWT_SECRET", SECRET)
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .env("KEEL_LOG", "info")
        .env("KEEL_LOG_FORMAT", "pretty")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&pretty).unwrap()))
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut addr = None;
    for _ in 0..240 {
        let text = std::fs::read_to_string(&pretty).unwrap_or_default();
        addr = text.lines().find(|l| l.contains("serving")).and_then(|l| {
            let at = l.find("addr=")? + 5;
            Some(l[at..].split_whitespace().next()?.to_owned())
        });
        if addr.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let addr = addr.unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&pretty).unwrap()));
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/projects/{}", uuid::Uuid::new_v4()))
        .bearer_auth(token(tenant.0, "pia"))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .header("x-request-id", "pretty-request-1")
        .send()
        .await
        .unwrap();
    let baseline = r.status().as_u16();
    let span = r.headers()["traceresponse"].to_str().unwrap().split('-').nth(2).unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&pretty).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("request_id=pretty-request-1")).collect();
    assert!(!lines.is_empty(), "{text}");
    for l in lines {
        assert!(l.contains(&format!("trace_id={trace}")) && l.contains(&format!("span_id={span}")), "{l}");
    }
    // A malformed or invalid traceparent is not continued: a new trace starts, the request is
    // answered as any other.
    let long = format!("00-{}-b7ad6b7169203331-01", "a".repeat(4000));
    for bad in [
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        long.as_str(),
    ] {
        let r = reqwest::Client::new()
            .get(format!("http://{addr}/api/v1/projects/{}", uuid::Uuid::new_v4()))
            .bearer_auth(token(tenant.0, "pia"))
            .header("traceparent", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), baseline, "{bad}");
        let answered = r.headers()["traceresponse"].to_str().unwrap().to_owned();
        let t = answered.split('-').nth(1).unwrap();
        assert!(t.len() == 32 && t != "0".repeat(32) && !bad.to_lowercase().contains(t), "{bad}: {answered}");
    }
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn per_tenant_series_stay_within_n_plus_one_labels() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("keel-tenants-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serve.log");
    const N: usize = 3;
    let (mut child, addr) =
        serve(&db, &log, &[("KEEL_LOG_FORMAT", "json"), ("KEEL_METRICS_TENANTS", &N.to_string())]).await;
    let client = reqwest::Client::new();
    let mut tenants = Vec::new();
    for i in 0..N + 5 {
        let t = db.provision(&format!("busy-{i}"), &format!("user{i}")).await;
        tenants.push(t);
        let token = token(t.0, &format!("user{i}"));
        for _ in 0..2 {
            let r = client
                .post(format!("http://{addr}/graphql"))
                .bearer_auth(&token)
                .json(&json!({"query": "{ projects(first: 1) { edges { node { name } } } }"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    }
    let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let labels = tenant_labels(&metrics);
    assert_eq!(labels.len(), N + 1, "{N} tenants and `other`: {labels:?}");
    assert!(labels.contains("other"));
    for t in &tenants[..N] {
        assert!(labels.contains(&t.0.to_string()), "the first {N} tenants have their own series");
    }
    // `other` counted the 5 tenants after them: 2 requests each.
    let other = metrics
        .lines()
        .find(|l| l.starts_with("keel_tenant_requests_total{") && l.contains("tenant=\"other\""))
        .unwrap();
    assert!(other.ends_with(" 10"), "{other}");
    assert!(metrics.contains("# HELP keel_tenant_requests_total"));
    assert!(metrics.contains("keel_db_acquire_seconds_bucket{pool=\"reader\""), "acquire waits are measured");
    assert!(metrics.contains("keel_db_acquire_seconds_bucket{pool=\"projector\""), "the projection workers' waits too");
    assert!(metrics.contains("keel_db_pool_in_use_connections{pool=\"writer\"}"));
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_platform_view_gives_each_tenants_usage_to_operators_only() {
    let app = crate::helpers::spawn_app().await;
    let (big, big_owner) = app.provision("heavy").await;
    let (small, small_owner) = app.provision("light").await;
    for i in 0..3 {
        app.create_project(&big_owner, &format!("Heavy project with a longer name, number {i}")).await;
    }
    app.create_project(&small_owner, "Light").await;
    let q =
        "{ platform { tenantUsage(first: 10) { tenantId requests eventsAppended storageBytes measuredSecondsAgo } } }";
    let r = app.graphql(&app.platform_token(), q, None).await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
    let rows = r.body["data"]["platform"]["tenantUsage"].as_array().unwrap().clone();
    let row = |t: keel_domain::TenantId| rows.iter().find(|x| x["tenantId"] == t.0.to_string()).cloned().unwrap();
    let (b, s) = (row(big), row(small));
    // Provision (tenant + owner events) and 3 projects against 1.
    assert!(b["eventsAppended"].as_i64().unwrap() >= s["eventsAppended"].as_i64().unwrap() + 2, "{b} {s}");
    assert!(b["storageBytes"].as_i64().unwrap() > s["storageBytes"].as_i64().unwrap(), "{b} {s}");
    assert!(s["storageBytes"].as_i64().unwrap() > 0);
    assert!(b["requests"].as_i64().unwrap() >= 3 && s["requests"].as_i64().unwrap() >= 1, "{b} {s}");
    // Largest storage first.
    assert_eq!(rows[0]["tenantId"], big.0.to_string(), "{rows:?}");

    // A tenant's token — even an owner's — reads no other tenant's usage, nor its own through here.
    let r = app.graphql(&small_owner, q, None).await;
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{}", r.body);
    assert!(r.body["data"].is_null() || r.body["data"]["platform"].is_null(), "{}", r.body);
    assert!(!r.body.to_string().contains(&big.0.to_string()), "{}", r.body);

    // Hostile values of `first` are refused, naming the argument.
    for first in ["0", "-1", "101", "2147483647", "-2147483648"] {
        let q = format!("{{ platform {{ tenantUsage(first: {first}) {{ tenantId }} }} }}");
        let r = app.graphql(&app.platform_token(), &q, None).await;
        assert_eq!(r.body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{first}: {}", r.body);
        assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("first"), "{}", r.body);
    }
    for first in ["\"10\"", "1.5", "99999999999", "null"] {
        let q = format!("{{ platform {{ tenantUsage(first: {first}) {{ tenantId }} }} }}");
        let r = app.graphql(&app.platform_token(), &q, None).await;
        assert!(!r.body["errors"].is_null(), "{first}: {}", r.body);
        assert!(!r.body.to_string().contains("internal"), "{first}: {}", r.body);
    }
}

#[tokio::test]
async fn a_statement_timeout_is_logged_with_the_request_id_and_counted() {
    let db = TestDb::new().await;
    let tenant = db.provision("timeouts", "tia").await;
    let dir = std::env::temp_dir().join(format!("keel-timeouts-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serve.log");
    let (mut child, addr) =
        serve(&db, &log, &[("KEEL_LOG_FORMAT", "json"), ("KEEL_DB_READER_STATEMENT_TIMEOUT_MS", "300")]).await;
    let mut blocker = db.superuser().await;
    sqlx::Executor::execute(&mut blocker, "BEGIN; LOCK TABLE rm_projects IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(token(tenant.0, "tia"))
        .header("x-request-id", "slow-query-1")
        .json(&json!({"query": "{ projects(first: 1) { edges { node { name } } } }"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    sqlx::Executor::execute(&mut blocker, "ROLLBACK").await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "DEPENDENCY_TIMEOUT", "{body}");
    let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "keel_requests_timed_out_total{cause=\"statement_timeout\"} 1"), "{metrics}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"].as_str().is_some_and(|m| m.contains("statement_timeout")))
        .unwrap_or_else(|| panic!("the timeout is logged:\n{text}"));
    assert_eq!(line["level"], "WARN", "{line}");
    let r = request_fields(&line);
    assert_eq!(r["request_id"], "slow-query-1", "{line}");
    assert_eq!(r["tenant_id"], tenant.0.to_string(), "{line}");
    assert!(r["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{line}");
    assert!(r["span_id"].as_str().is_some_and(|t| t.len() == 16), "{line}");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The labelled tenants are the busiest of the last window, not the first seen: tenants that
/// start quietly and then carry the traffic take the labels at the next ranking, and the series of
/// the tenants they displaced are dropped once idle for two windows, so the label values stay
/// bounded while following the load.
#[tokio::test]
async fn per_tenant_labels_follow_the_busiest_tenants() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("keel-busiest-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serve.log");
    let env = [("KEEL_LOG_FORMAT", "json"), ("KEEL_METRICS_TENANTS", "2"), ("KEEL_METRICS_RANK_SECS", "1")];
    let (mut child, addr) = serve(&db, &log, &env).await;
    let client = reqwest::Client::new();
    let mut tokens = Vec::new();
    for i in 0..4 {
        let t = db.provision(&format!("rank-{i}"), &format!("user{i}")).await;
        tokens.push((t, token(t.0, &format!("user{i}"))));
    }
    let hit = |i: usize| {
        let (client, token, url) = (client.clone(), tokens[i].1.clone(), format!("http://{addr}/graphql"));
        async move {
            let r = client
                .post(url)
                .bearer_auth(&token)
                .json(&json!({"query": "{ projects(first: 1) { totalCount } }"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    let labels = || async {
        let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        tenant_labels(&metrics)
    };
    let id = |i: usize| tokens[i].0.0.to_string();
    // The first window: the two free places go to the first two tenants seen.
    for i in 0..4 {
        hit(i).await;
    }
    let first = labels().await;
    assert!(first.contains(&id(0)) && first.contains(&id(1)) && first.contains("other"), "{first:?}");
    // Tenants 2 and 3 carry the traffic of this window; at the next ranking they are the busiest.
    for _ in 0..5 {
        hit(2).await;
        hit(3).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Only they send traffic from now on, for longer than two windows.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(3500);
    while std::time::Instant::now() < until {
        hit(2).await;
        hit(3).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let now = labels().await;
    assert!(now.contains(&id(2)) && now.contains(&id(3)), "the busiest tenants have their own series: {now:?}");
    assert!(
        !now.contains(&id(0)) && !now.contains(&id(1)),
        "the displaced tenants' series are gone once idle for two windows: {now:?}"
    );
    assert!(now.len() <= 2 * 3 + 1, "{now:?}");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The values of the `tenant` label on `keel_tenant_requests_total` in a `/metrics` page.
fn tenant_labels(metrics: &str) -> HashSet<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("keel_tenant_requests_total{"))
        .filter_map(|l| l.split("tenant=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned))
        .collect()
}
