//! Keel's domain: aggregates, commands, events and the rules between them. Pure: no I/O, no clock.

pub mod address;
pub mod aggregate;
pub mod error;
pub mod event;
pub mod ids;
pub mod member;
pub mod names;
pub mod plan;
pub mod project;
pub mod role;
pub mod task;
pub mod tenant;
pub mod usage;
pub mod values;
pub mod webhook;

pub use aggregate::{Aggregate, Decide, StreamType};
pub use error::{DomainError, FieldError, Limit};
pub use event::{Event, EventKind};
pub use ids::{MemberId, ProjectId, TaskId, TenantId, UsageBatchId, UserId, WebhookId};
pub use names::{Named, UnknownName};
pub use plan::Plan;
pub use role::Role;
