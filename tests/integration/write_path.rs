//! The write path's two calls (`keel_store::write_path`): one read, one append that is its own
//! transaction and checks again what the read found. A command decided on a read that no longer
//! holds is never written; an append whose answer is lost is resolved by asking the database.

use crate::helpers::{TestDb, meta, spawn_app};
use crate::log::{created, renamed};
use chrono::Utc;
use keel_domain::{ProjectId, Role, TenantId};
use keel_store::log::{ReadGuard, StreamHead};
use keel_store::write_path::{ReadRequest, StreamToRead};
use keel_store::{CommitOutcome, PoolSizes, PoolTimeouts, Store, StoreError, log};
use serde_json::json;
use sqlx::{Connection, Row};
use std::time::Duration;
use uuid::Uuid;

fn project(id: ProjectId) -> StreamToRead {
    StreamToRead { id: id.0, stream_type: "project", state_version: 1 }
}

async fn create(db: &TestDb, tenant: TenantId, p: ProjectId) {
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[], &[created(p, "Apollo")], &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
}

async fn versions(db: &TestDb, tenant: TenantId, p: ProjectId) -> Vec<i64> {
    let mut tx = db.store.begin_read(tenant).await.unwrap();
    log::read_stream(&mut tx, p.0).await.unwrap().iter().map(|e| e.stream_version).collect()
}

#[tokio::test]
async fn an_append_decided_on_a_read_that_changed_writes_nothing() {
    let db = TestDb::new().await;
    let tenant = db.provision("guards", "ada").await;
    let other = db.provision("guards-other", "bob").await;
    let (p, q) = (ProjectId::new_v7(), ProjectId::new_v7());
    create(&db, tenant, p).await;
    create(&db, tenant, q).await;

    // One call reads the caller's role, the tenant row and both streams.
    let mut conn = db.store.write_conn().await.unwrap();
    let req = ReadRequest { user: Some("ada"), streams: vec![project(p), project(q)], ..ReadRequest::default() };
    let read = conn.read(tenant, &req).await.unwrap();
    assert_eq!(read.role, Some(Role::Owner));
    assert_eq!(read.tenant_status.as_deref(), Some("active"));
    let head = read.stream(p.0).unwrap().events.last().unwrap().clone();
    assert_eq!(head.stream_version, 1);
    assert_eq!(read.stream(q.0).unwrap().events.len(), 1);
    // Another tenant's caller reads no role and no stream of this tenant.
    let foreign = conn.read(other, &req).await.unwrap();
    assert_eq!(foreign.role, None, "ada is not a member of the other tenant");
    assert!(foreign.stream(p.0).unwrap().events.is_empty(), "another tenant's stream reads as empty");

    let known = [StreamHead { stream_id: p.0, version: 1, hash: Some(head.hash.clone()) }];
    let holds = ReadGuard {
        tenant_status: Some("active".into()),
        caller: Some(("ada".into(), "owner".into())),
        streams: vec![(q.0, 1)],
        active_members: vec![],
        ..ReadGuard::default()
    };
    let append = |guard: ReadGuard| {
        let store = db.store.clone();
        let known = known.clone();
        async move {
            let mut conn = store.write_conn().await.unwrap();
            conn.append(tenant, &known, &[renamed(p, "Artemis")], &meta(), Utc::now(), &guard, None, None).await
        }
    };

    // Each item of the read set that no longer holds refuses the append.
    let role_changed = ReadGuard { caller: Some(("ada".into(), "member".into())), ..holds.clone() };
    let not_a_member = ReadGuard { caller: Some(("mallory".into(), "owner".into())), ..holds.clone() };
    let member_gone = ReadGuard { active_members: vec![Uuid::now_v7()], ..holds.clone() };
    let status_changed = ReadGuard { tenant_status: Some("suspended".into()), ..holds.clone() };
    let plan_changed = ReadGuard { tenant_plan: Some("a plan it is not on".into()), ..holds.clone() };
    for (what, guard) in [
        ("the tenant's plan", plan_changed),
        ("the caller's role", role_changed),
        ("a caller who is not a member", not_a_member),
        ("a named member", member_gone),
        ("the tenant's status", status_changed),
    ] {
        let err = append(guard).await.unwrap_err();
        assert!(matches!(err, StoreError::ReadSetChanged(_)), "{what}: {err}");
    }
    // Another stream the decision read has moved.
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[(q.0, 1)], &[renamed(q, "Gemini")], &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    let err = append(holds.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadSetChanged(_)), "a moved stream: {err}");
    // A suspension committed after the read.
    let mut su = db.superuser().await;
    sqlx::query("UPDATE tenants SET status = 'suspended' WHERE tenant_id = $1")
        .bind(tenant.0)
        .execute(&mut su)
        .await
        .unwrap();
    let fresh = ReadGuard { streams: vec![(q.0, 2)], ..holds.clone() };
    let err = append(fresh.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadSetChanged(_)), "a suspension: {err}");
    assert_eq!(versions(&db, tenant, p).await, vec![1], "nothing was written by a refused append");

    // With every item holding, it is written, chained to the head it was decided on, and its hash
    // is the one `keel audit verify` recomputes.
    sqlx::query("UPDATE tenants SET status = 'active' WHERE tenant_id = $1")
        .bind(tenant.0)
        .execute(&mut su)
        .await
        .unwrap();
    let appended = append(fresh).await.unwrap();
    assert_eq!(appended.version_of(p.0), Some(2));
    let mut tx = db.store.begin_read(tenant).await.unwrap();
    let stream = log::read_stream(&mut tx, p.0).await.unwrap();
    assert_eq!(stream.len(), 2);
    assert_eq!(stream[1].prev_hash.as_deref(), Some(&stream[0].hash[..]));
    assert_eq!(stream[1].recompute_hash().to_vec(), stream[1].hash, "the stored hash recomputes");
    assert_eq!(stream[1].log_position(), appended.last);
    // A second append decided on the same (now stale) head loses to the unique version.
    let err = append(ReadGuard::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 1, .. }), "{err}");
}

