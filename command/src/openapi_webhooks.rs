//! The OpenAPI 3.1 `webhooks` section: one `post` per Keel event type, whose body is the
//! `keel.event.v1` envelope of that type (`docs/integration.md`, "The envelope") with the three
//! Standard Webhooks headers. utoipa 5 has no typed webhooks, so this builds JSON.
//!
//! Each `data` schema is read from the event's own serde shape, not written by hand: a sample
//! payload of every type is decoded by `Event::decode` (which refuses an unknown field and a
//! missing required one), and each field is probed — left out, set to null — to learn whether it
//! is always sent and whether it may be null. Which fields are personal (`"[erased]"` after
//! erasure) or secret (always `"[redacted]"`) is asked of `keel_store::crypto::redact_sealed`,
//! the function the envelope itself uses. The tests below fail when a field of an event struct
//! is missing from its sample (and so from its schema).

use keel_domain::event::current_schema_version;
use keel_domain::{Event, EventKind};
use keel_store::crypto::{ERASED, REDACTED, redact_sealed};
use serde_json::{Map, Value, json};

/// The envelope's version (`keel_outbound::envelope::SPEC_VERSION`; the integration test checks
/// they agree).
pub(crate) const SPEC_VERSION: &str = "keel.event.v1";

const TENANT: &str = "0193f1c2-1111-7000-8000-000000000001";
const ID: &str = "0193f1c2-2222-7000-8000-000000000002";
const OTHER: &str = "0193f1c2-3333-7000-8000-000000000003";
const AT: &str = "2026-11-30T01:02:03.456789Z";

/// A payload of `kind` with every field present (optional ones set), as the log stores it.
pub(crate) fn sample(kind: EventKind) -> Value {
    use EventKind as K;
    match kind {
        K::TenantProvisioned => json!({"tenant_id": TENANT, "name": "Acme", "slug": "acme", "plan": "team",
            "owner_member_id": OTHER, "at": AT}),
        K::TenantPlanChanged => json!({"tenant_id": TENANT, "from": "free", "to": "team", "at": AT}),
        K::TenantSuspended => json!({"tenant_id": TENANT, "reason": "Unpaid invoice", "at": AT}),
        K::TenantReactivated | K::TenantErased => json!({"tenant_id": TENANT, "at": AT}),
        K::MemberInvited => json!({"member_id": ID, "user_id": "grace", "email": "grace@acme.test",
            "name": "Grace Hopper", "role": "member", "at": AT}),
        K::MemberRoleChanged => json!({"member_id": ID, "from": "member", "to": "admin", "at": AT}),
        K::MemberRemoved => json!({"member_id": ID, "at": AT}),
        K::MemberErased => json!({"member_id": ID, "was_active": true, "at": AT}),
        K::TaskCreated => json!({"task_id": ID, "project_id": OTHER, "title": "Draft the home page",
            "description": "Copy and layout", "assignee": TENANT, "due_date": "2026-12-24", "priority": "high",
            "at": AT}),
        K::TaskUpdated => json!({"task_id": ID, "title": "Draft the home page", "description": "Copy and layout",
            "due_date": "2026-12-24", "priority": "urgent", "at": AT}),
        K::TaskAssigned => json!({"task_id": ID, "assignee": OTHER, "at": AT}),
        K::TaskStatusChanged => json!({"task_id": ID, "project_id": OTHER, "from": "in_progress", "to": "done",
            "completed_at": AT, "at": AT}),
        K::UsageRecorded => json!({"batch_id": ID, "records": [{"id": "rec-0001", "metric": "api.calls",
            "quantity": 3, "occurred_at": AT}], "at": AT}),
        K::ProjectCreated | K::ProjectUpdated => json!({"project_id": ID, "name": "Website relaunch",
            "description": "Everything for the new site", "at": AT}),
        K::ProjectArchived | K::ProjectRestored => json!({"project_id": ID, "at": AT}),
        K::WebhookCreated => json!({"webhook_id": ID, "url": "https://hooks.acme.example/keel",
            "event_types": ["TaskCreated", "TaskStatusChanged"], "description": "CRM sync",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "at": AT}),
        K::WebhookUpdated => json!({"webhook_id": ID, "url": "https://hooks.acme.example/keel",
            "event_types": ["*"], "description": "CRM sync", "at": AT}),
        K::WebhookDeleted => json!({"webhook_id": ID, "at": AT}),
        K::WebhookSecretRotated => json!({"webhook_id": ID, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "previous_valid_until": AT, "at": AT}),
        K::WebhookReplayRequested => json!({"webhook_id": ID, "from": {"time": AT}, "at": AT}),
    }
}

