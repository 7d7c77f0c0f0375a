//! Health, readiness and metrics endpoints.

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let h = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((h.status, h.body["status"].as_str()), (200, Some("ok")));
    let r = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));
    assert!(r.header("x-request-id").is_some());

    let (_, owner) = app.provision("metrics").await;
    app.create_project(&owner, "Counted").await;
    let m = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        m.lines().any(|l| l.starts_with("keel_http_requests_total{")
            && l.contains("route=\"/api/v1/projects\"")
            && l.contains("status=\"201\"")),
        "{m}"
    );
    assert!(m.contains("keel_http_request_duration_seconds_bucket{"), "latency histogram");

    let nf = app.send(reqwest::Method::GET, "/nope", None, None).await;
    assert_eq!((nf.status, nf.header("content-type")), (404, Some("application/problem+json")));
}

#[tokio::test]
async fn readiness_fails_when_migrations_are_not_current() {
    let app = spawn_app().await;
    let mut su = app.db.superuser().await;
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .execute(&mut su)
        .await
        .unwrap();
    let r = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
}
