//! The read-model registry: each descriptor lists exactly the event kinds its projector applies,
//! so an event is never skipped because a list and a match arm drifted apart.

use crate::helpers::spawn_app;
use keel_domain::EventKind;
use keel_store::read::{Handled, MODELS};
use keel_store::{LogPosition, log};
use serde_json::json;
use std::collections::BTreeSet;

#[tokio::test]
async fn every_read_model_applies_exactly_the_event_kinds_its_descriptor_lists() {
    let app = spawn_app().await;
    let platform = app.platform_token();
    // One event of every kind, through the real API.
    let (tenant, owner) = app.provision("registry").await;
    let t = tenant.0;
    let ok = |r: &crate::helpers::Reply, what: &str| assert!(r.status < 300, "{what}: {} {}", r.status, r.body);
    ok(&app.put(&format!("/api/v1/tenants/{t}/plan"), &platform, json!({"plan": "team"})).await, "plan");
    ok(&app.post(&format!("/api/v1/tenants/{t}/suspend"), &platform, json!({})).await, "suspend");
    ok(&app.post(&format!("/api/v1/tenants/{t}/reactivate"), &platform, json!({})).await, "reactivate");
    let (bob, _) = app.invite(tenant, &owner, "bob", "member").await;
    let (carol, _) = app.invite(tenant, &owner, "carol", "member").await;
    let (dave, _) = app.invite(tenant, &owner, "dave", "member").await;
    ok(&app.put(&format!("/api/v1/members/{bob}/role"), &owner, json!({"role": "admin"})).await, "role");
    ok(&app.post(&format!("/api/v1/members/{bob}/erase"), &owner, json!({})).await, "erase member");
    let r = app.send(reqwest::Method::DELETE, &format!("/api/v1/members/{carol}"), Some(&owner), None).await;
    ok(&r, "remove member");
    let project = app.create_project(&owner, "Registry").await.body["id"].as_str().unwrap().to_owned();
    ok(&app.patch(&format!("/api/v1/projects/{project}"), &owner, json!({"name": "Renamed"})).await, "update");
    ok(&app.post(&format!("/api/v1/projects/{project}/archive"), &owner, json!({})).await, "archive");
    ok(&app.post(&format!("/api/v1/projects/{project}/restore"), &owner, json!({})).await, "restore");
    let r = app.post(&format!("/api/v1/projects/{project}/tasks"), &owner, json!({"title": "One"})).await;
    ok(&r, "task");
    let task = r.body["id"].as_str().unwrap().to_owned();
    ok(&app.patch(&format!("/api/v1/tasks/{task}"), &owner, json!({"title": "Two"})).await, "update task");
    ok(&app.put(&format!("/api/v1/tasks/{task}/assignee"), &owner, json!({"member_id": dave})).await, "assign");
    ok(&app.put(&format!("/api/v1/tasks/{task}/status"), &owner, json!({"status": "done"})).await, "status");
    let now = chrono::Utc::now().to_rfc3339();
    let usage = json!({"records": [{"id": "r1", "metric": "api.calls", "quantity": 3, "occurred_at": now}]});
    ok(&app.post("/api/v1/usage", &owner, usage).await, "usage");
    let hook = json!({"url": "https://hooks.example.com/", "event_types": ["*"]});
    let r = app.post("/api/v1/webhooks", &owner, hook).await;
    ok(&r, "webhook");
    let hook = r.body["id"].as_str().unwrap().to_owned();
    ok(&app.patch(&format!("/api/v1/webhooks/{hook}"), &owner, json!({"description": "d"})).await, "update webhook");
    ok(&app.post(&format!("/api/v1/webhooks/{hook}/rotate-secret"), &owner, json!({})).await, "rotate");
    ok(&app.post(&format!("/api/v1/webhooks/{hook}/replay"), &owner, json!({"from": "1.0"})).await, "replay");
    ok(&app.delete(&format!("/api/v1/webhooks/{hook}"), &owner).await, "delete webhook");
    ok(&app.post(&format!("/api/v1/tenants/{t}/erase"), &platform, json!({})).await, "erase tenant");

    // Every event, once the gap-safe horizon (which a projector's open transaction may hold
    // back for a moment) has passed the last one.
    let store = &app.db.store;
    let total = app.event_count().await as usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let events = loop {
        let mut conn = store.projector().raw().acquire().await.unwrap();
        let mut events = log::read_all_after(&mut conn, LogPosition::START, 10_000).await.unwrap();
        if events.len() == total {
            log::reveal(&mut conn, store.master_key(), &mut events).await.unwrap();
            break events;
        }
        assert!(std::time::Instant::now() < deadline, "{} of {total} events readable", events.len());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let seen: BTreeSet<EventKind> = events.iter().map(|e| EventKind::parse(&e.event_type).unwrap()).collect();
    assert_eq!(
        seen,
        EventKind::ALL.iter().copied().collect(),
        "the flow above must write every event kind (a new kind gets a step here)"
    );

    for model in MODELS {
        let mut applied = BTreeSet::new();
        for recorded in &events {
            let event = recorded.decode().unwrap();
            let kind = event.kind();
            let mut tx = store.projector().begin().await.unwrap();
            let handled = model.apply(&mut tx, recorded, &event).await;
            tx.rollback().await.unwrap();
            let handled = handled.unwrap_or_else(|e| panic!("{} applying {kind}: {e}", model.name));
            assert_eq!(
                model.reads(&recorded.event_type),
                model.handles.contains(&kind),
                "the runner filters by the descriptor"
            );
            if handled == Handled::Applied {
                assert!(
                    model.handles.contains(&kind),
                    "read model {} applies {kind}, which its descriptor does not list: the runner would skip it",
                    model.name
                );
                applied.insert(kind);
            }
        }
        for kind in model.handles {
            assert!(
                applied.contains(kind),
                "read model {} lists {kind} in its descriptor, but its projector ignores it",
                model.name
            );
        }
    }
}

#[test]
fn the_registry_names_each_read_model_and_table_once() {
    let names: BTreeSet<&str> = MODELS.iter().map(|m| m.name).collect();
    assert_eq!(names.len(), MODELS.len(), "read model names are unique");
    let tables: Vec<&str> = MODELS.iter().flat_map(|m| m.tables.iter().copied()).collect();
    let unique: BTreeSet<&str> = tables.iter().copied().collect();
    assert_eq!(unique.len(), tables.len(), "a table belongs to one read model");
    for m in MODELS {
        assert!(m.handles.contains(&EventKind::TenantErased), "{} must forget an erased tenant", m.name);
        assert_eq!(keel_store::read::model(m.name).map(|x| x.name), Some(m.name));
    }
}
