//! Keel's log in KurrentDB, through the official `kurrentdb` client (cargo feature
//! `kurrentdb`; docs/scaling.md, "The log on KurrentDB").
//!
//! - **Tenant by stream name and metadata.** A stream is `keel.<tenant>-<stream>` (both UUIDs in
//!   simple form, so the category KurrentDB derives, the part before the first `-`, is the
//!   tenant), and each event's metadata carries `tenant_id`, `stream_type`, `schema_version` and
//!   Keel's `EventMetadata`. Reading a stream names the tenant, so one tenant cannot name
//!   another's stream; reading everything is the projection workers' view, as in PostgreSQL.
//! - **Versions.** Keel counts from 1, KurrentDB's revisions from 0: version n is revision n - 1.
//! - **What does not hold here.** An append goes to one stream (KurrentDB has no transaction over
//!   two streams); there is no hash chain (KurrentDB's own log is append-only, but `keel audit
//!   verify` checks PostgreSQL's); and inline tables, read tables and RLS stay in PostgreSQL,
//!   filled by a consumer of `subscribe` after the append rather than in its transaction.

use crate::StoreError;
use crate::event_store::{EventStore, StoredEvent, one_stream};
use crate::log::EventMetadata;
use futures::stream::BoxStream;
use keel_domain::{Event, TenantId};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, EventData, Position, ReadAllOptions,
    ReadStreamOptions, ResolvedEvent, StreamPosition, StreamState, SubscribeToAllOptions, SubscriptionFilter,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// Every Keel stream's name starts so; `read_all` and `subscribe` filter on it.
const PREFIX: &str = "keel.";

/// The log in KurrentDB.
#[derive(Clone)]
pub struct KurrentStore {
    client: Client,
}

impl KurrentStore {
    /// Connects to `url` (`kurrentdb://host:2113?tls=false`, or `esdb://...`).
    pub fn connect(url: &str) -> Result<KurrentStore, StoreError> {
        let settings: ClientSettings =
            url.parse().map_err(|e| StoreError::Config(format!("KEEL_KURRENTDB_URL is not a KurrentDB URL: {e}")))?;
        let client = Client::new(settings).map_err(backend)?;
        Ok(KurrentStore { client })
    }
}

/// The stream of `tenant`'s stream `id`.
pub fn stream_name(tenant: TenantId, id: Uuid) -> String {
    format!("{PREFIX}{}-{}", tenant.0.simple(), id.simple())
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("kurrentdb: {e}"))
}

/// An event's payload and metadata as stored in KurrentDB.
fn event_data(tenant: TenantId, event: &Event, metadata: &EventMetadata) -> Result<EventData, StoreError> {
    let tagged = serde_json::to_value(event).map_err(|e| StoreError::Encode(e.to_string()))?;
    let (stream_type, _) = event.stream();
    let meta = json!({
        "tenant_id": tenant.0,
        "stream_type": stream_type.as_str(),
        "schema_version": keel_domain::event::current_schema_version(event.event_type()),
        "keel": metadata,
    });
    EventData::json(event.event_type(), &tagged["data"])
        .and_then(|d| d.metadata_as_json(&meta))
        .map(|d| d.id(Uuid::now_v7()))
        .map_err(|e| StoreError::Encode(e.to_string()))
}

/// A Keel event back from KurrentDB; `None` for what Keel did not write (another application's
/// stream in the same database).
fn from_resolved(r: &ResolvedEvent) -> Result<Option<StoredEvent<Position>>, StoreError> {
    let e = r.get_original_event();
    let Some(rest) = e.stream_id().strip_prefix(PREFIX) else { return Ok(None) };
    let Some((tenant, stream)) = rest.split_once('-') else { return Ok(None) };
    let (Ok(tenant), Ok(stream_id)) = (Uuid::parse_str(tenant), Uuid::parse_str(stream)) else { return Ok(None) };
    let meta: Value = serde_json::from_slice(&e.custom_metadata)
        .map_err(|err| StoreError::Corrupt(format!("event {} has unreadable metadata: {err}", e.id)))?;
    if meta["tenant_id"].as_str() != Some(tenant.hyphenated().to_string().as_str()) {
        return Err(StoreError::Corrupt(format!("event {} of stream {} names another tenant", e.id, e.stream_id())));
    }
    let schema_version = meta["schema_version"].as_i64().unwrap_or(1) as i32;
    let payload: Value = serde_json::from_slice(&e.data)
        .map_err(|err| StoreError::Corrupt(format!("event {} has an unreadable payload: {err}", e.id)))?;
    let event = Event::decode(&e.event_type, schema_version, payload)
        .map_err(|source| StoreError::Decode { position: e.position.commit as i64, source })?;
    Ok(Some(StoredEvent {
        position: e.position,
        tenant_id: TenantId(tenant),
        stream_id,
        version: e.revision as i64 + 1,
        event_id: e.id,
        event,
        recorded_at: e.created,
    }))
}

