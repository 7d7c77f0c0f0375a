//! Audit (`docs/guarantees.md`: "Audit", "The event log"): the GraphQL audit fields, upcasting of old event versions, snapshots,
//! and `keel audit export|verify` as a user runs them.

use crate::helpers::{MASTER_KEY, SECRET, TestApp, meta, spawn_app};
use chrono::Utc;
use keel_domain::event::ProjectUpdated;
use keel_domain::values::ProjectName;
use keel_domain::{Event, ProjectId, TenantId};
use keel_store::hash::{HashedFields, canonical_bytes, chain_hash};
use keel_store::log;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn errors_code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// A project created and renamed twice through REST; returns its id and the last position.
async fn renamed_project(app: &TestApp, owner: &str) -> (String, String) {
    let id = app.create_project(owner, "Alpha").await.body["id"].as_str().unwrap().to_owned();
    let mut last = String::new();
    for name in ["Beta", "Gamma"] {
        let r = app.patch(&format!("/api/v1/projects/{id}"), owner, json!({"name": name})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        last = r.body["position"].as_str().unwrap().to_owned();
    }
    (id, last)
}

#[tokio::test]
async fn audit_fields_answer_owners_admins_and_auditors_and_refuse_everyone_else() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("audit-roles", "team").await;
    let (_, admin) = app.invite(tenant, &owner, "ada", "admin").await;
    let (_, auditor) = app.invite(tenant, &owner, "aud", "auditor").await;
    let (_, member) = app.invite(tenant, &owner, "mem", "member").await;
    let (_, viewer) = app.invite(tenant, &owner, "vic", "viewer").await;
    let (project, _) = renamed_project(&app, &owner).await;
    let q = format!(
        r#"{{ events(first: 5) {{ totalCount edges {{ node {{ eventType }} }} }}
              aggregate(streamId: "{project}") {{ version }}
              aggregateHistory(streamId: "{project}") {{ version }} }}"#
    );
    for token in [&owner, &admin, &auditor] {
        let r = app.graphql(token, &q, None).await;
        assert!(r.body["errors"].is_null(), "{}", r.body);
        assert_eq!(r.body["data"]["aggregate"]["version"], 3);
        assert_eq!(r.body["data"]["aggregateHistory"].as_array().unwrap().len(), 3);
    }
    for token in [&member, &viewer] {
        for field in [
            "events(first: 1) { totalCount }",
            &format!(r#"aggregate(streamId: "{project}") {{ version }}"#),
            &format!(r#"aggregateHistory(streamId: "{project}") {{ version }}"#),
        ] {
            let r = app.graphql(token, &format!("{{ {field} }}"), None).await;
            assert_eq!(errors_code(&r.body), Some("FORBIDDEN"), "{field}: {}", r.body);
            assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("cannot read"), "{}", r.body);
        }
    }

    // Another tenant's owner sees nothing of this tenant's log.
    let (_, other) = app.provision("audit-other").await;
    let q = format!(
        r#"{{ events(filter: {{streamId: "{project}"}}) {{ totalCount }}
              aggregate(streamId: "{project}") {{ version }}
              aggregateHistory(streamId: "{project}") {{ version }} }}"#
    );
    let r = app.graphql(&other, &q, None).await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
    assert_eq!(r.body["data"]["events"]["totalCount"], 0);
    assert!(r.body["data"]["aggregate"].is_null());
    assert_eq!(r.body["data"]["aggregateHistory"], json!([]));
    let all: i64 = serde_json::from_value(
        app.graphql(&other, "{ events { totalCount } }", None).await.body["data"]["events"]["totalCount"].clone(),
    )
    .unwrap();
    assert_eq!(all, 2, "the other tenant's own log: provisioned and its owner invited");
    let _ = tenant;
}

