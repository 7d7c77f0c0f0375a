//! GDPR erasure and the master key (`docs/guarantees.md`, "Erasure"): personal data sealed per member, erased members and
//! tenants unreadable everywhere while the log stays and verifies, and key rotation.

use crate::helpers::{MASTER_KEY, SECRET, TestApp, TestDb, master_key, spawn_app};
use keel_domain::TenantId;
use keel_gateway::auth::Secret;
use keel_gateway::{Authenticator, JwtConfig};
use keel_store::{PoolSizes, Store, log};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};
use uuid::Uuid;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Every row of every table Keel has (public and rebuild schemas), as text, by a superuser.
async fn every_table_as_text(db: &TestDb) -> String {
    let mut su = db.superuser().await;
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_tables WHERE schemaname IN ('public', 'keel_rebuild')",
    )
    .fetch_all(&mut su)
    .await
    .unwrap();
    assert!(tables.len() > 15, "{tables:?}");
    let mut all = String::new();
    for (schema, table) in tables {
        let sql =
            format!("SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n'), '') FROM \"{schema}\".\"{table}\" t");
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut su).await.unwrap();
        all.push_str(&text);
        all.push('\n');
    }
    all
}

fn keel_cli(db: &TestDb, args: &[&str], key: &str) -> std::process::Output {
    std::process::Command::new(KEEL)
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("KEEL_MASTER_KEY", key)
        .env("KEEL_LOG", "warn")
        .output()
        .unwrap()
}

/// `keel serve` as a separate process, logging everything (debug, JSON) to a file.
struct Server {
    child: tokio::process::Child,
    base: String,
    log: std::path::PathBuf,
}

