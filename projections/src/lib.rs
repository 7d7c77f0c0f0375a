//! Asynchronous projections: a runner that turns the log into read tables, batch by batch, each
//! batch committed with its checkpoint.

mod projects;
mod runner;

pub use projects::ProjectsProjection;
pub use runner::{Projection, Runner, RunnerConfig};
