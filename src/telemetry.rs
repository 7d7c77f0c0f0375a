//! Logging set-up: `KEEL_LOG` filters, `KEEL_LOG_FORMAT` picks JSON or pretty lines. Every line
//! logged inside a request carries the request span (request id, tenant id, actor).

use clap::ValueEnum;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object a line, with the list of spans.
    Json,
    /// Human-readable lines (coloured only when stderr is a terminal).
    Pretty,
}

pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("KEEL_LOG={filter:?} is not a valid filter ({e}); using info");
        EnvFilter::new("info")
    });
    // Lines go to stderr; colour codes only when a terminal reads them (never in a file or a pipe).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The process-wide Prometheus recorder (metrics are global; so is this).
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("seconds".into()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                )
                .expect("buckets are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // A second install (several apps in one test process) keeps the first recorder.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// The `# HELP` line of every Keel series, told to the recorder once at start-up. A series
/// recorded anywhere in the workspace is described here (a test reads `/metrics` and fails on a
/// `keel_*` series without help).
fn describe() {
    use keel_gateway::metrics::{DURATION, REQUESTS};
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "HTTP requests answered, by method, route template and status.");
    describe_histogram!(DURATION, "Time to answer an HTTP request in seconds, by method, route template and status.");
    describe_counter!(
        keel_gateway::limits::rate::RATE_LIMITED,
        "Requests refused with 429 by the rate limit, by principal (tenant, platform, user)."
    );
    describe_counter!(
        keel_gateway::limits::rate::FALLBACK,
        "Requests the local limiter decided because the shared limit's Redis failed or timed out."
    );
    describe_counter!(
        keel_gateway::limits::shed::SHED,
        "Requests shed with 503, by service (commands, queries, subscriptions) and reason (in_flight, tenant)."
    );
    describe_counter!("keel_projection_events_total", "Events a projection has applied (committed batches).");
    describe_gauge!("keel_projection_checkpoint", "Log position up to which a projection has applied the log.");
    describe_histogram!("keel_projection_batch_seconds", "Time to apply and commit one projection batch, in seconds.");
    describe_counter!(
        "keel_projection_dead_letters_total",
        "Events a projection parked as dead letters (this process)."
    );
    describe_gauge!("keel_projection_lag_events", "Committed events a projection has not applied yet.");
    describe_gauge!(
        "keel_projection_lag_seconds",
        "Age of the oldest event a projection has not applied yet, in seconds."
    );
    describe_gauge!("keel_projection_dead_letters", "Dead letters a projection has parked (all processes).");
    describe_gauge!("keel_db_pool_connections", "Open connections of a database pool (writer, reader, projector).");
    describe_gauge!(
        "keel_db_pool_idle_connections",
        "Idle connections of a database pool (writer, reader, projector)."
    );
}
