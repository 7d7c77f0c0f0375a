//! `rm_tenants`: the platform's view of every tenant.

mod projector;
mod reader;

pub use reader::*;

use super::{ReadModel, boxed_apply};
use crate::Pool;
use keel_domain::EventKind;

/// The read model's descriptor: what it is called, owns and reads.
pub static MODEL: ReadModel = ReadModel {
    name: "tenants",
    tables: &["rm_tenants"],
    handles: &[
        EventKind::TenantProvisioned,
        EventKind::TenantPlanChanged,
        EventKind::TenantSuspended,
        EventKind::TenantReactivated,
        EventKind::TenantErased,
        EventKind::MemberInvited,
        EventKind::MemberRemoved,
        EventKind::MemberErased,
        EventKind::ProjectCreated,
        EventKind::ProjectArchived,
        EventKind::ProjectRestored,
    ],
    pool: Pool::Projector,
    apply: |conn, recorded, event| boxed_apply(projector::apply(conn, recorded, event)),
    apply_batch: None,
};