#[tokio::test]
async fn the_append_call_moves_the_counters_and_stores_a_due_snapshot_in_its_transaction() {
    let db = TestDb::new().await;
    let tenant = db.provision("counters", "ada").await;
    let p = ProjectId::new_v7();
    let mut conn = db.store.write_conn().await.unwrap();
    let state = json!({"marker": "the state after the append"});
    let due = log::SnapshotDue { stream_id: p.0, stream_type: "project", state_version: 7, state: &state };
    conn.append(
        tenant,
        &[],
        &[created(p, "A"), renamed(p, "B")],
        &meta(),
        Utc::now(),
        &ReadGuard::default(),
        Some(&due),
        None,
    )
    .await
    .unwrap();
    let mut su = db.superuser().await;
    let projects: i32 = sqlx::query_scalar("SELECT active_projects FROM tenants WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(projects, 1, "the create moved the tenant's counter in the same call");
    let row = sqlx::query(
        "SELECT s.version, s.last_position, s.last_hash, s.state, e.hash AS event_hash
           FROM snapshots s JOIN events e ON e.position = s.last_position WHERE s.stream_id = $1",
    )
    .bind(p.0)
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>("version"), 2);
    assert_eq!(row.get::<Vec<u8>, _>("last_hash"), row.get::<Vec<u8>, _>("event_hash"));
    assert_eq!(row.get::<serde_json::Value, _>("state"), state);

    // Events that need the transaction (inline tables, sealing) are refused by the one call.
    let invited = keel_domain::Event::MemberRemoved(keel_domain::event::MemberRemoved {
        member_id: keel_domain::MemberId::new_v7(),
        at: Utc::now(),
    });
    let err =
        conn.append(tenant, &[], &[invited], &meta(), Utc::now(), &ReadGuard::default(), None, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err}");
}

