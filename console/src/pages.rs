//! The console's HTML pages. Each page reads its settings from a `keel-config` JSON block, so
//! the scripts are static assets and a value never lands in script source.

use crate::assets::{self, url};
use crate::{ConsoleConfig, Surfaces, links, paths};
use serde_json::json;

/// Text for HTML element content and quoted attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A JSON value that is safe inside `<script type="application/json">`: no `<`, `>` or `&`
/// (so no `</script>`), which JSON allows as `\u` escapes.
fn config_block(value: serde_json::Value) -> String {
    let text = value.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026");
    format!(r#"<script id="keel-config" type="application/json">{text}</script>"#)
}

fn head(title: &str, styles: &[&str]) -> String {
    let mut s = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title>\n<link rel=\"icon\" href=\"data:,\">\n",
        escape(title)
    );
    for css in styles {
        s.push_str(&format!("<link rel=\"stylesheet\" href=\"{}\">\n", url(css)));
    }
    s.push_str("</head>\n");
    s
}

fn scripts(paths: &[&str]) -> String {
    paths.iter().map(|p| format!("<script src=\"{}\"></script>\n", url(p))).collect()
}

pub(crate) fn landing(config: &ConsoleConfig, surfaces: Surfaces, version: &str) -> String {
    let mut s = head("Keel", &[assets::KEEL_CSS]);
    s.push_str("<body class=\"landing\"><main>\n");
    s.push_str(&format!("<h1>Keel <span class=\"version\">{}</span></h1>\n", escape(version)));
    let mut facts = vec![format!("version {}", escape(version))];
    if let Some(db) = &config.database {
        facts.push(format!("database: {}", escape(db)));
    }
    if config.dev_token.is_some() {
        facts.push("development mode (<code>keel up</code>): the explorers carry a development token".to_owned());
    }
    s.push_str(&format!("<p class=\"facts\">{}</p>\n<ul class=\"links\">\n", facts.join(" · ")));
    for l in links(surfaces) {
        s.push_str(&format!(
            "<li><a href=\"{path}\">{label}</a> <code>{path}</code> — {what}</li>\n",
            path = l.path,
            label = l.label,
            what = l.what
        ));
    }
    s.push_str(
        "</ul>\n<h2>Documentation</h2>\n<p>In the repository: <code>README.md</code> (getting started), \
        <code>ARCHITECTURE.md</code> (how Keel is built) and the <code>docs/</code> folder \
        (<code>domain.md</code> the domain and plans, <code>api.md</code> the API contract, \
        <code>guarantees.md</code> what the log and read models promise, <code>operations.md</code> \
        runbooks, <code>reporting.md</code> SQL for analysts, <code>performance.md</code>, \
        <code>decisions.md</code>).</p>\n",
    );
    s.push_str("</main></body></html>\n");
    s
}

pub(crate) fn graphiql(config: &ConsoleConfig) -> String {
    let settings = json!({
        "endpoint": paths::GRAPHQL,
        "subscriptionEndpoint": paths::GRAPHQL_WS,
        "token": config.dev_token,
    });
    let mut s = head("Keel GraphiQL", &[assets::GRAPHIQL_CSS, assets::KEEL_CSS]);
    s.push_str("<body class=\"graphiql\">\n<div id=\"graphiql\">Loading GraphiQL…</div>\n");
    s.push_str(&config_block(settings));
    s.push('\n');
    s.push_str(&scripts(&[
        assets::REACT_JS,
        assets::REACT_DOM_JS,
        assets::GRAPHQL_WS_JS,
        assets::GRAPHIQL_JS,
        assets::KEEL_GRAPHIQL_JS,
    ]));
    s.push_str("</body></html>\n");
    s
}

pub(crate) fn explorer(config: &ConsoleConfig) -> String {
    let settings = json!({ "openapi": paths::OPENAPI, "token": config.dev_token });
    let mut s = head("Keel REST API", &[assets::SWAGGER_CSS, assets::KEEL_CSS]);
    s.push_str("<body class=\"explorer\">\n<div id=\"swagger-ui\"></div>\n");
    s.push_str(&config_block(settings));
    s.push('\n');
    s.push_str(&scripts(&[assets::SWAGGER_JS, assets::KEEL_EXPLORER_JS]));
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_cannot_close_the_config_block() {
        let config = ConsoleConfig { dev_token: Some("</script><script>alert(1)</script>".into()), database: None };
        let page = graphiql(&config);
        assert_eq!(page.matches("</script>").count(), page.matches("<script").count());
        assert!(page.contains("\\u003c/script\\u003e"));
    }

    #[test]
    fn no_token_without_one() {
        let page = explorer(&ConsoleConfig::default());
        assert!(page.contains("\"token\":null"));
    }
}
