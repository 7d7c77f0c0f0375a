//! The reader's queries of `rm_projects`.

use crate::db::TenantTx;
use crate::error::StoreError;
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

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

/// How many projects match `filter`, counted up to `COUNT_CAP`.
pub async fn count_filtered(tx: &mut TenantTx, filter: &ProjectFilter) -> Result<crate::read::Count, StoreError> {
    let tenant = tx.tenant().0;
    let mut q = sqlx::QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM rm_projects");
    push_project_filter(&mut q, tenant, filter);
    q.push(format!(" LIMIT {}) AS c", crate::read::COUNT_CAP + 1));
    Ok(crate::read::Count::from_limited(q.build_query_scalar::<i64>().fetch_one(tx.conn()).await?))
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
