//! The `rm_projects` read table: one row per project with its task counts.

mod projector;
mod reader;

pub use reader::*;

use super::{ReadModel, boxed_apply, boxed_batch};
use crate::Pool;
use keel_domain::EventKind;

/// The read model's descriptor: what it is called, owns and reads.
pub static MODEL: ReadModel = ReadModel {
    name: "projects",
    tables: &["rm_projects"],
    handles: &[
        EventKind::ProjectCreated,
        EventKind::ProjectUpdated,
        EventKind::ProjectArchived,
        EventKind::ProjectRestored,
        EventKind::TaskCreated,
        EventKind::TaskStatusChanged,
        EventKind::TenantErased,
    ],
    pool: Pool::Projector,
    apply: |conn, recorded, event| boxed_apply(projector::apply(conn, recorded, event)),
    apply_batch: Some(|conn, items| boxed_batch(projector::apply_batch(conn, items))),
};
