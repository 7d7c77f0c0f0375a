//! The web console through the real router: the landing page and its links, the `/api/v1`
//! redirect, every asset the pages reference served by Keel itself, the development token only
//! where configured, pages that need no token and show nothing of a tenant, and the asset
//! route's refusal of path traversal.

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const DEV_TOKEN: &str = "dev-token-a1b2c3d4e5f6";

/// The three pages a browser opens: (path, HTML).
async fn pages(app: &TestApp, token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for path in ["/", "/graphql", "/api/v1/docs"] {
        let mut req = app.client.get(format!("{}{path}", app.base)).header("accept", BROWSER_ACCEPT);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}: a page may carry a token, never cached");
        out.push((path, r.text().await.unwrap()));
    }
    out
}

/// The values of `attr="..."` in `html`.
fn attributes<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            &rest[..rest.find('"').expect("a closed attribute")]
        })
        .collect()
}

#[tokio::test]
async fn the_landing_page_names_keel_and_links_every_surface() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("Keel <span class=\"version\">{}</span>", env!("CARGO_PKG_VERSION"))), "{html}");
    let links = attributes(&html, "href");
    for path in ["/graphql", "/graphql/schema.graphql", "/api/v1/docs", "/api/v1/openapi.json", "/metrics", "/readyz"] {
        assert!(links.contains(&path), "the landing page links {path}: {links:?}");
    }
    assert!(html.contains("README.md") && html.contains("docs/"), "the docs are named");
    // Every link answers (GraphiQL to a browser).
    for path in links.iter().filter(|l| !l.starts_with("/console/assets/") && l.starts_with('/')) {
        let r = app.client.get(format!("{}{path}", app.base)).header("accept", BROWSER_ACCEPT).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The schema as SDL, the one `keel graphql-schema` prints.
    let r = app.client.get(format!("{}/graphql/schema.graphql", app.base)).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), keel_query::build_schema().sdl());
}

#[tokio::test]
async fn api_v1_redirects_to_the_explorer() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/api/v1", "/api/v1/"] {
        let r = client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert!(r.status().is_redirection(), "{path}: {}", r.status());
        assert_eq!(r.headers()["location"], "/api/v1/docs", "{path}");
    }
}

