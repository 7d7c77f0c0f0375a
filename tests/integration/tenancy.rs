//! Bridge tenancy (docs/tenancy.md): dedicated databases registered with the platform, tenants
//! placed in them and served side by side with the pool's, and tenants carried between
//! platforms as archives — with the real binary, the real router and real databases.

use crate::helpers::{MASTER_KEY, Options, TestDb, fresh_database, spawn_app_on};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::process::Output;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub(crate) const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Runs `keel ARGS` against the platform database `url`.
pub(crate) async fn keel(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(KEEL)
        .args(args)
        .env("DATABASE_URL", url)
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env_remove("KEEL_CONFIG")
        .env("KEEL_LOG", "warn")
        .output()
        .await
        .expect("keel runs")
}

/// An empty directory of this test process under the system's temporary directory.
pub(crate) fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-tenancy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) async fn ok(url: &str, args: &[&str]) -> String {
    let out = keel(url, args).await;
    assert!(out.status.success(), "keel {args:?}: {}\n{}", text(&out.stderr), text(&out.stdout));
    text(&out.stdout)
}

/// The tenant's events in `url` as (stream, version, event id, hash), in log order.
pub(crate) async fn events_of(url: &str, tenant: Uuid) -> Vec<(Uuid, i64, Uuid, Vec<u8>)> {
    let mut su = PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT stream_id, stream_version, event_id, hash FROM events WHERE tenant_id = $1
          ORDER BY transaction_id, position",
    )
    .bind(tenant)
    .fetch_all(&mut su)
    .await
    .unwrap()
}

/// Every row of `table` for `tenant`, as JSON text, sorted.
pub(crate) async fn rows_of(url: &str, table: &str, tenant: Uuid) -> Vec<String> {
    let mut su = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_jsonb(t)::text FROM {table} t WHERE tenant_id = $1 ORDER BY 1"
    )))
    .bind(tenant)
    .fetch_all(&mut su)
    .await
    .unwrap()
}

async fn post_ok(app: &crate::helpers::TestApp, path: &str, token: &str, body: Value) -> Value {
    let r = app.post(path, token, body).await;
    assert!(r.status == 201 || r.status == 200, "POST {path}: {} {}", r.status, r.body);
    r.body
}

