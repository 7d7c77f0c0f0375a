//! The OpenAPI description, generated from the handlers' annotations, with the problem
//! responses every command shares added in one place. The console renders it at `/api/v1/docs`.

use crate::respond::Written;
use crate::routes::{members, projects, tasks, tenants, usage, webhooks};
use axum::Json;
use keel_gateway::codes::{Code, Surface};
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
    /// Stable machine-readable code, one of the table in `x-keel-error-codes` (which gives each
    /// code's status, title, `type` and GraphQL `extensions.code`).
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
        webhooks::create, webhooks::update, webhooks::delete, webhooks::rotate_secret, webhooks::replay,
    ),
    components(schemas(Written, webhooks::WrittenWithSecret, Problem, FieldError)),
    modifiers(&Shared),
)]
struct ApiDoc;

/// What every command shares: bearer auth, the conditional and idempotency headers, the
/// success headers, and the problem responses each operation can give.
struct Shared;

/// Who may call an operation and which answers it can give besides its success.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Nothing, or `{}`.
    None,
    Required,
    /// May be left out (read as `{}`).
    Optional,
}

struct OpSpec {
    operation_id: &'static str,
    /// The roles that may call it (from the caller's membership), or the platform scope.
    roles: &'static [&'static str],
    /// It acts on an existing resource and honours `If-Match`.
    if_match: bool,
    /// Its JSON body (so 415 and body validation apply).
    body: Body,
    /// Its path names a resource that may not exist (404).
    not_found: bool,
    /// A suspended tenant refuses it (423).
    locked: bool,
}

const PLATFORM: &[&str] = &["platform:admin"];
const MANAGERS: &[&str] = &["owner", "admin"];
const OWNERS: &[&str] = &["owner"];
const WRITERS: &[&str] = &["owner", "admin", "member"];

const fn op(
    operation_id: &'static str,
    roles: &'static [&'static str],
    if_match: bool,
    body: Body,
    not_found: bool,
    locked: bool,
) -> OpSpec {
    OpSpec { operation_id, roles, if_match, body, not_found, locked }
}

/// Every operation, by its operationId. Platform commands never answer 423 (they act on the
/// tenant, suspended or not); member erasure works while suspended.
const OPS: &[OpSpec] = &[
    op("provisionTenant", PLATFORM, false, Body::Required, false, false),
    op("changeTenantPlan", PLATFORM, true, Body::Required, true, false),
    op("suspendTenant", PLATFORM, true, Body::Optional, true, false),
    op("reactivateTenant", PLATFORM, true, Body::None, true, false),
    op("eraseTenant", PLATFORM, true, Body::None, true, false),
    op("inviteMember", MANAGERS, false, Body::Required, false, true),
    op("changeMemberRole", MANAGERS, true, Body::Required, true, true),
    op("removeMember", MANAGERS, true, Body::None, true, true),
    op("eraseMember", OWNERS, true, Body::None, true, false),
    op("createProject", WRITERS, false, Body::Required, false, true),
    op("updateProject", WRITERS, true, Body::Required, true, true),
    op("archiveProject", WRITERS, true, Body::None, true, true),
    op("restoreProject", WRITERS, true, Body::None, true, true),
    op("createTask", WRITERS, false, Body::Required, true, true),
    op("updateTask", WRITERS, true, Body::Required, true, true),
    op("assignTask", WRITERS, true, Body::Required, true, true),
    op("changeTaskStatus", WRITERS, true, Body::Required, true, true),
    op("recordUsage", WRITERS, false, Body::Required, false, true),
    op("createWebhook", MANAGERS, false, Body::Required, false, true),
    op("updateWebhook", MANAGERS, true, Body::Required, true, true),
    op("deleteWebhook", MANAGERS, true, Body::None, true, true),
    op("rotateWebhookSecret", MANAGERS, true, Body::None, true, true),
    op("replayWebhook", MANAGERS, true, Body::Required, true, true),
];

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", Content::new(Some(Ref::from_schema_name("Problem"))))
            .build(),
    )
}

