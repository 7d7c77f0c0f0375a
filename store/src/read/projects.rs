//! The `rm_projects` read table: one row per project with its task counts.

use crate::db::TenantTx;
use crate::error::StoreError;
use crate::log::RecordedEvent;
use chrono::{DateTime, Utc};
use keel_domain::Event;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

/// Applies one event to the table, as the projector (which sees every tenant). Guarded by the
/// stream version so that applying an event twice cannot move a row backwards.
pub async fn apply(conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
    let tenant = recorded.tenant_id.0;
    let v = recorded.stream_version;
    match event {
        Event::ProjectCreated(e) => {
            sqlx::query(
                "INSERT INTO rm_projects (tenant_id, project_id, name, description, status, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, 'active', $5, $5, $6)
                 ON CONFLICT (tenant_id, project_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(e.project_id.0)
            .bind(e.name.as_str())
            .bind(e.description.as_ref().map(|d| d.as_str()))
            .bind(e.at)
            .bind(v)
            .execute(conn)
            .await?;
        }
        Event::ProjectUpdated(e) => {
            sqlx::query(
                "UPDATE rm_projects SET name = COALESCE($3, name),
                        description = CASE WHEN $4 THEN $5 ELSE description END,
                        updated_at = $6, version = $7
                 WHERE tenant_id = $1 AND project_id = $2 AND version < $7",
            )
            .bind(tenant)
            .bind(e.project_id.0)
            .bind(e.name.as_ref().map(|n| n.as_str()))
            .bind(e.description.is_some())
            .bind(e.description.as_ref().and_then(|d| d.as_ref().map(|d| d.as_str())))
            .bind(e.at)
            .bind(v)
            .execute(conn)
            .await?;
        }
        Event::ProjectArchived(e) => set_status(conn, tenant, e.project_id.0, "archived", e.at, v).await?,
        Event::ProjectRestored(e) => set_status(conn, tenant, e.project_id.0, "active", e.at, v).await?,
        Event::TaskCreated(e) => {
            sqlx::query("UPDATE rm_projects SET tasks_todo = tasks_todo + 1 WHERE tenant_id = $1 AND project_id = $2")
                .bind(tenant)
                .bind(e.project_id.0)
                .execute(conn)
                .await?;
        }
        Event::TenantErased(_) => super::purge(conn, tenant, &["rm_projects"]).await?,
        Event::TaskStatusChanged(e) => {
            // Counts are not guarded by a version: the runner applies each event exactly once.
            sqlx::query(
                "UPDATE rm_projects SET
                    tasks_todo = tasks_todo - (($3 = 'todo')::int) + (($4 = 'todo')::int),
                    tasks_in_progress = tasks_in_progress - (($3 = 'in_progress')::int) + (($4 = 'in_progress')::int),
                    tasks_done = tasks_done - (($3 = 'done')::int) + (($4 = 'done')::int)
                 WHERE tenant_id = $1 AND project_id = $2",
            )
            .bind(tenant)
            .bind(e.project_id.0)
            .bind(e.from.as_str())
            .bind(e.to.as_str())
            .execute(conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Applies a batch: runs of project creations are one INSERT, runs of task creations one UPDATE
/// of the counts; everything else event by event. The same rows as `apply` one at a time.
pub async fn apply_batch(conn: &mut PgConnection, items: &[super::Item<'_>]) -> Result<(), StoreError> {
    for run in super::runs(items) {
        match &run[0].1 {
            Event::ProjectCreated(_) if run.len() > 1 => {
                let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (r, e) in run {
                    let Event::ProjectCreated(e) = e else { continue };
                    cols.0.push(r.tenant_id.0);
                    cols.1.push(e.project_id.0);
                    cols.2.push(e.name.as_str());
                    cols.3.push(e.description.as_ref().map(|d| d.as_str()));
                    cols.4.push(e.at);
                    cols.5.push(r.stream_version);
                }
                sqlx::query(
                    "INSERT INTO rm_projects (tenant_id, project_id, name, description, status, created_at, updated_at, version)
                     SELECT t, p, n, d, 'active', a, a, v
                       FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::int8[]) AS u(t, p, n, d, a, v)
                     ON CONFLICT (tenant_id, project_id) DO NOTHING",
                )
                .bind(&cols.0)
                .bind(&cols.1)
                .bind(&cols.2)
                .bind(&cols.3)
                .bind(&cols.4)
                .bind(&cols.5)
                .execute(&mut *conn)
                .await?;
            }
            Event::TaskCreated(_) if run.len() > 1 => {
                let (mut tenants, mut projects) = (Vec::new(), Vec::new());
                for (r, e) in run {
                    let Event::TaskCreated(e) = e else { continue };
                    tenants.push(r.tenant_id.0);
                    projects.push(e.project_id.0);
                }
                sqlx::query(
                    "UPDATE rm_projects p SET tasks_todo = p.tasks_todo + c.n
                       FROM (SELECT t, pr, count(*)::int AS n FROM UNNEST($1::uuid[], $2::uuid[]) AS u(t, pr) GROUP BY t, pr) c
                      WHERE p.tenant_id = c.t AND p.project_id = c.pr",
                )
                .bind(&tenants)
                .bind(&projects)
                .execute(&mut *conn)
                .await?;
            }
            _ => {
                for (r, e) in run {
                    apply(conn, r, e).await?;
                }
            }
        }
    }
    Ok(())
}

async fn set_status(
    conn: &mut PgConnection,
    tenant: Uuid,
    project: Uuid,
    status: &str,
    at: DateTime<Utc>,
    v: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE rm_projects SET status = $3, updated_at = $4, version = $5
         WHERE tenant_id = $1 AND project_id = $2 AND version < $5",
    )
    .bind(tenant)
    .bind(project)
    .bind(status)
    .bind(at)
    .bind(v)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct ProjectRow {
    pub project_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: keel_domain::project::ProjectStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub tasks_todo: i32,
    pub tasks_in_progress: i32,
    pub tasks_done: i32,
}

const COLUMNS: &str = "project_id, name, description, status, created_at, updated_at, version, \
                       tasks_todo, tasks_in_progress, tasks_done";

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Option<ProjectRow>, StoreError> {
    let tenant = tx.tenant().0;
    let sql = format!("SELECT {COLUMNS} FROM rm_projects WHERE tenant_id = $1 AND project_id = $2");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(tx.conn()).await?)
}

/// The keyset a page continues after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectKey {
    pub created_at: DateTime<Utc>,
    pub project_id: Uuid,
}

/// The first page of projects, oldest first: the list query `rm_projects_created_idx` serves.
pub const FIRST_PAGE: &str = "SELECT project_id, name, description, status, created_at, updated_at, version,
        tasks_todo, tasks_in_progress, tasks_done
   FROM rm_projects WHERE tenant_id = $1 ORDER BY created_at, project_id LIMIT $2";

/// Up to `limit` projects after `after`, oldest first.
pub async fn list(tx: &mut TenantTx, after: Option<ProjectKey>, limit: i64) -> Result<Vec<ProjectRow>, StoreError> {
    let tenant = tx.tenant().0;
    let rows = match after {
        None => sqlx::query_as(FIRST_PAGE).bind(tenant).bind(limit).fetch_all(tx.conn()).await?,
        Some(k) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM rm_projects WHERE tenant_id = $1 AND (created_at, project_id) > ($2, $3)
                 ORDER BY created_at, project_id LIMIT $4"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(k.created_at)
                .bind(k.project_id)
                .bind(limit)
                .fetch_all(tx.conn())
                .await?
        }
    };
    Ok(rows)
}

pub async fn count(tx: &mut TenantTx) -> Result<i64, StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_scalar("SELECT count(*) FROM rm_projects WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(tx.conn())
        .await?)
}

#[derive(Debug, Clone, Default)]
pub struct ProjectFilter {
    pub status: Option<String>,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectSort {
    CreatedAt,
    UpdatedAt,
    Name,
}

impl ProjectSort {
    pub fn key_of(self, row: &ProjectRow) -> String {
        match self {
            ProjectSort::CreatedAt => row.created_at.timestamp_micros().to_string(),
            ProjectSort::UpdatedAt => row.updated_at.timestamp_micros().to_string(),
            ProjectSort::Name => row.name.clone(),
        }
    }
}

fn push_project_filter(q: &mut sqlx::QueryBuilder<sqlx::Postgres>, tenant: Uuid, f: &ProjectFilter) {
    q.push(" WHERE tenant_id = ").push_bind(tenant);
    if let Some(s) = &f.status {
        q.push(" AND status = ").push_bind(s.clone());
    }
    if let Some(s) = &f.search {
        let pattern = format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        q.push(" AND name ILIKE ").push_bind(pattern);
    }
}

/// A page of projects in `sort` order after `(key, id)`.
pub async fn page(
    tx: &mut TenantTx,
    filter: &ProjectFilter,
    sort: ProjectSort,
    desc: bool,
    after: Option<(&str, Uuid)>,
    limit: i64,
) -> Result<Vec<ProjectRow>, StoreError> {
    let tenant = tx.tenant().0;
    let mut q = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM rm_projects"));
    push_project_filter(&mut q, tenant, filter);
    let (cmp, dir) = if desc { ("<", "DESC") } else { (">", "ASC") };
    let column = match sort {
        ProjectSort::CreatedAt => "created_at",
        ProjectSort::UpdatedAt => "updated_at",
        ProjectSort::Name => "name",
    };
    if let Some((key, id)) = after {
        q.push(format!(" AND ({column}, project_id) {cmp} ("));
        match sort {
            ProjectSort::Name => q.push_bind(key.to_owned()),
            _ => {
                let micros: i64 = key.parse().map_err(|_| StoreError::BadCursor)?;
                q.push_bind(DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::BadCursor)?)
            }
        };
        q.push(", ").push_bind(id).push(")");
    }
    q.push(format!(" ORDER BY {column} {dir}, project_id {dir} LIMIT ")).push_bind(limit);
    Ok(q.build_query_as::<ProjectRow>().fetch_all(tx.conn()).await?)
}

pub async fn count_filtered(tx: &mut TenantTx, filter: &ProjectFilter) -> Result<i64, StoreError> {
    let tenant = tx.tenant().0;
    let mut q = sqlx::QueryBuilder::new("SELECT count(*) FROM rm_projects");
    push_project_filter(&mut q, tenant, filter);
    Ok(q.build_query_scalar::<i64>().fetch_one(tx.conn()).await?)
}

/// Projects by id, in one statement (for batched loading).
pub async fn by_ids(tx: &mut TenantTx, ids: &[Uuid]) -> Result<Vec<ProjectRow>, StoreError> {
    let tenant = tx.tenant().0;
    let sql = format!("SELECT {COLUMNS} FROM rm_projects WHERE tenant_id = $1 AND project_id = ANY($2)");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(ids).fetch_all(tx.conn()).await?)
}

pub async fn active_count(tx: &mut TenantTx) -> Result<i64, StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_scalar("SELECT count(*) FROM rm_projects WHERE tenant_id = $1 AND status = 'active'")
        .bind(tenant)
        .fetch_one(tx.conn())
        .await?)
}
