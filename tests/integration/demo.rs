//! Demo data (`keel up --demo`, `keel demo seed`): written through the command path with past
//! times and marked as demo data, shown by the projections and GraphQL, idempotent, verifiable,
//! invisible to other tenants; and the REST API never back-dates.

use crate::helpers::{MASTER_KEY, SECRET, TestApp, spawn_app};
use chrono::{Duration, Utc};
use keel_command::demo::{self as cmd_demo, DemoCall, DemoCommand};
use keel_domain::tenant::{OwnerInput, ProvisionTenant};
use keel_domain::{MemberId, TenantId};
use serde_json::{Value, json};
use sqlx::Row;
use std::time::Instant;
use uuid::Uuid;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

const DASHBOARD: &str = "{ dashboard { tasksByStatus { todo inProgress done total } overdueTasks activeProjects \
     memberCount usage { units quota } completedPerDay(days: 56) { date count } } \
     active: projects(filter: {status: ACTIVE}) { totalCount } \
     archived: projects(filter: {status: ARCHIVED}) { totalCount } }";

/// Polls the dashboard until the projections show every seeded task, the usage and the archives.
async fn settled_dashboard(app: &TestApp, token: &str) -> Value {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = app.graphql(token, DASHBOARD, None).await;
        assert!(r.body["errors"].is_null(), "{}", r.body);
        let d = &r.body["data"];
        let total = d["dashboard"]["tasksByStatus"]["total"].as_i64().unwrap_or(0);
        let done: i64 =
            d["dashboard"]["completedPerDay"].as_array().unwrap().iter().map(|c| c["count"].as_i64().unwrap()).sum();
        let dashboard_done = d["dashboard"]["tasksByStatus"]["done"].as_i64().unwrap_or(-1);
        if total == keel::demo::TASKS as i64 && done == dashboard_done && d["archived"]["totalCount"] == 3 {
            return d.clone();
        }
        assert!(Instant::now() < deadline, "projections did not catch up: {d}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn count(app: &TestApp, sql: &str, tenant: Uuid) -> i64 {
    let mut su = app.db.superuser().await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).bind(tenant).fetch_one(&mut su).await.unwrap()
}

