//! The `projects` read model: one row per project.

use crate::runner::Projection;
use keel_domain::Event;
use keel_store::{RecordedEvent, StoreError, read};
use sqlx::PgConnection;

#[derive(Debug, Clone, Copy, Default)]
pub struct ProjectsProjection;

impl ProjectsProjection {
    pub const NAME: &'static str = "projects";
}

impl Projection for ProjectsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "ProjectCreated"
                | "ProjectUpdated"
                | "ProjectArchived"
                | "ProjectRestored"
                | "TaskCreated"
                | "TaskStatusChanged"
        )
    }

    async fn apply(&self, conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
        read::projects::apply(conn, recorded, event).await
    }
}
