//! The OpenAPI description, generated from the handlers' annotations, with the problem
//! responses every command shares added in one place, and a self-contained page that renders it.

use crate::respond::Written;
use crate::routes::{members, projects, tasks, tenants, usage};
use axum::Json;
use axum::response::Html;
use serde::Serialize;
use utoipa::openapi::content::Content;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, Ref, RefOr, Required, Type};
use utoipa::{Modify, OpenApi, ToSchema};

/// RFC 9457 problem details, as every error answers.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Problem {
    /// `urn:keel:problem:<code>`.
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    /// Stable machine-readable code.
    code: String,
    /// For 422: each bad field by its JSON path.
    errors: Option<Vec<FieldError>>,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct FieldError {
    field: String,
    message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Keel command API", description = "Commands that change a tenant's state. Reads are in GraphQL at /graphql."),
    paths(
        tenants::provision, tenants::change_plan, tenants::suspend, tenants::reactivate, tenants::erase,
        members::invite, members::change_role, members::remove, members::erase,
        projects::create, projects::update, projects::archive, projects::restore,
        tasks::create, tasks::update, tasks::assign, tasks::change_status,
        usage::record,
    ),
    components(schemas(Written, Problem, FieldError)),
    modifiers(&Shared),
)]
struct ApiDoc;

/// What every command shares: bearer auth, the conditional and idempotency headers, the
/// success headers, and the problem responses.
struct Shared;

const PROBLEMS: &[(&str, &str)] = &[
    ("400", "Malformed JSON, a bad If-Match or an over-long Idempotency-Key"),
    ("401", "Missing, invalid or expired bearer token"),
    ("403", "The caller's role (from the membership) may not do this"),
    ("404", "No such resource in this tenant"),
    ("409", "Lost a race to a concurrent write after which the command no longer holds"),
    ("412", "If-Match names a version that is no longer current"),
    ("413", "Body larger than KEEL_BODY_LIMIT"),
    ("415", "Body is not application/json"),
    ("422", "Invalid input (each field named) or a rule or plan limit violated"),
    ("423", "The tenant is suspended"),
];

fn add_shared(op: &mut Operation) {
    for (status, description) in PROBLEMS {
        op.responses.responses.entry((*status).to_owned()).or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(*description)
                    .content("application/problem+json", Content::new(Some(Ref::from_schema_name("Problem"))))
                    .build(),
            )
        });
    }
    for r in op.responses.responses.values_mut() {
        if let RefOr::T(resp) = r
            && resp.content.contains_key("application/json")
        {
            let string = ObjectBuilder::new().schema_type(Type::String).build();
            resp.headers.insert(
                "ETag".into(),
                HeaderBuilder::new().schema(string.clone()).description(Some("\"<version>\"")).build(),
            );
            resp.headers.insert(
                "Keel-Position".into(),
                HeaderBuilder::new().schema(string).description(Some("Consistency token for Keel-Consistency")).build(),
            );
        }
    }
    let params = op.parameters.get_or_insert_with(Vec::new);
    for (name, description) in [
        (
            "Idempotency-Key",
            "Up to 255 characters; a repeat within 24 h returns the first response and appends nothing",
        ),
        ("If-Match", "\"<version>\": apply only if the resource is still at this version, else 412"),
    ] {
        params.push(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
                .build(),
        );
    }
}

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        openapi.security =
            Some(vec![utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new())]);
        for item in openapi.paths.paths.values_mut() {
            for op in
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten()
            {
                add_shared(op);
            }
        }
    }
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
}

pub(crate) async fn serve_json() -> Json<serde_json::Value> {
    Json(openapi_json())
}

pub(crate) async fn serve_docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

/// Renders /api/v1/openapi.json in the browser with no external asset.
const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keel command API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.op{border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.6em 1em}
.m{display:inline-block;min-width:4.5em;font-weight:bold;text-transform:uppercase}
.post{color:#2a7}.put{color:#a72}.patch{color:#77a}.delete{color:#c33}
code,pre{background:#f5f5f5;border-radius:4px;padding:.1em .3em}pre{padding:.6em;overflow:auto}
table{border-collapse:collapse}td{padding:.1em .8em .1em 0;vertical-align:top}
</style></head><body><h1>Keel command API</h1><p id="intro"></p><div id="api">Loading…</div>
<script>
const esc = s => String(s ?? "").replace(/[&<>]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;"}[c]));
function schema(spec, s, depth) {
  if (!s) return "";
  if (s.$ref) { const n = s.$ref.split("/").pop(); return depth > 3 ? n : schema(spec, spec.components.schemas[n], depth + 1); }
  if (s.type === "object" || s.properties) {
    const req = new Set(s.required || []);
    return "{<table>" + Object.entries(s.properties || {}).map(([k, v]) =>
      `<tr><td><code>${esc(k)}</code>${req.has(k) ? "" : "?"}</td><td>${schema(spec, v, depth + 1)}</td><td>${esc(v.description)}</td></tr>`).join("") + "</table>}";
  }
  if (s.type === "array") return "[" + schema(spec, s.items, depth + 1) + "]";
  const t = Array.isArray(s.type) ? s.type.join(" | ") : (s.type || (s.oneOf ? "one of" : ""));
  return esc(t + (s.format ? " (" + s.format + ")" : ""));
}
fetch("/api/v1/openapi.json").then(r => r.json()).then(spec => {
  document.getElementById("intro").textContent = spec.info.description || "";
  const byTag = {};
  for (const [path, item] of Object.entries(spec.paths))
    for (const [method, op] of Object.entries(item))
      (byTag[(op.tags || ["other"])[0]] ||= []).push([path, method, op]);
  let html = "";
  for (const [tag, ops] of Object.entries(byTag)) {
    html += `<h2>${esc(tag)}</h2>`;
    for (const [path, method, op] of ops) {
      const body = op.requestBody?.content?.["application/json"]?.schema;
      const responses = Object.entries(op.responses).map(([code, r]) => `<tr><td>${code}</td><td>${esc(r.description)}</td></tr>`).join("");
      html += `<div class="op"><span class="m ${method}">${method}</span> <code>${esc(path)}</code>` +
        (body ? `<p>Body: ${schema(spec, body, 0)}</p>` : "") + `<table>${responses}</table></div>`;
    }
  }
  document.getElementById("api").innerHTML = html;
});
</script></body></html>"#;