/// Response headers Keel always sends (`required` is set on them in `openapi_json`, as utoipa's
/// header has no such field).
const ALWAYS_SENT: &[&str] = &["ETag", "Keel-Position", "X-Request-Id"];

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String).build())
        .description(Some(description))
        .build()
}

fn header_param(name: &str, description: &str, pattern: Option<&str>) -> utoipa::openapi::path::Parameter {
    let mut schema = ObjectBuilder::new().schema_type(Type::String);
    if let Some(p) = pattern {
        schema = schema.pattern(Some(p));
    }
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema.build()))
        .build()
}

/// `*`, or a list of entity tags (RFC 9110 §8.8.3): exactly what `request::if_match` accepts.
const IF_MATCH_PATTERN: &str = r#"^[ \t]*(\*[ \t]*|(,[ \t]*)*((W/)?"[\x21\x23-\x7e\x80-\xff]*"[ \t]*(,[ \t]*)+)*((W/)?"[\x21\x23-\x7e\x80-\xff]*"[ \t]*)?)$"#;
/// 1 to 255 printable ASCII characters (spaces inside only: HTTP trims them at the ends).
const IDEMPOTENCY_KEY_PATTERN: &str = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$";

fn add_shared(op: &mut Operation, spec: &OpSpec) {
    let mut problems = vec![
        (
            "400",
            if spec.body != Body::None {
                "Malformed JSON, or a malformed If-Match or Idempotency-Key"
            } else {
                "A body other than nothing or {}, or a malformed If-Match or Idempotency-Key"
            },
        ),
        ("401", "Missing, invalid or expired bearer token"),
        ("403", "The caller's role (from the membership, or the platform scope) may not do this"),
    ];
    if spec.not_found {
        problems.push(("404", "No such resource in this tenant"));
    }
    problems.push(("409", "The request conflicts with a concurrent write after which it no longer holds"));
    if spec.if_match {
        problems.push(("412", "If-Match does not match the resource's current version"));
    }
    problems.push(("413", "Body larger than KEEL_BODY_LIMIT"));
    if spec.body != Body::None {
        problems.push(("415", "Body is not application/json"));
        problems.push(("422", "Invalid input (each field named), a rule or plan limit violated, or an Idempotency-Key reused for another request"));
    } else {
        problems.push(("422", "A rule violated, or an Idempotency-Key reused for another request"));
    }
    if spec.locked {
        problems.push(("423", "The tenant is suspended"));
    }
    problems.push(("429", "Too many requests; Retry-After says when to try again"));
    problems.push(("500", "Unexpected error; the body says nothing of the cause, which is logged with the request id"));
    problems.push(("503", "Keel cannot serve the request now (overloaded, database unavailable, the request's deadline passed, or the outcome of its commit is unknown: `outcome-unknown`); Retry-After says when to try again, and a repeat with the same Idempotency-Key is always safe"));
    problems.push(("504", "A database statement passed its statement_timeout; retry with the same Idempotency-Key"));
    for (status, description) in problems {
        op.responses.responses.entry(status.to_owned()).or_insert_with(|| problem(description));
    }
    for (status, r) in op.responses.responses.iter_mut() {
        if let RefOr::T(resp) = r {
            if status.starts_with('2') {
                resp.headers
                    .insert("ETag".into(), string_header("\"<version>\": the resource's version after the command"));
                resp.headers.insert(
                    "Keel-Position".into(),
                    string_header("Consistency token: send it as Keel-Consistency to read your write"),
                );
                resp.headers.insert(
                    "Idempotent-Replayed".into(),
                    string_header("`true` when this is the stored response to a repeated Idempotency-Key"),
                );
            }
            resp.headers.insert(
                "X-Request-Id".into(),
                string_header("The request's id (the one sent, when sane, else a new one)"),
            );
        }
    }
    if spec.body == Body::Optional
        && let Some(body) = op.request_body.as_mut()
    {
        body.required = Some(Required::False);
    }
    let params = op.parameters.get_or_insert_with(Vec::new);
    params.push(header_param(
        "Idempotency-Key",
        "1 to 255 printable ASCII characters; a repeat within 24 h returns the first response and appends nothing",
        Some(IDEMPOTENCY_KEY_PATTERN),
    ));
    if spec.if_match {
        params.push(header_param(
            "If-Match",
            "`\"<version>\"` as ETag gives it, a list of them, or `*`: apply only if the resource is at one of these \
             versions (compared strongly: a weak tag never matches), else 412",
            Some(IF_MATCH_PATTERN),
        ));
    }
    params.push(header_param(
        "X-Request-Id",
        "Up to 128 printable ASCII characters; echoed back and in every log line",
        None,
    ));
    let who = spec.roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ");
    let caller = if spec.roles == PLATFORM {
        "**Who may call:** platform operators (a token with the `platform:admin` scope).".to_owned()
    } else {
        format!("**Who may call:** a tenant token whose active membership has the role {who}.")
    };
    op.description = Some(match op.description.take() {
        Some(d) if !d.is_empty() => format!("{d}\n\n{caller}"),
        _ => caller,
    });
    let roles = serde_json::Value::from(spec.roles.to_vec());
    op.extensions
        .get_or_insert_with(Default::default)
        .merge(utoipa::openapi::extensions::ExtensionsBuilder::new().add("x-keel-roles", roles).build());
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
                let id = op.operation_id.clone().unwrap_or_default();
                let spec = OPS.iter().find(|s| s.operation_id == id).unwrap_or_else(|| panic!("{id} is in OPS"));
                add_shared(op, spec);
            }
        }
    }
}

