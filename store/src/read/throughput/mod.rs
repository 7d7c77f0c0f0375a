//! `rm_task_throughput`: tasks created and completed per day.

mod projector;
mod reader;

pub use reader::*;

use super::{ReadModel, boxed_apply, boxed_batch};
use crate::Pool;
use keel_domain::EventKind;

/// The read model's descriptor: what it is called, owns and reads.
pub static MODEL: ReadModel = ReadModel {
    name: "throughput",
    tables: &["rm_task_throughput", "rm_task_completions"],
    handles: &[EventKind::TaskCreated, EventKind::TaskStatusChanged, EventKind::TenantErased],
    pool: Pool::Projector,
    apply: |conn, recorded, event| boxed_apply(projector::apply(conn, recorded, event)),
    apply_batch: Some(|conn, items| boxed_batch(projector::apply_batch(conn, items))),
};
