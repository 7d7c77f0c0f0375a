//! Dead letters worked by an operator (`keel projections dead-letters`): list them, record a
//! retry's outcome or a skip, and the history of those actions. Platform-level, like
//! checkpoints: run as the projector role, which sees every tenant's rows. Parking itself is
//! `checkpoint::park`, in the runner's batch transaction.

use crate::error::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// One parked event.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub projection: String,
    pub position: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub tenant_id: Uuid,
    pub error: String,
    pub attempts: i32,
    pub parked_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

const COLUMNS: &str = "id, projection, position, event_id, event_type, tenant_id, error, attempts, parked_at, \
                       acknowledged_at, acknowledged_by";

fn from_row(r: &sqlx::postgres::PgRow) -> Result<DeadLetter, StoreError> {
    Ok(DeadLetter {
        id: r.try_get("id")?,
        projection: r.try_get("projection")?,
        position: r.try_get("position")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        tenant_id: r.try_get("tenant_id")?,
        error: r.try_get("error")?,
        attempts: r.try_get("attempts")?,
        parked_at: r.try_get("parked_at")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
    })
}

/// Dead letters in log order, of one projection or all; the acknowledged ones only when asked.
pub async fn list(
    pool: &crate::RolePool,
    projection: Option<&str>,
    acknowledged_too: bool,
) -> Result<Vec<DeadLetter>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM projection_dead_letters
          WHERE ($1::text IS NULL OR projection = $1) AND ($2 OR acknowledged_at IS NULL)
          ORDER BY projection, xid, position"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(projection).bind(acknowledged_too).fetch_all(pool).await?;
    rows.iter().map(from_row).collect()
}

/// Dead letter `id`, acknowledged or not.
pub async fn get(pool: &crate::RolePool, id: i64) -> Result<Option<DeadLetter>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM projection_dead_letters WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
    row.as_ref().map(from_row).transpose()
}

/// Dead letter `id`, locked until the caller's transaction ends (one retry or skip at a time).
pub async fn lock(conn: &mut PgConnection, id: i64) -> Result<Option<DeadLetter>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM projection_dead_letters WHERE id = $1 FOR UPDATE");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// What an operator did with a dead letter, and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A retry applied the event: the parked row is gone.
    Applied,
    /// A retry failed again: the row stays parked with the new error and one more attempt.
    Failed,
    /// A skip: the row stays, acknowledged, out of the active list.
    Acknowledged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Failed => "failed",
            Outcome::Acknowledged => "acknowledged",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Outcome::Applied | Outcome::Failed => "retry",
            Outcome::Acknowledged => "skip",
        }
    }
}

async fn record(
    conn: &mut PgConnection,
    dl: &DeadLetter,
    outcome: Outcome,
    error: Option<&str>,
    actor: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO projection_dead_letter_actions
                (dead_letter_id, projection, position, tenant_id, event_id, event_type, action, outcome, error, actor)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(dl.id)
    .bind(&dl.projection)
    .bind(dl.position)
    .bind(dl.tenant_id)
    .bind(dl.event_id)
    .bind(&dl.event_type)
    .bind(outcome.action())
    .bind(outcome.as_str())
    .bind(error)
    .bind(actor)
    .execute(conn)
    .await?;
    Ok(())
}

/// A retry applied `dl` in the caller's transaction: the parked row goes, the action stays.
pub async fn resolved(conn: &mut PgConnection, dl: &DeadLetter, actor: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM projection_dead_letters WHERE id = $1").bind(dl.id).execute(&mut *conn).await?;
    record(conn, dl, Outcome::Applied, None, actor).await
}

/// A retry of `dl` failed again with `error`: it stays parked with that error and one more attempt.
pub async fn failed_again(
    conn: &mut PgConnection,
    dl: &DeadLetter,
    error: &str,
    actor: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE projection_dead_letters SET error = $2, attempts = attempts + 1 WHERE id = $1")
        .bind(dl.id)
        .bind(error)
        .execute(&mut *conn)
        .await?;
    record(conn, dl, Outcome::Failed, Some(error), actor).await
}

/// How a skip ended.
#[derive(Debug)]
pub enum Skipped {
    Acknowledged(DeadLetter),
    /// It was acknowledged before (by whom, when): nothing changed, nothing recorded.
    Already(DeadLetter),
    NotFound,
}

/// Acknowledges dead letter `id` as `actor`, in one transaction with its record.
pub async fn skip(pool: &crate::RolePool, id: i64, actor: &str) -> Result<Skipped, StoreError> {
    let mut tx = pool.begin().await?;
    let Some(dl) = lock(&mut tx, id).await? else { return Ok(Skipped::NotFound) };
    if dl.acknowledged_at.is_some() {
        return Ok(Skipped::Already(dl));
    }
    let row = sqlx::query(
        "UPDATE projection_dead_letters SET acknowledged_at = now(), acknowledged_by = $2 WHERE id = $1
         RETURNING acknowledged_at",
    )
    .bind(id)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    record(&mut tx, &dl, Outcome::Acknowledged, None, actor).await?;
    tx.commit().await?;
    Ok(Skipped::Acknowledged(DeadLetter {
        acknowledged_at: row.try_get("acknowledged_at")?,
        acknowledged_by: Some(actor.to_owned()),
        ..dl
    }))
}

/// The ids of `projection`'s active (unacknowledged) dead letters, in log order.
pub async fn active_ids(pool: &crate::RolePool, projection: &str) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM projection_dead_letters WHERE projection = $1 AND acknowledged_at IS NULL ORDER BY xid, position",
    )
    .bind(projection)
    .fetch_all(pool)
    .await?)
}

/// One recorded retry or skip.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub id: i64,
    pub dead_letter_id: i64,
    pub projection: String,
    pub position: i64,
    pub tenant_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub action: String,
    pub outcome: String,
    pub error: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// The recorded actions, oldest first, of one projection or all.
pub async fn actions(pool: &crate::RolePool, projection: Option<&str>) -> Result<Vec<Action>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, dead_letter_id, projection, position, tenant_id, event_id, event_type, action, outcome, error, actor, at
           FROM projection_dead_letter_actions WHERE ($1::text IS NULL OR projection = $1) ORDER BY id",
    )
    .bind(projection)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Action {
                id: r.try_get("id")?,
                dead_letter_id: r.try_get("dead_letter_id")?,
                projection: r.try_get("projection")?,
                position: r.try_get("position")?,
                tenant_id: r.try_get("tenant_id")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                action: r.try_get("action")?,
                outcome: r.try_get("outcome")?,
                error: r.try_get("error")?,
                actor: r.try_get("actor")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}

/// How many retries and skips of `projection`'s dead letters ended each way, as
/// `(action, outcome, count)` (for the `/metrics` counter; the table only grows).
pub async fn action_counts(pool: &crate::RolePool, projection: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT action, outcome, count(*) FROM projection_dead_letter_actions WHERE projection = $1 GROUP BY action, outcome",
    )
    .bind(projection)
    .fetch_all(pool)
    .await?)
}
