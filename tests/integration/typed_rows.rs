//! Read rows decode their enum columns into the domain's enums and fail loudly on a value Keel
//! never writes, instead of reading it as a default (an unknown member status once read as
//! `ACTIVE`).

use crate::helpers::spawn_app;
use serde_json::Value;
use std::time::Duration;

async fn until(app: &crate::helpers::TestApp, token: &str, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.graphql(token, query, None).await;
        if done(&r.body) {
            return r.body;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_enum_column_keel_never_wrote_is_an_internal_error_not_a_default() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("typed-rows").await;
    let project = app.create_project(&owner, "Typed").await.body["id"].as_str().unwrap().to_owned();
    let q = format!("{{ project(id: \"{project}\") {{ status }} members {{ edges {{ node {{ role status }} }} }} }}");
    until(&app, &owner, &q, |b| {
        b["data"]["project"]["status"] == "ACTIVE" && b["data"]["members"]["edges"][0]["node"]["status"] == "ACTIVE"
    })
    .await;

    let mut db = app.db.superuser().await;
    sqlx::query("UPDATE rm_projects SET status = 'paused' WHERE tenant_id = $1")
        .bind(tenant.0)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE rm_members SET status = 'suspended' WHERE tenant_id = $1")
        .bind(tenant.0)
        .execute(&mut db)
        .await
        .unwrap();
    for field in
        [format!("project(id: \"{project}\") {{ status }}"), "members { edges { node { status } } }".to_owned()]
    {
        let r = app.graphql(&owner, &format!("{{ {field} }}"), None).await;
        assert_eq!(r.body["errors"][0]["extensions"]["code"], "INTERNAL", "{field}: {}", r.body);
        let text = r.body.to_string();
        assert!(!text.contains("ACTIVE"), "no default stands in for the unknown value: {text}");
    }
}
