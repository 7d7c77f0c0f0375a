//! Read tables: how projections write them and how the query side reads them.

pub mod members;
pub mod projects;
pub mod tasks;
pub mod tenants;
pub mod throughput;
pub mod usage;
