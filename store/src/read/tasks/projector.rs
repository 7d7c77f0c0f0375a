//! The projector's writes to `rm_tasks`.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use crate::read::Handled;
use keel_domain::Event;
use keel_domain::values::Priority;
use sqlx::PgConnection;

fn rank(p: Priority) -> i16 {
    match p {
        Priority::Low => 1,
        Priority::Medium => 2,
        Priority::High => 3,
        Priority::Urgent => 4,
    }
}

/// Applies a batch: a run of task creations is one INSERT; everything else event by event.
pub(super) async fn apply_batch(conn: &mut PgConnection, items: &[crate::read::Item<'_>]) -> Result<(), StoreError> {
    for run in crate::read::runs(items) {
        if !(run.len() > 1 && matches!(run[0].1, Event::TaskCreated(_))) {
            for (r, e) in run {
                apply(conn, r, e).await?;
            }
            continue;
        }
        let n = run.len();
        let (mut tenants, mut tasks, mut projects) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut titles, mut descriptions, mut priorities) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut ranks, mut assignees, mut dues) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut ats, mut versions) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (r, e) in run {
            let Event::TaskCreated(e) = e else { continue };
            tenants.push(r.tenant_id.0);
            tasks.push(e.task_id.0);
            projects.push(e.project_id.0);
            titles.push(e.title.as_str());
            descriptions.push(e.description.as_ref().map(|d| d.as_str()));
            priorities.push(e.priority.as_str());
            ranks.push(rank(e.priority));
            assignees.push(e.assignee.map(|m| m.0));
            dues.push(e.due_date);
            ats.push(e.at);
            versions.push(r.stream_version);
        }
        sqlx::query(
            "INSERT INTO rm_tasks (tenant_id, task_id, project_id, title, description, status, priority, priority_rank,
                                   assignee, due_date, created_at, updated_at, version)
             SELECT t, k, p, ti, d, 'todo', pr, rk, asg, due, a, a, v
               FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::int2[],
                           $8::uuid[], $9::date[], $10::timestamptz[], $11::int8[]) AS u(t, k, p, ti, d, pr, rk, asg, due, a, v)
             ON CONFLICT (tenant_id, task_id) DO NOTHING",
        )
        .bind(&tenants)
        .bind(&tasks)
        .bind(&projects)
        .bind(&titles)
        .bind(&descriptions)
        .bind(&priorities)
        .bind(&ranks)
        .bind(&assignees)
        .bind(&dues)
        .bind(&ats)
        .bind(&versions)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(super) async fn apply(
    conn: &mut PgConnection,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<Handled, StoreError> {
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
        Event::TenantErased(_) => crate::read::purge(conn, tenant, super::MODEL.tables).await?,
        _ => return Ok(Handled::Ignored),
    }
    Ok(Handled::Applied)
}
