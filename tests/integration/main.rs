//! Black-box tests of Keel against a real PostgreSQL: each test has a database of its own.
#![allow(unreachable_pub)]

mod helpers;

mod analyst;
mod audit;
mod auth;
mod bench;
mod binary;
mod commands;
mod conditional;
mod console;
mod demo;
mod erasure;
mod graphql;
mod graphql_api;
mod graphql_fuzz;
mod hostile_graphql;
mod hostile_values;
mod idempotency;
mod limits;
mod log;
mod members;
mod openapi;
mod operator_tools;
mod ops;
mod projection;
mod rate_limits;
mod read_models;
mod readme;
mod rebuild;
mod registry;
mod reporting;
mod rest_spec;
mod roles;
mod security;
mod shedding;
mod subscription_access;
mod subscriptions;
mod suspension;
mod tasks;
mod tidy;
mod typed_rows;
mod usage;
mod workers;
