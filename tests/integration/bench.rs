//! The bench harness itself must not rot: at a tiny size every case produces numbers.

use crate::helpers::server_url;
use keel::bench::{BenchOptions, run, table};
use std::time::Duration;

#[tokio::test]
async fn every_bench_case_produces_numbers() {
    let opts = BenchOptions {
        clients: 2,
        round: Duration::from_millis(250),
        rounds: 1,
        events: 300,
        async_commit: false,
        traffic: Default::default(),
        scale: 0.001,
        only: Vec::new(),
    };
    let report = run(&server_url(), &opts, &|_| {}).await.expect("the bench runs");
    let names: Vec<&str> = report.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "append",
            "command",
            "command_half_rate",
            "usage_batch",
            "catch_up",
            "query_projects",
            "query_tasks",
            "dashboard",
            "read_your_writes",
            "big_first_page",
            "big_deep_page",
            "big_status_filter",
            "big_priority_filter",
            "busy_neighbour",
            "append_large_log",
            "replica_lag",
            "import"
        ]
    );
    for c in &report.cases {
        assert!(c.keel_ops_s > 0.0 && c.baseline_ops_s > 0.0, "{c:?}");
        assert!(c.ratio.is_finite() && c.ratio > 0.0, "{c:?}");
        assert!(c.p99_ms >= c.p50_ms, "{c:?}");
    }
    let json = serde_json::to_value(&report).unwrap();
    for key in ["name", "keel_ops_s", "baseline_ops_s", "ratio", "p50_ms", "p99_ms"] {
        assert!(json["cases"][0].get(key).is_some(), "{key}");
    }
    assert!(json["machine"]["peak_rss_kb"].as_u64().is_some_and(|k| k > 0));
    assert!(table(&report).lines().count() == 18);
}