/// The stored names of the domain's enums, where an event carries one (`keel_domain::names`);
/// the tests check the domain decodes each and refuses another.
const PLANS: &[&str] = &["free", "team", "enterprise"];
const ROLES: &[&str] = &["owner", "admin", "member", "viewer", "auditor"];
const STATUSES: &[&str] = &["todo", "in_progress", "done"];
const PRIORITIES: &[&str] = &["low", "medium", "high", "urgent"];

/// Fields whose schema the sample cannot tell: enums, and a replay's `from` (one of two shapes).
fn overrides(kind: EventKind, field: &str) -> Option<Value> {
    use EventKind as K;
    let names = |list: &[&str]| json!({"type": "string", "enum": list});
    match (kind, field) {
        (K::TenantProvisioned, "plan") | (K::TenantPlanChanged, "from" | "to") => Some(names(PLANS)),
        (K::MemberInvited, "role") | (K::MemberRoleChanged, "from" | "to") => Some(names(ROLES)),
        (K::TaskStatusChanged, "from" | "to") => Some(names(STATUSES)),
        (K::TaskCreated | K::TaskUpdated, "priority") => Some(names(PRIORITIES)),
        (K::WebhookCreated | K::WebhookUpdated, "event_types") => {
            let mut types: Vec<&str> = Event::ALL_TYPES.to_vec();
            types.push("*");
            Some(json!({"type": "array", "items": {"type": "string", "enum": types}}))
        }
        (K::WebhookReplayRequested, "from") => Some(json!({"oneOf": [
            {"type": "object", "required": ["time"], "additionalProperties": false,
             "properties": {"time": {"type": "string", "format": "date-time"}}},
            {"type": "object", "required": ["position"], "additionalProperties": false,
             "properties": {"position": {"type": "object", "required": ["xid", "position"],
                "additionalProperties": false,
                "properties": {"xid": {"type": "integer", "minimum": 0}, "position": {"type": "integer"}}}}},
        ]})),
        _ => None,
    }
}

/// A schema for a sample value: ids are UUIDs, times RFC 3339, dates ISO 8601.
fn infer(v: &Value) -> Value {
    match v {
        Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => json!({"type": "string", "format": "uuid"}),
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            json!({"type": "string", "format": "date-time"})
        }
        Value::String(s) if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {
            json!({"type": "string", "format": "date"})
        }
        Value::String(_) => json!({"type": "string"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_u64() => json!({"type": "integer", "minimum": 0}),
        Value::Number(n) if n.is_i64() => json!({"type": "integer"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::Array(items) => json!({"type": "array", "items": items.first().map(infer).unwrap_or(json!({}))}),
        Value::Object(fields) => {
            let properties: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), infer(v))).collect();
            let required: Vec<&String> = fields.keys().collect();
            json!({"type": "object", "required": required, "properties": properties})
        }
        Value::Null => json!({"type": "null"}),
    }
}

/// The payload `Event::decode` makes of `payload` and serialises back, if it decodes.
fn round_trip(kind: EventKind, payload: Value) -> Option<Value> {
    let ty = kind.as_str();
    Event::decode(ty, current_schema_version(ty), payload).ok().map(|e| e.payload())
}

/// The decoded sample of `kind` (panics if the sample no longer fits the event's struct).
pub(crate) fn sample_event(kind: EventKind) -> Event {
    let ty = kind.as_str();
    Event::decode(ty, current_schema_version(ty), sample(kind))
        .unwrap_or_else(|e| panic!("the sample of {ty} decodes: {e}"))
}

