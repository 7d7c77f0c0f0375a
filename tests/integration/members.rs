//! Member commands through the API: invitations, role changes, removal, and their rules.

use crate::helpers::spawn_app;
use serde_json::json;

#[tokio::test]
async fn invite_change_role_and_remove() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("team-a").await;
    let (bob, bob_token) = app.invite(tenant, &owner, "bob", "member").await;
    // Bob can now act as a member.
    assert_eq!(app.create_project(&bob_token, "Bob's").await.status, 201);

    let r = app.put(&format!("/api/v1/members/{bob}/role"), &owner, json!({"role": "viewer"})).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(2)));
    let r = app.post("/api/v1/projects", &bob_token, json!({"name": "No longer"})).await;
    assert_eq!(r.status, 403, "the new role applies at once");

    let r = app.delete(&format!("/api/v1/members/{bob}"), &owner).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(3)));
    let g = app.graphql(&bob_token, "{ me { role } }", None).await;
    assert_eq!(g.body["data"]["me"]["role"], json!(null), "a removed member has no role");
    let r = app.delete(&format!("/api/v1/members/{bob}"), &owner).await;
    assert_eq!(r.status, 409, "removing twice violates a rule");
    // Removal freed the seat and the user id: Bob can be invited again.
    app.invite(tenant, &owner, "bob", "admin").await;
}

#[tokio::test]
async fn email_and_user_id_are_unique_among_active_members() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("unique-members").await;
    let r = app
        .post(
            "/api/v1/members",
            &owner,
            json!({"user_id": "owner-unique-members", "email": "x@y.test", "name": "X", "role": "member"}),
        )
        .await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (409, Some("user_id")), "{}", r.body);
    let r = app
        .post(
            "/api/v1/members",
            &owner,
            json!({"user_id": "new", "email": "OWNER@unique-members.test", "name": "X", "role": "member"}),
        )
        .await;
    assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (409, Some("email")), "case-insensitive: {}", r.body);
    let r = app
        .post(
            "/api/v1/members",
            &owner,
            json!({"user_id": "new", "email": "not an email", "name": "X", "role": "boss"}),
        )
        .await;
    let fields: Vec<&str> = r.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!((r.status, fields), (422, vec!["email", "role"]));
}

#[tokio::test]
async fn the_tenant_always_keeps_an_active_owner() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("owners").await;
    let g = app.graphql(&owner, "{ me { userId } }", None).await;
    assert_eq!(g.status, 200);
    // Find the owner's member id through a second owner's eyes: invite one, then demote the first.
    let (second, second_token) = app.invite(tenant, &owner, "second", "owner").await;
    let r = app.put(&format!("/api/v1/members/{second}/role"), &owner, json!({"role": "admin"})).await;
    assert_eq!(r.status, 200);
    // Now the original owner is the only one: the admin may not demote or remove an owner, and
    // the owner may not demote themselves away.
    let r = app.put(&format!("/api/v1/members/{second}/role"), &second_token, json!({"role": "owner"})).await;
    assert_eq!(r.status, 403, "an admin cannot make an owner: {}", r.body);
    let mut su = app.db.superuser().await;
    let first: uuid::Uuid = sqlx::query_scalar("SELECT member_id FROM memberships WHERE user_id = 'owner-owners'")
        .fetch_one(&mut su)
        .await
        .unwrap();
    let r = app.put(&format!("/api/v1/members/{first}/role"), &owner, json!({"role": "admin"})).await;
    assert_eq!((r.status, r.body["code"].as_str()), (409, Some("rule-violated")), "{}", r.body);
    let r = app.delete(&format!("/api/v1/members/{first}"), &owner).await;
    assert_eq!(r.status, 409);
    let r = app.delete(&format!("/api/v1/members/{first}"), &second_token).await;
    assert_eq!(r.status, 403, "an admin cannot remove an owner");
}

#[tokio::test]
async fn another_tenants_member_answers_404_like_a_missing_one() {
    let app = spawn_app().await;
    let (a, owner_a) = app.provision("members-a").await;
    let (_, owner_b) = app.provision("members-b").await;
    let (bob, _) = app.invite(a, &owner_a, "bob", "member").await;
    let missing = uuid::Uuid::now_v7();
    for (path, body) in [
        (format!("/api/v1/members/{bob}/role"), Some(json!({"role": "viewer"}))),
        (format!("/api/v1/members/{bob}"), None),
    ] {
        let method = if body.is_some() { reqwest::Method::PUT } else { reqwest::Method::DELETE };
        let foreign = app.send(method.clone(), &path, Some(&owner_b), body.clone()).await;
        let absent = app.send(method, &path.replace(&bob, &missing.to_string()), Some(&owner_b), body).await;
        assert_eq!(foreign.status, 404, "{path}");
        assert_eq!(foreign.body, absent.body);
    }
}
