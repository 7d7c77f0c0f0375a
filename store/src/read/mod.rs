//! Read tables: how projections write them and how the query side reads them.

pub mod projects;
