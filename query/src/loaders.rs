//! Batched loading for nested fields: one statement per field per page, not one per row.

use crate::context::RequestCtx;
use async_graphql::dataloader::Loader;
use keel_store::read::members::MemberRow;
use keel_store::read::projects::ProjectRow;
use keel_store::read::tasks::TaskRow;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Loads `rm_projects` rows by id (`Task.project`).
pub(crate) struct ProjectLoader(pub(crate) Arc<RequestCtx>);

impl Loader<Uuid> for ProjectLoader {
    type Value = ProjectRow;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, ProjectRow>, Self::Error> {
        let mut tx = self.0.read_tx().await.map_err(Arc::new)?;
        let rows = keel_store::read::projects::by_ids(&mut tx, keys)
            .await
            .map_err(|e| Arc::new(crate::context::internal(e)))?;
        tx.commit().await.map_err(|e| Arc::new(crate::context::internal(e)))?;
        Ok(rows.into_iter().map(|r| (r.project_id, r)).collect())
    }
}

/// Loads members by id (`Task.assignee`).
pub(crate) struct MemberLoader(pub(crate) Arc<RequestCtx>);

impl Loader<Uuid> for MemberLoader {
    type Value = MemberRow;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, MemberRow>, Self::Error> {
        let mut tx = self.0.read_tx().await.map_err(Arc::new)?;
        let rows = keel_store::read::members::by_ids(&mut tx, keys)
            .await
            .map_err(|e| Arc::new(crate::context::internal(e)))?;
        tx.commit().await.map_err(|e| Arc::new(crate::context::internal(e)))?;
        Ok(rows.into_iter().map(|r| (r.member_id, r)).collect())
    }
}

/// The first tasks of a project with an optional status (`Project.tasks` without `after`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProjectTasksKey {
    pub(crate) project: Uuid,
    pub(crate) status: Option<String>,
    /// Rows wanted: `first + 1`, to tell whether there is a next page.
    pub(crate) take: i64,
}

pub(crate) struct ProjectTasksLoader(pub(crate) Arc<RequestCtx>);

impl Loader<ProjectTasksKey> for ProjectTasksLoader {
    type Value = Vec<TaskRow>;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[ProjectTasksKey]) -> Result<HashMap<ProjectTasksKey, Vec<TaskRow>>, Self::Error> {
        // One statement per (status, page size) among the keys: usually one.
        let mut groups: HashMap<(Option<String>, i64), Vec<Uuid>> = HashMap::new();
        for k in keys {
            groups.entry((k.status.clone(), k.take)).or_default().push(k.project);
        }
        let mut tx = self.0.read_tx().await.map_err(Arc::new)?;
        let mut out = HashMap::new();
        for ((status, take), projects) in groups {
            let rows = keel_store::read::tasks::first_of_projects(&mut tx, &projects, status.as_deref(), take)
                .await
                .map_err(|e| Arc::new(crate::context::internal(e)))?;
            for p in projects {
                out.insert(ProjectTasksKey { project: p, status: status.clone(), take }, Vec::new());
            }
            for r in rows {
                out.entry(ProjectTasksKey { project: r.project_id, status: status.clone(), take }).or_default().push(r);
            }
        }
        tx.commit().await.map_err(|e| Arc::new(crate::context::internal(e)))?;
        Ok(out)
    }
}

/// How many tasks (of a status) a project has (`Project.tasks.totalCount`).
pub(crate) struct ProjectTaskCountLoader(pub(crate) Arc<RequestCtx>);

impl Loader<(Uuid, Option<String>)> for ProjectTaskCountLoader {
    type Value = i64;
    type Error = Arc<async_graphql::Error>;

    async fn load(&self, keys: &[(Uuid, Option<String>)]) -> Result<HashMap<(Uuid, Option<String>), i64>, Self::Error> {
        let mut groups: HashMap<Option<String>, Vec<Uuid>> = HashMap::new();
        for (p, s) in keys {
            groups.entry(s.clone()).or_default().push(*p);
        }
        let mut tx = self.0.read_tx().await.map_err(Arc::new)?;
        let mut out = HashMap::new();
        for (status, projects) in groups {
            let counts = keel_store::read::tasks::count_of_projects(&mut tx, &projects, status.as_deref())
                .await
                .map_err(|e| Arc::new(crate::context::internal(e)))?;
            for p in &projects {
                out.insert((*p, status.clone()), 0);
            }
            for (p, n) in counts {
                out.insert((p, status.clone()), n);
            }
        }
        tx.commit().await.map_err(|e| Arc::new(crate::context::internal(e)))?;
        Ok(out)
    }
}
