//! Authentication attacks and authorization from the membership.

use crate::helpers::{SECRET, spawn_app};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_answer_401() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("jwt").await;
    let claims = json!({"sub": "owner-jwt", "tenant_id": tenant.0, "exp": now() + 600});

    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims));
    let wrong_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"some-other-secret-0123456789abcdef"),
    )
    .unwrap();
    let other_alg = encode(&Header::new(Algorithm::HS512), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
    let expired = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "owner-jwt", "tenant_id": tenant.0, "exp": now() - 3600}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let no_exp = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "owner-jwt", "tenant_id": tenant.0}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    // A valid token whose claims were swapped after signing.
    let parts: Vec<&str> = owner.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&json!({"sub": "owner-jwt", "tenant_id": uuid::Uuid::nil(), "exp": now() + 600})),
        parts[2]
    );

    for (what, token) in [
        ("alg none", alg_none.as_str()),
        ("bad signature", wrong_secret.as_str()),
        ("HS512", other_alg.as_str()),
        ("expired", expired.as_str()),
        ("no exp", no_exp.as_str()),
        ("tampered claims", tampered.as_str()),
        ("garbage", "not-a-token"),
    ] {
        let r = app.post("/api/v1/projects", token, json!({"name": "X"})).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        let g = app.graphql(token, "{ me { userId } }", None).await;
        assert_eq!(g.status, 401, "graphql, {what}");
    }
    // No token at all, and a header that is not a bearer token.
    let r = app.send(reqwest::Method::POST, "/api/v1/projects", None, Some(json!({"name": "X"}))).await;
    assert_eq!(r.status, 401);
    let r = app
        .client
        .post(format!("{}/api/v1/projects", app.base))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({"name": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The genuine token still works.
    assert_eq!(app.post("/api/v1/projects", &owner, json!({"name": "X"})).await.status, 201);
}

#[tokio::test]
async fn a_valid_token_for_someone_who_is_not_a_member_cannot_write_or_read() {
    let app = spawn_app().await;
    let (tenant, _) = app.provision("members-only").await;
    let stranger = app.token(tenant, "stranger");
    let r = app.post("/api/v1/projects", &stranger, json!({"name": "X"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["type"], "urn:keel:problem:forbidden");

    let g = app.graphql(&stranger, "{ projects { totalCount } }", None).await;
    assert_eq!(g.body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{}", g.body);
    let me = app.graphql(&stranger, "{ me { userId role } }", None).await;
    assert_eq!(me.body["data"]["me"], json!({"userId": "stranger", "role": null}));
    for field in ["tenant { slug }", "project(id: \"00000000-0000-0000-0000-000000000000\") { name }"] {
        let g = app.graphql(&stranger, &format!("{{ {field} }}"), None).await;
        assert_eq!(g.body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{field}: {}", g.body);
    }
}

#[tokio::test]
async fn platform_and_tenant_scopes_do_not_mix() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("scopes").await;
    // A tenant owner cannot provision tenants.
    let r = app
        .post("/api/v1/tenants", &owner, json!({"name": "X", "slug": "xx", "plan": "free", "owner": {"user_id": "u", "email": "u@x.test", "name": "U"}}))
        .await;
    assert_eq!(r.status, 403);
    // A platform operator never reaches a tenant's projects.
    let platform = app.platform_token();
    assert_eq!(app.post("/api/v1/projects", &platform, json!({"name": "X"})).await.status, 403);
    let g = app.graphql(&platform, "{ projects { totalCount } }", None).await;
    assert_eq!(g.body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{}", g.body);
    let me = app.graphql(&platform, "{ me { userId platform role tenantId } }", None).await;
    assert_eq!(me.body["data"]["me"], json!({"userId": "operator", "platform": true, "role": null, "tenantId": null}));
}

/// A token signed with another secret (a development secret of another data directory) says so
/// in its 401, on REST and GraphQL alike, and names no secret.
#[tokio::test]
async fn a_token_signed_with_another_secret_answers_401_with_a_hint() {
    let app = spawn_app().await;
    let (tenant, _) = app.provision("other-secret").await;
    let other = b"a-development-secret-of-another-data-dir";
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "owner-other-secret", "tenant_id": tenant.0, "exp": now() + 600}),
        &EncodingKey::from_secret(other),
    )
    .unwrap();
    let hint = "signed with a different secret or key";
    let r = app.post("/api/v1/projects", &token, json!({"name": "X"})).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(hint), "{}", r.body);
    let g = app.graphql(&token, "{ me { userId } }", None).await;
    assert_eq!(g.status, 401, "{}", g.body);
    assert!(g.body.to_string().contains(hint), "{}", g.body);
    for body in [r.body.to_string(), g.body.to_string()] {
        for secret in [&other[..], SECRET] {
            assert!(!body.contains(std::str::from_utf8(secret).unwrap()), "{body}");
        }
    }
}