/// The schema of `data` for `kind`, read from its serde shape (see the module's comment).
pub(crate) fn data_schema(kind: EventKind) -> Value {
    let ty = kind.as_str();
    let sample = sample(kind);
    sample_event(kind);
    let fields = sample.as_object().expect("a sample is an object");
    // Which fields leave as "[erased]" (personal) or "[redacted]" (secret).
    let mut sealed = sample.clone();
    for (_, v) in sealed.as_object_mut().expect("an object").iter_mut() {
        if v.is_string() {
            *v = Value::String("enc:v1:AAAA".into());
        }
    }
    redact_sealed(ty, &mut sealed);
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, value) in fields {
        let mut schema = overrides(kind, name).unwrap_or_else(|| infer(value));
        let mut without = sample.clone();
        without.as_object_mut().expect("an object").remove(name);
        let always_sent = round_trip(kind, without).is_none_or(|p| p.get(name).is_some());
        let mut nulled = sample.clone();
        nulled[name] = Value::Null;
        let nullable = round_trip(kind, nulled).is_some_and(|p| p.get(name) == Some(&Value::Null));
        if nullable {
            schema = json!({"anyOf": [schema, {"type": "null"}]});
        }
        if always_sent {
            required.push(name.clone());
        } else {
            schema["description"] = if nullable {
                "Present only when it changed (null clears it)."
            } else {
                "Present only when it changed."
            }
            .into();
        }
        if sealed[name] == ERASED {
            schema["description"] = format!(
                "Personal data: opened for sending only while its data key exists; \"{ERASED}\" once \
                 the member or the tenant is erased (docs/integration.md, \"The envelope\")."
            )
            .into();
        } else if sealed[name] == REDACTED {
            schema = json!({"type": "string", "const": REDACTED,
                "description": "The endpoint's signing secret never leaves Keel: always \"[redacted]\"."});
        }
        properties.insert(name.clone(), schema);
    }
    json!({"type": "object", "required": required, "properties": properties})
}

/// The `keel.event.v1` envelope of `kind`, with an example.
pub(crate) fn envelope_schema(kind: EventKind) -> Value {
    let ty = kind.as_str();
    let event = sample_event(kind);
    let (stream_type, stream_id) = event.stream();
    let mut data = event.payload();
    redact_sealed(ty, &mut data);
    let uuid = |description: &str| json!({"type": "string", "format": "uuid", "description": description});
    json!({
        "type": "object",
        "required": ["specversion", "type", "id", "tenant_id", "stream", "version", "occurred_at", "dataversion", "data"],
        "properties": {
            "specversion": {"type": "string", "const": SPEC_VERSION,
                "description": "The envelope's own version; a change to its fields is a new one."},
            "type": {"type": "string", "const": ty, "description": "The event type, as in the log and the audit."},
            "id": uuid("The event id (also `webhook-id`): stable across retries and replays; deduplicate by it."),
            "tenant_id": uuid("The tenant whose event it is."),
            "stream": {"type": "object", "required": ["type", "id"], "description": "The aggregate it belongs to.",
                "properties": {"type": {"type": "string", "const": stream_type.as_str()}, "id": uuid("The aggregate's id.")}},
            "version": {"type": "integer", "minimum": 1,
                "description": "The event's version in its stream: per stream, events arrive in this order."},
            "occurred_at": {"type": "string", "format": "date-time", "description": "When Keel recorded it (UTC)."},
            "dataversion": {"type": "integer", "const": current_schema_version(ty),
                "description": "The schema version of `data` for this type; older stored events are upcast to it."},
            "data": data_schema(kind),
        },
        "example": {
            "specversion": SPEC_VERSION, "type": ty, "id": "0193f1c2-7a4e-7c1a-9d1e-1f2a3b4c5d6e",
            "tenant_id": TENANT, "stream": {"type": stream_type.as_str(), "id": stream_id},
            "version": 1, "occurred_at": AT, "dataversion": current_schema_version(ty), "data": data,
        },
    })
}

fn header(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "header", "required": true, "description": description, "schema": schema})
}