#[tokio::test]
async fn a_lost_append_is_resolved_by_asking_the_database() {
    let db = TestDb::new().await;
    let tenant = db.provision("lost", "ada").await;
    let p = ProjectId::new_v7();
    create(&db, tenant, p).await;
    let timeouts = PoolTimeouts { commit_resolve: Duration::from_millis(600), ..PoolTimeouts::default() };
    let store =
        Store::connect_with(&db.url, PoolSizes { writer: 2, reader: 2, projector: 2 }, timeouts, None).await.unwrap();
    let landed: Uuid = {
        let mut su = db.superuser().await;
        sqlx::query_scalar("SELECT event_id FROM events WHERE stream_id = $1")
            .bind(p.0)
            .fetch_one(&mut su)
            .await
            .unwrap()
    };

    // A server process that is still there may yet commit: unknown until it has gone.
    let mut alive = db.superuser().await;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut alive).await.unwrap();
    assert_eq!(store.append_outcome(Some(pid), Uuid::now_v7()).await, CommitOutcome::Unknown);
    // An append that landed is committed, whatever its process.
    assert_eq!(store.append_outcome(Some(pid), landed).await, CommitOutcome::Committed);
    assert_eq!(store.append_outcome(None, landed).await, CommitOutcome::Committed);
    // Once the process has gone, an event that is not in the log never will be.
    alive.close().await.unwrap();
    let mut gone = false;
    for _ in 0..50 {
        if store.append_outcome(Some(pid), Uuid::now_v7()).await == CommitOutcome::Aborted {
            gone = true;
            break;
        }
    }
    assert!(gone, "a gone process's append that is not in the log is aborted");
    // Without the process id, a missing event cannot be told from one still in flight.
    assert_eq!(store.append_outcome(None, Uuid::now_v7()).await, CommitOutcome::Unknown);
}

