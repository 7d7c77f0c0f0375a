//! The GraphQL read API over the read tables (`/graphql`), tenant-scoped by the token and
//! authorized by the membership.

mod context;
mod cursor;
pub mod http;
pub mod schema;

pub use http::{QueryState, router};
pub use schema::{KeelSchema, build_schema};
