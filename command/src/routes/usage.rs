//! The usage route: record metered usage against the month's quota.

use crate::CommandState;
use crate::exec::{Cmd, execute, tenant_of};
use crate::request::Write;
use crate::respond::Written;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keel_domain::UsageBatchId;
use keel_domain::usage::UsageInput;
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
    quantity: i64,
    occurred_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordUsageBody {
    /// 1 to 1,000 records.
    records: Vec<UsageRecordBody>,
}

#[utoipa::path(post, path = "/api/v1/usage", tag = "usage", request_body = RecordUsageBody,
    responses(
        (status = 201, description = "New records recorded", body = Written),
        (status = 200, description = "Every record was recorded before; nothing appended", body = Written)))]
pub(crate) async fn record(State(state): State<CommandState>, w: Write<RecordUsageBody>) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let batch = UsageBatchId::new_v7();
    let records = w
        .body
        .records
        .into_iter()
        .map(|r| UsageInput { id: r.id, metric: r.metric, quantity: r.quantity, occurred_at: r.occurred_at })
        .collect();
    execute(&state, &w.meta, tenant, Cmd::Usage(batch, records), true).await
}
