//! The `rm_members` read table: one row per member, personal data included.

mod projector;
mod reader;

pub use reader::*;

use super::{ReadModel, boxed_apply};
use crate::Pool;
use keel_domain::EventKind;

/// The read model's descriptor: what it is called, owns and reads.
pub static MODEL: ReadModel = ReadModel {
    name: "members",
    tables: &["rm_members"],
    handles: &[
        EventKind::MemberInvited,
        EventKind::MemberRoleChanged,
        EventKind::MemberRemoved,
        EventKind::MemberErased,
        EventKind::TenantErased,
    ],
    pool: Pool::Projector,
    apply: |conn, recorded, event| boxed_apply(projector::apply(conn, recorded, event)),
    apply_batch: None,
};
