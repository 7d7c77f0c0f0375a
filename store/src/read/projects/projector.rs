//! The projector's writes to `rm_projects`.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use crate::read::Handled;
use chrono::{DateTime, Utc};
use keel_domain::Event;
use sqlx::PgConnection;
use uuid::Uuid;

/// Applies one event to the table, as the projector (which sees every tenant). Guarded by the
/// stream version so that applying an event twice cannot move a row backwards.
pub(super) async fn apply(
    conn: &mut PgConnection,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<Handled, StoreError> {
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
        Event::TenantErased(_) => crate::read::purge(conn, tenant, super::MODEL.tables).await?,
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
        _ => return Ok(Handled::Ignored),
    }
    Ok(Handled::Applied)
}

/// Applies a batch: runs of project creations are one INSERT, runs of task creations one UPDATE
/// of the counts; everything else event by event. The same rows as `apply` one at a time.
pub(super) async fn apply_batch(conn: &mut PgConnection, items: &[crate::read::Item<'_>]) -> Result<(), StoreError> {
    for run in crate::read::runs(items) {
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