/// The `webhooks` map: one entry per event type.
pub(crate) fn webhooks() -> Value {
    let mut out = Map::new();
    for kind in EventKind::ALL {
        let ty = kind.as_str();
        let op = json!({
            "operationId": format!("webhook{ty}"),
            "summary": format!("{ty}, delivered to an endpoint that takes it"),
            "description": "Sent to each of the tenant's webhook endpoints whose `event_types` name this type \
                (or `*`), per endpoint in log order, at least once. Signed by the Standard Webhooks \
                specification: verify `webhook-signature` over the raw body before trusting it \
                (docs/integration.md, \"Verifying a webhook\").",
            "security": [],
            "parameters": [
                header("webhook-id", "The event id (the envelope's `id`): the same on every retry and replay; \
                    deduplicate by it.", json!({"type": "string", "format": "uuid"})),
                header("webhook-timestamp", "The attempt's time in Unix seconds (each retry has its own); reject \
                    one more than five minutes from your clock.", json!({"type": "string", "pattern": "^[0-9]{1,12}$"})),
                header("webhook-signature", "`v1,<base64>`: HMAC-SHA256 with the endpoint's secret over \
                    `<webhook-id>.<webhook-timestamp>.<body>`; during a secret rotation two, space-separated \
                    (either matching is enough).",
                    json!({"type": "string", "pattern": "^v1,[A-Za-z0-9+/]+={0,2}( v1,[A-Za-z0-9+/]+={0,2})*$"})),
            ],
            "requestBody": {"required": true, "description": format!("The `{SPEC_VERSION}` envelope of a {ty} event."),
                "content": {"application/json": {"schema": envelope_schema(*kind)}}},
            "responses": {
                "2XX": {"description": "Any 2xx acknowledges the event: the endpoint's checkpoint moves past it \
                    and the next one is sent. The body is ignored."},
                "default": {"description": "Any other answer (a redirect too: none is followed), or none within \
                    the attempt's deadline (15 s by default), is a failure: the same event, with the same \
                    `webhook-id`, is retried on the schedule of docs/integration.md (\"Retries\"), and the \
                    events after it wait."},
            },
        });
        out.insert(ty.to_owned(), json!({"post": op}));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_domain::event::*;

    /// Every field of every event struct, by exhaustive destructuring: a field added to a struct
    /// (or a variant to `Event`) without its sample does not compile here.
    macro_rules! fields {
        ($event:expr, $($kind:ident { $($f:ident),* $(,)? }),+ $(,)?) => {
            match $event {
                $(Event::$kind($kind { $($f: _),* }) => vec![$(stringify!($f)),*],)+
            }
        };
    }

    fn struct_fields(event: &Event) -> Vec<&'static str> {
        fields!(
            event,
            TenantProvisioned { tenant_id, name, slug, plan, owner_member_id, at },
            TenantPlanChanged { tenant_id, from, to, at },
            TenantSuspended { tenant_id, reason, at },
            TenantReactivated { tenant_id, at },
            TenantErased { tenant_id, at },
            MemberInvited { member_id, user_id, email, name, role, at },
            MemberRoleChanged { member_id, from, to, at },
            MemberRemoved { member_id, at },
            MemberErased { member_id, was_active, at },
            TaskCreated { task_id, project_id, title, description, assignee, due_date, priority, at },
            TaskUpdated { task_id, title, description, due_date, priority, at },
            TaskAssigned { task_id, assignee, at },
            TaskStatusChanged { task_id, project_id, from, to, completed_at, at },
            UsageRecorded { batch_id, records, at },
            ProjectCreated { project_id, name, description, at },
            ProjectUpdated { project_id, name, description, at },
            ProjectArchived { project_id, at },
            ProjectRestored { project_id, at },
            WebhookCreated { webhook_id, url, event_types, description, secret, at },
            WebhookUpdated { webhook_id, url, event_types, description, at },
            WebhookDeleted { webhook_id, at },
            WebhookSecretRotated { webhook_id, secret, previous_valid_until, at },
            WebhookReplayRequested { webhook_id, from, at },
        )
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn every_field_of_every_event_struct_is_in_its_data_schema() {
        for kind in EventKind::ALL {
            let event = sample_event(*kind);
            let mut fields: Vec<String> = struct_fields(&event).into_iter().map(str::to_owned).collect();
            fields.sort();
            let schema = data_schema(*kind);
            assert_eq!(keys(&schema["properties"]), fields, "{kind}: the schema has every field, no other");
            assert_eq!(keys(&sample(*kind)), fields, "{kind}: the sample sets every field");
            // The sample is what serde writes back: no field it leaves out or adds.
            assert_eq!(event.payload(), sample(*kind), "{kind}");
        }
        let usage = data_schema(EventKind::UsageRecorded);
        let UsageRecord { id: _, metric: _, quantity: _, occurred_at: _ } = match sample_event(EventKind::UsageRecorded)
        {
            Event::UsageRecorded(u) => u.records[0].clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            keys(&usage["properties"]["records"]["items"]["properties"]),
            ["id", "metric", "occurred_at", "quantity"]
        );
    }

    #[test]
    fn required_and_nullable_follow_the_serde_shape() {
        let task = data_schema(EventKind::TaskUpdated);
        assert_eq!(task["required"], json!(["at", "task_id"]), "only the changed fields are sent");
        assert!(task["properties"]["description"]["anyOf"][1] == json!({"type": "null"}), "null clears it");
        assert!(task["properties"]["title"].get("anyOf").is_none(), "a title is never cleared");
        let created = data_schema(EventKind::TaskCreated);
        assert_eq!(created["required"].as_array().unwrap().len(), 8, "every field is always sent");
        assert_eq!(created["properties"]["due_date"]["anyOf"][0]["format"], "date");
        assert_eq!(created["properties"]["task_id"], json!({"type": "string", "format": "uuid"}));
        assert_eq!(created["properties"]["at"]["format"], "date-time");
        let erased = data_schema(EventKind::MemberErased);
        assert_eq!(erased["properties"]["was_active"]["type"], "boolean");
    }

    #[test]
    fn personal_fields_may_be_erased_and_secrets_are_redacted() {
        let invited = data_schema(EventKind::MemberInvited);
        for f in ["email", "name"] {
            assert!(invited["properties"][f]["description"].as_str().unwrap().contains(ERASED), "{f}");
        }
        assert!(invited["properties"]["user_id"].get("description").is_none());
        for kind in [EventKind::WebhookCreated, EventKind::WebhookSecretRotated] {
            assert_eq!(data_schema(kind)["properties"]["secret"]["const"], REDACTED, "{kind}");
            let example = &envelope_schema(kind)["example"];
            assert_eq!(example["data"]["secret"], REDACTED, "{kind}: the example shows no secret");
        }
    }

    #[test]
    fn enums_list_what_the_domain_decodes() {
        let decodes = |kind: EventKind, field: &str, value: Value| {
            let mut p = sample(kind);
            p[field] = value;
            round_trip(kind, p).is_some()
        };
        for kind in EventKind::ALL {
            for field in keys(&sample(*kind)) {
                let Some(o) = overrides(*kind, &field) else { continue };
                if let Some(list) = o["enum"].as_array() {
                    for v in list {
                        assert!(decodes(*kind, &field, v.clone()), "{kind}.{field}: {v}");
                    }
                    assert!(!decodes(*kind, &field, json!("gold")), "{kind}.{field} refuses another name");
                }
            }
        }
        let from = |v: Value| decodes(EventKind::WebhookReplayRequested, "from", v);
        assert!(from(json!({"time": AT})) && from(json!({"position": {"xid": 5, "position": 812}})));
        assert!(!from(json!({"when": AT})));
    }

    #[test]
    fn every_event_type_has_a_webhook() {
        let hooks = webhooks();
        assert_eq!(hooks.as_object().unwrap().len(), EventKind::ALL.len());
        for kind in EventKind::ALL {
            let body = &hooks[kind.as_str()]["post"]["requestBody"]["content"]["application/json"]["schema"];
            assert_eq!(body["properties"]["type"]["const"], kind.as_str());
            assert_eq!(body["example"]["stream"]["type"], body["properties"]["stream"]["properties"]["type"]["const"]);
        }
    }
}