/// Unicode white space as Rust's `str::trim` removes it, for a regex character class.
const WS: &str = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// A name as `keel_domain` parses it: trimmed, 1 to `max` characters, no control character.
fn name_pattern(max: usize) -> String {
    let edge = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
    format!(r"^[{WS}]*{edge}([^\x00-\x1f\x7f-\x9f]{{0,{}}}{edge})?[{WS}]*$", max - 2)
}

/// Free text as `keel_domain` parses it: at most `max` characters after trimming (blank is
/// none), and no U+0000, which PostgreSQL cannot store.
fn text_pattern(max: usize) -> String {
    format!(r"^[{WS}]*([^\x00{WS}]([^\x00]{{0,{}}}[^\x00{WS}])?)?[{WS}]*$", max - 2)
}

/// The constraints of the domain's value types, on the request schemas' fields (utoipa sees
/// only `String`; `keel_domain::values` and `ids` are the rules these mirror).
fn field_constraints() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    use serde_json::json;
    let name = |max| json!({"pattern": name_pattern(max), "minLength": 1});
    let text = |max| json!({"pattern": text_pattern(max)});
    let user_id = json!({"minLength": 1, "maxLength": 200,
        "pattern": r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,200}$"});
    let email = json!({"format": "email", "minLength": 3, "maxLength": 254});
    let roles = json!({"enum": ["owner", "admin", "member", "viewer", "auditor"]});
    let plans = json!({"enum": ["free", "team", "enterprise"]});
    let priorities = json!({"enum": ["low", "medium", "high", "urgent"]});
    vec![
        ("ProvisionTenantBody", "name", name(200)),
        (
            "ProvisionTenantBody",
            "slug",
            json!({"pattern": "^[a-z0-9][a-z0-9-]{1,62}$", "minLength": 2, "maxLength": 63}),
        ),
        ("ProvisionTenantBody", "plan", plans.clone()),
        (
            "ProvisionTenantBody",
            "database",
            json!({"pattern": "^(pool|[a-z][a-z0-9_-]{0,39})$", "minLength": 1, "maxLength": 40}),
        ),
        ("OwnerBody", "user_id", user_id.clone()),
        ("OwnerBody", "email", email.clone()),
        ("OwnerBody", "name", name(200)),
        ("ChangePlanBody", "plan", plans),
        ("SuspendBody", "reason", text(500)),
        ("InviteBody", "user_id", user_id),
        ("InviteBody", "email", email),
        ("InviteBody", "name", name(200)),
        ("InviteBody", "role", roles.clone()),
        ("RoleBody", "role", roles),
        ("CreateProjectBody", "name", name(200)),
        ("CreateProjectBody", "description", text(10_000)),
        ("UpdateProjectBody", "name", name(200)),
        ("UpdateProjectBody", "description", text(10_000)),
        ("CreateTaskBody", "title", name(500)),
        ("CreateTaskBody", "description", text(10_000)),
        ("CreateTaskBody", "priority", priorities.clone()),
        ("UpdateTaskBody", "title", name(500)),
        ("UpdateTaskBody", "description", text(10_000)),
        ("UpdateTaskBody", "priority", priorities),
        ("StatusBody", "status", json!({"enum": ["todo", "in_progress", "done"]})),
        ("UsageRecordBody", "id", json!({"pattern": r"^[\x21-\x7e]{1,200}$", "minLength": 1, "maxLength": 200})),
        ("UsageRecordBody", "metric", json!({"pattern": "^[a-z][a-z0-9_.-]{0,63}$", "minLength": 1, "maxLength": 64})),
        ("UsageRecordBody", "quantity", json!({"minimum": 1, "maximum": keel_domain::usage::MAX_QUANTITY})),
        ("RecordUsageBody", "records", json!({"minItems": 1, "maxItems": 1000})),
        ("CreateWebhookBody", "url", webhook_url()),
        ("CreateWebhookBody", "event_types", event_types()),
        ("CreateWebhookBody", "description", text(500)),
        ("UpdateWebhookBody", "url", webhook_url()),
        ("UpdateWebhookBody", "event_types", event_types()),
        ("UpdateWebhookBody", "description", text(500)),
        (
            "ReplayWebhookBody",
            "from",
            json!({"anyOf": [{"type": "string", "format": "date-time"},
                             {"type": "string", "pattern": r"^[0-9]{1,18}\.[0-9]{1,18}$"}]}),
        ),
    ]
}

