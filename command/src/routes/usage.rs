//! The usage route: record metered usage against the month's quota.

use crate::CommandState;
use crate::exec::{Cmd, execute, tenant_of};
use crate::request::Write;
use crate::respond::Written;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keel_domain::UsageBatchId;
use keel_domain::usage::{RecordUsage, UsageInput};
use keel_gateway::Problem;
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageRecordBody {
    /// The client's id of this record: sending it again records nothing.
    id: String,
    /// `^[a-z][a-z0-9_.-]{0,63}$`, e.g. `api.calls`.
    metric: String,
    /// Units, 1 to 1,000,000,000,000 (10^12); a month holds at most 10^15 units on any plan.
    /// Any JSON number without a fraction is an integer (`5.0`, `5e3`).
    #[serde(deserialize_with = "integer")]
    quantity: i64,
    /// When the units were used, RFC 3339 (e.g. `2025-03-31T12:00:00Z`).
    #[serde(deserialize_with = "super::date_time")]
    occurred_at: DateTime<Utc>,
}

/// A JSON integer as JSON Schema counts them: a number with no fractional part, however it is
/// written, in the range of an i64.
fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    // 2^63: the first f64 past i64::MAX.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match serde_json::Number::deserialize(d)? {
        n if n.is_i64() => Ok(n.as_i64().expect("checked")),
        n if n.is_u64() => Err(D::Error::custom(format!("{n} is out of range"))),
        n => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(f as i64),
            Some(f) if f.fract() == 0.0 => Err(D::Error::custom(format!("{n} is out of range"))),
            _ => Err(D::Error::custom(format!("invalid type: {n} is not an integer"))),
        },
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordUsageBody {
    /// 1 to 1,000 records.
    records: Vec<UsageRecordBody>,
}

#[utoipa::path(post, path = "/api/v1/usage", operation_id = "recordUsage", summary = "Record metered usage", tag = "usage", request_body = RecordUsageBody,
    responses(
        (status = 201, description = "New records recorded", body = Written),
        (status = 200, description = "Every record was recorded before; nothing appended. The answer is the batch that recorded them: its id, version and position (send it as `Keel-Consistency` to read them)", body = Written)))]
pub(crate) async fn record(State(state): State<CommandState>, w: Write<RecordUsageBody>) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let batch = UsageBatchId::new_v7();
    let records = w
        .body
        .records
        .into_iter()
        .map(|r| UsageInput { id: r.id, metric: r.metric, quantity: r.quantity, occurred_at: r.occurred_at })
        .collect();
    execute(&state, &w.meta, tenant, Cmd::Usage(RecordUsage { batch_id: batch, records }), true).await
}
