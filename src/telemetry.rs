//! Logging and tracing set-up: `KEEL_LOG` filters, `KEEL_LOG_FORMAT` picks JSON or pretty lines.
//! Every line logged inside a request carries the request span (request id, trace id, span id,
//! tenant id, actor). Spans are OpenTelemetry spans too; with `KEEL_OTLP_ENDPOINT` they are
//! exported over OTLP/HTTP (protobuf) in batches, from the SDK's own thread.

use clap::ValueEnum;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object a line, with the list of spans.
    Json,
    /// Human-readable lines (coloured only when stderr is a terminal).
    Pretty,
}

/// The tracer provider, kept to flush the last spans at exit (`shutdown`).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

pub fn init(filter: &str, format: LogFormat, otlp_endpoint: Option<&str>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("KEEL_LOG={filter:?} is not a valid filter ({e}); using info");
        EnvFilter::new("info")
    });
    let provider = tracer_provider(otlp_endpoint);
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("keel"));
    let _ = PROVIDER.set(provider);
    // Lines go to stderr; colour codes only when a terminal reads them (never in a file or a pipe).
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Json => registry.with(fmt.json().with_current_span(true).with_span_list(true)).try_init(),
        LogFormat::Pretty => registry.with(fmt).try_init(),
    };
}

/// Spans always get W3C ids (for log lines and `traceresponse`); they leave the process only
/// when an endpoint is set. A bad endpoint is reported and tracing stays local: logs still work.
fn tracer_provider(endpoint: Option<&str>) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name("keel").build());
    let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else { return builder.build() };
    // `http://collector:4318` means the standard traces path; a URL with a path is used as given.
    let endpoint = match url::Url::parse(endpoint) {
        Ok(u) if u.path() == "/" || u.path().is_empty() => format!("{}v1/traces", u.as_str()),
        _ => endpoint.to_owned(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(&endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .build();
    match exporter {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(e) => {
            eprintln!("KEEL_OTLP_ENDPOINT={endpoint:?} cannot be used ({e}); spans are not exported");
            builder.build()
        }
    }
}

/// Exports the spans still queued (at most a few seconds), at exit.
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}

/// The process-wide Prometheus recorder (metrics are global; so is this).
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // A series not updated for two ranking windows is dropped: that is how a tenant that
            // left the busiest N loses its series, and what bounds the `tenant` label's values.
            let idle = keel_gateway::metrics::rank_period() * 2;
            let recorder = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM, Some(idle))
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
    describe_gauge!(
        keel_store::breaker::AVAILABLE,
        "1 while the database answers this process's probe, 0 while it does not (requests are then answered 503)."
    );
    describe_counter!(
        "keel_jwks_fetches_total",
        "Fetches of the identity provider's JWKS URL, by outcome (ok, error)."
    );
    describe_counter!(
        keel_outbound::nats::PUBLISHED,
        "Events the NATS publisher handed to JetStream, by outcome (published, duplicate: dropped by the duplicate window, failed). Its lag is keel_projection_lag_* with projection outbound.nats."
    );
    describe_histogram!(
        keel_outbound::nats::PUBLISH_SECONDS,
        "Time from a publish to JetStream's acknowledgement (or its failure), in seconds."
    );
    describe_counter!(
        keel_outbound::webhooks::worker::DELIVERIES,
        "Webhook delivery attempts by outcome (delivered: a 2xx; failed) and error kind (none, status, timeout, connect, refused, redirect, request, internal)."
    );
    describe_histogram!(
        keel_outbound::webhooks::worker::ATTEMPT_SECONDS,
        "Time of one webhook delivery attempt, from its start to its answer, error or deadline, in seconds."
    );
    describe_gauge!(
        keel_outbound::webhooks::worker::ENDPOINTS,
        "Webhook endpoints by delivery state (active, failing, disabled)."
    );
    describe_gauge!(
        keel_outbound::webhooks::worker::PENDING,
        "Events waiting in every webhook endpoint's queue (the endpoints' lag in events)."
    );
    describe_gauge!(
        keel_outbound::webhooks::worker::LAG_SECONDS,
        "Age of the oldest event waiting for any webhook endpoint, in seconds."
    );
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
    describe_gauge!(
        "keel_projection_dead_letters",
        "Dead letters a projection has parked and no operator has acknowledged (all processes)."
    );
    describe_gauge!(
        "keel_projection_dead_letters_acknowledged",
        "Dead letters of a projection an operator acknowledged (keel projections dead-letters skip)."
    );
    describe_counter!(
        keel_runner::DEAD_LETTER_ACTIONS,
        "Operators' retries and skips of a projection's dead letters, by action (retry, skip) and outcome (applied, failed, acknowledged); from their records, all processes."
    );
    describe_histogram!(
        "keel_append_duration_seconds",
        "Time to append a command's events with its inline tables and snapshot, in seconds."
    );
    describe_gauge!("keel_db_pool_in_use_connections", "Connections of a database pool lent out now.");
    describe_gauge!("keel_db_pool_max_connections", "Largest size of a database pool.");
    describe_histogram!(
        keel_store::ACQUIRE_SECONDS,
        "Time a request waited for a pool connection and its BEGIN, in seconds (writer, reader)."
    );
    describe_counter!(
        keel_gateway::metrics::TIMED_OUT,
        "Requests answered with a timeout, by cause: deadline, statement_timeout, pool_acquire."
    );
    describe_counter!(
        keel_gateway::metrics::TENANT_REQUESTS,
        "HTTP requests of a tenant, by tenant (the KEEL_METRICS_TENANTS busiest of the last ranking window; the rest `other`) and status class."
    );
    describe_histogram!(
        keel_gateway::metrics::TENANT_DURATION,
        "Time to answer a tenant's HTTP request in seconds, by tenant (bounded as keel_tenant_requests_total)."
    );
    describe_gauge!("keel_db_pool_connections", "Open connections of a database pool (writer, reader, projector).");
    describe_gauge!(
        "keel_db_pool_idle_connections",
        "Idle connections of a database pool (writer, reader, projector)."
    );
}