/// A webhook URL: an absolute `https` URL of at most 2,048 characters. What else decides it —
/// `http` and private or single-label hosts are accepted only where the service allows them
/// (`KEEL_WEBHOOKS_ALLOW_*`) — is the deployment's, which no schema says: a URL the service
/// refuses is 422 naming `url` (.ci/schemathesis.toml). No pattern: one narrower than the rules
/// is a promise the service breaks by accepting more.
fn webhook_url() -> serde_json::Value {
    serde_json::json!({"format": "uri", "maxLength": 2048})
}

/// 1 to 64 of Keel's event type names, or `*`.
fn event_types() -> serde_json::Value {
    let mut names: Vec<&str> = keel_domain::Event::ALL_TYPES.to_vec();
    names.push("*");
    serde_json::json!({"minItems": 1, "maxItems": 64, "items": {"type": "string", "enum": names}})
}

/// An example for each free-form field, so the explorer's "try it out" starts from a body that
/// is accepted (without one, Swagger UI makes a random string from the field's pattern).
fn field_examples() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("ProvisionTenantBody", "name", "Acme"),
        ("ProvisionTenantBody", "slug", "acme"),
        ("OwnerBody", "user_id", "ada"),
        ("OwnerBody", "email", "ada@acme.test"),
        ("OwnerBody", "name", "Ada Lovelace"),
        ("SuspendBody", "reason", "Unpaid invoice"),
        ("InviteBody", "user_id", "grace"),
        ("InviteBody", "email", "grace@acme.test"),
        ("InviteBody", "name", "Grace Hopper"),
        ("CreateProjectBody", "name", "Website relaunch"),
        ("CreateProjectBody", "description", "Everything for the new site"),
        ("UpdateProjectBody", "name", "Website relaunch"),
        ("UpdateProjectBody", "description", "Everything for the new site"),
        ("CreateTaskBody", "title", "Draft the home page"),
        ("CreateTaskBody", "description", "Copy and layout"),
        ("UpdateTaskBody", "title", "Draft the home page"),
        ("UpdateTaskBody", "description", "Copy and layout"),
        ("UsageRecordBody", "id", "rec-0001"),
        ("UsageRecordBody", "metric", "api.calls"),
    ]
}