async fn serve(db: &TestDb, dir: &std::path::Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.join("keel.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = tokio::process::Command::new(KEEL)
        .args(["serve"])
        .env("DATABASE_URL", &db.url)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env("KEEL_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEEL_LOG", "debug")
        .env("KEEL_LOG_FORMAT", "json")
        .env("KEEL_POLL_INTERVAL_MS", "100")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "keel serve starts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base, log }
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    consistency: Option<&str>,
) -> (u16, Value) {
    let mut rb = reqwest::Client::new().request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    if let Some(c) = consistency {
        rb = rb.header("keel-consistency", c);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_erased_member_is_unreadable_in_tables_graphql_history_replays_exports_and_logs() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("keel-erase-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = serve(&db, &dir).await;
    let base = server.base.clone();
    let auth = Authenticator::hs256(JwtConfig::hs256(Secret::new(SECRET.to_vec())));
    let platform = auth.issue("operator", None, true, Duration::from_secs(600));
    let post = reqwest::Method::POST;

    let (s, body) = call(
        &base,
        post.clone(),
        "/api/v1/tenants",
        &platform,
        Some(json!({"name": "Navy", "slug": "navy", "plan": "team",
        "owner": {"user_id": "owner", "email": "owner@navy.test", "name": "The Owner"}})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let tenant = TenantId(body["id"].as_str().unwrap().parse().unwrap());
    let owner = auth.issue("owner", Some(tenant.0), false, Duration::from_secs(600));
    let (s, body) = call(
        &base,
        post.clone(),
        "/api/v1/members",
        &owner,
        Some(json!({"user_id": "grace",
        "email": "Grace.Hopper@example.com", "name": "Grace Hopper", "role": "admin"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let grace = body["id"].as_str().unwrap().to_owned();
    let graces_token = auth.issue("grace", Some(tenant.0), false, Duration::from_secs(600));
    let (s, body) =
        call(&base, post.clone(), "/api/v1/projects", &graces_token, Some(json!({"name": "COBOL"})), None).await;
    assert_eq!(s, 201, "{body}");

    // Before: the projection and the audit fields read the personal data (the log holds it sealed).
    let members_q = json!({"query": "{ members { edges { node { userId email name status } } } }"});
    let (_, r) =
        call(&base, post.clone(), "/graphql", &owner, Some(members_q.clone()), body["position"].as_str()).await;
    assert!(r.to_string().contains("Grace.Hopper@example.com"), "{r}");
    let mut su = db.superuser().await;
    let stored: String = sqlx::query_scalar("SELECT payload::text FROM events WHERE stream_id = $1")
        .bind(grace.parse::<Uuid>().unwrap())
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert!(!stored.contains("Grace") && stored.contains("enc:v1:"), "sealed in the log: {stored}");

    // Only an owner erases.
    let admin = auth.issue("grace", Some(tenant.0), false, Duration::from_secs(600));
    let (s, _) = call(&base, post.clone(), &format!("/api/v1/members/{grace}/erase"), &admin, None, None).await;
    assert_eq!(s, 403);
    let (s, body) = call(&base, post.clone(), &format!("/api/v1/members/{grace}/erase"), &owner, None, None).await;
    assert_eq!(s, 200, "{body}");
    let position = body["position"].as_str().unwrap().to_owned();
    let (s, again) = call(&base, post.clone(), &format!("/api/v1/members/{grace}/erase"), &owner, None, None).await;
    assert_eq!((s, &again["version"]), (200, &body["version"]), "erasing again changes nothing");

    // GraphQL: the member reads as erased; audit payloads too.
    let (_, r) = call(&base, post.clone(), "/graphql", &owner, Some(members_q), Some(&position)).await;
    let erased = r["data"]["members"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["userId"] == "grace")
        .unwrap()
        .clone();
    assert_eq!(erased["node"], json!({"userId": "grace", "email": "[erased]", "name": "[erased]", "status": "ERASED"}));
    let audit_q = json!({"query": format!(r#"{{ events(filter: {{streamId: "{grace}"}}) {{ edges {{ node {{ eventType payload }} }} }}
        aggregateHistory(streamId: "{grace}") {{ event state }} }}"#)});
    let (_, r) = call(&base, post.clone(), "/graphql", &owner, Some(audit_q), None).await;
    assert_eq!(r["data"]["events"]["edges"][0]["node"]["payload"]["email"], "[erased]", "{r}");
    assert_eq!(r["data"]["events"]["edges"][0]["node"]["payload"]["name"], "[erased]");
    assert_eq!(r["data"]["events"]["edges"][1]["node"]["eventType"], "MemberErased");
    assert_eq!(r["data"]["aggregateHistory"][1]["state"]["status"], "Erased", "{r}");
    // Grace can no longer act in the tenant.
    let (s, _) =
        call(&base, post.clone(), "/api/v1/projects", &graces_token, Some(json!({"name": "Again"})), None).await;
    assert_eq!(s, 403);

    // A replay from scratch reads the same (the server stopped: nothing else projects).
    server.child.kill().await.unwrap();
    sqlx::Executor::execute(&mut su, "TRUNCATE rm_members; DELETE FROM projection_checkpoints WHERE name = 'members'")
        .await
        .unwrap();
    keel_projections::Runner::new(
        db.store.clone(),
        keel_projections::Projection(&keel_store::read::members::MODEL),
        Default::default(),
    )
    .run_once()
    .await
    .unwrap();
    let (email, status): (String, String) = sqlx::query_as("SELECT email, status FROM rm_members WHERE member_id = $1")
        .bind(grace.parse::<Uuid>().unwrap())
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!((email.as_str(), status.as_str()), ("[erased]", "erased"));

    // The export reads as erased; the log still verifies.
    let export = keel_cli(&db, &["audit", "export", "--tenant", &tenant.0.to_string()], MASTER_KEY);
    let export = String::from_utf8(export.stdout).unwrap();
    assert!(export.contains("owner@navy.test") && export.contains("[erased]"), "{export}");
    let verify = keel_cli(&db, &["audit", "verify"], MASTER_KEY);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));

    // Nowhere: no table, no export, no log line.
    let tables = every_table_as_text(&db).await.to_lowercase();
    let logs = std::fs::read_to_string(&server.log).unwrap().to_lowercase();
    assert!(logs.contains("request"), "the server logged its requests");
    for (what, text) in [("a table", &tables), ("the export", &export.to_lowercase()), ("a log line", &logs)] {
        for needle in ["grace.hopper", "grace hopper", "hopper"] {
            assert!(!text.contains(needle), "{what} contains {needle}");
        }
    }
    assert!(
        tables.contains("owner@navy.test"),
        "the other member's address is still readable (so the check can see one)"
    );
    // The debug log of a server given its secrets in the environment shows none of them.
    let jwt_secret = std::str::from_utf8(SECRET).unwrap().to_lowercase();
    assert!(!logs.contains(&jwt_secret), "a log line contains KEEL_JWT_SECRET");
    assert!(!logs.contains(&MASTER_KEY.to_lowercase()), "a log line contains KEEL_MASTER_KEY");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn rows_of(db: &TestDb, tenant: TenantId) -> Vec<(String, i64)> {
    let mut su = db.superuser().await;
    let mut out = Vec::new();
    for t in [
        "rm_projects",
        "rm_tasks",
        "rm_members",
        "rm_task_throughput",
        "rm_usage_daily",
        "rm_usage_monthly",
        "member_keys",
    ] {
        let sql = format!("SELECT count(*) FROM {t} WHERE tenant_id = $1");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(tenant.0).fetch_one(&mut su).await.unwrap();
        out.push((t.to_owned(), n));
    }
    out
}

async fn fill(app: &TestApp, tenant: TenantId, owner: &str, slug: &str) -> String {
    let (member, _) = app.invite(tenant, owner, &format!("{slug}-ada"), "member").await;
    let p = app.create_project(owner, "P").await.body["id"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/api/v1/projects/{p}/tasks"), owner, json!({"title": "T"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = app
        .post(
            "/api/v1/usage",
            owner,
            json!({"records": [{"id": format!("{slug}-1"), "metric": "api.calls", "quantity": 3,
                                                           "occurred_at": chrono::Utc::now()}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    member
}

#[tokio::test]
async fn erasing_a_tenant_deletes_its_keys_and_purges_its_read_tables_and_leaves_other_tenants_alone() {
    let app = spawn_app().await;
    let (a, owner_a) = app.provision("erase-a").await;
    let (b, owner_b) = app.provision("erase-b").await;
    let member_a = fill(&app, a, &owner_a, "erase-a").await;
    fill(&app, b, &owner_b, "erase-b").await;
    // Another tenant's member is not there for an owner of B: 404, as a missing one.
    let r = app.post(&format!("/api/v1/members/{member_a}/erase"), &owner_b, json!({})).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let missing = app.post(&format!("/api/v1/members/{}/erase", Uuid::now_v7()), &owner_b, json!({})).await;
    assert_eq!((missing.status, &missing.body["type"]), (404, &r.body["type"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows_of(&app.db, a).await.iter().chain(rows_of(&app.db, b).await.iter()).any(|(_, n)| *n == 0) {
        assert!(Instant::now() < deadline, "projected: {:?}", rows_of(&app.db, a).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_b = rows_of(&app.db, b).await;

    // Not for tenant owners; for platform operators.
    let r = app.post(&format!("/api/v1/tenants/{}/erase", a.0), &owner_a, json!({})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = app.post(&format!("/api/v1/tenants/{}/erase", a.0), &app.platform_token(), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let deadline = Instant::now() + Duration::from_secs(20);
    while rows_of(&app.db, a).await.iter().any(|(_, n)| *n != 0) {
        assert!(Instant::now() < deadline, "purged: {:?}", rows_of(&app.db, a).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows_of(&app.db, b).await, before_b, "the other tenant is untouched");
    let mut su = app.db.superuser().await;
    let status: String = sqlx::query_scalar("SELECT status FROM rm_tenants WHERE tenant_id = $1")
        .bind(a.0)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(status, "erased");

    // The erased tenant takes nothing more; its events stay and verify.
    let r = app.post("/api/v1/projects", &owner_a, json!({"name": "After"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = app.post(&format!("/api/v1/tenants/{}/suspend", a.0), &app.platform_token(), json!({})).await;
    assert!(r.status == 409 || r.status == 422, "{} {}", r.status, r.body);
    let r = app.graphql(&owner_a, "{ projects { totalCount } }", None).await;
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(a.0)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert!(events >= 6, "{events}");
    let verify = keel_cli(&app.db, &["audit", "verify"], MASTER_KEY);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let tables = every_table_as_text(&app.db).await;
    assert!(!tables.contains("owner@erase-a.test") && !tables.contains("erase-a-ada@example.test"));
    assert!(tables.contains("owner@erase-b.test"));
    let export = keel_cli(&app.db, &["audit", "export", "--tenant", &a.0.to_string()], MASTER_KEY);
    let export = String::from_utf8(export.stdout).unwrap();
    assert!(!export.contains("@erase-a.test") && !export.contains("erase-a-ada@"), "{export}");
}

#[tokio::test]
async fn keys_rotate_reseals_every_data_key_under_a_new_master_key_without_touching_events() {
    let app = spawn_app().await;
    let (a, owner_a) = app.provision("rotate-a").await;
    let (_, owner_b) = app.provision("rotate-b").await;
    let (member, _) = app.invite(a, &owner_a, "ada", "member").await;
    app.create_project(&owner_b, "P").await;
    let mut su = app.db.superuser().await;
    let digest = "SELECT md5(string_agg(position || ':' || encode(hash, 'hex') || ':' || payload::text, ',' ORDER BY position)) FROM events";
    let events_before: String = sqlx::query_scalar(digest).fetch_one(&mut su).await.unwrap();
    let keys_before: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped_key FROM member_keys ORDER BY member_id").fetch_all(&mut su).await.unwrap();
    assert_eq!(keys_before.len(), 3);

    let dir = std::env::temp_dir().join(format!("keel-rotate-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let new_file = dir.join("new-master-key");
    let out = keel_cli(&app.db, &["keys", "rotate", "--new-key-file", new_file.to_str().unwrap()], MASTER_KEY);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("re-sealed 3 data keys"), "{text}");
    let new_key = keel_store::MasterKey::parse(&std::fs::read_to_string(&new_file).unwrap()).unwrap();

    let events_after: String = sqlx::query_scalar(digest).fetch_one(&mut su).await.unwrap();
    assert_eq!(events_before, events_after, "not one event changed");
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT master_key_id FROM member_keys").fetch_all(&mut su).await.unwrap();
    assert_eq!(ids, [new_key.id().to_owned()]);
    let keys_after: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped_key FROM member_keys ORDER BY member_id").fetch_all(&mut su).await.unwrap();
    assert!(keys_before.iter().zip(&keys_after).all(|(x, y)| x != y), "every data key re-sealed");

    // The new key opens the personal data; the old one no longer does.
    let read_email = |key: keel_store::MasterKey| {
        let url = app.db.url.clone();
        let member = member.clone();
        async move {
            let store =
                Store::connect(&url, PoolSizes { writer: 1, reader: 1, projector: 1 }, Some(key)).await.unwrap();
            let mut tx = store.begin_read(a).await.unwrap();
            let r = log::read_stream(&mut tx, member.parse().unwrap()).await;
            drop(tx);
            store.close().await;
            r.map(|events| events[0].payload["email"].as_str().unwrap_or_default().to_owned())
        }
    };
    assert_eq!(read_email(new_key.clone()).await.unwrap(), "ada@example.test");
    assert!(read_email(master_key()).await.is_err(), "the retired key opens nothing");
    let verify = keel_cli(&app.db, &["audit", "verify"], &new_key.to_hex());
    assert!(verify.status.success());
    // Rotating to the key in use is refused.
    let again = keel_cli(&app.db, &["keys", "rotate", "--new-key-file", new_file.to_str().unwrap()], &new_key.to_hex());
    assert!(!again.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A suspension or erasure locks the tenant row; a command in another transaction share-locks
/// it, so it waits and then sees the new status: no write lands after the tenant stopped
/// taking them (which would refill an erased tenant's purged read tables).
#[tokio::test]
async fn a_command_racing_a_suspension_waits_for_it_and_is_refused() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("race-erase").await;
    let project = app.create_project(&owner, "P").await.body["id"].as_str().unwrap().to_owned();

    let mut tx = app.db.store.begin_write(tenant).await.unwrap();
    keel_store::access::tenant_row(&mut tx, true).await.unwrap().unwrap();
    let (client, url, token) =
        (app.client.clone(), format!("{}/api/v1/projects/{project}/tasks", app.base), owner.clone());
    let racing = tokio::spawn(async move {
        client.post(url).bearer_auth(token).json(&json!({"title": "Late"})).send().await.unwrap().status().as_u16()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!racing.is_finished(), "the command waits for the transaction holding the tenant row");
    sqlx::query("UPDATE tenants SET status = 'suspended' WHERE tenant_id = $1")
        .bind(tenant.0)
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(racing.await.unwrap(), 423, "it then sees the suspension");
}
