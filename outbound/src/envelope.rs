//! The envelope every event leaves Keel in (`docs/integration.md`): versioned, the same for
//! every destination (NATS now, webhooks next), and holding only what the tenant may see.

use chrono::{DateTime, Utc};
use keel_domain::Event;
use keel_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope's own version: a change to its fields (not to an event's data) is a new one.
pub const SPEC_VERSION: &str = "keel.event.v1";

/// One event as it leaves Keel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always `SPEC_VERSION` for this shape.
    pub specversion: String,
    /// The event type (`TaskCreated`, ...), the same name as in the log and the audit.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event id: stable across retries and republishes, so receivers deduplicate by it.
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub stream: StreamRef,
    /// The event's version within its stream (1, 2, ...): per stream, events leave in this order.
    pub version: i64,
    /// When Keel recorded it.
    pub occurred_at: DateTime<Utc>,
    /// The schema version of `data` for this event type (older stored events are upcast to it).
    pub dataversion: i32,
    /// The event's fields; personal data opened only while its data key exists, `"[erased]"` after.
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRef {
    /// `tenant`, `member`, `project`, `task` or `usage`.
    #[serde(rename = "type")]
    pub stream_type: String,
    pub id: Uuid,
}

impl Envelope {
    /// The envelope of `event` as the runner hands it over (`recorded` revealed, `event` its
    /// decoded, upcast form). A personal field the reveal could not open is `"[erased]"`.
    pub fn new(recorded: &RecordedEvent, event: &Event) -> Envelope {
        let mut data = event.payload();
        keel_store::crypto::redact_sealed(&recorded.event_type, &mut data);
        Envelope {
            specversion: SPEC_VERSION.to_owned(),
            event_type: recorded.event_type.clone(),
            id: recorded.event_id,
            tenant_id: recorded.tenant_id.0,
            stream: StreamRef { stream_type: recorded.stream_type.clone(), id: recorded.stream_id },
            version: recorded.stream_version,
            occurred_at: recorded.recorded_at,
            dataversion: event.schema_version(),
            data,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_domain::TenantId;
    use serde_json::json;

    fn recorded(event: &Event, stored: serde_json::Value) -> RecordedEvent {
        let (stream_type, stream_id) = event.stream();
        RecordedEvent {
            position: 7,
            xid: 42,
            tenant_id: TenantId(Uuid::now_v7()),
            stream_type: stream_type.as_str().to_owned(),
            stream_id,
            stream_version: 3,
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            payload: stored,
            metadata: json!({"actor": "user:ada"}),
            recorded_at: Utc::now(),
            prev_hash: None,
            hash: vec![0; 32],
        }
    }

    fn decode(event_type: &str, data: serde_json::Value) -> Event {
        Event::decode(event_type, keel_domain::event::current_schema_version(event_type), data).unwrap()
    }

    #[test]
    fn every_field_of_the_envelope_comes_from_the_log() {
        let project = Uuid::now_v7();
        let event = decode(
            "ProjectCreated",
            json!({"project_id": project, "name": "Apollo", "description": null, "at": "2026-11-30T00:00:00Z"}),
        );
        let r = recorded(&event, event.payload());
        let v = serde_json::to_value(Envelope::new(&r, &event)).unwrap();
        assert_eq!(v["specversion"], "keel.event.v1");
        assert_eq!(v["type"], "ProjectCreated");
        assert_eq!(v["id"], json!(r.event_id));
        assert_eq!(v["tenant_id"], json!(r.tenant_id.0));
        assert_eq!(v["stream"], json!({"type": "project", "id": project}));
        assert_eq!(v["version"], 3);
        assert_eq!(v["occurred_at"], json!(r.recorded_at));
        assert_eq!(v["dataversion"], json!(event.schema_version()));
        assert_eq!(v["data"]["name"], "Apollo");
        assert_eq!(v["data"]["project_id"], json!(project));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(!keys.contains(&"metadata"), "the actor and correlation stay inside Keel: {keys:?}");
    }

    #[test]
    fn an_invited_members_personal_data_leaves_opened() {
        let event = decode(
            "MemberInvited",
            json!({"member_id": Uuid::now_v7(), "user_id": "grace", "email": "grace@example.test",
                   "name": "Grace", "role": "member", "at": "2026-11-30T00:00:00Z"}),
        );
        let e = Envelope::new(&recorded(&event, event.payload()), &event);
        assert_eq!(e.stream.stream_type, "member");
        assert_eq!(e.data["email"], "grace@example.test");
        assert_eq!(e.data["name"], "Grace");
    }

    #[test]
    fn sealed_personal_data_never_leaves_only_erased_does() {
        // What the log holds for an erased member's invitation before (or without) a reveal.
        let event = decode(
            "MemberInvited",
            json!({"member_id": Uuid::now_v7(), "user_id": "grace", "email": "enc:v1:AAAAsealed",
                   "name": "enc:v1:BBBBsealed", "role": "member", "at": "2026-11-30T00:00:00Z"}),
        );
        let e = Envelope::new(&recorded(&event, event.payload()), &event);
        assert_eq!(e.data["email"], "[erased]");
        assert_eq!(e.data["name"], "[erased]");
        assert!(!String::from_utf8(e.to_bytes()).unwrap().contains("enc:v1:"));
    }

    #[test]
    fn each_stream_type_names_its_stream() {
        let tenant = Uuid::now_v7();
        let task = Uuid::now_v7();
        for (event, stream_type, id) in [
            (
                decode("TenantSuspended", json!({"tenant_id": tenant, "reason": null, "at": "2026-11-30T00:00:00Z"})),
                "tenant",
                tenant,
            ),
            (
                decode("TaskAssigned", json!({"task_id": task, "assignee": null, "at": "2026-11-30T00:00:00Z"})),
                "task",
                task,
            ),
        ] {
            let e = Envelope::new(&recorded(&event, event.payload()), &event);
            assert_eq!((e.stream.stream_type.as_str(), e.stream.id), (stream_type, id));
            assert_eq!(e.event_type, event.event_type());
        }
    }
}
