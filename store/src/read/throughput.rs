//! `rm_task_throughput`: tasks created and completed per day.

use crate::error::StoreError;
use crate::log::RecordedEvent;
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

pub async fn apply(conn: &mut PgConnection, recorded: &RecordedEvent, event: &Event) -> Result<(), StoreError> {
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
        _ => {}
    }
    Ok(())
}

/// Tasks completed on each of the `days` days up to and including `today` (zero-filled).
pub async fn completed_per_day(
    tx: &mut crate::TenantTx,
    today: chrono::NaiveDate,
    days: i32,
) -> Result<Vec<(chrono::NaiveDate, i64)>, StoreError> {
    let tenant = tx.tenant().0;
    Ok(sqlx::query_as(
        "SELECT d::date, COALESCE(t.completed, 0)::bigint
           FROM generate_series($2::date - ($3 - 1), $2::date, interval '1 day') d
           LEFT JOIN rm_task_throughput t ON t.tenant_id = $1 AND t.day = d::date
          ORDER BY 1",
    )
    .bind(tenant)
    .bind(today)
    .bind(days)
    .fetch_all(tx.conn())
    .await?)
}