/// Constraints on whole schemas: an update must change at least one field.
fn schema_constraints() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    vec![
        ("UpdateProjectBody", json!({"minProperties": 1})),
        ("UpdateTaskBody", json!({"minProperties": 1})),
        ("UpdateWebhookBody", json!({"minProperties": 1})),
    ]
}

fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    if let (Some(t), serde_json::Value::Object(p)) = (target.as_object_mut(), patch) {
        t.extend(p);
    }
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    let schemas = &mut doc["components"]["schemas"];
    for (schema, field, patch) in field_constraints() {
        let target = &mut schemas[schema]["properties"][field];
        assert!(target.is_object(), "{schema}.{field} is a documented field");
        merge(target, patch);
    }
    for (schema, patch) in schema_constraints() {
        merge(&mut schemas[schema], patch);
    }
    for (schema, field, example) in field_examples() {
        let target = &mut schemas[schema]["properties"][field];
        assert!(target.is_object(), "{schema}.{field} is a documented field");
        target["example"] = example.into();
    }
    // The codes a problem can carry, and the whole table (GraphQL's codes too) at the root.
    let rest: Vec<&str> = Code::ALL.iter().filter(|c| c.surface() != Surface::Graphql).map(|c| c.as_str()).collect();
    schemas["Problem"]["properties"]["code"]["enum"] = rest.into();
    doc["x-keel-error-codes"] = Code::table();
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for op in item.as_object_mut().expect("a path item").values_mut() {
            for response in op["responses"].as_object_mut().expect("responses").values_mut() {
                if let Some(headers) = response.get_mut("headers").and_then(|h| h.as_object_mut()) {
                    for (name, header) in headers.iter_mut() {
                        if ALWAYS_SENT.contains(&name.as_str()) {
                            header["required"] = true.into();
                        }
                    }
                }
            }
        }
    }
    // OpenAPI 3.1's Webhooks Object: what Keel POSTs to a tenant's endpoints, per event type.
    doc["webhooks"] = crate::openapi_webhooks::webhooks();
    doc
}

pub(crate) async fn serve_json() -> Json<serde_json::Value> {
    Json(openapi_json())
}

#[cfg(test)]
mod tests {
    //! The schemas' patterns and enums accept exactly what the domain's value types accept (and
    //! the edge's U+0000 rule), tried on strings at the edges of each rule.
    use super::*;
    use keel_domain::values::{
        Description, Metric, PersonName, Priority, ProjectName, Reason, RecordId, Slug, TaskStatus, TaskTitle,
        TenantName,
    };
    use keel_domain::{Plan, Role, UserId};
    use regex::RegexBuilder;

    /// Characters at the edges of the rules: white space Rust trims (control or not), white
    /// space it does not, control characters, U+0000, and ordinary letters of each width.
    const EDGES: &[char] = &[
        ' ', '\t', '\n', '\u{0b}', '\u{1c}', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{200b}',
        '\u{2028}', '\u{202f}', '\u{3000}', '\u{feff}', '\0', '\u{1}', '\u{1f}', '\u{7f}', '\u{9f}', 'a', 'Z', '0',
        '-', '.', '_', '~', '"', 'é', '😀',
    ];

    fn samples(max: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        for n in [1, 2, max.saturating_sub(1), max, max + 1] {
            let core = "a".repeat(n);
            out.push(core.clone());
            for c in EDGES {
                out.push(c.to_string().repeat(n.min(3)));
                out.push(format!("{c}{core}"));
                out.push(format!("{core}{c}"));
                out.push(format!("{c}{core}{c}"));
                if n >= 2 {
                    let mut inside = core.clone();
                    inside.insert(1, *c);
                    out.push(inside);
                    out.push(format!("{}{c}", &core[1..]));
                }
            }
        }
        out
    }

