//! The audit fields (`docs/guarantees.md`, "Audit"): the log filtered and paged, and any stream's state as of a
//! version or a time, with the state after each of its events. Owners, admins and auditors only.

use crate::context::{RequestCtx, bad_input, internal, text_arg};
use crate::cursor;
use crate::schema::page_size;
use crate::types::{AggregateState, EventConnection, HistoryStep, TotalCount};
use async_graphql::{ID, InputObject, Result};
use chrono::{DateTime, Utc};
use keel_domain::member::Member;
use keel_domain::project::Project;
use keel_domain::task::Task;
use keel_domain::tenant::Tenant;
use keel_domain::{Aggregate, Event, Role};
use keel_store::audit::{self, EventFilter as StoreFilter};
use keel_store::{RecordedEvent, log};
use serde_json::Value;
use uuid::Uuid;

#[derive(InputObject, Default)]
pub struct EventFilter {
    stream_id: Option<ID>,
    /// tenant, member, project, task or usage.
    stream_type: Option<String>,
    event_type: Option<String>,
    /// `user:<id>` or `platform:<id>`.
    actor: Option<String>,
    /// Recorded at or after.
    from: Option<DateTime<Utc>>,
    /// Recorded before.
    to: Option<DateTime<Utc>>,
}

fn stream_id(id: &ID) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| bad_input("streamId is not a valid id"))
}

pub(crate) async fn events(
    r: &RequestCtx,
    wants_total: bool,
    filter: Option<EventFilter>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<EventConnection> {
    r.require(Role::can_read_audit).await?;
    let first = page_size(first)?;
    let f = filter.unwrap_or_default();
    let filter = StoreFilter {
        stream_id: f.stream_id.as_ref().map(stream_id).transpose()?,
        stream_type: text_arg("filter.streamType", f.stream_type)?,
        event_type: text_arg("filter.eventType", f.event_type)?,
        actor: text_arg("filter.actor", f.actor)?,
        from: f.from,
        to: f.to,
    };
    let ordering = "events";
    let after_position = match after.as_deref() {
        None => 0,
        Some(c) => cursor::decode(ordering, c)
            .and_then(|c| c.k?.parse::<i64>().ok())
            .ok_or_else(|| bad_input("after is not a valid cursor"))?,
    };
    let mut tx = r.read_tx().await?;
    let rows = audit::events(&mut tx, &filter, after_position, i64::from(first) + 1).await.map_err(internal)?;
    let total = if wants_total {
        TotalCount::Known(audit::count(&mut tx, &filter).await.map_err(internal)?)
    } else {
        TotalCount::NotAsked
    };
    tx.commit().await.map_err(internal)?;
    Ok(EventConnection::from_rows(rows, first, after.is_some(), total, |e| {
        cursor::encode(ordering, Some(e.position.to_string()), e.event_id)
    }))
}

/// The events of one stream of the caller's tenant (revealed), oldest first.
async fn stream(r: &RequestCtx, id: &ID) -> Result<Vec<RecordedEvent>> {
    r.require(Role::can_read_audit).await?;
    let id = stream_id(id)?;
    let mut tx = r.read_tx().await?;
    let events = log::read_stream(&mut tx, id).await.map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    Ok(events)
}

/// Folds the events into the aggregate of their stream type, giving the state after each.
fn states(events: &[RecordedEvent]) -> Result<Vec<Value>> {
    fn fold<A: Aggregate>(events: &[Event]) -> Vec<Value> {
        let mut state = A::default();
        events
            .iter()
            .map(|e| {
                state = std::mem::take(&mut state).apply(e);
                serde_json::to_value(&state).unwrap_or(Value::Null)
            })
            .collect()
    }
    let decoded: Vec<Event> = events.iter().map(|e| e.decode()).collect::<Result<_, _>>().map_err(internal)?;
    Ok(match events.first().map(|e| e.stream_type.as_str()) {
        Some("tenant") => fold::<Tenant>(&decoded),
        Some("member") => fold::<Member>(&decoded),
        Some("project") => fold::<Project>(&decoded),
        Some("task") => fold::<Task>(&decoded),
        Some("webhook") => fold::<keel_domain::webhook::Webhook>(&decoded),
        // A usage batch has no state beyond its one event.
        _ => decoded.iter().map(Event::payload).collect(),
    })
}

pub(crate) async fn aggregate(
    r: &RequestCtx,
    id: ID,
    version: Option<i64>,
    at: Option<DateTime<Utc>>,
) -> Result<Option<AggregateState>> {
    if version.is_some() && at.is_some() {
        return Err(bad_input("give version or at, not both"));
    }
    let mut events = stream(r, &id).await?;
    if let Some(v) = version {
        if v < 1 {
            return Err(bad_input("version starts at 1"));
        }
        events.retain(|e| e.stream_version <= v);
    }
    if let Some(at) = at {
        events.retain(|e| e.recorded_at <= at);
    }
    let states = states(&events)?;
    Ok(events.last().zip(states.into_iter().last()).map(|(e, state)| AggregateState {
        stream_id: ID(e.stream_id.to_string()),
        stream_type: e.stream_type.clone(),
        version: e.stream_version,
        at: e.recorded_at,
        state: async_graphql::Json(state),
    }))
}

pub(crate) async fn history(r: &RequestCtx, id: ID) -> Result<Vec<HistoryStep>> {
    let events = stream(r, &id).await?;
    let states = states(&events)?;
    Ok(events
        .into_iter()
        .zip(states)
        .map(|(e, state)| HistoryStep {
            version: e.stream_version,
            event_type: e.event_type.clone(),
            recorded_at: e.recorded_at,
            actor: e.metadata.get("actor").and_then(|a| a.as_str()).map(str::to_owned),
            event: async_graphql::Json({
                let mut p = e.decode().map(|d| d.payload()).unwrap_or_else(|_| e.payload.clone());
                keel_store::crypto::redact_secrets(&e.event_type, &mut p);
                p
            }),
            state: async_graphql::Json(state),
        })
        .collect())
}
