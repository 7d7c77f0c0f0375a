//! The GraphQL read API over the read tables and, for audit reviewers, the log (`/graphql`, subscriptions on `/graphql/ws`),
//! tenant-scoped by the token and authorized by the membership.

pub mod audit;
pub mod changes;
mod context;
mod cursor;
pub mod http;
pub mod limits;
mod loaders;
pub mod schema;
mod spans;
pub mod subscription;
pub mod types;

pub use http::{QueryState, router, schema_router};

/// The cursor after task `id` created at `created_at` in the default order of `tasks` (created,
/// oldest first): what a client holds deep in a list (the bench starts pages there).
pub fn task_cursor_by_creation(created_at: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
    cursor::encode("tasks:CreatedAt:false", Some(created_at.timestamp_micros().to_string()), id)
}
pub use limits::GraphqlLimits;
pub use schema::{KeelSchema, build_introspection_schema, build_schema, build_schema_with};
