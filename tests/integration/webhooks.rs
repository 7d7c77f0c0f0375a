//! Webhook endpoints managed over REST and read in GraphQL (issue 17, point 1): the secret shown
//! once and never in clear anywhere else, owners and admins only, one tenant's endpoints only,
//! and every hostile input a 422 naming its field.

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};
use serde_json::{Value, json};

const URL: &str = "https://hooks.example.com/keel";

/// Creates an endpoint. A 503 (a connection not free in time, or the database probe not
/// answering while the whole suite loads two cores) wrote nothing and says to retry: sent again
/// with the same Idempotency-Key, for up to 20 s.
async fn create(app: &TestApp, token: &str, body: Value) -> crate::helpers::Reply {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = app
            .send_with(
                reqwest::Method::POST,
                "/api/v1/webhooks",
                token,
                Some(body.clone()),
                &[("idempotency-key", &key)],
            )
            .await;
        if r.status != 503 || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn ok_body() -> Value {
    json!({"url": URL, "event_types": ["TaskCreated", "ProjectCreated"], "description": "billing"})
}

async fn list(app: &TestApp, token: &str) -> Value {
    let r = app
        .graphql(
            token,
            "{ webhooks { id url eventTypes description state previousSecretValidUntil createdAt updatedAt } }",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["errors"].is_null(), "{}", r.body);
    r.body["data"]["webhooks"].clone()
}

/// Every text column of every table and the log's payloads, read as the superuser: where a
/// string could sit in clear.
async fn stored_anywhere(app: &TestApp, needle: &str) -> Vec<String> {
    let mut su = app.db.superuser().await;
    let cols: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
          WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'json', 'ARRAY', 'character varying')",
    )
    .fetch_all(&mut su)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (t, c) in cols {
        let sql = format!("SELECT count(*) FROM \"{t}\" WHERE \"{c}\"::text LIKE '%' || $1 || '%'");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(needle).fetch_one(&mut su).await.unwrap();
        if n > 0 {
            found.push(format!("{t}.{c}"));
        }
    }
    found
}