#[tokio::test]
async fn every_asset_the_pages_reference_is_served_by_keel() {
    let app = spawn_app().await;
    let mut seen = 0;
    for (page, html) in pages(&app, None).await {
        let scripts = attributes(&html, "src");
        // The `href` of every `<link rel="stylesheet">`.
        let styles: Vec<&str> = html
            .split("<link ")
            .skip(1)
            .map(|l| &l[..l.find('>').unwrap()])
            .filter(|l| l.contains("rel=\"stylesheet\""))
            .map(|l| {
                let rest = &l[l.find("href=\"").expect("a stylesheet's href") + 6..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        if page != "/" {
            assert!(!scripts.is_empty() && !styles.is_empty(), "{page} has scripts and styles");
        }
        for url in scripts.iter().chain(&styles) {
            assert!(!url.contains("://") && !url.starts_with("//"), "{page} loads {url} from outside Keel");
            assert!(url.starts_with("/console/assets/"), "{page}: {url}");
            let r = app.client.get(format!("{}{url}", app.base)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{page}: {url}");
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            let want = if url.ends_with(".js") { "text/javascript" } else { "text/css" };
            assert!(ct.starts_with(want), "{url}: {ct}");
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
            let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
            // A vendored file's path holds its version: cached for good. Keel's own: revalidated.
            if url.contains('@') {
                assert!(cache.contains("immutable"), "{url}: {cache}");
            } else {
                assert_eq!(cache, "no-cache", "{url}");
            }
            assert!(!r.bytes().await.unwrap().is_empty(), "{url}");
            seen += 1;
        }
    }
    assert!(seen >= 10, "GraphiQL's and Swagger UI's files: {seen}");
    // The licences of what is vendored are served beside it.
    for licence in ["graphiql@3.8.3/LICENSE", "react@18.3.1/LICENSE", "swagger-ui-dist@5.35.0/LICENSE"] {
        let r = app.client.get(format!("{}/console/assets/{licence}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{licence}");
    }
}

#[tokio::test]
async fn the_development_token_is_in_the_pages_only_when_configured() {
    // `keel serve`'s configuration: no token anywhere.
    let served = spawn_app().await;
    let platform = served.platform_token();
    for (page, html) in pages(&served, None).await {
        assert!(!html.contains("Bearer") && !html.contains(&platform), "{page} holds no token");
        if page != "/" {
            assert!(html.contains("\"token\":null"), "{page}");
        }
    }

    // `keel up`'s: GraphiQL and the explorer carry it.
    let console = keel_console::ConsoleConfig { dev_token: Some(DEV_TOKEN.into()), database: Some("test".into()) };
    let up = spawn_app_with(Options { console, ..Options::default() }).await;
    for (page, html) in pages(&up, None).await {
        if page == "/" {
            assert!(!html.contains(DEV_TOKEN), "the landing page needs no token");
            assert!(html.contains("database: test"));
        } else {
            assert!(html.contains(&format!("\"token\":\"{DEV_TOKEN}\"")), "{page} carries the development token");
        }
    }
}

#[tokio::test]
async fn the_pages_need_no_token_and_show_nothing_of_a_tenant() {
    let app = spawn_app().await;
    let (tenant, owner) = app.provision("console-tenant").await;
    let r = app.create_project(&owner, "Console secret project").await;
    assert_eq!(r.status, 201);
    let anonymous = pages(&app, None).await;
    // Whoever asks, the same bytes: a page is not a tenant's.
    assert_eq!(pages(&app, Some(&owner)).await, anonymous, "a tenant's token changes nothing");
    assert_eq!(pages(&app, Some(&app.platform_token())).await, anonymous);
    for (page, html) in &anonymous {
        for leak in [tenant.0.to_string().as_str(), "console-tenant", "Console secret project", "owner@console-tenant"]
        {
            assert!(!html.contains(leak), "{page} shows {leak}");
        }
    }
    // A token that is not Keel's does not stop a page either (the pages never look at it).
    let r = app.client.get(format!("{}/", app.base)).bearer_auth("not-a-jwt").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn graphiql_opens_with_the_query_of_its_url_and_clients_still_run_it() {
    let app = spawn_app().await;
    let url = format!("{}/graphql", app.base);
    let q = [("query", "{ me { userId } }")];
    let r = app.client.get(&url).query(&q).header("accept", BROWSER_ACCEPT).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("id=\"graphiql\""), "a browser gets GraphiQL, which reads ?query=");
    let r = app.client.get(&url).query(&q).header("accept", "application/json").send().await.unwrap();
    assert_eq!(r.status(), 401, "a client asking for JSON gets the query run (without a token: 401)");
    let r = app.client.get(&url).query(&q).send().await.unwrap();
    assert_eq!(r.status(), 401, "no Accept: the query runs");
}

/// A raw request line, so no client normalises `..` away.
async fn raw_status(base: &str, target: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn the_asset_route_refuses_path_traversal() {
    let app = spawn_app().await;
    let (ok, _) = raw_status(&app.base, "/console/assets/keel/console.css").await;
    assert_eq!(ok, 200, "the raw request works");
    for target in [
        "/console/assets/../../Cargo.toml",
        "/console/assets/../../../../etc/passwd",
        "/console/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/console/assets/..%2f..%2fCargo.toml",
        "/console/assets/%2e%2e%2f%2e%2e%2fCargo.toml",
        "/console/assets/%252e%252e%252fCargo.toml",
        "/console/assets/keel/../../../console/src/lib.rs",
        "/console/assets/graphiql@3.8.3/../../Cargo.toml",
        "/console/assets/..\\..\\Cargo.toml",
        "/console/assets//etc/passwd",
        "/console/assets/%2fetc%2fpasswd",
        "/console/assets/keel/console.css%00.txt",
        "/console/assets/",
    ] {
        let (status, text) = raw_status(&app.base, target).await;
        assert_eq!(status, 404, "{target}: {text}");
        assert!(text.contains("application/problem+json"), "{target}: the same 404 as any unknown route");
        for leak in ["[package]", "root:", "workspace"] {
            assert!(!text.contains(leak), "{target} shows {leak}");
        }
    }
}
