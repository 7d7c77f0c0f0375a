//! `App`: binds the listener, builds the router and the projection runner, and runs them side by
//! side until shutdown. Tests build it the same way `keel up` does, on port 0.

use crate::DatabaseUrl;
use crate::telemetry;
use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel_gateway::{Authenticator, Code, JwtConfig, Problem};
use keel_projections::RunnerConfig;
use keel_store::{PoolSizes, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Which parts of Keel this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    pub command: bool,
    pub query: bool,
    pub projector: bool,
}

impl Services {
    pub const ALL: Services = Services { command: true, query: true, projector: true };
}

/// `Debug` never shows a secret (see `DatabaseUrl`, `JwtConfig`'s secret, `MasterKey`).
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub database_url: DatabaseUrl,
    /// A streaming replica of that database for GraphQL and audit reads
    /// (`KEEL_READ_DATABASE_URL`); the command side and the projections stay on the primary.
    pub read_database_url: Option<DatabaseUrl>,
    /// Set when `database_url` is a transaction pooler (PgBouncer in transaction mode): the same
    /// database past the pooler, for what needs a session (LISTEN) (`KEEL_DIRECT_DATABASE_URL`).
    pub direct_database_url: Option<DatabaseUrl>,
    pub listen: String,
    pub jwt: JwtConfig,
    pub consistency_wait: Duration,
    pub body_limit: usize,
    pub services: Services,
    pub runner: RunnerConfig,
    /// Events out (`KEEL_NATS_*`): run by the projector service, beside the projections.
    pub outbound: keel_outbound::OutboundConfig,
    /// What webhook endpoints may point at, and a rotated secret's grace (`KEEL_WEBHOOKS_*`).
    pub webhooks: keel_command::WebhookSettings,
    pub pools: PoolSizes,
    /// Seals and opens personal data.
    pub master_key: keel_store::MasterKey,
    pub limits: EdgeLimits,
    /// The web console's settings (the development token only under `keel up`).
    pub console: keel_console::ConsoleConfig,
}

/// Deadlines and GraphQL document limits at the edge (each a `KEEL_*` setting).
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Every REST and GraphQL request is cancelled past this (503 `timeout`).
    pub request_timeout: Duration,
    /// After a shutdown signal, how long Keel goes on serving while `/readyz` answers 503 and
    /// every response carries `Connection: close`, before it stops accepting (the drain).
    pub drain: Duration,
    /// After the drain, in-flight requests and projection batches get this long; then they are
    /// cancelled and the process exits.
    pub shutdown_timeout: Duration,
    /// Nesting, expanded fields, depth, complexity and body size of a GraphQL document.
    pub graphql: keel_query::GraphqlLimits,
    /// Per-tenant rate limits and load shedding (`keel_gateway::limits`).
    pub traffic: keel_gateway::limits::TrafficConfig,
    /// Pool acquire and per-role `statement_timeout`s.
    pub db: keel_store::PoolTimeouts,
    /// Tenants with their own `tenant` label on `/metrics` (the busiest; the rest are `other`).
    pub metrics_tenants: usize,
    /// How often those tenants are re-ranked.
    pub metrics_rank: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            request_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(3),
            shutdown_timeout: Duration::from_secs(15),
            graphql: keel_query::GraphqlLimits::default(),
            traffic: keel_gateway::limits::TrafficConfig::default(),
            db: keel_store::PoolTimeouts::default(),
            metrics_tenants: 20,
            metrics_rank: Duration::from_secs(60),
        }
    }
}

pub struct App {
    listener: TcpListener,
    router: Router,
    store: Store,
    runner: Option<RunnerConfig>,
    outbound: keel_outbound::OutboundConfig,
    auth: Arc<Authenticator>,
    drain: Duration,
    shutdown_timeout: Duration,
    /// Turns true at the shutdown signal: the drain begins (readiness 503, `Connection: close`,
    /// subscription sockets close with 1001).
    draining: watch::Sender<bool>,
    /// Turns true when the shutdown deadline has passed: every request still running is cancelled.
    cancel: watch::Sender<bool>,
    /// Turns true when the drain is over: no new connections, projection workers stop.
    stop: watch::Sender<bool>,
    stopping: watch::Receiver<bool>,
}

#[derive(Clone)]
struct OpsState {
    store: Store,
    metrics: PrometheusHandle,
    draining: watch::Receiver<bool>,
    /// How long `/readyz` may ask the database (the breaker's probe timeout).
    ready_timeout: Duration,
}

