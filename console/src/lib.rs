//! Keel's web console: the landing page at `/`, GraphiQL and the REST explorer (Swagger UI), all
//! served from assets embedded in the binary, so the pages work with no network beyond Keel.
//!
//! The console knows Keel's public URLs and nothing of its crates: the GraphiQL page is handed to
//! the query service as HTML (`graphiql_page`), the explorer reads `/api/v1/openapi.json`.

mod assets;
mod pages;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::fmt;
use std::sync::Arc;

pub use assets::ASSETS_PREFIX;

/// Where Keel answers what the console links to.
pub mod paths {
    pub const GRAPHQL: &str = "/graphql";
    pub const GRAPHQL_WS: &str = "/graphql/ws";
    pub const GRAPHQL_SCHEMA: &str = "/graphql/schema.graphql";
    pub const REST: &str = "/api/v1";
    pub const REST_EXPLORER: &str = "/api/v1/docs";
    pub const OPENAPI: &str = "/api/v1/openapi.json";
    pub const METRICS: &str = "/metrics";
    pub const READYZ: &str = "/readyz";
    pub const HEALTHZ: &str = "/healthz";
}

/// What the console is built with. `Debug` never shows the token.
#[derive(Clone, Default)]
pub struct ConsoleConfig {
    /// A token the pages put in their request headers, so a developer's first query works.
    /// Only `keel up` sets it; `keel serve` never puts a token in a page.
    pub dev_token: Option<String>,
    /// What the landing page says about the database (e.g. "embedded PostgreSQL"); nothing when
    /// `None`.
    pub database: Option<String>,
}

impl fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("dev_token", &self.dev_token.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

/// Which of Keel's surfaces this process serves (the console links only those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Surfaces {
    pub rest: bool,
    pub graphql: bool,
}

/// One link of the landing page (and of `keel up`'s banner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub label: &'static str,
    pub path: &'static str,
    pub what: &'static str,
}

/// The links of the landing page, in its order.
pub fn links(surfaces: Surfaces) -> Vec<Link> {
    let mut links = Vec::new();
    if surfaces.graphql {
        links.push(Link { label: "GraphiQL", path: paths::GRAPHQL, what: "explore and run GraphQL queries" });
        links.push(Link { label: "GraphQL schema", path: paths::GRAPHQL_SCHEMA, what: "the schema as SDL" });
    }
    if surfaces.rest {
        links.push(Link {
            label: "API explorer",
            path: paths::REST_EXPLORER,
            what: "the REST command API: read it, try it out",
        });
        links.push(Link { label: "OpenAPI", path: paths::OPENAPI, what: "the command API's OpenAPI document" });
    }
    links.push(Link { label: "Metrics", path: paths::METRICS, what: "Prometheus metrics" });
    links.push(Link { label: "Readiness", path: paths::READYZ, what: "database reachable, migrations current" });
    links
}

/// The GraphiQL page, for the query service to answer `GET /graphql` from a browser.
pub fn graphiql_page(config: &ConsoleConfig) -> String {
    pages::graphiql(config)
}

/// `/` (the landing page), `/api/v1` (to the explorer), the explorer at `/api/v1/docs` when the
/// REST surface is served, and the assets under `/console/assets/`. No authentication: the pages
/// hold nothing of a tenant (and a token only when `ConsoleConfig::dev_token` is set).
pub fn router(config: &ConsoleConfig, surfaces: Surfaces, version: &'static str) -> Router {
    let landing: Arc<str> = pages::landing(config, surfaces, version).into();
    let mut router = Router::new()
        .route("/", get(move || page(landing.clone())))
        .route(&format!("{ASSETS_PREFIX}{{*path}}"), get(assets::serve));
    if surfaces.rest {
        let explorer: Arc<str> = pages::explorer(config).into();
        router = router
            .route(paths::REST, get(to_explorer))
            .route(&format!("{}/", paths::REST), get(to_explorer))
            .route(paths::REST_EXPLORER, get(move || page(explorer.clone())));
    }
    router
}

async fn to_explorer() -> Redirect {
    Redirect::to(paths::REST_EXPLORER)
}

/// A page: never cached (it may carry the development token), never framed by another site.
async fn page(html: Arc<str>) -> Response {
    html_response(html.to_string())
}

/// An HTML page with the console's headers.
fn html_response(html: String) -> Response {
    let mut r = axum::response::Html(html).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}