/// Reads `query` until `done` holds of its data (projections follow the log), at most 30 s.
async fn read_until(app: &crate::helpers::TestApp, token: &str, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.graphql(token, query, None).await;
        if r.body["errors"].is_null() && done(&r.body["data"]) {
            return r.body["data"].clone();
        }
        assert!(Instant::now() < deadline, "{query} never answered as expected: {}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates project "Alpha" under the idempotency key `alpha-1`.
async fn create_alpha(app: &crate::helpers::TestApp, owner: &str) -> crate::helpers::Reply {
    app.send_with(
        reqwest::Method::POST,
        "/api/v1/projects",
        owner,
        Some(json!({"name": "Alpha"})),
        &[("idempotency-key", "alpha-1")],
    )
    .await
}

/// A tenant with a bit of everything: projects (one under an idempotency key), tasks, a member
/// with sealed personal data, usage.
async fn busy_tenant(app: &crate::helpers::TestApp, slug: &str) -> (Uuid, String, String) {
    let (tenant, owner) = app.provision(slug).await;
    let keyed = create_alpha(app, &owner).await;
    assert_eq!(keyed.status, 201, "{}", keyed.body);
    let project = keyed.body["id"].as_str().unwrap().to_owned();
    for i in 0..5 {
        post_ok(app, &format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": format!("Task {i}")})).await;
    }
    app.create_project(&owner, "Beta").await;
    let renamed = app.patch(&format!("/api/v1/projects/{project}"), &owner, json!({"name": "Alpha One"})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    app.invite(tenant, &owner, &format!("ann-{slug}"), "member").await;
    let usage = app
        .post("/api/v1/usage", &owner, json!({"records": [{"id": format!("u-{slug}-1"), "metric": "api.calls", "quantity": 3, "occurred_at": chrono::Utc::now()}]}))
        .await;
    assert!(usage.status == 201 || usage.status == 200, "usage: {} {}", usage.status, usage.body);
    (tenant.0, owner, project)
}

/// Apps that connect to a second database too keep to small pools: the suite's one PostgreSQL
/// serves every test at once.
pub(crate) fn small_pools() -> Options {
    Options { pools: keel_store::PoolSizes { writer: 4, reader: 6, projector: 3 }, ..Options::default() }
}

/// Webhooks may name loopback http URLs (the tests' endpoints).
fn loopback_webhooks() -> Options {
    let policy = keel_outbound::destination::DestinationPolicy { allow_http: true, allow_private: true };
    let mut o = Options {
        webhooks: keel_command::WebhookSettings {
            policy: keel_domain::webhook::UrlPolicy { allow_http: true, allow_private: true },
            ..Default::default()
        },
        ..small_pools()
    };
    o.outbound.webhooks.policy = policy;
    o
}

/// The event ids `tenant`'s webhooks have queued or tried in the database at `url`.
async fn sent_or_queued(url: &str, tenant: Uuid) -> Vec<Uuid> {
    let mut su = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT event_id FROM webhook_queue WHERE tenant_id = $1 UNION SELECT event_id FROM webhook_deliveries WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&mut su)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_archive_carries_a_tenant_to_another_platform_with_every_chain_checked() {
    let source = spawn_app_on(TestDb::new().await, loopback_webhooks()).await;
    let (tenant, source_owner, alpha) = busy_tenant(&source, "carried").await;
    // An endpoint (that never answers): the source queues what follows its creation.
    crate::webhook_delivery::create_hook(&source, &source_owner, "http://127.0.0.1:9/hook", &["TaskCreated"]).await;
    post_ok(&source, &format!("/api/v1/projects/{alpha}/tasks"), &source_owner, json!({"title": "after the hook"}))
        .await;
    let dir = scratch("carried");
    let file = dir.join("carried.keel");
    let file_arg = file.to_str().unwrap();
    ok(&source.db.url, &["tenant", "export", &tenant.to_string(), "--out", file_arg]).await;

    // The tenant is on this platform already: an import here is refused.
    let again = keel(&source.db.url, &["tenant", "import", file_arg]).await;
    assert!(!again.status.success(), "a second copy of a tenant is refused");
    assert!(text(&again.stderr).contains("already"), "{}", text(&again.stderr));

    // Another platform takes it whole: the same events and hashes, keys and idempotency keys;
    // the inline tables derived there equal the source's.
    let target = TestDb::new().await;
    let out = ok(&target.url, &["tenant", "import", file_arg]).await;
    assert!(out.contains("every hash chain holds"), "{out}");
    let moved = events_of(&target.url, tenant).await;
    assert!(moved.len() >= 10, "{} events", moved.len());
    assert_eq!(moved, events_of(&source.db.url, tenant).await, "the same events, hashes and order");
    for table in ["member_keys", "idempotency_keys", "tenants", "memberships", "usage_counters", "usage_records"] {
        assert_eq!(rows_of(&target.url, table, tenant).await, rows_of(&source.db.url, table, tenant).await, "{table}");
    }
    let verify = ok(&target.url, &["audit", "verify", "--tenant", &tenant.to_string()]).await;
    assert!(verify.contains("every hash chain holds"), "{verify}");

    // A server on the new platform projects the imported history and answers the old key with
    // its first response; the member's sealed email opens there.
    let target_url = target.url.clone();
    let app = spawn_app_on(target, loopback_webhooks()).await;
    let owner = app.token(keel_domain::TenantId(tenant), "owner-carried");
    let data = read_until(&app, &owner, "{ projects(first: 10) { edges { node { name } } } }", |d| {
        d["projects"]["edges"].as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    let names: Vec<&str> =
        data["projects"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"Alpha One") && names.contains(&"Beta"), "{data}");
    let replay = create_alpha(&app, &owner).await;
    assert_eq!(replay.status, 201, "{}", replay.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let members = read_until(&app, &owner, "{ members(first: 10) { edges { node { email } } } }", |d| {
        d["members"]["edges"].as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    assert!(members.to_string().contains("ann-carried@example.test"), "personal data opens: {members}");
    // New work goes on from where the history ended, and goes out: the endpoint's route came
    // with the history, but nothing imported is sent again (the source sent it).
    let gamma = post_ok(&app, &format!("/api/v1/projects/{alpha}/tasks"), &owner, json!({"title": "Gamma"})).await;
    let gamma_event: Uuid = sqlx::query_scalar("SELECT event_id FROM events WHERE stream_id = $1::uuid")
        .bind(gamma["id"].as_str().unwrap())
        .fetch_one(&mut PgConnection::connect(&target_url).await.unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sent_or_queued(&target_url, tenant).await.contains(&gamma_event) {
        assert!(Instant::now() < deadline, "the new event is queued for the endpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let imported: Vec<Uuid> = events_of(&target_url, tenant).await.into_iter().map(|e| e.2).collect();
    let resent: Vec<_> = sent_or_queued(&target_url, tenant)
        .await
        .into_iter()
        .filter(|e| imported.contains(e) && *e != gamma_event)
        .collect();
    assert!(resent.is_empty(), "imported events are not sent again: {resent:?}");
    assert!(
        !sent_or_queued(&source.db.url, tenant).await.is_empty(),
        "the source had queued its own (the check above is not vacuous)"
    );
}

/// The archive's bytes with `from` replaced by `to` once, after the line starting `after`.
fn tampered(archive: &[u8], after: &str, from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(archive.to_vec()).unwrap();
    let start = text.find(after).unwrap_or_else(|| panic!("{after} in the archive"));
    let at = start + text[start..].find(from).unwrap_or_else(|| panic!("{from} after {after}"));
    let mut out = text[..at].to_owned();
    out.push_str(to);
    out.push_str(&text[at + from.len()..]);
    out.into_bytes()
}

/// The archive's `@end` line split off: (everything before it, its JSON).
fn split_end(archive: &[u8]) -> (Vec<u8>, Value) {
    let at = archive[..archive.len() - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    let end = std::str::from_utf8(&archive[at..]).unwrap().trim_end().strip_prefix("@end ").unwrap();
    (archive[..at].to_vec(), serde_json::from_str(end).unwrap())
}

/// The archive with its digest computed again over what it now holds.
fn redigest(archive: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let (body, mut end) = split_end(archive);
    let sum = sha2::Sha256::digest(&body);
    end["sha256"] = sum.iter().map(|b| format!("{b:02x}")).collect::<String>().into();
    [body, format!("@end {end}\n").into_bytes()].concat()
}

/// The archive without its seal.
fn unsealed(archive: &[u8]) -> Vec<u8> {
    let (body, mut end) = split_end(archive);
    end.as_object_mut().unwrap().remove("seal");
    [body, format!("@end {end}\n").into_bytes()].concat()
}

#[tokio::test]
async fn a_tampered_or_broken_archive_is_refused_and_nothing_is_written() {
    let source = spawn_app_on(TestDb::new().await, small_pools()).await;
    let (tenant, _, _) = busy_tenant(&source, "sealed").await;
    let dir = scratch("sealed");
    let file = dir.join("sealed.keel");
    ok(&source.db.url, &["tenant", "export", &tenant.to_string(), "--out", file.to_str().unwrap()]).await;
    let good = std::fs::read(&file).unwrap();

    let events_at = "@section events";
    // Two events of one stream in the other order (the tenant's stream: provisioned, then the
    // usage and member changes count against it).
    let swapped = {
        let text = String::from_utf8(good.clone()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let first = lines.iter().position(|l| l.starts_with(events_at)).unwrap() + 1;
        let end = first + lines[first..].iter().position(|l| l == "\\.").unwrap();
        let stream = |l: &str| l.split('\t').nth(2).unwrap().to_owned();
        let (a, b) = (first..end)
            .flat_map(|i| (i + 1..end).map(move |j| (i, j)))
            .find(|(i, j)| stream(&lines[*i]) == stream(&lines[*j]))
            .expect("a stream with two events");
        lines.swap(a, b);
        (lines.join("\n") + "\n").into_bytes()
    };
    // Each change is digested again, as anyone could: the digest is no seal; the chains, the
    // derived tables and the seal under the master key are.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a payload changed", redigest(&tampered(&good, events_at, "Alpha", "Alpho")), "hash chain"),
        (
            "an event's tenant changed",
            redigest(&tampered(&good, events_at, &tenant.to_string()[..8], "00000000")),
            "tenant",
        ),
        ("two events of a stream swapped", redigest(&swapped), "hash chain"),
        (
            "the plan in the tenant row changed",
            redigest(&tampered(&good, "@section tenants", "\tfree\t", "\tteam\t")),
            "differ",
        ),
        (
            "an idempotency answer changed",
            redigest(&tampered(&good, "@section idempotency_keys", "\t201\t", "\t200\t")),
            "seal",
        ),
        ("the seal removed", redigest(&unsealed(&good)), "not sealed"),
        (
            "a byte changed, not digested again",
            tampered(&good, "@section idempotency_keys", "\t201\t", "\t200\t"),
            "digest",
        ),
        ("cut short", good[..good.len() * 2 / 3].to_vec(), "truncated"),
        ("no end line", good[..good.iter().rposition(|b| *b == b'@').unwrap()].to_vec(), "truncated"),
        ("not an archive", b"hello\n".to_vec(), "not a Keel tenant archive"),
    ];
    let target = TestDb::new().await;
    for (what, bytes, says) in cases {
        let path = dir.join("bad.keel");
        std::fs::write(&path, &bytes).unwrap();
        let out = keel(&target.url, &["tenant", "import", path.to_str().unwrap()]).await;
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{what}: refused, not {}", text(&out.stdout));
        assert!(err.contains("refused") && err.contains(says), "{what}: the error says why ({says}): {err}");
        assert!(events_of(&target.url, tenant).await.is_empty(), "{what}: nothing was written");
        for table in ["member_keys", "idempotency_keys", "tenants", "memberships"] {
            assert!(rows_of(&target.url, table, tenant).await.is_empty(), "{what}: no {table} row");
        }
    }
    // The untouched archive still loads.
    std::fs::write(dir.join("good.keel"), &good).unwrap();
    ok(&target.url, &["tenant", "import", dir.join("good.keel").to_str().unwrap()]).await;
}

#[tokio::test]
async fn pooled_and_dedicated_tenants_are_served_side_by_side() {
    // A dedicated database, registered (and migrated) by the platform operator.
    let pool = TestDb::new().await;
    let (ded_name, ded_url) = fresh_database().await;
    let _drop = crate::helpers::DropDatabase(ded_name.clone());
    let added = ok(&pool.url, &["databases", "add", "dedicated", &ded_url]).await;
    assert!(added.contains("registered database dedicated"), "{added}");
    let twice = keel(&pool.url, &["databases", "add", "dedicated", &ded_url]).await;
    assert!(!twice.status.success() && text(&twice.stderr).contains("registered already"));
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT url_sealed FROM keel_databases")
        .fetch_one(&mut pool.superuser().await)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(&ded_name), "the URL is kept sealed, not in the clear");
    let pool_url = pool.url.clone();
    let app = spawn_app_on(pool, loopback_webhooks()).await;
    let platform = app.platform_token();

    // Hostile placements are the body's fault, with the field.
    for bad in [json!("nowhere"), json!("Bad Name!"), json!(""), json!(7)] {
        let r = app
            .post(
                "/api/v1/tenants",
                &platform,
                json!({"name": "X", "slug": "x-bad", "plan": "free", "database": bad,
                       "owner": {"user_id": "o", "email": "o@x.test", "name": "O"}}),
            )
            .await;
        assert!(r.status == 422 || r.status == 400, "{bad}: {} {}", r.status, r.body);
        assert!(r.body.to_string().contains("database"), "{bad}: names the field: {}", r.body);
    }

    // Only the platform places a tenant: an owner's token is refused before anything is written.
    let (_, someone) = app.provision("someone").await;
    let placed_before: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_placements")
        .fetch_one(&mut PgConnection::connect(&pool_url).await.unwrap())
        .await
        .unwrap();
    let r = app
        .post(
            "/api/v1/tenants",
            &someone,
            json!({"name": "X", "slug": "x-owner", "plan": "free", "database": "dedicated",
                   "owner": {"user_id": "o", "email": "o@x.test", "name": "O"}}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let placed_after: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_placements")
        .fetch_one(&mut PgConnection::connect(&pool_url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(placed_after, placed_before, "no directory row was written");

    let provision = async |slug: &str, database: Option<&str>| {
        let mut body = json!({"name": format!("Tenant {slug}"), "slug": slug, "plan": "team",
                              "owner": {"user_id": format!("owner-{slug}"), "email": format!("owner@{slug}.test"), "name": "Owner"}});
        if let Some(d) = database {
            body["database"] = json!(d);
        }
        let r = app.post("/api/v1/tenants", &platform, body).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let t = keel_domain::TenantId(r.body["id"].as_str().unwrap().parse().unwrap());
        (t, app.token(t, &format!("owner-{slug}")))
    };
    let (pooled, pooled_owner) = provision("pooled", None).await;
    let (dedicated, dedicated_owner) = provision("dedicated", Some("dedicated")).await;

    // The same flows for both: commands, read-your-writes, a member, a subscription.
    for (tenant, owner, slug) in [(pooled, &pooled_owner, "pooled"), (dedicated, &dedicated_owner, "dedicated")] {
        let mut ws =
            crate::subscriptions::subscribe(&app, owner, "subscription { dashboardChanged { activeProjects } }").await;
        let p = app.create_project(owner, &format!("{slug} launch")).await;
        let pushed = crate::subscriptions::next_json(&mut ws, Duration::from_secs(15)).await;
        assert_eq!(
            pushed.as_ref().map(|v| v["payload"]["data"]["dashboardChanged"]["activeProjects"].clone()),
            Some(json!(1)),
            "{slug}: the subscription hears its tenant's change: {pushed:?}"
        );
        let at = p.body["position"].as_str().unwrap().to_owned();
        let id = p.body["id"].as_str().unwrap();
        post_ok(&app, &format!("/api/v1/projects/{id}/tasks"), owner, json!({"title": "first"})).await;
        app.invite(tenant, owner, &format!("bea-{slug}"), "admin").await;
        let read = app.graphql(owner, &format!("{{ project(id: \"{id}\") {{ name }} }}"), Some(&at)).await;
        assert_eq!(read.body["data"]["project"]["name"], format!("{slug} launch"), "{}", read.body);
        let dash = read_until(&app, owner, "{ dashboard { tasksByStatus { total } memberCount } }", |d| {
            d["dashboard"]["tasksByStatus"]["total"] == 1 && d["dashboard"]["memberCount"] == 2
        })
        .await;
        assert_eq!(dash["dashboard"]["memberCount"], 2);
    }

    // Webhooks: the dedicated database's fan-out queues the dedicated tenant's events.
    crate::webhook_delivery::create_hook(&app, &dedicated_owner, "http://127.0.0.1:9/hook", &["TaskCreated"]).await;
    let project = app.create_project(&dedicated_owner, "hooked").await.body["id"].as_str().unwrap().to_owned();
    let task =
        post_ok(&app, &format!("/api/v1/projects/{project}/tasks"), &dedicated_owner, json!({"title": "ping"})).await;
    let task_event: Uuid = sqlx::query_scalar("SELECT event_id FROM events WHERE stream_id = $1::uuid")
        .bind(task["id"].as_str().unwrap())
        .fetch_one(&mut PgConnection::connect(&ded_url).await.unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sent_or_queued(&ded_url, dedicated.0).await.contains(&task_event) {
        assert!(Instant::now() < deadline, "the dedicated tenant's event is queued for its endpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each tenant's rows are in its own database only.
    assert!(!events_of(&ded_url, dedicated.0).await.is_empty());
    assert!(events_of(&pool_url, dedicated.0).await.is_empty(), "nothing of the dedicated tenant in the pool");
    assert!(!events_of(&pool_url, pooled.0).await.is_empty());
    assert!(events_of(&ded_url, pooled.0).await.is_empty(), "nothing of the pooled tenant in the dedicated database");

    // Neither reads the other: the same query, each its own.
    let both = "{ projects(first: 10) { edges { node { name } } } }";
    let mine = app.graphql(&dedicated_owner, both, None).await.body.to_string();
    assert!(mine.contains("dedicated launch") && !mine.contains("pooled launch"), "{mine}");
    let cross = app.token(dedicated, "owner-pooled");
    let r = app.graphql(&cross, both, None).await;
    assert!(!r.body.to_string().contains("launch"), "another tenant's owner reads nothing: {}", r.body);
    let r = app.post("/api/v1/projects", &cross, json!({"name": "intruder"})).await;
    assert_eq!(r.status, 403, "{}", r.body);

    // The platform view shows every tenant with its placement, and its counts span databases.
    let view = read_until(
        &app,
        &platform,
        "{ platform { tenants(first: 10) { totalCount edges { node { slug database } } } tenantsByPlan { plan count } } }",
        |d| d["platform"]["tenants"]["totalCount"] == 3,
    )
    .await;
    let placed: Vec<(String, String)> = view["platform"]["tenants"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["node"]["slug"].as_str().unwrap().into(), e["node"]["database"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        placed,
        vec![
            ("someone".into(), "pool".into()),
            ("pooled".into(), "pool".into()),
            ("dedicated".into(), "dedicated".into())
        ]
    );
    assert_eq!(
        view["platform"]["tenantsByPlan"],
        json!([{"plan": "FREE", "count": 1}, {"plan": "TEAM", "count": 2}]),
        "{view}"
    );

    // The command line finds the dedicated tenant where it lives.
    let listed = ok(&pool_url, &["databases", "list"]).await;
    assert!(listed.lines().any(|l| l.starts_with("dedicated") && l.split_whitespace().nth(1) == Some("1")), "{listed}");
    for t in [pooled, dedicated] {
        let v = ok(&pool_url, &["audit", "verify", "--tenant", &t.0.to_string()]).await;
        assert!(v.contains("every hash chain holds") && !v.contains("verified 0 events"), "{v}");
    }
    let suspended = ok(&pool_url, &["tenant", "suspend", &dedicated.0.to_string(), "--reason", "billing"]).await;
    assert!(suspended.contains("suspended"), "{suspended}");
    let r = app.post("/api/v1/projects", &dedicated_owner, json!({"name": "while suspended"})).await;
    assert_eq!(r.status, 423, "the suspension landed where the tenant lives: {}", r.body);
    // The audit export reads the dedicated database, and key rotation re-seals its data keys
    // and the registered URL.
    let exported = keel(&pool_url, &["audit", "export", "--tenant", &dedicated.0.to_string()]).await;
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let lines = text(&exported.stdout).lines().count();
    assert_eq!(lines, events_of(&ded_url, dedicated.0).await.len(), "every event of the dedicated tenant");
    assert!(text(&exported.stdout).contains("bea-dedicated@example.test"), "personal data opened");
    let dir = scratch("side-by-side");
    let new_key = dir.join("new.key");
    let rotated = keel(&pool_url, &["keys", "rotate", "--new-key-file", new_key.to_str().unwrap()]).await;
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let new_hex = std::fs::read_to_string(&new_key).unwrap();
    let new_id = keel_store::MasterKey::parse(&new_hex).unwrap().id().to_owned();
    for url in [&pool_url, &ded_url] {
        let ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT master_key_id FROM member_keys")
            .fetch_all(&mut PgConnection::connect(url).await.unwrap())
            .await
            .unwrap();
        assert_eq!(ids, vec![new_id.clone()], "every data key re-sealed in {url}");
    }
    let listed = tokio::process::Command::new(KEEL)
        .args(["databases", "list"])
        .env("DATABASE_URL", &pool_url)
        .env("KEEL_MASTER_KEY", new_hex.trim())
        .env_remove("KEEL_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let verify = tokio::process::Command::new(KEEL)
        .args(["audit", "verify", "--tenant", &dedicated.0.to_string()])
        .env("DATABASE_URL", &pool_url)
        .env("KEEL_MASTER_KEY", new_hex.trim())
        .env_remove("KEEL_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        verify.status.success() && text(&verify.stdout).contains("every hash chain holds"),
        "the URL opens with the new key: {}",
        text(&verify.stderr)
    );

    // Erasure, through the platform route, in the dedicated database.
    let r = app.post(&format!("/api/v1/tenants/{}/erase", dedicated.0), &platform, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let erased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'TenantErased'")
            .bind(dedicated.0)
            .fetch_one(&mut PgConnection::connect(&ded_url).await.unwrap())
            .await
            .unwrap();
    assert_eq!(erased, 1);
}

#[tokio::test]
async fn events_out_follow_a_tenant_into_its_dedicated_database_and_back_once_each() {
    let pool = TestDb::new().await;
    let (ded_name, ded_url) = fresh_database().await;
    let _drop = crate::helpers::DropDatabase(ded_name);
    ok(&pool.url, &["databases", "add", "dedicated", &ded_url]).await;
    let pool_url = pool.url.clone();
    let stream = crate::nats::stream_name();
    let options = Options {
        outbound: keel_outbound::OutboundConfig {
            nats: Some(crate::nats::config("nats://127.0.0.1:4222", &stream)),
            ..Default::default()
        },
        ..small_pools()
    };
    let app = spawn_app_on(pool, options).await;
    let r = app
        .post(
            "/api/v1/tenants",
            &app.platform_token(),
            json!({"name": "Out", "slug": "out", "plan": "team", "database": "dedicated",
                   "owner": {"user_id": "owner-out", "email": "o@out.test", "name": "O"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let tenant = keel_domain::TenantId(r.body["id"].as_str().unwrap().parse().unwrap());
    let owner = app.token(tenant, "owner-out");
    let project = app.create_project(&owner, "Out").await.body["id"].as_str().unwrap().to_owned();
    post_ok(&app, &format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "one"})).await;

    // The dedicated database's publisher sends its tenant's events.
    let js = crate::nats::jetstream().await;
    let n = events_of(&ded_url, tenant.0).await.len() as u64;
    crate::nats::wait_for_messages(&js, &stream, n, Duration::from_secs(60)).await;

    // Moved to the pool, the tenant's history is not sent again by the pool's publisher; what
    // it writes there is.
    ok(&pool_url, &["tenant", "move", &tenant.0.to_string(), "--to", "pool", "--purge"]).await;
    post_ok(&app, &format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "two"})).await;
    let all: Vec<Uuid> = events_of(&pool_url, tenant.0).await.into_iter().map(|e| e.2).collect();
    crate::nats::wait_for_messages(&js, &stream, all.len() as u64, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = crate::nats::read_all(&js, &stream).await;
    let ids: Vec<Uuid> = received.iter().map(|m| m.envelope["id"].as_str().unwrap().parse().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "each event once");
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(unique, expected, "every event of the tenant, from whichever database held it");
    crate::nats::drop_stream(&js, &stream).await;
}
