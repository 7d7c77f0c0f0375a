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

/// Every Keel series on `/metrics` has a `# HELP` line.
#[tokio::test]
async fn every_keel_series_on_metrics_is_described() {
    let app = spawn_app().await;
    let (_, owner) = app.provision("metrics-help").await;
    app.create_project(&owner, "Described").await;
    let mut m = String::new();
    // The projection lag gauges are refreshed about once a second.
    for _ in 0..100 {
        m = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
        if m.contains("# TYPE keel_projection_lag_events") && m.contains("# TYPE keel_projection_batch_seconds") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let typed: Vec<&str> =
        m.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    for name in ["keel_http_requests_total", "keel_projection_lag_events", "keel_db_pool_connections"] {
        assert!(typed.contains(&name), "{name} is on /metrics:\n{m}");
    }
    for name in typed.iter().filter(|n| n.starts_with("keel_")) {
        let help = m.lines().find_map(|l| l.strip_prefix(&format!("# HELP {name} ")));
        assert!(help.is_some_and(|h| !h.trim().is_empty()), "{name} has a # HELP line:\n{m}");
    }
}