    fn agrees(schema: &str, field: &str, max: usize, domain: impl Fn(&str) -> bool) {
        let all = field_constraints();
        let (_, _, c) = all.iter().find(|(s, f, _)| *s == schema && *f == field).expect("a constrained field");
        let pattern = c["pattern"].as_str().expect("a pattern");
        let re = RegexBuilder::new(pattern).size_limit(1 << 30).build().expect("the pattern compiles");
        let min = c["minLength"].as_u64().unwrap_or(0) as usize;
        let max_len = c["maxLength"].as_u64().map(|m| m as usize).unwrap_or(usize::MAX);
        for s in samples(max) {
            let n = s.chars().count();
            let schema_ok = re.is_match(&s) && n >= min && n <= max_len;
            assert_eq!(schema_ok, domain(&s), "{schema}.{field} on {s:?} ({n} characters)");
        }
    }

    #[test]
    fn every_example_is_accepted_by_its_fields_rules() {
        let all = field_constraints();
        for (schema, field, example) in field_examples() {
            let (_, _, c) = all.iter().find(|(s, f, _)| *s == schema && *f == field).expect("a constrained field");
            if let Some(pattern) = c["pattern"].as_str() {
                let re = RegexBuilder::new(pattern).size_limit(1 << 30).build().expect("the pattern compiles");
                assert!(re.is_match(example), "{schema}.{field}: {example:?}");
            }
        }
        assert!(Slug::parse("slug", "acme").is_ok() && ProjectName::parse("name", "Website relaunch").is_ok());
    }

    #[test]
    fn names_and_titles_match_their_value_types() {
        agrees("CreateProjectBody", "name", 200, |s| ProjectName::parse("f", s).is_ok());
        agrees("UpdateProjectBody", "name", 200, |s| ProjectName::parse("f", s).is_ok());
        agrees("ProvisionTenantBody", "name", 200, |s| TenantName::parse("f", s).is_ok());
        agrees("OwnerBody", "name", 200, |s| PersonName::parse("f", s).is_ok());
        agrees("InviteBody", "name", 200, |s| PersonName::parse("f", s).is_ok());
        agrees("CreateTaskBody", "title", 500, |s| TaskTitle::parse("f", s).is_ok());
        agrees("UpdateTaskBody", "title", 500, |s| TaskTitle::parse("f", s).is_ok());
    }

    #[test]
    fn free_text_matches_its_value_types_and_refuses_nul() {
        let text = |ok: bool, s: &str| ok && !s.contains('\0');
        agrees("CreateProjectBody", "description", 10_000, |s| text(Description::parse("f", s).is_ok(), s));
        agrees("CreateTaskBody", "description", 10_000, |s| text(Description::parse("f", s).is_ok(), s));
        agrees("SuspendBody", "reason", 500, |s| text(Reason::parse("f", s).is_ok(), s));
    }

    #[test]
    fn identifiers_match_their_value_types() {
        agrees("OwnerBody", "user_id", 200, |s| UserId::parse("f", s).is_ok());
        agrees("InviteBody", "user_id", 200, |s| UserId::parse("f", s).is_ok());
        agrees("ProvisionTenantBody", "slug", 63, |s| Slug::parse("f", s).is_ok());
        agrees("UsageRecordBody", "metric", 64, |s| Metric::parse("f", s).is_ok());
        agrees("UsageRecordBody", "id", 200, |s| RecordId::parse("f", s).is_ok() && !s.contains('\0'));
    }

