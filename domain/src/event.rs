//! Every event of the domain. The enum tag is the stored `event_type`; the payload is the variant.

use crate::aggregate::StreamType;
use crate::ids::{MemberId, ProjectId, TaskId, TenantId, UsageBatchId, UserId};
use crate::plan::Plan;
use crate::role::Role;
use crate::values::{
    Description, Email, Metric, PersonName, Priority, ProjectName, Reason, RecordId, Slug, TaskStatus, TaskTitle,
    TenantName,
};
pub use crate::webhook::{
    WebhookCreated, WebhookDeleted, WebhookReplayRequested, WebhookSecretRotated, WebhookUpdated,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantProvisioned {
    pub tenant_id: TenantId,
    pub name: TenantName,
    pub slug: Slug,
    pub plan: Plan,
    pub owner_member_id: MemberId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPlanChanged {
    pub tenant_id: TenantId,
    pub from: Plan,
    pub to: Plan,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSuspended {
    pub tenant_id: TenantId,
    pub reason: Option<Reason>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantReactivated {
    pub tenant_id: TenantId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRoleChanged {
    pub member_id: MemberId,
    pub from: Role,
    pub to: Role,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRemoved {
    pub member_id: MemberId,
    pub at: DateTime<Utc>,
}

/// The member's data key was deleted: the personal data in its events can no longer be read.
/// An active member is removed by it too (`was_active`: a seat is freed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberErased {
    pub member_id: MemberId,
    pub was_active: bool,
    pub at: DateTime<Utc>,
}

/// Every data key of the tenant was deleted and its read tables purged; it accepts no more writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantErased {
    pub tenant_id: TenantId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCreated {
    pub task_id: TaskId,
    pub project_id: ProjectId,
    pub title: TaskTitle,
    pub description: Option<Description>,
    pub assignee: Option<MemberId>,
    pub due_date: Option<NaiveDate>,
    pub priority: Priority,
    pub at: DateTime<Utc>,
}

/// Only the fields that changed are present; `Some(None)` clears an optional field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdated {
    pub task_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<TaskTitle>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
    pub description: Option<Option<Description>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
    pub due_date: Option<Option<NaiveDate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskAssigned {
    pub task_id: TaskId,
    pub assignee: Option<MemberId>,
    pub at: DateTime<Utc>,
}

/// Moving to done records `completed_at`; leaving done reopens (from = done, completed_at = None).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskStatusChanged {
    pub task_id: TaskId,
    pub project_id: ProjectId,
    pub from: TaskStatus,
    pub to: TaskStatus,
    pub completed_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    pub id: RecordId,
    pub metric: Metric,
    pub quantity: u64,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecorded {
    pub batch_id: UsageBatchId,
    pub records: Vec<UsageRecord>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberInvited {
    pub member_id: MemberId,
    pub user_id: UserId,
    pub email: Email,
    pub name: PersonName,
    pub role: Role,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreated {
    pub project_id: ProjectId,
    pub name: ProjectName,
    pub description: Option<Description>,
    pub at: DateTime<Utc>,
}

/// Only the fields that changed are present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdated {
    pub project_id: ProjectId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ProjectName>,
    /// `Some(None)` clears the description.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
    pub description: Option<Option<Description>>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectArchived {
    pub project_id: ProjectId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectRestored {
    pub project_id: ProjectId,
    pub at: DateTime<Utc>,
}

/// `Event`, whose variants each carry the struct of the same name, and `EventKind`, the same
/// list without data: what a read model or an integration names when it says which events it
/// reads, so that a misspelt kind is a compile error rather than a silently skipped event.
macro_rules! events {
    ($($kind:ident),+ $(,)?) => {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum Event {
            $($kind($kind)),+
        }

        /// The kind of an event: its type name in the log, without its data.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($kind),+
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$kind),+];

            /// The type name stored in the log's `event_type` column.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$kind => stringify!($kind)),+
                }
            }

            /// The kind a stored type name names, if Keel has it.
            pub fn parse(event_type: &str) -> Option<EventKind> {
                match event_type {
                    $(stringify!($kind) => Some(EventKind::$kind),)+
                    _ => None,
                }
            }
        }

        impl Event {
            pub const fn kind(&self) -> EventKind {
                match self {
                    $(Event::$kind(_) => EventKind::$kind),+
                }
            }

            /// Every type name, in declaration order.
            pub const ALL_TYPES: &'static [&'static str] = &[$(stringify!($kind)),+];
        }
    };
}

events!(
    TenantProvisioned,
    TenantPlanChanged,
    TenantSuspended,
    TenantReactivated,
    TenantErased,
    MemberInvited,
    MemberRoleChanged,
    MemberRemoved,
    MemberErased,
    TaskCreated,
    TaskUpdated,
    TaskAssigned,
    TaskStatusChanged,
    UsageRecorded,
    ProjectCreated,
    ProjectUpdated,
    ProjectArchived,
    ProjectRestored,
    WebhookCreated,
    WebhookUpdated,
    WebhookDeleted,
    WebhookSecretRotated,
    WebhookReplayRequested,
);

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The schema version an event type is written with today: 1, unless the type changed shape
/// (then older versions are upcast when read, see `upcast`).
pub fn current_schema_version(event_type: &str) -> i32 {
    match event_type {
        // v2: the due date is a date (`due_date`), not a free string (`due`).
        "TaskCreated" => 2,
        _ => 1,
    }
}

/// Turns a payload of an older schema version into the next one, one step at a time, until it
/// has the current shape. Each step is a pure function of the stored payload, so replays,
/// projections and audit reads all see the same upcast event; the stored row is never changed
/// (its hash covers what was written).
pub fn upcast(
    event_type: &str,
    mut schema_version: i32,
    mut payload: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    let current = current_schema_version(event_type);
    if schema_version < 1 || schema_version > current {
        return Err(DecodeError::UnsupportedVersion { event_type: event_type.to_owned(), schema_version });
    }
    while schema_version < current {
        payload = match (event_type, schema_version) {
            ("TaskCreated", 1) => task_created_v1_to_v2(payload).map_err(|reason| DecodeError::Upcast {
                event_type: event_type.to_owned(),
                schema_version,
                reason,
            })?,
            _ => return Err(DecodeError::UnsupportedVersion { event_type: event_type.to_owned(), schema_version }),
        };
        schema_version += 1;
    }
    Ok(payload)
}

/// TaskCreated v1 carried `due` as text: a date (`2027-01-31`), a timestamp whose date part is
/// the due date (`2027-01-31T17:00:00Z`), an empty string or null for none. v2 has `due_date`,
/// a date or null.
fn task_created_v1_to_v2(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
    let obj = payload.as_object_mut().ok_or("the payload is not an object")?;
    let due = obj.remove("due").unwrap_or(serde_json::Value::Null);
    let due_date = match due {
        serde_json::Value::Null => serde_json::Value::Null,
        serde_json::Value::String(s) if s.trim().is_empty() => serde_json::Value::Null,
        serde_json::Value::String(s) => {
            let t = s.trim();
            let date = t.get(..10).and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            match date {
                Some(d) if t.len() == 10 || t[10..].starts_with(['T', ' ']) => serde_json::Value::String(d.to_string()),
                _ => return Err(format!("due {t:?} is not a date")),
            }
        }
        other => return Err(format!("due {other} is not text")),
    };
    obj.insert("due_date".into(), due_date);
    Ok(payload)
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("event {event_type} v{schema_version} has an unsupported schema version")]
    UnsupportedVersion { event_type: String, schema_version: i32 },
    #[error("event {event_type} v{schema_version} cannot be upcast: {reason}")]
    Upcast { event_type: String, schema_version: i32, reason: String },
    #[error("event {event_type} payload does not match its schema: {source}")]
    Payload { event_type: String, source: serde_json::Error },
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The stream this event is appended to.
    pub fn stream(&self) -> (StreamType, Uuid) {
        match self {
            Event::TenantProvisioned(e) => (StreamType::Tenant, e.tenant_id.0),
            Event::TenantPlanChanged(e) => (StreamType::Tenant, e.tenant_id.0),
            Event::TenantSuspended(e) => (StreamType::Tenant, e.tenant_id.0),
            Event::TenantReactivated(e) => (StreamType::Tenant, e.tenant_id.0),
            Event::MemberInvited(e) => (StreamType::Member, e.member_id.0),
            Event::MemberRoleChanged(e) => (StreamType::Member, e.member_id.0),
            Event::MemberRemoved(e) => (StreamType::Member, e.member_id.0),
            Event::MemberErased(e) => (StreamType::Member, e.member_id.0),
            Event::TenantErased(e) => (StreamType::Tenant, e.tenant_id.0),
            Event::TaskCreated(e) => (StreamType::Task, e.task_id.0),
            Event::TaskUpdated(e) => (StreamType::Task, e.task_id.0),
            Event::TaskAssigned(e) => (StreamType::Task, e.task_id.0),
            Event::TaskStatusChanged(e) => (StreamType::Task, e.task_id.0),
            Event::UsageRecorded(e) => (StreamType::Usage, e.batch_id.0),
            Event::ProjectCreated(e) => (StreamType::Project, e.project_id.0),
            Event::ProjectUpdated(e) => (StreamType::Project, e.project_id.0),
            Event::ProjectArchived(e) => (StreamType::Project, e.project_id.0),
            Event::ProjectRestored(e) => (StreamType::Project, e.project_id.0),
            Event::WebhookCreated(e) => (StreamType::Webhook, e.webhook_id.0),
            Event::WebhookUpdated(e) => (StreamType::Webhook, e.webhook_id.0),
            Event::WebhookDeleted(e) => (StreamType::Webhook, e.webhook_id.0),
            Event::WebhookSecretRotated(e) => (StreamType::Webhook, e.webhook_id.0),
            Event::WebhookReplayRequested(e) => (StreamType::Webhook, e.webhook_id.0),
        }
    }

    pub fn schema_version(&self) -> i32 {
        current_schema_version(self.event_type())
    }

    /// The payload as stored in the log (the variant's fields, without the tag).
    pub fn payload(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("events always serialize");
        v.get_mut("data").map(serde_json::Value::take).unwrap_or(serde_json::Value::Null)
    }

    /// Rebuilds an event from the log's columns.
    pub fn decode(event_type: &str, schema_version: i32, payload: serde_json::Value) -> Result<Event, DecodeError> {
        if EventKind::parse(event_type).is_none() {
            return Err(DecodeError::UnknownType(event_type.to_owned()));
        }
        let payload = upcast(event_type, schema_version, payload)?;
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": payload }))
            .map_err(|source| DecodeError::Payload { event_type: event_type.to_owned(), source })
    }
}

pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_through_decode() {
        let e = Event::ProjectUpdated(ProjectUpdated {
            project_id: ProjectId(Uuid::nil()),
            name: None,
            description: Some(None),
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        });
        let p = e.payload();
        assert_eq!(p["description"], serde_json::Value::Null);
        assert!(p.get("name").is_none());
        assert_eq!(Event::decode(e.event_type(), 1, p).unwrap(), e);
    }

    #[test]
    fn every_kind_is_named_as_the_log_stores_it_and_parsed_back() {
        assert_eq!(EventKind::ALL.len(), Event::ALL_TYPES.len());
        for (kind, name) in EventKind::ALL.iter().zip(Event::ALL_TYPES) {
            assert_eq!(kind.as_str(), *name);
            assert_eq!(EventKind::parse(name), Some(*kind));
        }
        assert_eq!(EventKind::parse("projectcreated"), None);
    }

    #[test]
    fn decode_rejects_unknown_types_and_versions() {
        assert!(matches!(Event::decode("Nope", 1, serde_json::json!({})), Err(DecodeError::UnknownType(_))));
        assert!(matches!(
            Event::decode("ProjectArchived", 9, serde_json::json!({})),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
    }

    fn v1_task(due: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "task_id": "0190c1d2-0000-7000-8000-000000000001",
            "project_id": "0190c1d2-0000-7000-8000-000000000002",
            "title": "Ship it",
            "description": null,
            "assignee": null,
            "due": due,
            "priority": "high",
            "at": "2026-11-01T10:00:00Z"
        })
    }

    #[test]
    fn task_created_v1_is_upcast_to_a_due_date() {
        for (due, want) in [
            (serde_json::json!("2027-01-31"), Some("2027-01-31")),
            (serde_json::json!("2027-01-31T17:00:00Z"), Some("2027-01-31")),
            (serde_json::json!(""), None),
            (serde_json::Value::Null, None),
        ] {
            let Event::TaskCreated(t) = Event::decode("TaskCreated", 1, v1_task(due.clone())).unwrap() else {
                panic!("a TaskCreated")
            };
            assert_eq!(t.due_date.map(|d| d.to_string()).as_deref(), want, "due {due}");
            assert_eq!(t.title.as_str(), "Ship it");
        }
    }

    #[test]
    fn task_created_v1_with_a_due_that_is_not_a_date_is_refused_not_guessed() {
        for bad in [serde_json::json!("next week"), serde_json::json!("2027-13-01"), serde_json::json!(5)] {
            assert!(matches!(Event::decode("TaskCreated", 1, v1_task(bad)), Err(DecodeError::Upcast { .. })));
        }
    }

    #[test]
    fn task_created_is_written_as_v2_and_v2_needs_no_upcast() {
        assert_eq!(current_schema_version("TaskCreated"), 2);
        assert_eq!(current_schema_version("ProjectCreated"), 1);
        let mut p = v1_task(serde_json::Value::Null);
        p.as_object_mut().unwrap().remove("due");
        p["due_date"] = serde_json::json!("2027-02-01");
        let e = Event::decode("TaskCreated", 2, p).unwrap();
        assert_eq!(e.schema_version(), 2);
        assert!(matches!(Event::decode("TaskCreated", 3, e.payload()), Err(DecodeError::UnsupportedVersion { .. })));
    }
}