/// A transaction lost in a crash of the database while its `COMMIT` was in flight: after the
/// restart PostgreSQL gives its id to another transaction (its WAL never reached the disk), and
/// `pg_xact_status` of that id reads `committed`. What the transaction wrote is looked for too,
/// so the lost commit is aborted (the command runs again), not acknowledged.
#[tokio::test]
async fn a_commit_lost_in_a_crash_is_not_taken_for_the_transaction_that_got_its_id_again() {
    let dir = crate::tenancy::scratch("lost-xid");
    let (mut cluster, url) = crate::moves::second_cluster(&dir).await;
    keel_store::migrate(&url).await.unwrap();
    let mut su = sqlx::PgConnection::connect(&url).await.unwrap();
    // The WAL of a transaction that has not committed stays in memory: no WAL writer round and
    // no background writer flushing it for a page it dirtied.
    for sql in [
        "ALTER SYSTEM SET wal_writer_delay = '10s'",
        "ALTER SYSTEM SET bgwriter_lru_maxpages = 0",
        "ALTER SYSTEM SET autovacuum = off",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut su).await.unwrap();
    }
    let timeouts = PoolTimeouts { commit_resolve: Duration::from_secs(20), ..PoolTimeouts::default() };
    let store = Store::connect_with(
        &url,
        PoolSizes { writer: 2, reader: 1, projector: 1 },
        timeouts,
        Some(crate::helpers::master_key()),
    )
    .await
    .unwrap();
    let tenant = crate::helpers::provision_on(&store, "lost-xid", "ada").await;
    // A committed append is committed.
    let mut tx = store.begin_write(tenant).await.unwrap();
    let kept = log::append(&mut tx, &[], &[created(ProjectId::new_v7(), "Kept")], &meta(), Utc::now()).await.unwrap();
    let kept_witness = tx.witness();
    tx.commit().await.unwrap();
    assert_eq!(store.commit_outcome(tenant, kept.last.xid, &kept_witness).await, CommitOutcome::Committed);

    // An append whose transaction the crash takes with it.
    sqlx::query("CHECKPOINT").execute(&mut su).await.unwrap();
    let mut tx = store.begin_write(tenant).await.unwrap();
    let lost = log::append(&mut tx, &[], &[created(ProjectId::new_v7(), "Lost")], &meta(), Utc::now()).await.unwrap();
    let witness = tx.witness();
    assert!(witness.event_id.is_some(), "the append names its first event");
    drop(su);
    cluster.crash_and_restart().await;
    drop(tx);

    // Another transaction is given the lost one's id, and commits.
    let mut su = sqlx::PgConnection::connect(&url).await.unwrap();
    loop {
        let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut su).await.unwrap();
        let xid: u64 = xid.parse().unwrap();
        if xid == lost.last.xid {
            break;
        }
        assert!(xid < lost.last.xid, "the lost transaction's id {} is given out again (now at {xid})", lost.last.xid);
    }
    let status: String = sqlx::query_scalar("SELECT pg_xact_status($1::text::xid8)")
        .bind(lost.last.xid.to_string())
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(status, "committed", "the id alone says committed");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE transaction_id = $1::text::xid8")
        .bind(lost.last.xid.to_string())
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(events, 0, "nothing of the lost append is in the log");
    assert_eq!(
        store.commit_outcome(tenant, lost.last.xid, &witness).await,
        CommitOutcome::Aborted,
        "the lost commit is aborted, so the command runs again"
    );
    // The committed one still reads committed after the crash.
    assert_eq!(store.commit_outcome(tenant, kept.last.xid, &kept_witness).await, CommitOutcome::Committed);

    // A transaction that only answered an idempotency key is told by the key.
    let mut tx = store.begin_write(tenant).await.unwrap();
    let body = json!({"id": Uuid::now_v7(), "version": 1});
    let key = log::KeyToStore { key: "only-a-key", request_hash: &[7; 32], status: 200, response: &body };
    log::append_in(&mut tx, &[], &[], &meta(), Utc::now(), None, Some(&key)).await.unwrap();
    let key_xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(tx.conn()).await.unwrap();
    let key_witness = tx.witness();
    assert_eq!((key_witness.event_id, key_witness.key.as_deref()), (None, Some("only-a-key")));
    tx.commit().await.unwrap();
    assert_eq!(store.commit_outcome(tenant, key_xid.parse().unwrap(), &key_witness).await, CommitOutcome::Committed);

    // Lost in a crash again, and asked about before any other transaction took an id: the
    // database has not given that id out since it restarted.
    let mut tx = store.begin_write(tenant).await.unwrap();
    let ahead = log::append(&mut tx, &[], &[created(ProjectId::new_v7(), "Ahead")], &meta(), Utc::now()).await.unwrap();
    let ahead_witness = tx.witness();
    drop(su);
    cluster.crash_and_restart().await;
    drop(tx);
    let mut su = sqlx::PgConnection::connect(&url).await.unwrap();
    assert_eq!(store.commit_outcome(tenant, ahead.last.xid, &ahead_witness).await, CommitOutcome::Aborted);
    // Had the tenant moved away and its rows here been retired meanwhile, a missing row would
    // prove nothing: unknown (repeat with the same key), never a second run.
    sqlx::query(
        "INSERT INTO tenants_departed (tenant_id, to_database, retire_after, retired_at) VALUES ($1, 'elsewhere', now(), now())",
    )
    .bind(tenant.0)
    .execute(&mut su)
    .await
    .unwrap();
    assert_eq!(store.commit_outcome(tenant, lost.last.xid, &witness).await, CommitOutcome::Unknown);
    store.close().await;
}

