//! Black-box tests of Keel against a real PostgreSQL: each test has a database of its own.
#![allow(unreachable_pub)]

mod helpers;

mod auth;
mod conditional;
mod idempotency;
mod limits;
mod members;
mod openapi;
mod rebuild;
mod roles;
mod suspension;
mod tasks;
mod usage;
mod binary;
mod commands;
mod graphql;
mod log;
mod ops;
mod projection;
mod security;
