//! The short form of `keel chaos` (issue 16): the binary itself runs a private PostgreSQL and a
//! Keel server, drives a mixed load while it kills Keel, sends it SIGTERM, stops the database
//! (immediate and fast) and terminates its backends, then checks every answer against the log.
//! Filter with `cargo test --test integration chaos`; the long form is in docs/reliability.md.

use std::time::Duration;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Every fault kind is injected at least once and every check of the harness holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short_run_keeps_every_promise() {
    let dir = std::env::temp_dir().join(format!("keel-chaos-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");
    let run = tokio::process::Command::new(KEEL)
        .args(["chaos", "--duration", "60s", "--clients", "4", "--seed", "16", "--fault-every", "5s"])
        .arg("--report")
        .arg(&report_path)
        .arg("--dir")
        .arg(&dir)
        .env_remove("DATABASE_URL")
        .env_remove("KEEL_CONFIG")
        .kill_on_drop(true)
        .output();
    // 60 s of load, the resolution of open commands, the rebuilds: well under this bound.
    let out = tokio::time::timeout(Duration::from_secs(600), run).await.expect("keel chaos finishes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keel chaos failed ({}):\n{stdout}\n{stderr}", out.status);

    // The figures are printed, and the report says what was done: no vacuous pass.
    for figure in [
        "requests:",
        "faults:",
        "events checked:",
        "longest unavailability",
        "database back -> first 2xx",
        "result: PASS",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in:\n{stdout}");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    for fault in ["sigkill-keel", "sigterm-keel", "pg-stop-immediate", "pg-stop-fast", "pg-terminate-backends"] {
        assert!(report["faults"][fault].as_u64().unwrap_or(0) >= 1, "no {fault} injected: {}", report["faults"]);
    }
    assert_eq!(report["checks"].as_array().unwrap().len(), 8, "{}", report["checks"]);
    assert!(report["requests"]["2xx"].as_u64().unwrap_or(0) > 100, "{}", report["requests"]);
    assert!(report["events_checked"].as_u64().unwrap_or(0) > 100, "{}", report["events_checked"]);
    let _ = std::fs::remove_dir_all(&dir);
}