#[tokio::test]
async fn demo_seed_fills_the_dashboard_through_the_command_path_once() {
    let app = spawn_app().await;
    let store = app.db.store.clone();
    // A tenant beside it, provisioned before and written to after the seed.
    let (other, other_owner) = app.provision_on("acme", "team").await;
    assert!(keel::demo::owner_user(&store).await.unwrap().is_none(), "no demo tenant yet");

    let started = Instant::now();
    let report = keel::demo::seed(&store, Utc::now()).await.unwrap();
    let took = started.elapsed();
    eprintln!("demo seed: {} commands in {:.2} s", report.commands, took.as_secs_f64());
    assert!(!report.already_seeded);
    let tenant = report.tenant;
    assert_eq!(tenant, cmd_demo::tenant_id());
    let (owner_tenant, owner_user) = keel::demo::owner_user(&store).await.unwrap().expect("the demo owner");
    assert_eq!((owner_tenant, owner_user.as_str()), (tenant, "demo-owner"));
    app.create_project(&other_owner, "Acme's own").await;

    // The control plane: team plan, slug demo, a member of every role within the seats.
    let mut su = app.db.superuser().await;
    let row = sqlx::query("SELECT slug, plan, seats_used, active_projects FROM tenants WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("slug"), "demo");
    assert_eq!(row.get::<String, _>("plan"), "team");
    assert!(row.get::<i32, _>("seats_used") <= 25);
    assert_eq!(row.get::<i32, _>("active_projects"), 9);
    for role in ["owner", "admin", "member", "viewer", "auditor"] {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM memberships WHERE tenant_id = $1 AND role = $2 AND status = 'active'",
        )
        .bind(tenant.0)
        .bind(role)
        .fetch_one(&mut su)
        .await
        .unwrap();
        assert!(n >= 1, "no active {role}");
    }

    // Every demo event is marked and dated in the past; no other tenant's event is.
    let events = count(&app, "SELECT count(*) FROM events WHERE tenant_id = $1", tenant.0).await;
    let marked =
        count(&app, "SELECT count(*) FROM events WHERE tenant_id = $1 AND metadata->'demo' = 'true'::jsonb", tenant.0)
            .await;
    assert_eq!(events, marked, "every demo event carries demo: true");
    assert!(events >= 600, "{events} events");
    let old = count(
        &app,
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND recorded_at < now() - interval '30 days'",
        tenant.0,
    )
    .await;
    assert!(old > 100, "history lies in the past: {old}");
    let others_marked =
        count(&app, "SELECT count(*) FROM events WHERE tenant_id <> $1 AND metadata ? 'demo'", tenant.0).await;
    assert_eq!(others_marked, 0, "no other tenant's event is marked");
    let others = count(&app, "SELECT count(*) FROM events WHERE tenant_id = $1", other.0).await;
    assert!(others >= 3);

    // GraphQL through the real router with the demo owner's token.
    let tokens = keel::demo::tokens(&app.auth, std::time::Duration::from_secs(600));
    let roles: Vec<&str> = tokens.iter().map(|(r, _, _)| *r).collect();
    assert_eq!(roles, ["owner", "admin", "member", "viewer", "auditor"]);
    let owner = &tokens[0].2;
    let d = settled_dashboard(&app, owner).await;
    let dash = &d["dashboard"];
    eprintln!("demo dashboard: {dash}");
    assert!(dash["tasksByStatus"]["total"].as_i64().unwrap() >= 200);
    assert!(dash["tasksByStatus"]["done"].as_i64().unwrap() >= 100);
    assert!(dash["tasksByStatus"]["inProgress"].as_i64().unwrap() >= 10);
    assert!(dash["overdueTasks"].as_i64().unwrap() >= 1, "some tasks are overdue: {dash}");
    assert_eq!(dash["activeProjects"], 9);
    assert_eq!(d["active"]["totalCount"], 9);
    assert_eq!(d["archived"]["totalCount"], 3);
    assert!(dash["memberCount"].as_i64().unwrap() >= 5);
    let days = dash["completedPerDay"].as_array().unwrap();
    assert_eq!(days.len(), 56);
    let busy = days.iter().filter(|c| c["count"].as_i64().unwrap() > 0).count();
    assert!(busy >= 20, "completions on {busy} distinct days");
    let today = Utc::now().date_naive();
    let last = days.iter().filter(|c| c["count"].as_i64().unwrap() > 0).map(|c| c["date"].as_str().unwrap()).max();
    assert!(last.unwrap() < today.to_string().as_str(), "completions are on past days");
    assert_eq!(dash["usage"]["quota"], 1_000_000);

    // Usage on several metrics and days.
    let from = (today - Duration::days(60)).to_string();
    let q = format!(r#"{{ usage(from: "{from}", to: "{today}") {{ date metric units }} }}"#);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        // The usage projection catches up on its own: every day of every metric once it has.
        let r = app.graphql(owner, &q, None).await;
        assert!(r.body["errors"].is_null(), "{}", r.body);
        if r.body["data"]["usage"].as_array().unwrap().len() >= keel::demo::DAYS as usize * 4 {
            break r.body;
        }
        assert!(Instant::now() < deadline, "the usage projection did not catch up: {}", r.body);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let usage = body["data"]["usage"].as_array().unwrap();
    let metrics: std::collections::BTreeSet<&str> = usage.iter().map(|u| u["metric"].as_str().unwrap()).collect();
    let dates: std::collections::BTreeSet<&str> = usage.iter().map(|u| u["date"].as_str().unwrap()).collect();
    assert!(metrics.len() >= 4 && dates.len() >= 50, "{} metrics over {} days", metrics.len(), dates.len());

    // Every role's token works; the audit history is there for the auditor.
    for (role, _, token) in &tokens {
        let r = app.graphql(token, "{ dashboard { memberCount } }", None).await;
        assert!(r.body["errors"].is_null(), "{role}: {}", r.body);
    }
    let auditor = &tokens.iter().find(|(r, _, _)| *r == "auditor").unwrap().2;
    let r = app.graphql(auditor, "{ events(first: 1) { totalCount edges { node { actor metadata } } } }", None).await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
    assert_eq!(r.body["data"]["events"]["totalCount"], events);
    assert_eq!(r.body["data"]["events"]["edges"][0]["node"]["metadata"]["demo"], true);

    // Cross-tenant: the tenant beside it sees none of it.
    let r =
        app.graphql(&other_owner, "{ dashboard { tasksByStatus { total } activeProjects memberCount } }", None).await;
    assert_eq!(r.body["data"]["dashboard"]["tasksByStatus"]["total"], 0, "{}", r.body);
    assert_eq!(r.body["data"]["dashboard"]["memberCount"], 1, "{}", r.body);
    let demo_project = cmd_demo::id("project/0");
    let r = app
        .graphql(
            &other_owner,
            &format!(r#"{{ project(id: "{demo_project}") {{ name }} events {{ totalCount }} }}"#),
            None,
        )
        .await;
    assert!(r.body["data"]["project"].is_null(), "{}", r.body);
    assert_eq!(r.body["data"]["events"]["totalCount"], others);
    // Twice: nothing more.
    let again = keel::demo::seed(&store, Utc::now()).await.unwrap();
    assert!(again.already_seeded);
    assert_eq!(count(&app, "SELECT count(*) FROM events WHERE tenant_id = $1", tenant.0).await, events);
    // A command of the seed repeated (as a resumed run would) replays its idempotency key.
    let project = keel_domain::ProjectId(demo_project);
    let create = keel_domain::project::ProjectCommand::Create {
        project_id: project,
        name: "Website redesign".into(),
        description: None,
    };
    let repeat = cmd_demo::execute_at(
        &store,
        DemoCall {
            actor: "demo-owner".into(),
            key: "demo-seed:v1:project/0/create".into(),
            at: Utc::now() - Duration::days(3),
            command: DemoCommand::Project(project, create),
        },
    )
    .await;
    assert_eq!(repeat.unwrap(), cmd_demo::DemoOutcome::Replayed);
    assert_eq!(count(&app, "SELECT count(*) FROM events WHERE tenant_id = $1", tenant.0).await, events);

    // The hash chains hold (what `keel audit verify` checks).
    let mut conn = store.projector().raw().acquire().await.unwrap();
    let verified = keel_store::audit::verify(&mut conn, None, |_| {}).await.unwrap();
    assert!(verified.first_break.is_none(), "{:?}", verified.first_break);
    assert!(verified.events as i64 >= events);
}

#[tokio::test]
async fn the_demo_entry_point_acts_in_the_demo_tenant_only_and_rest_never_back_dates() {
    let app = spawn_app().await;
    // Provisioning any other tenant through the demo entry point is refused.
    let stranger = TenantId(Uuid::now_v7());
    let r = cmd_demo::execute_at(
        &app.db.store,
        DemoCall {
            actor: "demo-seed".into(),
            key: "x".into(),
            at: Utc::now() - Duration::days(30),
            command: DemoCommand::Provision(ProvisionTenant {
                tenant_id: stranger,
                owner_member_id: MemberId::new_v7(),
                name: "Stranger".into(),
                slug: "stranger".into(),
                plan: "team".into(),
                owner: OwnerInput { user_id: "s".into(), email: "s@example.test".into(), name: "S".into() },
            }),
        },
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(app.event_count().await, 0);

    // REST: a date in a header is ignored, one in the body refused; the event is dated now.
    let (tenant, owner) = app.provision("rest-now").await;
    let r = app
        .send_with(
            reqwest::Method::POST,
            "/api/v1/projects",
            &owner,
            Some(json!({"name": "Dated"})),
            &[
                ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
                ("x-keel-at", "2024-01-01T00:00:00Z"),
                ("x-keel-demo", "true"),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Dated", "at": "2024-01-01T00:00:00Z"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = app.post("/api/v1/projects", &owner, json!({"name": "Dated", "demo": true})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let mut su = app.db.superuser().await;
    let rows = sqlx::query("SELECT recorded_at, metadata, payload FROM events WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_all(&mut su)
        .await
        .unwrap();
    assert!(rows.len() >= 3);
    for row in rows {
        let at: chrono::DateTime<Utc> = row.get("recorded_at");
        assert!((Utc::now() - at).num_seconds().abs() < 120, "recorded now-ish: {at}");
        let metadata: Value = row.get("metadata");
        assert!(metadata.get("demo").is_none(), "{metadata}");
        let payload: Value = row.get("payload");
        if let Some(t) = payload.get("at").and_then(Value::as_str) {
            let t: chrono::DateTime<Utc> = t.parse().unwrap();
            assert!((Utc::now() - t).num_seconds().abs() < 120, "decided now-ish: {t}");
        }
    }
}

#[tokio::test]
async fn keel_demo_seed_runs_against_a_database_and_prints_working_tokens() {
    let app = spawn_app().await;
    let seed = || {
        std::process::Command::new(KEEL)
            .args(["demo", "seed", "--base-url", &app.base])
            .env("DATABASE_URL", &app.db.url)
            .env("KEEL_MASTER_KEY", MASTER_KEY)
            .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
            .env("KEEL_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = seed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("seeded"), "{text}");
    let tokens: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && ["owner", "admin", "member", "viewer", "auditor"].contains(&f[0]))
                .then(|| (f[0].to_owned(), f[2].to_owned()))
        })
        .collect();
    assert_eq!(tokens.len(), 5, "{text}");
    assert!(text.contains("completedPerDay(days: 56)") && text.contains("curl -s"), "{text}");
    for (role, token) in &tokens {
        // UNAVAILABLE is "retry shortly": the seed's load on the test's one thread can hold the
        // availability probe past its timeout.
        let deadline = Instant::now() + std::time::Duration::from_secs(15);
        let r = loop {
            let r = app.graphql(token, "{ dashboard { memberCount } }", None).await;
            if r.body["errors"][0]["extensions"]["code"] != "UNAVAILABLE" || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert!(r.body["errors"].is_null(), "{role}: {}", r.body);
    }
    let events = app.event_count().await;
    let again = seed();
    let text = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(again.status.success(), "{text}");
    assert!(text.contains("seeded before"), "{text}");
    assert_eq!(app.event_count().await, events);
    let verify = std::process::Command::new(KEEL)
        .args(["audit", "verify"])
        .env("DATABASE_URL", &app.db.url)
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[tokio::test]
async fn keel_up_demo_seeds_after_migrating_and_prints_the_demo_banner() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let db = crate::helpers::TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("keel-up-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = tokio::process::Command::new(KEEL)
        .args(["up", "--demo"])
        .env("DATABASE_URL", &db.url)
        .env("KEEL_DATA_DIR", &dir)
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("KEEL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.starts_with("Press Ctrl-C");
            banner.push(line);
            if done {
                return;
            }
        }
    })
    .await;
    let text = banner.join("\n");
    assert!(read.is_ok(), "keel up --demo printed its banner: {text}");
    assert!(text.contains(" is up.") && text.contains("Demo tenant `demo`") && text.contains("seeded"), "{text}");
    assert!(
        text.contains("act as demo-owner, owner of the demo tenant"),
        "the console's pages act as the demo owner: {text}"
    );
    let roles = banner.iter().filter(|l| l.trim_start().starts_with("auditor ")).count();
    assert_eq!(roles, 1, "{text}");
    // The seed went through the server's store: the demo owner exists.
    assert!(keel::demo::owner_user(&db.store).await.unwrap().is_some());
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
