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

/// Whether `v` fits `schema`, for the keywords the `webhooks` section uses; `Err` names where not.
fn fits(schema: &serde_json::Value, v: &serde_json::Value, at: &str) -> Result<(), String> {
    use serde_json::Value;
    if let Some(options) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        let matching = options.iter().filter(|o| fits(o, v, at).is_ok()).count();
        return if matching >= 1 { Ok(()) } else { Err(format!("{at}: {v} fits none of {schema}")) };
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return Err(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {e:?}"));
    }
    let ok = match (schema["type"].as_str(), v) {
        (None, _) => true,
        (Some("string"), Value::String(s)) => match schema["format"].as_str() {
            Some("uuid") => uuid::Uuid::parse_str(s).is_ok(),
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            Some("date") => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            _ => true,
        },
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("boolean"), Value::Bool(_)) | (Some("null"), Value::Null) => true,
        (Some("array"), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                fits(&schema["items"], item, &format!("{at}[{i}]"))?;
            }
            true
        }
        (Some("object"), Value::Object(fields)) => {
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !fields.contains_key(r) {
                    return Err(format!("{at}: required {r} is missing"));
                }
            }
            for (k, fv) in fields {
                let Some(s) = schema["properties"].get(k) else {
                    return Err(format!("{at}: {k} is not in the schema"));
                };
                fits(s, fv, &format!("{at}.{k}"))?;
            }
            true
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("{at}: {v} is not of {schema}")) }
}

/// What `keel_outbound::Envelope::new` makes of `event` as the log would hold it (`stored`).
fn envelope_of(event: &keel_domain::Event, stored: serde_json::Value, tenant: uuid::Uuid) -> serde_json::Value {
    let (stream_type, stream_id) = event.stream();
    let recorded = keel_store::RecordedEvent {
        position: 7,
        xid: 42,
        tenant_id: keel_domain::TenantId(tenant),
        stream_type: stream_type.as_str().to_owned(),
        stream_id,
        stream_version: 3,
        event_id: uuid::Uuid::now_v7(),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        payload: stored,
        metadata: serde_json::json!({"actor": "user:ada"}),
        recorded_at: chrono::Utc::now(),
        prev_hash: None,
        hash: vec![0; 32],
    };
    serde_json::to_value(keel_outbound::Envelope::new(&recorded, event)).unwrap()
}

/// docs/integration.md, "The envelope": every event type is a webhook of the OpenAPI 3.1
/// document, whose body is the envelope Keel really sends for it.
#[tokio::test]
async fn openapi_webhooks_describe_the_envelope_of_every_event_type() {
    use keel_domain::{Event, EventKind};
    let app = spawn_app().await;
    let spec: serde_json::Value =
        app.client.get(format!("{}/api/v1/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    let version = spec["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "webhooks are OpenAPI 3.1: {version}");
    let hooks = spec["webhooks"].as_object().expect("a webhooks section");
    assert_eq!(hooks.len(), EventKind::ALL.len(), "one webhook per event type, none invented");
    let mut operation_ids = std::collections::BTreeSet::new();
    for item in spec["paths"].as_object().unwrap().values().chain(hooks.values()) {
        for op in item.as_object().unwrap().values() {
            assert!(operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()), "{op}: unique operationId");
        }
    }
    let (mut erased, mut redacted) = (Vec::new(), Vec::new());
    for kind in EventKind::ALL {
        let ty = kind.as_str();
        let op = &spec["webhooks"][ty]["post"];
        assert!(op.is_object(), "{ty} has its webhook");
        assert_eq!(op["security"], serde_json::json!([]), "{ty}: signed, not a bearer token");
        let params = op["parameters"].as_array().unwrap();
        for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let p = params.iter().find(|p| p["name"] == h).unwrap_or_else(|| panic!("{ty}: {h} documented"));
            assert_eq!((p["in"].as_str(), p["required"].as_bool()), (Some("header"), Some(true)), "{ty}: {h}");
        }
        assert!(op["responses"]["2XX"].is_object() && op["responses"]["default"].is_object(), "{ty}: responses");
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(op["requestBody"]["required"], true);

        // The documented example is an event Keel decodes, and the envelope Keel makes of it fits
        // the schema field by field, with every field of the schema present.
        let example = &schema["example"];
        fits(schema, example, ty).unwrap();
        let event = Event::decode(ty, example["dataversion"].as_i64().unwrap() as i32, example["data"].clone())
            .unwrap_or_else(|e| panic!("{ty}: the example's data decodes: {e}"));
        let tenant = uuid::Uuid::now_v7();
        let sent = envelope_of(&event, event.payload(), tenant);
        fits(schema, &sent, ty).unwrap();
        let mut sent_keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
        let mut documented: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let mut required: Vec<&str> =
            schema["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        sent_keys.sort();
        documented.sort();
        required.sort();
        assert_eq!(sent_keys, documented, "{ty}: every envelope field is documented, none invented");
        assert_eq!(sent_keys, required, "{ty}: every envelope field is always sent");
        for f in ["type", "id", "tenant_id", "stream", "version", "occurred_at", "dataversion", "data"] {
            assert!(documented.iter().any(|d| *d == f), "{ty}: the envelope documents {f}");
        }
        assert_eq!(schema["properties"]["specversion"]["const"], keel_outbound::SPEC_VERSION);
        assert_eq!(schema["properties"]["stream"]["properties"]["type"]["const"], sent["stream"]["type"], "{ty}");
        assert_eq!(sent["tenant_id"], serde_json::json!(tenant));

        // Sealed personal data leaves as "[erased]", secrets as "[redacted]": the schema says so.
        let fields: Vec<String> = event.payload().as_object().unwrap().keys().cloned().collect();
        for field in fields {
            let mut stored = event.payload();
            if !stored[&field].is_string() {
                continue;
            }
            stored[&field] = "enc:v1:AAAAsealed".into();
            let Ok(sealed_event) = Event::decode(ty, event.schema_version(), stored.clone()) else { continue };
            let v = envelope_of(&sealed_event, stored, tenant)["data"][&field].clone();
            let doc = &schema["properties"]["data"]["properties"][&field];
            if v == "[erased]" {
                erased.push(format!("{ty}.{field}"));
                assert!(doc["description"].as_str().unwrap_or("").contains("[erased]"), "{ty}.{field}: {doc}");
                fits(doc, &v, &format!("{ty}.{field}")).unwrap();
            } else if v == "[redacted]" {
                redacted.push(format!("{ty}.{field}"));
                assert_eq!(doc["const"], "[redacted]", "{ty}.{field}");
            } else {
                assert_ne!(doc["const"], "[redacted]", "{ty}.{field}");
            }
        }
    }
    assert_eq!(erased, ["MemberInvited.email", "MemberInvited.name"], "the personal fields, each checked");
    assert_eq!(redacted, ["WebhookCreated.secret", "WebhookSecretRotated.secret"], "the secrets, each checked");
}
