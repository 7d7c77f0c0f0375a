//! Inline tables are derived from the log: dropped and rebuilt, they come back the same.

use crate::helpers::spawn_app;
use chrono::Utc;
use serde_json::json;
use sqlx::PgConnection;

async fn snapshot(su: &mut PgConnection) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT row_to_json(t)::text FROM (SELECT tenant_id, name, slug, plan, status, active_projects, seats_used, created_at, suspended_reason FROM tenants ORDER BY tenant_id) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM memberships ORDER BY tenant_id, member_id) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM usage_counters ORDER BY tenant_id, month) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM usage_records ORDER BY tenant_id, record_id) t",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut *su).await.unwrap();
        out.extend(rows);
    }
    out
}

#[tokio::test]
async fn inline_tables_rebuilt_from_the_log_equal_the_originals() {
    let app = spawn_app().await;
    let mut tenants = Vec::new();
    for slug in ["rebuild-a", "rebuild-b"] {
        let (tenant, owner) = app.provision_on(slug, "team").await;
        let (bob, _) = app.invite(tenant, &owner, "bob", "member").await;
        app.invite(tenant, &owner, "carol", "admin").await;
        app.put(&format!("/api/v1/members/{bob}/role"), &owner, json!({"role": "viewer"})).await;
        app.delete(&format!("/api/v1/members/{bob}"), &owner).await;
        let p = app.create_project(&owner, "P1").await.body["id"].as_str().unwrap().to_owned();
        app.create_project(&owner, "P2").await;
        app.post(&format!("/api/v1/projects/{p}/archive"), &owner, json!({})).await;
        let r = app
            .post(
                "/api/v1/usage",
                &owner,
                json!({"records": [{"id": "u1", "metric": "api.calls", "quantity": 5, "occurred_at": Utc::now()}]}),
            )
            .await;
        assert_eq!(r.status, 201);
        tenants.push(tenant);
    }
    let platform = app.platform_token();
    app.post(&format!("/api/v1/tenants/{}/suspend", tenants[1].0), &platform, json!({"reason": "audit"})).await;

    let mut su = app.db.superuser().await;
    let before = snapshot(&mut su).await;
    assert!(before.len() > 8);
    // Wipe them entirely, as if lost, then rebuild every tenant from its events.
    sqlx::query("TRUNCATE tenants, memberships, usage_counters, usage_records").execute(&mut su).await.unwrap();
    assert!(snapshot(&mut su).await.is_empty());
    for tenant in &tenants {
        let mut tx = app.db.store.begin_write(*tenant).await.unwrap();
        let n = keel_store::inline::rebuild_tenant(&mut tx).await.unwrap();
        assert!(n > 5);
        tx.commit().await.unwrap();
    }
    assert_eq!(snapshot(&mut su).await, before);
}
