//! Through PgBouncer (docs/scaling.md, "Through PgBouncer"): Keel with `DATABASE_URL` pointing
//! at a real PgBouncer in transaction pooling mode, and `KEEL_DIRECT_DATABASE_URL` for what needs
//! a session of its own (LISTEN). The core flows — provisioning, commands racing on one stream,
//! idempotency keys, quotas, GraphQL with read-your-writes, subscriptions, projections — hold
//! there as they do on a direct connection.

use crate::helpers::{Options, TestDb, server_url, spawn_app_on};
use crate::subscriptions::{next_json, subscribe};
use serde_json::json;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;

/// PgBouncer's binary: `KEEL_TEST_PGBOUNCER`, else where Debian puts it (`.ci/run` installs the
/// package).
fn pgbouncer_bin() -> PathBuf {
    let bin =
        std::env::var_os("KEEL_TEST_PGBOUNCER").map_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"), PathBuf::from);
    assert!(bin.exists(), "no PgBouncer at {} (apt-get install pgbouncer; .ci/run installs it)", bin.display());
    bin
}

/// A PgBouncer of this test's own in transaction pooling mode in front of the test server, on a
/// free port; returns it and its port. It runs as the unprivileged `postgres` user when the test
/// runs as root (PgBouncer refuses root).
pub(crate) async fn pgbouncer(dir: &Path, pool_size: u32) -> (Child, u16) {
    let server = url::Url::parse(&server_url()).unwrap();
    let port = crate::helpers::free_port();
    // Trust: PgBouncer checks no password and logs in to the server as the client's user.
    std::fs::write(dir.join("users.txt"), "\"keel_pooled\" \"\"\n").unwrap();
    let ini = format!(
        "[databases]\n* = host={} port={}\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
         max_client_conn = 1000\ndefault_pool_size = {pool_size}\n\
         ignore_startup_parameters = extra_float_digits,options\nlogfile = {}\n",
        server.host_str().unwrap(),
        server.port().unwrap_or(5432),
        dir.join("users.txt").display(),
        dir.join("pgbouncer.log").display(),
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
    let mut cmd = tokio::process::Command::new(pgbouncer_bin());
    if nix::unistd::Uid::effective().is_root() {
        let _ = std::process::Command::new("chown").arg("-R").arg("postgres").arg(dir).status();
        cmd.arg("-u").arg("postgres");
    }
    let child = cmd
        .arg(dir.join("pgbouncer.ini"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("pgbouncer starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "PgBouncer listens: {}",
            std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_flows_hold_through_pgbouncer_in_transaction_mode() {
    let dir = std::env::temp_dir().join(format!("keel-pgbouncer-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    // Fewer server connections than Keel has clients: PgBouncer must share them.
    let (_bouncer, port) = pgbouncer(&dir, 4).await;
    let db = TestDb::new().await;
    // The pooled login the migrations made, allowed to log in (roles are the server's: once
    // for every test database).
    sqlx::query("ALTER ROLE keel_pooled LOGIN").execute(&mut db.superuser().await).await.unwrap();
    let mut pooled = url::Url::parse(&db.url).unwrap();
    pooled.set_port(Some(port)).unwrap();
    pooled.set_username("keel_pooled").unwrap();
    pooled.set_password(None).unwrap();
    let direct = db.url.clone();
    let pooled_url = pooled.to_string();
    let app = spawn_app_on(
        db,
        Options { database_url: Some(pooled.to_string()), direct_database_url: Some(direct), ..Options::default() },
    )
    .await;
    let (tenant, owner) = app.provision("pooled").await;
    let _ = tenant;

    // A subscription (its LISTEN goes to the direct URL).
    let first = app.create_project(&owner, "Pooled").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let project = first.body["id"].as_str().unwrap().to_owned();
    let q = format!("subscription {{ projectChanged(id: \"{project}\") {{ taskCounts {{ todo }} }} }}");
    let mut socket = subscribe(&app, &owner, &q).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 16 concurrent clients, each creating tasks with keys it then repeats.
    let mut clients = Vec::new();
    for c in 0..16 {
        let (client, base, token, project) = (app.client.clone(), app.base.clone(), owner.clone(), project.clone());
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..10 {
                let key = format!("pooled-{c}-{i}");
                let mut answers = Vec::new();
                for _ in 0..2 {
                    let r = client
                        .post(format!("{base}/api/v1/projects/{project}/tasks"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .json(&json!({"title": format!("t{c}.{i}")}))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(status, 201, "{body}");
                    answers.push(body["id"].as_str().unwrap().to_owned());
                }
                assert_eq!(answers[0], answers[1], "the key answers the same");
                ids.push(answers.swap_remove(0));
            }
            ids
        }));
    }
    // Renames racing on one stream: each lands or is a clean conflict, never a 500.
    let mut renames = Vec::new();
    for i in 0..8 {
        let (client, base, token, project) = (app.client.clone(), app.base.clone(), owner.clone(), project.clone());
        renames.push(tokio::spawn(async move {
            client
                .patch(format!("{base}/api/v1/projects/{project}"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("Pooled {i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut created = std::collections::HashSet::new();
    for c in clients {
        created.extend(c.await.unwrap());
    }
    assert_eq!(created.len(), 160);
    for r in renames {
        let s = r.await.unwrap();
        assert!(s < 300 || s == 409 || s == 412, "rename: {s}");
    }
    // Quotas: the free plan's three projects, with racing calls.
    let mut racing = Vec::new();
    for i in 0..6 {
        let (client, base, token) = (app.client.clone(), app.base.clone(), owner.clone());
        racing.push(tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/projects"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("Q{i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for r in racing {
        statuses.push(r.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 2, "{statuses:?}");

    // Read-your-writes through the pooler.
    let last = app.post(&format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "last"})).await;
    assert_eq!(last.status, 201, "{}", last.body);
    let at = last.body["position"].as_str().unwrap().to_owned();
    let g =
        app.graphql(&owner, &format!("{{ project(id: \"{project}\") {{ taskCounts {{ todo }} }} }}"), Some(&at)).await;
    assert_eq!(g.body["data"]["project"]["taskCounts"]["todo"], 161, "{}", g.body);

    // The subscription heard the changes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msg = next_json(&mut socket, deadline.saturating_duration_since(Instant::now())).await.expect("a push");
        if msg["payload"]["data"]["projectChanged"]["taskCounts"]["todo"] == 161 {
            break;
        }
    }
    // However many connections Keel opened to PgBouncer, the server saw at most its pool.
    let mut su = app.db.superuser().await;
    let server_side: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'keel_pooled' AND datname = current_database()",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert!(server_side <= 4, "{server_side} server connections for a pool of 4");
    println!("server connections through PgBouncer: {server_side} (Keel's pools: up to 24 clients)");
    // The pooled login itself may read nothing: a statement outside a unit that set its role
    // is refused, never run with more rights.
    // (One simple query: a prepared statement outside a transaction would meet the pooler's
    // two-step problem first.)
    let mut login = sqlx::PgConnection::connect(&pooled_url).await.unwrap();
    let refused = sqlx::Executor::execute(&mut login, "SELECT count(*) FROM events").await;
    let e = refused.expect_err("the pooled login reads nothing by itself").to_string();
    assert!(e.contains("permission denied"), "{e}");
    // Nothing was written twice.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'TaskCreated'")
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(n, 161);
    let _ = std::fs::remove_dir_all(&dir);
}
