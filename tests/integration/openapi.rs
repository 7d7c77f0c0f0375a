//! The OpenAPI document is generated from the code and covers every route.

use crate::helpers::spawn_app;

#[tokio::test]
async fn openapi_describes_every_route_with_schemas_and_problems() {
    let app = spawn_app().await;
    let spec: serde_json::Value =
        app.client.get(format!("{}/api/v1/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    let routes = [
        ("post", "/api/v1/tenants"),
        ("put", "/api/v1/tenants/{id}/plan"),
        ("post", "/api/v1/tenants/{id}/suspend"),
        ("post", "/api/v1/tenants/{id}/reactivate"),
        ("post", "/api/v1/tenants/{id}/erase"),
        ("post", "/api/v1/members/{id}/erase"),
        ("post", "/api/v1/members"),
        ("put", "/api/v1/members/{id}/role"),
        ("delete", "/api/v1/members/{id}"),
        ("post", "/api/v1/projects"),
        ("patch", "/api/v1/projects/{id}"),
        ("post", "/api/v1/projects/{id}/archive"),
        ("post", "/api/v1/projects/{id}/restore"),
        ("post", "/api/v1/projects/{id}/tasks"),
        ("patch", "/api/v1/tasks/{id}"),
        ("put", "/api/v1/tasks/{id}/assignee"),
        ("put", "/api/v1/tasks/{id}/status"),
        ("post", "/api/v1/usage"),
        ("post", "/api/v1/webhooks"),
        ("patch", "/api/v1/webhooks/{id}"),
        ("delete", "/api/v1/webhooks/{id}"),
        ("post", "/api/v1/webhooks/{id}/rotate-secret"),
        ("post", "/api/v1/webhooks/{id}/replay"),
    ];
    let mut documented = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        documented += item.as_object().unwrap().len();
        let _ = path;
    }
    assert_eq!(documented, routes.len(), "no route undocumented, none invented");
    for (method, path) in routes {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        let ok = op["responses"].as_object().unwrap().keys().any(|k| k == "200" || k == "201");
        assert!(ok, "{method} {path} has its success response");
        for code in ["400", "401", "403", "409", "413", "422", "429", "500", "503"] {
            assert!(
                op["responses"][code]["content"]["application/problem+json"].is_object(),
                "{method} {path} documents {code}"
            );
        }
    }
    // Request bodies are described by their schemas, down to the fields.
    let body =
        &spec["paths"]["/api/v1/projects"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    let name = body.as_str().unwrap().rsplit('/').next().unwrap();
    assert!(spec["components"]["schemas"][name]["properties"]["name"].is_object());

    let page = app.client.get(format!("{}/api/v1/docs", app.base)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("/api/v1/openapi.json") && !html.contains("://"), "a page with no external asset");
    assert!(html.contains("/console/assets/swagger-ui-dist@"), "Swagger UI, embedded in Keel");
}