impl App {
    /// Connects the service roles (the database must be migrated) and binds the listener.
    pub async fn build(config: AppConfig) -> anyhow::Result<App> {
        let store = match &config.direct_database_url {
            None => {
                Store::connect_with(
                    config.database_url.expose_secret(),
                    config.pools,
                    config.limits.db,
                    Some(config.master_key.clone()),
                )
                .await
            }
            Some(direct) => {
                Store::connect_pooled(
                    config.database_url.expose_secret(),
                    direct.expose_secret(),
                    config.pools,
                    config.limits.db,
                    Some(config.master_key.clone()),
                )
                .await
            }
        }
        .context("cannot connect to the database (DATABASE_URL)")?;
        let store = match &config.read_database_url {
            Some(url) => store
                .with_read_replica(url.expose_secret(), config.pools.reader, config.limits.db)
                .await
                .context("cannot connect to the read replica (KEEL_READ_DATABASE_URL)")?,
            None => store,
        };
        // The dedicated databases registered with the platform (docs/tenancy.md).
        let router =
            keel_store::placement::Router::connect(&store, config.pools, config.limits.db, Some(&config.master_key))
                .await
                .context("cannot connect to the dedicated databases (keel databases list)")?;
        let store = store.with_router(router);
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (KEEL_LISTEN)", config.listen))?;
        let auth = Arc::new(
            Authenticator::new(config.jwt.clone())
                .await
                .map_err(|e| anyhow::anyhow!("the token keys (KEEL_JWT_*): {e}"))?,
        );
        keel_gateway::metrics::set_tenant_series(config.limits.metrics_tenants);
        keel_gateway::metrics::set_rank_period(config.limits.metrics_rank);
        let (draining, draining_rx) = watch::channel(false);
        let ops = OpsState {
            store: store.clone(),
            metrics: telemetry::metrics(),
            draining: draining_rx.clone(),
            ready_timeout: config.limits.db.probe.timeout,
        };

        let (stop, stopping) = watch::channel(false);
        let mut api = Router::new();
        let surfaces = keel_console::Surfaces { rest: config.services.command, graphql: config.services.query };
        let mut open = keel_console::router(&config.console, surfaces, env!("CARGO_PKG_VERSION"));
        let shed = config.limits.traffic.shed;
        if config.services.command {
            use keel_gateway::limits::{Bulkhead, TenantBulkhead, shed};
            let tenants = TenantBulkhead::new(shed.tenant_commands, shed.tenant_queue, shed.tenant_wait);
            api = api.merge(
                keel_command::router_with(store.clone(), config.webhooks)
                    .layer(axum::middleware::from_fn_with_state(Bulkhead::new("commands", shed.commands), shed::shed))
                    .layer(axum::middleware::from_fn_with_state(tenants, shed::tenant_share))
                    .layer(axum::middleware::from_fn_with_state(
                        config.limits.request_timeout,
                        keel_gateway::deadline::deadline,
                    )),
            );
            open = open.merge(keel_command::docs_router());
        }
        if config.services.query {
            let graphql = keel_query::GraphqlLimits { timeout: config.limits.request_timeout, ..config.limits.graphql };
            let bulkheads = keel_gateway::limits::shed::QueryBulkheads::new(shed.queries, shed.subscriptions);
            api = api.merge(
                keel_query::router(
                    keel_query::QueryState::new(store.clone(), config.consistency_wait, auth.clone(), graphql)
                        .stopping(draining_rx.clone())
                        .graphiql(keel_console::graphiql_page(&config.console)),
                )
                .layer(axum::middleware::from_fn_with_state(bulkheads, keel_gateway::limits::shed::shed_queries)),
            );
            open = open.merge(keel_query::schema_router());
        }
        let limiter = keel_gateway::limits::RateLimiter::new(
            &config.limits.traffic.rate,
            plan_factor(store.clone()),
            keel_domain::Plan::Enterprise.rate_factor(),
        )
        .map_err(anyhow::Error::msg)?;
        if let Some(limiter) = limiter {
            api = api.layer(axum::middleware::from_fn_with_state(Arc::new(limiter), keel_gateway::limits::rate::limit));
        }
        let router = api
            .layer(axum::middleware::from_fn_with_state(auth.clone(), keel_gateway::auth::authenticate))
            .merge(open)
            .merge(
                Router::new()
                    .route("/healthz", get(healthz))
                    .route("/readyz", get(readyz))
                    .route("/metrics", get(metrics))
                    .with_state(ops),
            )
            .fallback(not_found)
            .layer(axum::middleware::map_response(keel_gateway::not_allowed::as_problem))
            .layer(DefaultBodyLimit::max(config.body_limit))
            .layer(axum::middleware::from_fn(keel_gateway::metrics::record))
            .layer(axum::middleware::from_fn(keel_gateway::context::request_context));

        let (cancel, cancelled) = watch::channel(false);
        let router = router
            .layer(axum::middleware::from_fn_with_state(cancelled, keel_gateway::deadline::cancel_on))
            .layer(axum::middleware::from_fn_with_state(draining_rx, crate::drain::close_connections));
        let runner = config.services.projector.then(|| config.runner.clone());
        Ok(App {
            listener,
            router,
            store,
            runner,
            outbound: config.outbound.clone(),
            auth,
            drain: config.limits.drain,
            shutdown_timeout: config.limits.shutdown_timeout,
            draining,
            cancel,
            stop,
            stopping,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn authenticator(&self) -> Arc<Authenticator> {
        self.auth.clone()
    }

    /// Serves and projects until `shutdown` completes; then drains for `EdgeLimits::drain`
    /// (readiness 503, responses with `Connection: close`, requests still served, subscription
    /// sockets closed with 1001); then stops accepting, lets in-flight requests and the current
    /// batch finish, and closes the pools. What has not finished within the shutdown deadline is
    /// cancelled (an open transaction rolls back).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = (self.stop, self.stopping);
        let workers = match &self.runner {
            Some(c) => {
                let mut w = keel_projections::spawn_all(&self.store, c, &stop_rx);
                w.extend(keel_outbound::spawn_all(&self.store, &self.outbound, c, &stop_rx));
                // Each dedicated database has its own workers, leases and checkpoints.
                for (_, shard) in self.store.shards() {
                    w.extend(keel_projections::spawn_all(&shard, c, &stop_rx));
                    w.extend(keel_outbound::spawn_all(&shard, &self.outbound, c, &stop_rx));
                }
                w
            }
            None => Vec::new(),
        };
        let mut server_stop = stop_rx.clone();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|s| *s).await;
        });
        let server = tokio::spawn(async move { server.await });
        shutdown.await;
        // The drain: a request already on its way over a keep-alive connection is answered (and
        // its connection then closed) instead of meeting a socket closed under it.
        let _ = self.draining.send(true);
        if !self.drain.is_zero() {
            tracing::info!(
                drain_ms = self.drain.as_millis() as u64,
                "draining: /readyz answers 503 and responses close their connections (KEEL_DRAIN_MS)"
            );
            tokio::time::sleep(self.drain).await;
        }
        tracing::info!("shutting down: no new connections, finishing in-flight work");
        let _ = stop_tx.send(true);
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let mut server = server;
        let served = match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(r) => r.context("server task panicked")?,
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.shutdown_timeout.as_millis() as u64,
                    "in-flight requests did not finish within the shutdown deadline (KEEL_SHUTDOWN_TIMEOUT_MS): cancelled"
                );
                // Cancelled requests answer 503 and their connections close; what still hangs
                // after a second is dropped with the server task.
                let _ = self.cancel.send(true);
                match tokio::time::timeout(Duration::from_secs(1), &mut server).await {
                    Ok(r) => r.context("server task panicked")?,
                    Err(_) => {
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        for mut w in workers {
            if tokio::time::timeout_at(deadline, &mut w).await.is_err() {
                tracing::warn!("a projection batch did not finish within the shutdown deadline: cancelled");
                w.abort();
            }
        }
        if tokio::time::timeout(Duration::from_secs(2), self.store.close()).await.is_err() {
            tracing::warn!("database connections still busy at shutdown: dropped");
        }
        served.context("server failed")
    }
}