#[tokio::test]
async fn endpoints_are_created_changed_rotated_replayed_and_deleted_as_events() {
    let app = spawn_app().await;
    let (_tenant, owner) = app.provision("wh-crud").await;

    let r = create(&app, &owner, ok_body()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["version"], 1);
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.decode(&secret["whsec_".len()..]).unwrap();
        assert_eq!(key.len(), 24, "24 random bytes");
    }

    // Read at once in GraphQL (inline table), never with the secret.
    let hooks = list(&app, &owner).await;
    assert_eq!(hooks.as_array().unwrap().len(), 1);
    assert_eq!(hooks[0]["id"], id.as_str());
    assert_eq!(hooks[0]["url"], URL);
    assert_eq!(hooks[0]["eventTypes"], json!(["TaskCreated", "ProjectCreated"]));
    assert_eq!(hooks[0]["description"], "billing");
    assert_eq!(hooks[0]["state"], "ACTIVE");
    assert!(hooks[0]["previousSecretValidUntil"].is_null());
    assert!(!hooks.to_string().contains(&secret));
    let r = app.graphql(&owner, "{ webhooks { secret } }", None).await;
    assert!(r.body["errors"].is_array(), "no secret field: {}", r.body);

    // The secret is in clear nowhere in the database: the log and the inline table hold it sealed
    // (the search itself finds what is there: the URL, in both).
    let url_at = stored_anywhere(&app, URL).await;
    assert!(
        url_at.contains(&"events.payload".to_owned()) && url_at.contains(&"webhook_endpoints.url".to_owned()),
        "{url_at:?}"
    );
    assert_eq!(stored_anywhere(&app, &secret).await, Vec::<String>::new());
    let mut su = app.db.superuser().await;
    let stored: String = sqlx::query_scalar(
        "SELECT payload->>'secret' FROM events WHERE event_type = 'WebhookCreated' AND stream_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    let inline: String = sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE webhook_id = $1::uuid")
        .bind(&id)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(inline, stored, "the inline table holds what the log holds");
    // ...and it opens, under the endpoint's own key, to the secret the create answered.
    let tenant: uuid::Uuid = sqlx::query_scalar("SELECT tenant_id FROM webhook_endpoints WHERE webhook_id = $1::uuid")
        .bind(&id)
        .fetch_one(&mut su)
        .await
        .unwrap();
    let opened = keel_store::crypto::open_secret(
        &mut su,
        Some(&crate::helpers::master_key()),
        tenant,
        id.parse().unwrap(),
        &inline,
    )
    .await
    .unwrap();
    assert_eq!(opened.as_deref(), Some(secret.as_str()));

    // Update: only what changed; the URL is normalised.
    let r = app
        .patch(
            &format!("/api/v1/webhooks/{id}"),
            &owner,
            json!({"url": "https://HOOKS.example.com/v2", "event_types": ["*"], "description": null}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    let hooks = list(&app, &owner).await;
    assert_eq!(hooks[0]["url"], "https://hooks.example.com/v2");
    assert_eq!(hooks[0]["eventTypes"], json!(["*"]));
    assert!(hooks[0]["description"].is_null());
    assert!(r.body.get("secret").is_none(), "an update shows no secret");

    // Rotation: a new secret once; the previous one signs for the grace period (24 h default).
    let r = app.post(&format!("/api/v1/webhooks/{id}/rotate-secret"), &owner, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = r.body["secret"].as_str().unwrap().to_owned();
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    let hooks = list(&app, &owner).await;
    let until: chrono::DateTime<chrono::Utc> = hooks[0]["previousSecretValidUntil"].as_str().unwrap().parse().unwrap();
    let grace = until - chrono::Utc::now();
    assert!(grace > chrono::TimeDelta::hours(23) && grace <= chrono::TimeDelta::hours(24), "{grace}");
    let (now_secret, previous): (String, Option<String>) =
        sqlx::query_as("SELECT secret, previous_secret FROM webhook_endpoints WHERE webhook_id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut su)
            .await
            .unwrap();
    assert_eq!(previous.as_deref(), Some(inline.as_str()), "the previous secret is kept, sealed");
    assert!(now_secret.starts_with("enc:v1:"));
    assert_eq!(stored_anywhere(&app, &rotated).await, Vec::<String>::new());

    // Replay from a position and from a time: recorded on the endpoint's stream.
    let pos = r.body["position"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/api/v1/webhooks/{id}/replay"), &owner, json!({"from": pos})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let r = app.post(&format!("/api/v1/webhooks/{id}/replay"), &owner, json!({"from": t})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let replays: Vec<Value> = sqlx::query_scalar(
        "SELECT payload->'from' FROM events WHERE event_type = 'WebhookReplayRequested' AND stream_id = $1::uuid
          ORDER BY stream_version",
    )
    .bind(&id)
    .fetch_all(&mut su)
    .await
    .unwrap();
    let (xid, p) = pos.split_once('.').unwrap();
    assert_eq!(
        replays[0],
        json!({"position": {"xid": xid.parse::<u64>().unwrap(), "position": p.parse::<i64>().unwrap()}})
    );
    assert!(replays[1]["time"].is_string());

    // The audit shows who pointed data where, and never the secret.
    let r = app
        .graphql(&owner, &format!("{{ aggregateHistory(streamId: \"{id}\") {{ eventType actor event state }} }}"), None)
        .await;
    assert!(r.body["errors"].is_null(), "{}", r.body);
    let steps = r.body["data"]["aggregateHistory"].as_array().unwrap().clone();
    let kinds: Vec<&str> = steps.iter().map(|s| s["eventType"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "WebhookCreated",
            "WebhookUpdated",
            "WebhookSecretRotated",
            "WebhookReplayRequested",
            "WebhookReplayRequested"
        ]
    );
    assert_eq!(steps[0]["actor"], "user:owner-wh-crud");
    assert_eq!(steps[0]["event"]["url"], URL);
    assert_eq!(steps[0]["event"]["secret"], "[redacted]");
    assert_eq!(steps[2]["event"]["secret"], "[redacted]");
    let r = app.graphql(&owner, "{ events(first: 50) { edges { node { eventType payload } } } }", None).await;
    let text = r.body.to_string();
    assert!(text.contains("WebhookCreated"), "{text}");
    assert!(!text.contains(&secret) && !text.contains(&rotated) && !text.contains("enc:v1:"), "{text}");

    // Delete: gone from the list, and it takes no further command.
    let r = app.delete(&format!("/api/v1/webhooks/{id}"), &owner).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(list(&app, &owner).await, json!([]));
    for (m, path, body) in [
        ("patch", format!("/api/v1/webhooks/{id}"), json!({"description": "x"})),
        ("post", format!("/api/v1/webhooks/{id}/rotate-secret"), json!({})),
        ("post", format!("/api/v1/webhooks/{id}/replay"), json!({"from": "1.1"})),
        ("delete", format!("/api/v1/webhooks/{id}"), Value::Null),
    ] {
        let r = send(&app, m, &path, &owner, body).await;
        assert_eq!(r.status, 404, "{m} {path} after delete: {}", r.body);
    }
}

async fn send(app: &TestApp, method: &str, path: &str, token: &str, body: Value) -> crate::helpers::Reply {
    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let body = (!body.is_null()).then_some(body);
    app.send(m, path, Some(token), body).await
}

#[tokio::test]
async fn only_owners_and_admins_manage_endpoints_and_read_them() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("wh-roles", "enterprise").await;
    let id = create(&app, &owner, ok_body()).await.body["id"].as_str().unwrap().to_owned();
    let (_, admin) = app.invite(tenant, &owner, "the-admin", "admin").await;
    let r = create(&app, &admin, ok_body()).await;
    assert_eq!(r.status, 201, "an admin creates: {}", r.body);
    assert_eq!(list(&app, &admin).await.as_array().unwrap().len(), 2);
    for role in ["member", "viewer", "auditor"] {
        let (_, token) = app.invite(tenant, &owner, &format!("the-{role}"), role).await;
        let calls = [
            ("post", "/api/v1/webhooks".to_owned(), ok_body()),
            ("patch", format!("/api/v1/webhooks/{id}"), json!({"description": "x"})),
            ("post", format!("/api/v1/webhooks/{id}/rotate-secret"), json!({})),
            ("post", format!("/api/v1/webhooks/{id}/replay"), json!({"from": "1.1"})),
            ("delete", format!("/api/v1/webhooks/{id}"), Value::Null),
        ];
        for (m, path, body) in calls {
            let r = send(&app, m, &path, &token, body).await;
            assert_eq!(r.status, 403, "{role} {m} {path}: {}", r.body);
        }
        let r = app.graphql(&token, "{ webhooks { id } }", None).await;
        assert_eq!(r.body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{role}: {}", r.body);
    }
    let r = create(&app, &app.platform_token(), ok_body()).await;
    assert_eq!(r.status, 403, "the platform acts in no tenant");
}

#[tokio::test]
async fn another_tenants_endpoint_is_not_found_and_not_listed() {
    let app = spawn_app().await;
    let (_a, owner_a) = app.provision("wh-a").await;
    let (_b, owner_b) = app.provision("wh-b").await;
    let id_a = create(&app, &owner_a, ok_body()).await.body["id"].as_str().unwrap().to_owned();
    let r = create(&app, &owner_b, json!({"url": "https://b.example.com/", "event_types": ["*"]})).await;
    assert_eq!(r.status, 201);
    for (m, path, body) in [
        ("patch", format!("/api/v1/webhooks/{id_a}"), json!({"description": "mine now"})),
        ("post", format!("/api/v1/webhooks/{id_a}/rotate-secret"), json!({})),
        ("post", format!("/api/v1/webhooks/{id_a}/replay"), json!({"from": "1.1"})),
        ("delete", format!("/api/v1/webhooks/{id_a}"), Value::Null),
        ("patch", "/api/v1/webhooks/not-a-uuid".to_owned(), json!({"description": "x"})),
    ] {
        let r = send(&app, m, &path, &owner_b, body).await;
        assert_eq!(r.status, 404, "{m} {path}: {}", r.body);
    }
    let a = list(&app, &owner_a).await;
    let b = list(&app, &owner_b).await;
    assert_eq!(a.as_array().unwrap().len(), 1);
    assert_eq!(a[0]["id"], id_a.as_str());
    assert_eq!(a[0]["description"], "billing", "b's attempts changed nothing");
    assert_eq!(b.as_array().unwrap().len(), 1);
    assert_eq!(b[0]["url"], "https://b.example.com/");
}

/// The field a 422 names (the first of its `errors`).
fn field(r: &crate::helpers::Reply) -> String {
    assert_eq!(r.status, 422, "{}", r.body);
    r.body["errors"][0]["field"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn hostile_input_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("wh-hostile").await;
    let with = |url: &str| json!({"url": url, "event_types": ["*"]});
    for url in [
        "http://hooks.example.com/",
        "ftp://hooks.example.com/",
        "not a url",
        "https://user:pw@hooks.example.com/",
        "https://127.0.0.1/",
        "https://0x7f.1/",
        "https://localhost/",
        "https://api.localhost/",
        "https://10.0.0.1/",
        "https://172.16.5.4/",
        "https://192.168.1.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/",
        "https://[::1]/",
        "https://[fd12::1]/",
        "https://[fe80::1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://0.0.0.0/",
        "https://metadata.google.internal/",
        "https://intranet/hook",
        "https://hooks.example.com/\u{0}",
    ] {
        let r = create(&app, &owner, with(url)).await;
        assert_eq!(field(&r), "url", "{url}: {}", r.body);
    }
    let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
    assert_eq!(field(&create(&app, &owner, with(&long)).await), "url");
    let r = create(&app, &owner, json!({"url": URL, "event_types": ["TaskCreated", "DropTables"]})).await;
    assert_eq!(field(&r), "event_types[1]");
    let r = create(&app, &owner, json!({"url": URL, "event_types": []})).await;
    assert_eq!(field(&r), "event_types");
    let r = create(&app, &owner, json!({"url": URL, "event_types": vec!["*"; 65]})).await;
    assert_eq!(field(&r), "event_types");
    let r = create(&app, &owner, json!({"url": URL, "event_types": ["*"], "description": "x".repeat(501)})).await;
    assert_eq!(field(&r), "description");
    let r = create(&app, &owner, json!({"url": URL, "event_types": ["*"], "description": "a\u{0}b"})).await;
    assert_eq!(field(&r), "description");
    let r = create(&app, &owner, json!({"url": URL, "event_types": ["Task\u{0}Created"]})).await;
    assert_eq!(field(&r), "event_types[0]");
    let r = create(&app, &owner, json!({"url": URL, "event_types": ["*"], "secret": "whsec_mine"})).await;
    assert_eq!(field(&r), "secret", "a client cannot choose the secret: {}", r.body);

    // Replays name a time or a position; an update follows the same URL rules.
    let id = create(&app, &owner, ok_body()).await.body["id"].as_str().unwrap().to_owned();
    // (A time still to come is accepted: it resends nothing extra.)
    for from in ["yesterday", "1.-1", "", "2026-13-01T00:00:00Z"] {
        let r = app.post(&format!("/api/v1/webhooks/{id}/replay"), &owner, json!({"from": from})).await;
        assert_eq!(field(&r), "from", "{from:?}");
    }
    let r = app.patch(&format!("/api/v1/webhooks/{id}"), &owner, json!({"url": "https://127.0.0.1/"})).await;
    assert_eq!(field(&r), "url");
    let r = app.patch(&format!("/api/v1/webhooks/{id}"), &owner, json!({"event_types": null})).await;
    assert_eq!(field(&r), "event_types");

    // Nothing of it was written: one endpoint, created once.
    let mut su = app.db.superuser().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1 AND stream_type = 'webhook'")
        .bind(tenant.0)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_tenant_has_at_most_twenty_endpoints() {
    let app = spawn_app().await;
    let (_tenant, owner) = app.provision("wh-limit").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = create(&app, &owner, json!({"url": format!("https://h{i}.example.com/"), "event_types": ["*"]})).await;
        assert_eq!(r.status, 201, "endpoint {i}: {}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let r = create(&app, &owner, ok_body()).await;
    assert_eq!(field(&r), "webhook_endpoints", "{}", r.body);
    assert_eq!(r.body["code"], "limit-exceeded");
    // A deleted endpoint frees its place.
    assert_eq!(app.delete(&format!("/api/v1/webhooks/{}", ids[0]), &owner).await.status, 200);
    assert_eq!(create(&app, &owner, ok_body()).await.status, 201);
    assert_eq!(field(&create(&app, &owner, ok_body()).await), "webhook_endpoints");
}

#[tokio::test]
async fn the_settings_open_http_and_private_destinations() {
    let mut webhooks = keel_command::WebhookSettings::default();
    webhooks.policy.allow_http = true;
    let app = spawn_app_with(Options { webhooks, ..Options::default() }).await;
    let (_t, owner) = app.provision("wh-http").await;
    let http = json!({"url": "http://hooks.example.com/", "event_types": ["*"]});
    assert_eq!(create(&app, &owner, http).await.status, 201, "http with KEEL_WEBHOOKS_ALLOW_HTTP");
    let private = json!({"url": "http://127.0.0.1:9/", "event_types": ["*"]});
    assert_eq!(field(&create(&app, &owner, private.clone()).await), "url", "still no private host");
    drop(app);

    webhooks.policy.allow_private = true;
    let app = spawn_app_with(Options { webhooks, ..Options::default() }).await;
    let (_t, owner) = app.provision("wh-private").await;
    let r = create(&app, &owner, private).await;
    assert_eq!(r.status, 201, "with KEEL_WEBHOOKS_ALLOW_PRIVATE too: {}", r.body);
}

#[tokio::test]
async fn a_replayed_create_does_not_show_the_secret_again() {
    let app = spawn_app().await;
    let (_t, owner) = app.provision("wh-idem").await;
    let send = || async {
        let r = app
            .client
            .post(format!("{}/api/v1/webhooks", app.base))
            .bearer_auth(&owner)
            .header("idempotency-key", "create-hook-1")
            .json(&ok_body())
            .send()
            .await
            .unwrap();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        (r.status().as_u16(), replayed, r.json::<Value>().await.unwrap())
    };
    let (s1, replayed1, first) = send().await;
    assert_eq!((s1, replayed1), (201, false));
    assert!(first["secret"].as_str().unwrap().starts_with("whsec_"));
    let (s2, replayed2, second) = send().await;
    assert_eq!((s2, replayed2), (201, true));
    assert_eq!(second["id"], first["id"]);
    assert!(second.get("secret").is_none(), "the stored answer holds no secret: {second}");
    let secret = first["secret"].as_str().unwrap();
    assert_eq!(stored_anywhere(&app, secret).await, Vec::<String>::new(), "nor does the idempotency table");
}

/// The endpoint's sealed secret as stored, and what it opens to now (None: its key is gone).
async fn secret_opens(app: &TestApp, id: &str) -> Option<String> {
    let mut su = app.db.superuser().await;
    let (tenant, sealed): (uuid::Uuid, String) =
        sqlx::query_as("SELECT tenant_id, secret FROM webhook_endpoints WHERE webhook_id = $1::uuid")
            .bind(id)
            .fetch_one(&mut su)
            .await
            .unwrap();
    keel_store::crypto::open_secret(&mut su, Some(&crate::helpers::master_key()), tenant, id.parse().unwrap(), &sealed)
        .await
        .unwrap()
}

#[tokio::test]
async fn erasing_the_member_who_made_an_endpoint_keeps_its_secret_and_erasing_the_tenant_ends_it() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision_on("wh-erase", "team").await;
    let (admin_id, admin) = app.invite(tenant, &owner, "the-admin", "admin").await;
    let r = create(&app, &admin, ok_body()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (id, secret) = (r.body["id"].as_str().unwrap().to_owned(), r.body["secret"].as_str().unwrap().to_owned());
    assert_eq!(secret_opens(&app, &id).await.as_deref(), Some(secret.as_str()));

    let r = app.post(&format!("/api/v1/members/{admin_id}/erase"), &owner, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(secret_opens(&app, &id).await.as_deref(), Some(secret.as_str()), "a member's erasure leaves it");
    assert_eq!(list(&app, &owner).await.as_array().unwrap().len(), 1);

    let r = app.post(&format!("/api/v1/tenants/{}/erase", tenant.0), &app.platform_token(), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(secret_opens(&app, &id).await, None, "the tenant's erasure deletes the endpoint's key");
    let mut su = app.db.superuser().await;
    let deleted: bool = sqlx::query_scalar("SELECT deleted FROM webhook_endpoints WHERE webhook_id = $1::uuid")
        .bind(&id)
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert!(deleted, "an erased tenant's endpoints take no more deliveries");
}
