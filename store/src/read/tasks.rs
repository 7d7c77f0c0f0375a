//! The `rm_tasks` read table: one row per task.

use crate::db::TenantTx;
use crate::error::StoreError;
use crate::log::RecordedEvent;
use chrono::{DateTime, NaiveDate, Utc};
use keel_domain::Event;
use keel_domain::values::Priority;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

fn rank(p: Priority) -> i16 {
    match p {
        Priority::Low => 1,
        Priority::Medium => 2,
        Priority::High => 3,
        Priority::Urgent => 4,
    }
}

pub async fn apply(conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
    let tenant = recorded.tenant_id.0;
    let v = recorded.stream_version;
    match event {
        Event::TaskCreated(e) => {
            sqlx::query(
                "INSERT INTO rm_tasks (tenant_id, task_id, project_id, title, description, status, priority, priority_rank,
                                       assignee, due_date, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, 'todo', $6, $7, $8, $9, $10, $10, $11)
                 ON CONFLICT (tenant_id, task_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(e.task_id.0)
            .bind(e.project_id.0)
            .bind(e.title.as_str())
            .bind(e.description.as_ref().map(|d| d.as_str()))
            .bind(e.priority.as_str())
            .bind(rank(e.priority))
            .bind(e.assignee.map(|m| m.0))
            .bind(e.due_date)
            .bind(e.at)
            .bind(v)
            .execute(conn)
            .await?;
        }
        Event::TaskUpdated(e) => {
            sqlx::query(
                "UPDATE rm_tasks SET title = COALESCE($3, title),
                        description = CASE WHEN $4 THEN $5 ELSE description END,
                        due_date = CASE WHEN $6 THEN $7 ELSE due_date END,
                        priority = COALESCE($8, priority), priority_rank = COALESCE($9, priority_rank),
                        updated_at = $10, version = $11
                 WHERE tenant_id = $1 AND task_id = $2 AND version < $11",
            )
            .bind(tenant)
            .bind(e.task_id.0)
            .bind(e.title.as_ref().map(|t| t.as_str()))
            .bind(e.description.is_some())
            .bind(e.description.as_ref().and_then(|d| d.as_ref().map(|d| d.as_str())))
            .bind(e.due_date.is_some())
            .bind(e.due_date.flatten())
            .bind(e.priority.map(|p| p.as_str()))
            .bind(e.priority.map(rank))
            .bind(e.at)
            .bind(v)
            .execute(conn)
            .await?;
        }
        Event::TaskAssigned(e) => {
            sqlx::query(
                "UPDATE rm_tasks SET assignee = $3, updated_at = $4, version = $5
                 WHERE tenant_id = $1 AND task_id = $2 AND version < $5",
            )
            .bind(tenant)
            .bind(e.task_id.0)
            .bind(e.assignee.map(|m| m.0))
            .bind(e.at)
            .bind(v)
            .execute(conn)
            .await?;
        }
        Event::TaskStatusChanged(e) => {
            sqlx::query(
                "UPDATE rm_tasks SET status = $3, completed_at = $4, updated_at = $5, version = $6
                 WHERE tenant_id = $1 AND task_id = $2 AND version < $6",
            )
            .bind(tenant)
            .bind(e.task_id.0)
            .bind(e.to.as_str())
            .bind(e.completed_at)
            .bind(e.at)
            .bind(v)
            .execute(conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct TaskRow {
    pub task_id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub priority: String,
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