/// The rate limiter's view of plans: a tenant's plan factor, read from its control-plane row
/// (the limiter caches it per tenant, so this runs once per tenant per `PLAN_TTL`).
fn plan_factor(store: Store) -> keel_gateway::limits::PlanFactor {
    Arc::new(move |tenant| {
        let store = store.clone();
        Box::pin(async move {
            let mut tx = store.begin_read(keel_domain::TenantId(tenant)).await.ok()?;
            let row = keel_store::access::tenant_row(&mut tx, false).await.ok()??;
            Some(row.plan.rate_factor())
        })
    })
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(ops): State<OpsState>) -> Response {
    if *ops.draining.borrow() {
        return Problem::new(Code::NotReady, "shutting down: draining connections").into_response();
    }
    // Known down: answered at once. Otherwise asked, within the probe's own timeout, so a load
    // balancer's check never waits out a pool's acquire timeout.
    let asked = async {
        let reachable = keel_store::ops::reachable(ops.store.reader()).await;
        (reachable, reachable && keel_store::migrations_current(ops.store.reader()).await.unwrap_or(false))
    };
    let (reachable, current) = if ops.store.available() {
        tokio::time::timeout(ops.ready_timeout, asked).await.unwrap_or((false, false))
    } else {
        (false, false)
    };
    if current {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        let detail =
            if reachable { "migrations are not current: run keel migrate" } else { "the database is unreachable" };
        Problem::new(Code::NotReady, detail).into_response()
    }
}

async fn metrics(State(ops): State<OpsState>) -> Response {
    ops.metrics.run_upkeep();
    let pools = [
        ("writer", ops.store.writer().raw()),
        ("reader", ops.store.reader().raw()),
        ("projector", ops.store.projector().raw()),
    ];
    for (name, pool) in pools {
        metrics::gauge!("keel_db_pool_connections", "pool" => name).set(pool.size() as f64);
        metrics::gauge!("keel_db_pool_idle_connections", "pool" => name).set(pool.num_idle() as f64);
        let in_use = (pool.size() as usize).saturating_sub(pool.num_idle());
        metrics::gauge!("keel_db_pool_in_use_connections", "pool" => name).set(in_use as f64);
        metrics::gauge!("keel_db_pool_max_connections", "pool" => name)
            .set(pool.options().get_max_connections() as f64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], ops.metrics.render()).into_response()
}

async fn not_found() -> Problem {
    Problem::not_found("route")
}