/// Through the API: task commands take the two calls, and what they write is what the
/// transaction path wrote (chained, projected, verified), including the snapshot every 100 events.
#[tokio::test]
async fn task_commands_in_two_calls_chain_snapshot_and_verify() {
    let app = spawn_app().await;
    let (tenant, token) = app.provision("twocalls").await;
    let project = app.create_project(&token, "Apollo").await;
    assert_eq!(project.status, 201, "{}", project.body);
    let pid = project.body["id"].as_str().unwrap().to_owned();
    let task = app.post(&format!("/api/v1/projects/{pid}/tasks"), &token, json!({"title": "T"})).await;
    assert_eq!(task.status, 201, "{}", task.body);
    let tid = task.body["id"].as_str().unwrap().to_owned();
    for i in 0..105 {
        let r = app.patch(&format!("/api/v1/tasks/{tid}"), &token, json!({"title": format!("T{i}")})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["version"], i + 2);
    }
    let mut su = app.db.superuser().await;
    let snap: i64 = sqlx::query_scalar("SELECT version FROM snapshots WHERE stream_id = $1::uuid")
        .bind(&tid)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(snap, 100, "the snapshot was stored when the stream reached 100 events");
    // Commands after it load from the snapshot and chain to the right head.
    let r = app.patch(&format!("/api/v1/tasks/{tid}"), &token, json!({"title": "Final"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 107);
    // Every stored hash recomputes, as `keel audit verify` checks it.
    let mut tx = app.db.store.begin_read(tenant).await.unwrap();
    let stream = log::read_stream(&mut tx, Uuid::parse_str(&tid).unwrap()).await.unwrap();
    assert_eq!(stream.len(), 107);
    for (i, e) in stream.iter().enumerate() {
        assert_eq!(e.recompute_hash().to_vec(), e.hash, "event {} of the task", i + 1);
        if i > 0 {
            assert_eq!(e.prev_hash.as_deref(), Some(&stream[i - 1].hash[..]));
        }
    }
    // Another tenant cannot act on the task through the two calls.
    let (_, other) = app.provision("twocalls-other").await;
    let r = app.patch(&format!("/api/v1/tasks/{tid}"), &other, json!({"title": "Mine"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = app.post(&format!("/api/v1/projects/{pid}/tasks"), &other, json!({"title": "In yours"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
}

/// A command sent (name, method, path, body, idempotency key) and the statements expected.
type WireCase<'a> = (&'a str, reqwest::Method, String, Option<serde_json::Value>, Option<&'a str>, Vec<&'a str>);

/// Every command, seen on the wire (through the fault proxy, which records what each connection
/// runs): on the connection that runs its read, a command is its read call and its append call,
/// framed by `BEGIN` and `COMMIT` when it runs as a transaction. A replayed idempotency key is
/// its read alone.
#[tokio::test]
async fn every_command_reads_in_one_call_and_appends_in_one() {
    let (app, proxy) = crate::db_faults::app_behind_proxy(false, crate::db_faults::quick()).await;
    let (tenant, owner) = app.provision_on("wire", "enterprise").await;
    let platform = app.platform_token();
    let project = app.create_project(&owner, "Wire").await.body["id"].as_str().unwrap().to_owned();
    let (member, _) = app.invite(tenant, &owner, "grace", "member").await;
    let now = Utc::now().to_rfc3339();
    let tx = ["BEGIN", "keel_command_read(", "keel_append(", "COMMIT"];
    let calls = ["keel_command_read(", "keel_append("];
    let usage = json!({"records": [{"id": "r1", "metric": "api.calls", "quantity": 1, "occurred_at": now}]});
    let hook = json!({"url": "https://hooks.example.com/keel", "event_types": ["TaskCreated"]});
    let invite = json!({"user_id": "lin", "email": "lin@example.test", "name": "Lin", "role": "member"});
    let cases: Vec<WireCase> = vec![
        (
            "create a project",
            reqwest::Method::POST,
            "/api/v1/projects".into(),
            Some(json!({"name": "P2"})),
            None,
            tx.to_vec(),
        ),
        (
            "rename a project",
            reqwest::Method::PATCH,
            format!("/api/v1/projects/{project}"),
            Some(json!({"name": "P3"})),
            None,
            calls.to_vec(),
        ),
        (
            "rename with a key",
            reqwest::Method::PATCH,
            format!("/api/v1/projects/{project}"),
            Some(json!({"name": "P4"})),
            Some("k1"),
            calls.to_vec(),
        ),
        (
            "the key again",
            reqwest::Method::PATCH,
            format!("/api/v1/projects/{project}"),
            Some(json!({"name": "P4"})),
            Some("k1"),
            vec!["keel_command_read("],
        ),
        (
            "create a task",
            reqwest::Method::POST,
            format!("/api/v1/projects/{project}/tasks"),
            Some(json!({"title": "T", "assignee": member})),
            None,
            calls.to_vec(),
        ),
        (
            "create a task with a key",
            reqwest::Method::POST,
            format!("/api/v1/projects/{project}/tasks"),
            Some(json!({"title": "U"})),
            Some("k2"),
            calls.to_vec(),
        ),
        (
            "the same name under a new key: unchanged, the key still answered",
            reqwest::Method::PATCH,
            format!("/api/v1/projects/{project}"),
            Some(json!({"name": "P4"})),
            Some("k3"),
            calls.to_vec(),
        ),
        (
            "archive a project",
            reqwest::Method::POST,
            format!("/api/v1/projects/{project}/archive"),
            None,
            None,
            tx.to_vec(),
        ),
        (
            "record usage",
            reqwest::Method::POST,
            "/api/v1/usage".into(),
            Some(usage.clone()),
            Some("k4"),
            calls.to_vec(),
        ),
        (
            "the same usage under a new key: unchanged, answered with the recording batch",
            reqwest::Method::POST,
            "/api/v1/usage".into(),
            Some(usage),
            Some("k5"),
            calls.to_vec(),
        ),
        ("create a webhook", reqwest::Method::POST, "/api/v1/webhooks".into(), Some(hook), None, tx.to_vec()),
        (
            "change a role",
            reqwest::Method::PUT,
            format!("/api/v1/members/{member}/role"),
            Some(json!({"role": "admin"})),
            None,
            tx.to_vec(),
        ),
        ("invite a member", reqwest::Method::POST, "/api/v1/members".into(), Some(invite), None, tx.to_vec()),
    ];
    for (name, method, path, body, key, expected) in cases {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        proxy.record();
        let r = app.send_with(method, &path, &owner, body, &headers).await;
        let seen = proxy.recorded();
        assert!(r.status < 300, "{name}: {} {}", r.status, r.body);
        assert_eq!(wire(&seen, &expected), expected, "{name}: {seen:#?}");
    }
    // A platform command: no caller role to read, the tenant row locked for update.
    proxy.record();
    let r = app.post(&format!("/api/v1/tenants/{}/suspend", tenant.0), &platform, json!({"reason": "wire"})).await;
    let seen = proxy.recorded();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wire(&seen, &tx), tx, "suspend: {seen:#?}");
}

/// The statements run on the connection that ran the command's read, each named by the first of
/// `names` it contains (or shown whole); a new connection's own set-up (`SET ...`) is left out.
fn wire<'a>(seen: &'a [(usize, String)], names: &[&'a str]) -> Vec<&'a str> {
    let Some(conn) = seen.iter().find(|(_, sql)| sql.contains("keel_command_read(")).map(|(c, _)| *c) else {
        return Vec::new();
    };
    seen.iter()
        .filter(|(c, sql)| *c == conn && !sql.starts_with("SET "))
        .map(|(_, sql)| names.iter().copied().find(|n| sql.contains(n)).unwrap_or(sql.as_str()))
        .collect()
}
