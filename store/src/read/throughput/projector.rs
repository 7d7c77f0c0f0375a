//! The projector's writes to `rm_task_throughput`, `rm_task_completions`.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use crate::read::Handled;
use keel_domain::Event;
use sqlx::PgConnection;

async fn bump(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    day: chrono::NaiveDate,
    created: i32,
    completed: i32,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rm_task_throughput (tenant_id, day, created, completed) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, day) DO UPDATE
            SET created = rm_task_throughput.created + EXCLUDED.created,
                completed = rm_task_throughput.completed + EXCLUDED.completed",
    )
    .bind(tenant)
    .bind(day)
    .bind(created)
    .bind(completed)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies a batch: a run of task creations adds its counts per (tenant, day) in one statement;
/// everything else event by event.
pub(super) async fn apply_batch(conn: &mut PgConnection, items: &[crate::read::Item<'_>]) -> Result<(), StoreError> {
    for run in crate::read::runs(items) {
        if !(run.len() > 1 && matches!(run[0].1, Event::TaskCreated(_))) {
            for (r, e) in run {
                apply(conn, r, e).await?;
            }
            continue;
        }
        let mut days: std::collections::BTreeMap<(uuid::Uuid, chrono::NaiveDate), i32> = Default::default();
        for (r, e) in run {
            if let Event::TaskCreated(e) = e {
                *days.entry((r.tenant_id.0, e.at.date_naive())).or_default() += 1;
            }
        }
        let (keys, counts): (Vec<_>, Vec<i32>) = days.into_iter().unzip();
        let (tenants, dates): (Vec<uuid::Uuid>, Vec<chrono::NaiveDate>) = keys.into_iter().unzip();
        sqlx::query(
            "INSERT INTO rm_task_throughput (tenant_id, day, created, completed)
             SELECT t, d, n, 0 FROM UNNEST($1::uuid[], $2::date[], $3::int4[]) AS u(t, d, n)
             ON CONFLICT (tenant_id, day) DO UPDATE SET created = rm_task_throughput.created + EXCLUDED.created",
        )
        .bind(&tenants)
        .bind(&dates)
        .bind(&counts)
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
    match event {
        Event::TaskCreated(e) => bump(conn, tenant, e.at.date_naive(), 1, 0).await?,
        Event::TaskStatusChanged(e) => {
            // Leaving done takes the completion back from the day it was counted on.
            if let Some(day) = sqlx::query_scalar::<_, chrono::NaiveDate>(
                "DELETE FROM rm_task_completions WHERE tenant_id = $1 AND task_id = $2 RETURNING day",
            )
            .bind(tenant)
            .bind(e.task_id.0)
            .fetch_optional(&mut *conn)
            .await?
            {
                bump(conn, tenant, day, 0, -1).await?;
            }
            if let Some(at) = e.completed_at {
                let day = at.date_naive();
                sqlx::query("INSERT INTO rm_task_completions (tenant_id, task_id, day) VALUES ($1, $2, $3)")
                    .bind(tenant)
                    .bind(e.task_id.0)
                    .bind(day)
                    .execute(&mut *conn)
                    .await?;
                bump(conn, tenant, day, 0, 1).await?;
            }
        }
        Event::TenantErased(_) => crate::read::purge(conn, tenant, super::MODEL.tables).await?,
        _ => return Ok(Handled::Ignored),
    }
    Ok(Handled::Applied)
}
