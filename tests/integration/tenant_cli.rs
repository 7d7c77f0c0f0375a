//! `keel tenant`: the control plane on the command line, the real binary against the test's
//! database, beside a server that provisions over REST for comparison.

use crate::helpers::{MASTER_KEY, TestApp, spawn_app};
use serde_json::{Value, json};
use std::process::Output;
use std::time::{Duration, Instant};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

async fn keel(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(KEEL)
        .args(["tenant"])
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env_remove("KEEL_CONFIG")
        .env("KEEL_LOG", "warn")
        .env("KEEL_DATA_DIR", std::env::temp_dir().join(format!("keel-tenant-cli-{}", std::process::id())))
        .output()
        .await
        .expect("keel runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `keel tenant ARGS`, expects success, returns stdout.
async fn ok(app: &TestApp, args: &[&str]) -> String {
    let out = keel(app, args).await;
    assert!(out.status.success(), "keel tenant {args:?}: {}\n{}", text(&out.stderr), text(&out.stdout));
    text(&out.stdout)
}

async fn ok_json(app: &TestApp, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ok(app, &a).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} prints JSON ({e}): {out}"))
}

/// Runs `keel tenant ARGS --json`, expects exit 1; returns the problem on stdout and stderr.
async fn refused(app: &TestApp, args: &[&str]) -> (Value, String) {
    let mut a = args.to_vec();
    a.push("--json");
    let out = keel(app, &a).await;
    assert_eq!(out.status.code(), Some(1), "keel tenant {args:?} fails: {}", text(&out.stdout));
    let problem = serde_json::from_str(&text(&out.stdout)).unwrap_or_else(|e| panic!("a problem ({e}): {out:?}"));
    (problem, text(&out.stderr))
}

/// The events of a tenant's own stream: (type, payload keys, actor).
async fn tenant_events(app: &TestApp, tenant: &str) -> Vec<(String, Vec<String>, String)> {
    let mut su = app.db.superuser().await;
    let rows: Vec<(String, Value, Value)> = sqlx::query_as(
        "SELECT event_type, payload, metadata FROM events WHERE tenant_id = $1::uuid AND stream_type = 'tenant'
          ORDER BY stream_version",
    )
    .bind(tenant)
    .fetch_all(&mut su)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, p, m)| {
            let mut keys: Vec<String> = p.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            keys.sort();
            (t, keys, m["actor"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

async fn wait_listed(app: &TestApp, slug: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = ok_json(app, &["list"]).await;
        if let Some(t) = list.as_array().unwrap().iter().find(|t| t["slug"] == slug) {
            return t.clone();
        }
        assert!(Instant::now() < deadline, "{slug} never reached the platform view: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_control_plane_on_the_command_line_runs_the_rest_commands() {
    let app = spawn_app().await;
    let platform = app.platform_token();

    // Create: the same validation as REST, naming the field.
    let owner = ["--owner-user", "alice", "--owner-email", "alice@acme.test"];
    let (bad_slug, stderr) =
        refused(&app, &[&["create", "--name", "Acme", "--slug", "Bad Slug!"][..], &owner[..]].concat()).await;
    assert!(stderr.contains("slug"), "the error names the field: {stderr}");
    let rest = app
        .post(
            "/api/v1/tenants",
            &platform,
            json!({"name": "Acme", "slug": "Bad Slug!", "plan": "free",
                   "owner": {"user_id": "alice", "email": "alice@acme.test", "name": "alice"}}),
        )
        .await;
    assert_eq!(bad_slug["status"].as_u64(), Some(rest.status as u64), "{bad_slug} vs {}", rest.body);
    assert_eq!(bad_slug["code"], rest.body["code"]);
    assert_eq!(bad_slug["errors"], rest.body["errors"]);
    assert!(bad_slug["errors"].as_array().unwrap().iter().any(|e| e["field"] == "slug"), "{bad_slug}");
    let (bad_plan, stderr) =
        refused(&app, &[&["create", "--name", "Acme", "--slug", "acme", "--plan", "gold"][..], &owner[..]].concat())
            .await;
    assert!(stderr.contains("plan"), "{stderr}");
    assert!(bad_plan["errors"].as_array().unwrap().iter().any(|e| e["field"] == "plan"), "{bad_plan}");

    let created =
        ok_json(&app, &[&["create", "--name", "Acme", "--slug", "acme", "--plan", "team"][..], &owner[..]].concat())
            .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["tenant"]["slug"], "acme");
    assert_eq!(created["tenant"]["plan"], "team");
    assert_eq!(created["tenant"]["status"], "active");
    // The slug is taken now, as over REST.
    let (taken, _) = refused(&app, &[&["create", "--name", "Acme 2", "--slug", "acme"][..], &owner[..]].concat()).await;
    assert!(taken["errors"].as_array().unwrap().iter().any(|e| e["field"] == "slug"), "{taken}");

    // Show by id, text and JSON; list (the platform view) text and JSON; then show by slug.
    let shown = ok(&app, &["show", &id]).await;
    assert!(shown.contains("slug             acme") && shown.contains("plan             team"), "{shown}");
    assert_eq!(ok_json(&app, &["show", &id]).await["tenant_id"], id.as_str());
    let listed = wait_listed(&app, "acme").await;
    assert_eq!(listed["tenant_id"], id.as_str());
    let list = ok(&app, &["list"]).await;
    assert!(list.lines().any(|l| l.starts_with(&id) && l.contains("acme") && l.contains("team")), "{list}");
    assert_eq!(ok_json(&app, &["show", "acme"]).await["tenant_id"], id.as_str());
    let missing = keel(&app, &["show", "no-such-tenant"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no-such-tenant"), "{}", text(&missing.stderr));

    // A downgrade that does not fit is refused, as over REST.
    let owner_token = app.token(keel_domain::TenantId(id.parse().unwrap()), "alice");
    for n in 0..4 {
        let r = app.create_project(&owner_token, &format!("p{n}")).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let (down, stderr) = refused(&app, &["plan", "acme", "free"]).await;
    let rest = app.put(&format!("/api/v1/tenants/{id}/plan"), &platform, json!({"plan": "free"})).await;
    assert_eq!(down["code"], rest.body["code"], "{down} vs {}", rest.body);
    assert_eq!(down["status"].as_u64(), Some(rest.status as u64));
    assert!(stderr.contains(down["detail"].as_str().unwrap()), "the detail is printed: {stderr}");
    let up = ok_json(&app, &["plan", &id, "enterprise"]).await;
    assert_eq!(up["tenant"]["plan"], "enterprise");

    // Suspend by id, reactivate by slug, suspend and erase.
    let s = ok_json(&app, &["suspend", &id, "--reason", "unpaid"]).await;
    assert_eq!(s["tenant"]["status"], "suspended");
    let r = app.post("/api/v1/projects", &owner_token, json!({"name": "while suspended"})).await;
    assert_eq!(r.status, 423, "a suspended tenant takes no writes: {}", r.body);
    let r = ok_json(&app, &["reactivate", "acme"]).await;
    assert_eq!(r["tenant"]["status"], "active");
    app.create_project(&owner_token, "p-after").await;
    let e = ok(&app, &["erase", "acme"]).await;
    assert!(e.contains("status           erased"), "{e}");

    // The same commands over REST on a tenant of their own write the same events.
    let (rest_tenant, _) = app.provision("rest-one").await;
    let rid = rest_tenant.0.to_string();
    for (path, body) in [
        ("plan", json!({"plan": "enterprise"})),
        ("suspend", json!({"reason": "unpaid"})),
        ("reactivate", Value::Null),
        ("erase", Value::Null),
    ] {
        let r = if path == "plan" {
            app.put(&format!("/api/v1/tenants/{rid}/plan"), &platform, body).await
        } else {
            let b = (!body.is_null()).then_some(body);
            app.send(reqwest::Method::POST, &format!("/api/v1/tenants/{rid}/{path}"), Some(&platform), b).await
        };
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let cli_events = tenant_events(&app, &id).await;
    let rest_events = tenant_events(&app, &rid).await;
    let shape =
        |v: &[(String, Vec<String>, String)]| v.iter().map(|(t, k, _)| (t.clone(), k.clone())).collect::<Vec<_>>();
    assert_eq!(shape(&cli_events), shape(&rest_events), "same types, same payload shape");
    assert!(cli_events.iter().any(|(t, _, _)| t == "TenantErased"), "{cli_events:?}");
    for (_, _, actor) in &cli_events {
        assert!(actor.starts_with("platform:cli:"), "the CLI operator is the actor: {actor}");
    }
}
