//! The reader's queries of `rm_tasks`.

use crate::db::TenantTx;
use crate::error::StoreError;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::FromRow;
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct TaskRow {
    pub task_id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: keel_domain::values::TaskStatus,
    #[sqlx(try_from = "String")]
    pub priority: keel_domain::values::Priority,
    pub assignee: Option<Uuid>,
    pub due_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// A page of tasks with one status, by due date (tasks without one last), keyset after
/// `(due_date, task_id)`. The list query the `rm_tasks_status_due_idx` index serves.
pub const BY_STATUS_DUE: &str = "SELECT task_id, project_id, title, description, status, priority, assignee, due_date,
        created_at, updated_at, completed_at, version
   FROM rm_tasks
  WHERE tenant_id = $1 AND status = $2
  ORDER BY due_date, task_id
  LIMIT $3";

pub async fn by_status_due(tx: &mut TenantTx, status: &str, limit: i64) -> Result<Vec<TaskRow>, StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_as(BY_STATUS_DUE).bind(tenant).bind(status).bind(limit).fetch_all(tx.conn()).await?)
}

/// Filters of the task lists (`docs/api.md`, "GraphQL"); `None` means no filter.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub project_id: Option<Uuid>,
    pub status: Option<String>,
    pub priority: Option<String>,
    pub assignee: Option<Uuid>,
    pub due_before: Option<NaiveDate>,
    pub due_after: Option<NaiveDate>,
    /// Not done and due before `today`.
    pub overdue: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSort {
    DueDate,
    Priority,
    CreatedAt,
}

/// Where a page continues: the sort key of the last row (as text; `None` for a null due date)
/// and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCursor {
    pub key: Option<String>,
    pub id: Uuid,
}

const TASK_COLUMNS: &str = "task_id, project_id, title, description, status, priority, assignee, due_date, \
                            created_at, updated_at, completed_at, version";

fn push_filter(q: &mut sqlx::QueryBuilder<sqlx::Postgres>, tenant: Uuid, f: &TaskFilter) {
    q.push(" WHERE tenant_id = ").push_bind(tenant);
    if let Some(p) = f.project_id {
        q.push(" AND project_id = ").push_bind(p);
    }
    if let Some(s) = &f.status {
        q.push(" AND status = ").push_bind(s.clone());
    }
    if let Some(p) = &f.priority {
        // By its rank, which `rm_tasks_priority_idx` holds (a count of one priority reads it).
        q.push(" AND priority_rank = ").push_bind(priority_rank(p));
    }
    if let Some(a) = f.assignee {
        q.push(" AND assignee = ").push_bind(a);
    }
    if let Some(d) = f.due_before {
        q.push(" AND due_date < ").push_bind(d);
    }
    if let Some(d) = f.due_after {
        q.push(" AND due_date > ").push_bind(d);
    }
    if let Some(today) = f.overdue {
        q.push(" AND status <> 'done' AND due_date < ").push_bind(today);
    }
}

/// A priority's rank as `rm_tasks.priority_rank` stores it (low 1 .. urgent 4; 0 matches none).
fn priority_rank(name: &str) -> i16 {
    match name {
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        "urgent" => 4,
        _ => 0,
    }
}

impl TaskSort {
    /// The row's sort key as a cursor stores it.
    pub fn key_of(self, row: &TaskRow) -> Option<String> {
        match self {
            TaskSort::DueDate => row.due_date.map(|d| d.to_string()),
            TaskSort::Priority => Some(
                match row.priority.as_str() {
                    "low" => 1,
                    "medium" => 2,
                    "high" => 3,
                    _ => 4,
                }
                .to_string(),
            ),
            TaskSort::CreatedAt => Some(row.created_at.timestamp_micros().to_string()),
        }
    }
}

/// A page of tasks in `sort` order (`desc` reverses it), after `after`.
pub async fn list(
    tx: &mut TenantTx,
    filter: &TaskFilter,
    sort: TaskSort,
    desc: bool,
    after: Option<&TaskCursor>,
    limit: i64,
) -> Result<Vec<TaskRow>, StoreError> {
    let tenant = tx.tenant().0;
    let mut q = sqlx::QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM rm_tasks"));
    push_filter(&mut q, tenant, filter);
    let (cmp, dir) = if desc { ("<", "DESC") } else { (">", "ASC") };
    match (sort, after) {
        (_, None) => {}
        (TaskSort::DueDate, Some(c)) => match (&c.key, desc) {
            // Ascending puts tasks without a due date last, descending first (PostgreSQL's default).
            (Some(k), false) => {
                let d: NaiveDate = k.parse().map_err(|_| StoreError::BadCursor)?;
                q.push(" AND (due_date > ").push_bind(d).push(" OR (due_date = ").push_bind(d);
                q.push(" AND task_id > ").push_bind(c.id).push(") OR due_date IS NULL)");
            }
            (None, false) => {
                q.push(" AND due_date IS NULL AND task_id > ").push_bind(c.id);
            }
            (Some(k), true) => {
                let d: NaiveDate = k.parse().map_err(|_| StoreError::BadCursor)?;
                q.push(" AND (due_date < ").push_bind(d).push(" OR (due_date = ").push_bind(d);
                q.push(" AND task_id < ").push_bind(c.id).push("))");
            }
            (None, true) => {
                q.push(" AND ((due_date IS NULL AND task_id < ").push_bind(c.id).push(") OR due_date IS NOT NULL)");
            }
        },
        (TaskSort::Priority, Some(c)) => {
            let k: i16 = c.key.as_deref().and_then(|k| k.parse().ok()).ok_or_else(|| StoreError::BadCursor)?;
            // Most urgent first, oldest first within a priority; `desc` turns both round.
            let (rank_cmp, id_cmp) = if desc { (">", "<") } else { ("<", ">") };
            q.push(format!(" AND (priority_rank {rank_cmp} ")).push_bind(k);
            q.push(" OR (priority_rank = ")
                .push_bind(k)
                .push(format!(" AND task_id {id_cmp} "))
                .push_bind(c.id)
                .push("))");
        }
        (TaskSort::CreatedAt, Some(c)) => {
            let micros: i64 = c.key.as_deref().and_then(|k| k.parse().ok()).ok_or_else(|| StoreError::BadCursor)?;
            let at = DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::BadCursor)?;
            q.push(format!(" AND (created_at, task_id) {cmp} (")).push_bind(at).push(", ").push_bind(c.id).push(")");
        }
    }
    match sort {
        TaskSort::DueDate => q.push(format!(" ORDER BY due_date {dir}, task_id {dir}")),
        TaskSort::Priority => {
            let (rank, id) = if desc { ("ASC", "DESC") } else { ("DESC", "ASC") };
            q.push(format!(" ORDER BY priority_rank {rank}, task_id {id}"))
        }
        TaskSort::CreatedAt => q.push(format!(" ORDER BY created_at {dir}, task_id {dir}")),
    };
    q.push(" LIMIT ").push_bind(limit);
    Ok(q.build_query_as::<TaskRow>().fetch_all(tx.conn()).await?)
}