fn keel_streams() -> SubscriptionFilter {
    SubscriptionFilter::on_stream_name().add_prefix(PREFIX)
}

impl EventStore for KurrentStore {
    type Position = Position;

    fn start(&self) -> Position {
        Position::start()
    }

    async fn end(&self) -> Result<Position, StoreError> {
        let options = ReadAllOptions::default().backwards().position(StreamPosition::End).max_count(1);
        let mut read = self.client.read_all(&options).await.map_err(backend)?;
        Ok(read.next().await.map_err(backend)?.map_or(Position::start(), |r| r.get_original_event().position))
    }

    async fn append(
        &self,
        tenant: TenantId,
        stream_id: Uuid,
        expected: i64,
        events: &[Event],
        metadata: &EventMetadata,
    ) -> Result<Position, StoreError> {
        one_stream(stream_id, events)?;
        let data = events.iter().map(|e| event_data(tenant, e, metadata)).collect::<Result<Vec<_>, _>>()?;
        let state = match expected {
            0 => StreamState::NoStream,
            n => StreamState::StreamRevision(n as u64 - 1),
        };
        let options = AppendToStreamOptions::default().stream_state(state);
        match self.client.append_to_stream(stream_name(tenant, stream_id), &options, data).await {
            Ok(w) => Ok(w.position),
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                let actual = match current {
                    CurrentRevision::Current(r) => r as i64 + 1,
                    CurrentRevision::NoStream => 0,
                };
                Err(StoreError::Conflict { stream_id, expected, actual })
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn read_stream(&self, tenant: TenantId, stream_id: Uuid) -> Result<Vec<StoredEvent<Position>>, StoreError> {
        let options = ReadStreamOptions::default().forwards().position(StreamPosition::Start);
        let mut out = Vec::new();
        let mut read = match self.client.read_stream(stream_name(tenant, stream_id), &options).await {
            Ok(r) => r,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(out),
            Err(e) => return Err(backend(e)),
        };
        loop {
            match read.next().await {
                Ok(Some(r)) => out.extend(from_resolved(&r)?),
                Ok(None) => return Ok(out),
                Err(kurrentdb::Error::ResourceNotFound) => return Ok(out),
                Err(e) => return Err(backend(e)),
            }
        }
    }

    async fn read_all(&self, after: Position, max: usize) -> Result<Vec<StoredEvent<Position>>, StoreError> {
        // Reading from a position includes the event at it: ask for one more and drop it.
        let from = if after == Position::start() { StreamPosition::Start } else { StreamPosition::Position(after) };
        let options = ReadAllOptions::default().forwards().position(from).filter(keel_streams()).max_count(max + 1);
        let mut read = self.client.read_all(&options).await.map_err(backend)?;
        let mut out = Vec::new();
        while out.len() < max {
            match read.next().await.map_err(backend)? {
                Some(r) => out.extend(from_resolved(&r)?.filter(|e| e.position > after)),
                None => break,
            }
        }
        Ok(out)
    }

    fn subscribe(&self, after: Position) -> BoxStream<'static, Result<StoredEvent<Position>, StoreError>> {
        let from = if after == Position::start() { StreamPosition::Start } else { StreamPosition::Position(after) };
        let options = SubscribeToAllOptions::default().position(from).filter(keel_streams());
        let client = self.client.clone();
        Box::pin(futures::stream::unfold(None, move |sub: Option<kurrentdb::Subscription>| {
            let (client, options) = (client.clone(), options.clone());
            async move {
                let mut sub = match sub {
                    Some(s) => s,
                    None => client.subscribe_to_all(&options).await,
                };
                loop {
                    match sub.next().await {
                        Ok(r) => match from_resolved(&r) {
                            Ok(Some(e)) if e.position > after => return Some((Ok(e), Some(sub))),
                            Ok(_) => continue,
                            Err(e) => return Some((Err(e), Some(sub))),
                        },
                        Err(e) => return Some((Err(backend(e)), Some(sub))),
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_name_carries_the_tenant_as_its_category() {
        let (t, s) = (Uuid::now_v7(), Uuid::now_v7());
        let name = stream_name(TenantId(t), s);
        let (category, rest) = name.split_once('-').unwrap();
        assert_eq!(category, format!("keel.{}", t.simple()));
        assert_eq!(rest, s.simple().to_string());
    }
}
