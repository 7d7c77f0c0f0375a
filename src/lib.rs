//! Keel's composition root: configuration, the embedded PostgreSQL for development, telemetry,
//! and `App`, which wires the REST, GraphQL and projection parts into one process.

pub mod analyst;
pub mod app;
pub mod audit;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod database_url;
pub mod dead_letters_cmd;
pub mod demo;
pub mod drain;
pub mod embedded;
pub mod outbound_cmd;
pub mod secrets;
pub mod subscribe;
pub mod telemetry;
pub mod tenancy_cmd;
pub mod tenant_arg;
pub mod tenant_cmd;

pub use app::{App, AppConfig, EdgeLimits, Services};
pub use database_url::DatabaseUrl;