#[tokio::test]
async fn events_filter_by_stream_type_actor_and_time_and_page_with_cursors() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("audit-filter").await;
    let (_, admin) = app.invite(tenant, &owner, "ada", "admin").await;
    let before = Utc::now();
    let (project, _) = renamed_project(&app, &owner).await;
    app.create_project(&admin, "By admin").await;

    let count = |filter: String| {
        let app = &app;
        let owner = owner.clone();
        async move {
            let r = app.graphql(&owner, &format!("{{ events(filter: {filter}) {{ totalCount }} }}"), None).await;
            assert!(r.body["errors"].is_null(), "{}", r.body);
            r.body["data"]["events"]["totalCount"].as_i64().unwrap()
        }
    };
    assert_eq!(count(format!(r#"{{streamId: "{project}"}}"#)).await, 3);
    assert_eq!(count(r#"{streamType: "project"}"#.into()).await, 4);
    assert_eq!(count(r#"{eventType: "ProjectUpdated"}"#.into()).await, 2);
    assert_eq!(count(r#"{actor: "user:ada"}"#.into()).await, 1);
    assert_eq!(count(format!(r#"{{from: "{}"}}"#, before.to_rfc3339())).await, 4);
    assert_eq!(
        count(format!(r#"{{to: "{}"}}"#, before.to_rfc3339())).await,
        3,
        "provisioning and the admin's invitation"
    );

    // Pages of two walk the whole log once, in position order.
    let mut seen: Vec<i64> = Vec::new();
    let mut after = String::new();
    loop {
        let arg = if after.is_empty() { String::new() } else { format!(r#", after: "{after}""#) };
        let r = app
            .graphql(&owner, &format!("{{ events(first: 2{arg}) {{ edges {{ cursor node {{ position eventType actor }} }} pageInfo {{ hasNextPage endCursor }} }} }}"), None)
            .await;
        assert!(r.body["errors"].is_null(), "{}", r.body);
        let conn = &r.body["data"]["events"];
        for e in conn["edges"].as_array().unwrap() {
            seen.push(e["node"]["position"].as_i64().unwrap());
        }
        if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let r = app.graphql(&owner, r#"{ events(after: "not-a-cursor") { totalCount } }"#, None).await;
    assert_eq!(errors_code(&r.body), Some("BAD_USER_INPUT"), "{}", r.body);
}

#[tokio::test]
async fn aggregate_gives_the_state_as_of_a_version_or_a_time_and_history_the_state_after_each_event() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("audit-time").await;
    let (project, _) = renamed_project(&app, &owner).await;
    let r = app
        .graphql(
            &owner,
            &format!(
                r#"{{ aggregateHistory(streamId: "{project}") {{ version eventType actor recordedAt event state }} }}"#
            ),
            None,
        )
        .await;
    let steps = r.body["data"]["aggregateHistory"].as_array().unwrap().clone();
    let names: Vec<&str> = steps.iter().map(|s| s["state"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Alpha", "Beta", "Gamma"]);
    assert_eq!(steps[1]["eventType"], "ProjectUpdated");
    assert_eq!(steps[1]["event"]["name"], "Beta");
    assert_eq!(steps[0]["actor"], "user:owner-audit-time");

    let at_v2 = app
        .graphql(&owner, &format!(r#"{{ aggregate(streamId: "{project}", version: 2) {{ version state }} }}"#), None)
        .await;
    assert_eq!(at_v2.body["data"]["aggregate"]["state"]["name"], "Beta");
    let first_at = steps[0]["recordedAt"].as_str().unwrap();
    let at_time = app
        .graphql(
            &owner,
            &format!(r#"{{ aggregate(streamId: "{project}", at: "{first_at}") {{ version state }} }}"#),
            None,
        )
        .await;
    assert_eq!(at_time.body["data"]["aggregate"]["version"], 1);
    assert_eq!(at_time.body["data"]["aggregate"]["state"]["name"], "Alpha");
    let before = app
        .graphql(
            &owner,
            &format!(r#"{{ aggregate(streamId: "{project}", at: "2001-01-01T00:00:00Z") {{ version }} }}"#),
            None,
        )
        .await;
    assert!(before.body["data"]["aggregate"].is_null(), "{}", before.body);
}

/// Writes a `TaskCreated` of schema version 1 (`due` as text) straight into the log, chained to
/// nothing (a new stream), as an old Keel would have.
async fn write_v1_task(app: &TestApp, tenant: TenantId, project: Uuid, due: &str) -> Uuid {
    let task = Uuid::now_v7();
    let payload = json!({"task_id": task, "project_id": project, "title": "Old task", "description": null,
                         "assignee": null, "due": due, "priority": "high", "at": Utc::now()});
    let metadata = json!({"actor": "user:legacy", "correlation_id": Uuid::now_v7()});
    let recorded_at = chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let event_id = Uuid::now_v7();
    let canonical = canonical_bytes(&HashedFields {
        tenant_id: tenant.0,
        stream_type: "task",
        stream_id: task,
        stream_version: 1,
        event_id,
        event_type: "TaskCreated",
        schema_version: 1,
        recorded_at,
        payload: &payload,
        metadata: &metadata,
    });
    let hash = chain_hash(None, &canonical);
    let mut su = app.db.superuser().await;
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, schema_version,
                             payload, metadata, recorded_at, prev_hash, hash)
         VALUES ($1, 'task', $2, 1, $3, 'TaskCreated', 1, $4, $5, $6, NULL, $7)",
    )
    .bind(tenant.0)
    .bind(task)
    .bind(event_id)
    .bind(&payload)
    .bind(&metadata)
    .bind(recorded_at)
    .bind(hash.as_slice())
    .execute(&mut su)
    .await
    .unwrap();
    task
}

#[tokio::test]
async fn task_created_v1_rows_are_upcast_for_commands_projections_graphql_and_audit() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("upcast").await;
    let project = app.create_project(&owner, "Legacy").await.body["id"].as_str().unwrap().parse::<Uuid>().unwrap();
    let task = write_v1_task(&app, tenant, project, "2027-03-09T17:00:00Z").await;

    // A command loads the task through the upcaster and appends after it.
    let r = app.put(&format!("/api/v1/tasks/{task}/status"), &owner, json!({"status": "in_progress"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let position = r.body["position"].as_str().unwrap().to_owned();

    // The projection read it (and the command after it): the due date is a date.
    let q = format!(r#"{{ task(id: "{task}") {{ title dueDate status }} }}"#);
    let r = app.graphql(&owner, &q, Some(&position)).await;
    assert_eq!(r.body["data"]["task"], json!({"title": "Old task", "dueDate": "2027-03-09", "status": "IN_PROGRESS"}));
    let r = app
        .graphql(
            &owner,
            r#"{ tasks(filter: {dueBefore: "2027-03-31", dueAfter: "2027-03-01"}) { totalCount } }"#,
            Some(&position),
        )
        .await;
    assert_eq!(r.body["data"]["tasks"]["totalCount"], 1, "{}", r.body);

    // Audit reads show the current shape and the version it was written with.
    let q = format!(
        r#"{{ events(filter: {{streamId: "{task}"}}) {{ edges {{ node {{ schemaVersion payload }} }} }}
              aggregate(streamId: "{task}", version: 1) {{ state }} }}"#
    );
    let r = app.graphql(&owner, &q, None).await;
    let first = &r.body["data"]["events"]["edges"][0]["node"];
    assert_eq!(first["schemaVersion"], 1);
    assert_eq!(first["payload"]["due_date"], "2027-03-09");
    assert!(first["payload"].get("due").is_none(), "{first}");
    assert_eq!(r.body["data"]["aggregate"]["state"]["due_date"], "2027-03-09");

    // A rebuild from scratch reads it the same way.
    let mut su = app.db.superuser().await;
    sqlx::Executor::execute(&mut su, "TRUNCATE rm_tasks; DELETE FROM projection_checkpoints WHERE name = 'tasks'")
        .await
        .unwrap();
    keel_projections::Runner::new(
        app.db.store.clone(),
        keel_projections::Projection(&keel_store::read::tasks::MODEL),
        Default::default(),
    )
    .run_once()
    .await
    .unwrap();
    let due: chrono::NaiveDate = sqlx::query_scalar("SELECT due_date FROM rm_tasks WHERE task_id = $1")
        .bind(task)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(due.to_string(), "2027-03-09");
    // New tasks are written as version 2.
    let r = app
        .post(&format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "New", "due_date": "2027-04-01"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v: i32 = sqlx::query_scalar("SELECT schema_version FROM events WHERE stream_id = $1")
        .bind(r.body["id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(v, 2);
}

#[tokio::test]
async fn a_ten_thousand_event_stream_loads_from_its_snapshot_and_works_without_any() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("snapshots").await;
    let project = app.create_project(&owner, "Long").await.body["id"].as_str().unwrap().parse::<Uuid>().unwrap();
    // 9,999 renames appended straight to the log (version 2..=10,000), in chunks.
    let mut version = 1;
    while version < 10_000 {
        let n = (10_000 - version).min(2_000);
        let events: Vec<Event> = (0..n)
            .map(|i| {
                Event::ProjectUpdated(ProjectUpdated {
                    project_id: ProjectId(project),
                    name: Some(ProjectName::parse("name", &format!("Name {}", version + i + 1)).unwrap()),
                    description: None,
                    at: Utc::now(),
                })
            })
            .collect();
        let mut tx = app.db.store.begin_write(tenant).await.unwrap();
        log::append(&mut tx, &[(project, version)], &events, &meta(), Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        version += n;
    }
    let load = |store: keel_store::Store| async move {
        let mut tx = store.begin_read(tenant).await.unwrap();
        let (snap, events) = keel_store::snapshot::load(&mut tx, project, "project", 1).await.unwrap();
        tx.commit().await.unwrap();
        (snap.map(|s| s.version), events.len())
    };
    assert_eq!(load(app.db.store.clone()).await, (None, 10_000), "no snapshot yet: the whole stream");

    // A command loads all 10,000 events once and leaves a snapshot behind.
    let r = app.patch(&format!("/api/v1/projects/{project}"), &owner, json!({"name": "After 10k"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 10_001);
    let (snap, read) = load(app.db.store.clone()).await;
    assert_eq!(snap, Some(10_001));
    assert!(read < 100, "a load reads {read} events");

    // The next commands load from it; the state is right (If-Match sees the true version).
    for i in 0..3 {
        let r = app
            .send_with(
                reqwest::Method::PATCH,
                &format!("/api/v1/projects/{project}"),
                &owner,
                Some(json!({"name": format!("Next {i}")})),
                &[("if-match", &format!("\"{}\"", 10_001 + i))],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (_, read) = load(app.db.store.clone()).await;
    assert_eq!(read, 3, "only the events after the snapshot");

    // Snapshots are a cache: all deleted, everything still works and agrees.
    let mut su = app.db.superuser().await;
    sqlx::query("DELETE FROM snapshots").execute(&mut su).await.unwrap();
    let r = app
        .send_with(
            reqwest::Method::PATCH,
            &format!("/api/v1/projects/{project}"),
            &owner,
            Some(json!({"name": "Without snapshots"})),
            &[("if-match", "\"10004\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 10_005);
    let r = app.post(&format!("/api/v1/projects/{project}/archive"), &owner, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A snapshot that cannot be read as the state is ignored, not trusted.
    sqlx::query("UPDATE snapshots SET state = '{\"id\": 42}'").execute(&mut su).await.unwrap();
    let r = app.post(&format!("/api/v1/projects/{project}/restore"), &owner, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 10_007);
    // The same on the write path's two calls (a project's update): the read set's snapshot does
    // not read as the state, so the attempt runs as a transaction that loads the stream whole.
    sqlx::query("UPDATE snapshots SET state = '{\"id\": 42}'").execute(&mut su).await.unwrap();
    let r = app.patch(&format!("/api/v1/projects/{project}"), &owner, json!({"name": "Past a bad snapshot"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 10_008);
    let verify = std::process::Command::new(KEEL)
        .args(["audit", "verify", "--tenant", &tenant.0.to_string()])
        .env("DATABASE_URL", &app.db.url)
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

fn keel_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(KEEL)
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("KEEL_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn audit_export_writes_one_tenants_events_as_ndjson_and_verify_finds_the_first_broken_link() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("export-a").await;
    let (_, other) = app.provision("export-b").await;
    let (project, _) = renamed_project(&app, &owner).await;
    renamed_project(&app, &other).await;

    let out = keel_cli(&app, &["audit", "export", "--tenant", &tenant.0.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5, "provisioned + owner invited + created + 2 renames");
    assert!(lines.iter().all(|l| l["tenant_id"] == json!(tenant.0)), "only this tenant");
    assert!(lines.windows(2).all(|w| w[0]["position"].as_i64() < w[1]["position"].as_i64()));
    assert_eq!(lines[1]["payload"]["email"], "owner@export-a.test", "personal data opened for the export");
    assert_eq!(lines[4]["payload"]["name"], "Gamma");
    assert_eq!(lines[4]["prev_hash"], lines[3]["hash"]);
    let from = lines[3]["recorded_at"].as_str().unwrap();
    let out = keel_cli(&app, &["audit", "export", "--tenant", &tenant.0.to_string(), "--from", from]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2, "--from");

    let ok = keel_cli(&app, &["audit", "verify"]);
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(ok.status.success(), "{text}");
    assert!(text.contains("verified 10 events") && text.contains("of 2 tenants"), "{text}");

    // A superuser with the trigger disabled rewrites history: verify names the first break.
    let mut su = app.db.superuser().await;
    sqlx::query("ALTER TABLE events DISABLE TRIGGER ALL").execute(&mut su).await.unwrap();
    let row = sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload, '{name}', '\"Forged\"')
          WHERE stream_id = $1 AND stream_version = 2 RETURNING position",
    )
    .bind(project.parse::<Uuid>().unwrap())
    .fetch_one(&mut su)
    .await
    .unwrap();
    let position: i64 = row.get("position");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER ALL").execute(&mut su).await.unwrap();
    let broken = keel_cli(&app, &["audit", "verify", "--tenant", &tenant.0.to_string()]);
    let text = String::from_utf8_lossy(&broken.stdout).to_string();
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("stream {project} version 2 position {position}")),
        "names stream, version and position: {text}"
    );
    // The other tenant's chains still hold.
    let other_tenant = lines_tenant_of(&app, "export-b").await;
    assert!(keel_cli(&app, &["audit", "verify", "--tenant", &other_tenant]).status.success());
}

async fn lines_tenant_of(app: &TestApp, slug: &str) -> String {
    let mut su = app.db.superuser().await;
    let id: Uuid = sqlx::query_scalar("SELECT tenant_id FROM tenants WHERE slug = $1")
        .bind(slug)
        .fetch_one(&mut su)
        .await
        .unwrap();
    id.to_string()
}
