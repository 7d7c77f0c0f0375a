//! The embedded assets: the vendored npm files (see `assets/README.md`) and Keel's own scripts,
//! served by exact path only, so nothing but this table can ever be answered.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Where the assets are served.
pub const ASSETS_PREFIX: &str = "/console/assets/";

pub(crate) struct Asset {
    /// Below `ASSETS_PREFIX`.
    pub(crate) path: &'static str,
    pub(crate) body: &'static [u8],
    /// A versioned npm file never changes under its path; Keel's own scripts may between builds.
    pub(crate) immutable: bool,
}

macro_rules! vendored {
    ($($path:literal),* $(,)?) => {
        &[$(Asset { path: $path, body: include_bytes!(concat!("../assets/", $path)), immutable: true }),*]
    };
}

pub(crate) const GRAPHIQL_JS: &str = "graphiql@3.8.3/graphiql.min.js";
pub(crate) const GRAPHIQL_CSS: &str = "graphiql@3.8.3/graphiql.min.css";
pub(crate) const REACT_JS: &str = "react@18.3.1/umd/react.production.min.js";
pub(crate) const REACT_DOM_JS: &str = "react-dom@18.3.1/umd/react-dom.production.min.js";
pub(crate) const GRAPHQL_WS_JS: &str = "graphql-ws@5.16.2/umd/graphql-ws.min.js";
pub(crate) const SWAGGER_JS: &str = "swagger-ui-dist@5.35.0/swagger-ui-bundle.js";
pub(crate) const SWAGGER_CSS: &str = "swagger-ui-dist@5.35.0/swagger-ui.css";
pub(crate) const KEEL_GRAPHIQL_JS: &str = "keel/graphiql.js";
pub(crate) const KEEL_EXPLORER_JS: &str = "keel/explorer.js";
pub(crate) const KEEL_CSS: &str = "keel/console.css";

const VENDORED: &[Asset] = vendored![
    "graphiql@3.8.3/graphiql.min.js",
    "graphiql@3.8.3/graphiql.min.css",
    "graphiql@3.8.3/LICENSE",
    "react@18.3.1/umd/react.production.min.js",
    "react@18.3.1/LICENSE",
    "react-dom@18.3.1/umd/react-dom.production.min.js",
    "react-dom@18.3.1/LICENSE",
    "graphql-ws@5.16.2/umd/graphql-ws.min.js",
    "graphql-ws@5.16.2/LICENSE.md",
    "swagger-ui-dist@5.35.0/swagger-ui-bundle.js",
    "swagger-ui-dist@5.35.0/swagger-ui.css",
    "swagger-ui-dist@5.35.0/LICENSE",
    "swagger-ui-dist@5.35.0/NOTICE",
    "swagger-ui-dist@5.35.0/swagger-ui-bundle.js.LICENSE.txt",
];

const OWN: &[Asset] = &[
    Asset { path: KEEL_GRAPHIQL_JS, body: include_bytes!("../assets/keel/graphiql.js"), immutable: false },
    Asset { path: KEEL_EXPLORER_JS, body: include_bytes!("../assets/keel/explorer.js"), immutable: false },
    Asset { path: KEEL_CSS, body: include_bytes!("../assets/keel/console.css"), immutable: false },
];

fn find(path: &str) -> Option<&'static Asset> {
    VENDORED.iter().chain(OWN).find(|a| a.path == path)
}

/// The URL of an asset of the table (panics on a path that is not in it: a page's bug).
pub(crate) fn url(path: &str) -> String {
    assert!(find(path).is_some(), "{path} is an embedded asset");
    format!("{ASSETS_PREFIX}{path}")
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

pub(crate) async fn serve(Path(path): Path<String>) -> Response {
    let Some(asset) = find(&path) else {
        return keel_gateway::Problem::not_found("route").into_response();
    };
    let cache = if asset.immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut r = asset.body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(asset.path)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_type_and_a_body() {
        for a in VENDORED.iter().chain(OWN) {
            assert!(!a.body.is_empty(), "{}", a.path);
            assert!(!a.path.contains(".."), "{}", a.path);
        }
        assert_eq!(content_type(GRAPHIQL_JS), "text/javascript; charset=utf-8");
        assert_eq!(content_type(SWAGGER_CSS), "text/css; charset=utf-8");
        assert_eq!(content_type("graphiql@3.8.3/LICENSE"), "text/plain; charset=utf-8");
    }
}