    #[test]
    fn every_error_code_is_listed_once_with_its_status_title_type_and_graphql_code() {
        let doc = openapi_json();
        let listed = doc["x-keel-error-codes"].as_array().unwrap();
        assert_eq!(listed.len(), Code::ALL.len());
        let mut seen = std::collections::BTreeSet::new();
        for entry in listed {
            assert!(seen.insert(entry["code"].as_str().unwrap()), "{entry} is listed twice");
        }
        let problem_codes = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"].clone();
        let problem_codes: Vec<&str> = problem_codes.as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        for c in Code::ALL {
            let entry = listed.iter().find(|e| e["code"] == c.as_str()).unwrap_or_else(|| panic!("{c:?} is listed"));
            assert_eq!(entry["status"], c.status().as_u16(), "{c:?}");
            assert_eq!(entry["title"], c.title(), "{c:?}");
            assert_eq!(entry["type"], format!("urn:keel:problem:{}", c.as_str()), "{c:?}");
            assert_eq!(entry["graphql"], c.graphql(), "{c:?}");
            assert_eq!(problem_codes.contains(&c.as_str()), c.surface() != Surface::Graphql, "{c:?}");
        }
    }

    #[test]
    fn the_codes_clients_match_on_keep_their_spelling() {
        // The codes the integration tests and clients match on, byte for byte.
        let rest = [
            (Code::Validation, 422, "validation"),
            (Code::NotFound, 404, "not-found"),
            (Code::Forbidden, 403, "forbidden"),
            (Code::Taken, 409, "taken"),
            (Code::RuleViolated, 409, "rule-violated"),
            (Code::LimitExceeded, 422, "limit-exceeded"),
            (Code::TenantSuspended, 423, "tenant-suspended"),
            (Code::PreconditionFailed, 412, "precondition-failed"),
            (Code::IdempotencyKeyReused, 409, "idempotency-key-reused"),
            (Code::UnexpectedBody, 400, "unexpected-body"),
            (Code::Timeout, 503, "timeout"),
            (Code::ShuttingDown, 503, "shutting-down"),
            (Code::MethodNotAllowed, 405, "method-not-allowed"),
        ];
        for (c, status, code) in rest {
            assert_eq!((c.status().as_u16(), c.as_str()), (status, code));
        }
        let graphql = [
            (Code::Forbidden, "FORBIDDEN"),
            (Code::Validation, "BAD_USER_INPUT"),
            (Code::Internal, "INTERNAL"),
            (Code::QueryTooComplex, "QUERY_TOO_COMPLEX"),
            (Code::GraphqlParseFailed, "GRAPHQL_PARSE_FAILED"),
            (Code::GraphqlValidationFailed, "GRAPHQL_VALIDATION_FAILED"),
        ];
        for (c, code) in graphql {
            assert_eq!(c.graphql(), code);
        }
    }

    #[test]
    fn enums_list_what_the_domain_parses() {
        let all = field_constraints();
        let listed = |schema: &str, field: &str| -> Vec<String> {
            let (_, _, c) = all.iter().find(|(s, f, _)| *s == schema && *f == field).unwrap();
            c["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        };
        let candidates = [
            "free",
            "team",
            "enterprise",
            "owner",
            "admin",
            "member",
            "viewer",
            "auditor",
            "low",
            "medium",
            "high",
            "urgent",
            "todo",
            "in_progress",
            "done",
            "Free",
            "gold",
            "",
        ];
        let check = |schema: &str, field: &str, parses: &dyn Fn(&str) -> bool| {
            let listed = listed(schema, field);
            for c in candidates {
                assert_eq!(listed.iter().any(|l| l == c), parses(c), "{schema}.{field}: {c:?}");
            }
        };
        check("ProvisionTenantBody", "plan", &|s| Plan::parse(s).is_some());
        check("ChangePlanBody", "plan", &|s| Plan::parse(s).is_some());
        check("InviteBody", "role", &|s| Role::parse(s).is_some());
        check("RoleBody", "role", &|s| Role::parse(s).is_some());
        check("CreateTaskBody", "priority", &|s| Priority::parse("f", s).is_ok());
        check("UpdateTaskBody", "priority", &|s| Priority::parse("f", s).is_ok());
        check("StatusBody", "status", &|s| TaskStatus::parse("f", s).is_ok());
    }
}
