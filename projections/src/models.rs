//! Every asynchronous read model (SPEC §7), each a projection with its own checkpoint and lease.

use crate::runner::Projection;
use keel_domain::Event;
use keel_store::{RecordedEvent, StoreError, read};
use sqlx::PgConnection;

macro_rules! projection {
    ($(#[$doc:meta])* $ty:ident, $name:literal, [$($t:literal),+ $(,)?], $apply:path $(, batch = $batch:path)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $ty;

        impl $ty {
            pub const NAME: &'static str = $name;
        }

        impl Projection for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn handles(&self, event_type: &str) -> bool {
                matches!(event_type, $($t)|+)
            }

            async fn apply(&self, conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
                $apply(conn, recorded, event).await
            }

            $(
                async fn apply_batch(&self, conn: &mut PgConnection, items: &[read::Item<'_>]) -> Result<(), StoreError> {
                    $batch(conn, items).await
                }
            )?
        }
    };
}

projection!(
    /// `rm_projects`: projects with task counts by status.
    ProjectsProjection, "projects",
    ["ProjectCreated", "ProjectUpdated", "ProjectArchived", "ProjectRestored", "TaskCreated", "TaskStatusChanged",
     "TenantErased"],
    read::projects::apply, batch = read::projects::apply_batch
);
projection!(
    /// `rm_tasks`.
    TasksProjection, "tasks",
    ["TaskCreated", "TaskUpdated", "TaskAssigned", "TaskStatusChanged", "TenantErased"],
    read::tasks::apply, batch = read::tasks::apply_batch
);
projection!(
    /// `rm_members`.
    MembersProjection, "members",
    ["MemberInvited", "MemberRoleChanged", "MemberRemoved", "MemberErased", "TenantErased"],
    read::members::apply
);
projection!(
    /// `rm_task_throughput`: tasks created and completed per day.
    ThroughputProjection, "throughput",
    ["TaskCreated", "TaskStatusChanged", "TenantErased"],
    read::throughput::apply, batch = read::throughput::apply_batch
);
projection!(
    /// `rm_usage_daily` and `rm_usage_monthly`.
    UsageProjection, "usage",
    ["UsageRecorded", "TenantErased"],
    read::usage::apply
);
projection!(
    /// `rm_tenants`: the platform view.
    TenantsProjection, "tenants",
    ["TenantProvisioned", "TenantPlanChanged", "TenantSuspended", "TenantReactivated", "TenantErased",
     "MemberInvited", "MemberRemoved", "MemberErased", "ProjectCreated", "ProjectArchived", "ProjectRestored"],
    read::tenants::apply
);

/// Every projection's name, in the order `keel projections status` lists them.
pub const ALL: &[&str] = &[
    ProjectsProjection::NAME,
    TasksProjection::NAME,
    MembersProjection::NAME,
    ThroughputProjection::NAME,
    UsageProjection::NAME,
    TenantsProjection::NAME,
];

/// The read tables each projection owns (rebuilt and swapped together).
pub fn tables(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "projects" => &["rm_projects"],
        "tasks" => &["rm_tasks"],
        "members" => &["rm_members"],
        "throughput" => &["rm_task_throughput", "rm_task_completions"],
        "usage" => &["rm_usage_daily", "rm_usage_monthly"],
        "tenants" => &["rm_tenants"],
        _ => return None,
    })
}
