//! Black-box tests of Keel against a real PostgreSQL: each test has a database of its own.
#![allow(unreachable_pub)]

mod helpers;

mod auth;
mod binary;
mod commands;
mod graphql;
mod log;
mod ops;
mod projection;
mod security;