/// How many tasks match `filter`, counted up to `COUNT_CAP` (a filter the counters answer is
/// `count_by_counters`'s).
pub async fn count(tx: &mut TenantTx, filter: &TaskFilter) -> Result<crate::read::Count, StoreError> {
    let tenant = tx.tenant().0;
    let mut q = sqlx::QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM rm_tasks");
    push_filter(&mut q, tenant, filter);
    q.push(format!(" LIMIT {}) AS c", crate::read::COUNT_CAP + 1));
    Ok(crate::read::Count::from_limited(q.build_query_scalar::<i64>().fetch_one(tx.conn()).await?))
}

/// Whether `count_by_counters` answers `filter` (a project, a status, both or neither).
pub fn counters_answer(filter: &TaskFilter) -> bool {
    filter.priority.is_none()
        && filter.assignee.is_none()
        && filter.due_before.is_none()
        && filter.due_after.is_none()
        && filter.overdue.is_none()
}

/// The exact number of tasks of the tenant (of `filter`'s project and status) from the task
/// counters the projects read model keeps per project: one row per project, whatever the
/// number of tasks. `None` when `counters_answer` is false.
pub async fn count_by_counters(tx: &mut TenantTx, filter: &TaskFilter) -> Result<Option<i64>, StoreError> {
    if !counters_answer(filter) {
        return Ok(None);
    }
    let tenant = tx.tenant().0;
    let n: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(CASE $3::text WHEN 'todo' THEN tasks_todo WHEN 'in_progress' THEN tasks_in_progress
                                          WHEN 'done' THEN tasks_done
                                          ELSE tasks_todo + tasks_in_progress + tasks_done END), 0)::bigint
           FROM rm_projects WHERE tenant_id = $1 AND ($2::uuid IS NULL OR project_id = $2)",
    )
    .bind(tenant)
    .bind(filter.project_id)
    .bind(filter.status.as_deref())
    .fetch_one(tx.conn())
    .await?;
    Ok(Some(n))
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Option<TaskRow>, StoreError> {
    let tenant = tx.tenant().0;
    let sql = format!("SELECT {TASK_COLUMNS} FROM rm_tasks WHERE tenant_id = $1 AND task_id = $2");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(tx.conn()).await?)
}

/// The first `per_project` tasks (oldest first) of each project, in one statement.
pub async fn first_of_projects(
    tx: &mut TenantTx,
    projects: &[Uuid],
    status: Option<&str>,
    per_project: i64,
) -> Result<Vec<TaskRow>, StoreError> {
    let tenant = tx.tenant().0;
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM (
            SELECT t.*, row_number() OVER (PARTITION BY project_id ORDER BY created_at, task_id) AS rn
              FROM rm_tasks t
             WHERE tenant_id = $1 AND project_id = ANY($2) AND ($3::text IS NULL OR status = $3)) x
          WHERE rn <= $4 ORDER BY project_id, created_at, task_id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(projects)
        .bind(status)
        .bind(per_project)
        .fetch_all(tx.conn())
        .await?)
}

/// How many tasks (with `status`, when given) each project has, in one statement.
pub async fn count_of_projects(
    tx: &mut TenantTx,
    projects: &[Uuid],
    status: Option<&str>,
) -> Result<Vec<(Uuid, i64)>, StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_as(
        "SELECT project_id, count(*) FROM rm_tasks
          WHERE tenant_id = $1 AND project_id = ANY($2) AND ($3::text IS NULL OR status = $3) GROUP BY project_id",
    )
    .bind(tenant)
    .bind(projects)
    .bind(status)
    .fetch_all(tx.conn())
    .await?)
}

/// Task counts by status, and overdue tasks (not done, due before `today`).
pub async fn summary(tx: &mut TenantTx, today: NaiveDate) -> Result<(i64, i64, i64, i64), StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'todo'), count(*) FILTER (WHERE status = 'in_progress'),
                count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status <> 'done' AND due_date < $2)
           FROM rm_tasks WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(today)
    .fetch_one(tx.conn())
    .await?)
}
