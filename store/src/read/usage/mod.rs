//! `rm_usage_daily` and `rm_usage_monthly`: units per metric per day, and per month.

mod projector;
mod reader;

pub use reader::*;

use super::{ReadModel, boxed_apply};
use crate::Pool;
use keel_domain::EventKind;

/// The read model's descriptor: what it is called, owns and reads.
pub static MODEL: ReadModel = ReadModel {
    name: "usage",
    tables: &["rm_usage_daily", "rm_usage_monthly"],
    handles: &[EventKind::UsageRecorded, EventKind::TenantErased],
    pool: Pool::Projector,
    apply: |conn, recorded, event| boxed_apply(projector::apply(conn, recorded, event)),
    apply_batch: None,
};
