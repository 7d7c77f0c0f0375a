//! The NATS JetStream publisher (`docs/integration.md`): a consumer of the log that publishes
//! every event's envelope on `keel.<tenant_id>.<stream_type>.<event_type>` with `Nats-Msg-Id` =
//! the event id, with no transaction open (`Consumer::DELIVERS`), and lets the runner commit its
//! checkpoint only after JetStream acknowledged every publish of the batch. A crash between the acks and the commit republishes the batch,
//! which JetStream's duplicate window drops; a broker that is away fails the batch
//! (`ConsumeError::Downstream`), which the runner retries with backoff and never parks.

use crate::envelope::Envelope;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use keel_domain::Event;
use keel_runner::{ConsumeError, Consumer};
use keel_store::{Pool, RecordedEvent, read::Item};
use sqlx::PgConnection;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The publisher's checkpoint, lease and metrics label (`keel projections status`).
pub const NAME: &str = "outbound.nats";

/// Published events by outcome (`published`, `duplicate`, `failed`).
pub const PUBLISHED: &str = "keel_outbound_published_total";
/// From a publish to its acknowledgement.
pub const PUBLISH_SECONDS: &str = "keel_outbound_publish_seconds";

const TARGET: &str = "nats";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// `nats://host:port` (`KEEL_NATS_URL`).
    pub url: String,
    /// The first token of every subject (`KEEL_NATS_SUBJECT_PREFIX`, `keel`): deployments that
    /// share a NATS server each take their own, since JetStream streams may not overlap.
    pub subject_prefix: String,
    /// The JetStream stream the publisher creates if missing (`KEEL_NATS_STREAM`).
    pub stream: String,
    /// How long JetStream keeps a message (`KEEL_NATS_MAX_AGE_SECS`; zero: no limit).
    pub max_age: Duration,
    /// How long JetStream remembers a `Nats-Msg-Id` (`KEEL_NATS_DUPLICATE_WINDOW_SECS`): a
    /// republish after a crash within it is dropped.
    pub duplicate_window: Duration,
    /// Deadline of a connection attempt (`KEEL_NATS_CONNECT_TIMEOUT_MS`).
    pub connect_timeout: Duration,
    /// Deadline of each publish's acknowledgement (`KEEL_NATS_ACK_TIMEOUT_MS`).
    pub ack_timeout: Duration,
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> NatsConfig {
        NatsConfig {
            url: url.into(),
            subject_prefix: "keel".into(),
            stream: "KEEL".into(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// The stream as the publisher creates (or updates) it: every subject under the prefix.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.subject_prefix)],
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }

    /// The subject of an event: `<prefix>.<tenant_id>.<stream_type>.<event_type>` (each token
    /// free of `.`, `*`, `>` and spaces: a UUID and Keel's own names).
    pub fn subject(&self, recorded: &RecordedEvent) -> String {
        format!("{}.{}.{}.{}", self.subject_prefix, recorded.tenant_id.0, recorded.stream_type, recorded.event_type)
    }
}

/// Checks a subject prefix: one or more NATS tokens of letters, digits, `-` and `_`, joined by
/// `.` (no wildcard, no space, no empty token).
pub fn parse_subject_prefix(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 100
        && s.split('.').all(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a subject prefix: tokens of letters, digits, - and _ joined by dots"))
    }
}

pub struct NatsPublisher {
    config: NatsConfig,
    /// The JetStream context once connected and the stream ensured; dropped after a failure so
    /// the next batch connects (and ensures the stream) again.
    context: Mutex<Option<jetstream::Context>>,
}

impl NatsPublisher {
    pub fn new(config: NatsConfig) -> NatsPublisher {
        NatsPublisher { config, context: Mutex::new(None) }
    }

    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    async fn context(&self) -> Result<jetstream::Context, ConsumeError> {
        let mut held = self.context.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect().await.map_err(|message| ConsumeError::Downstream { target: TARGET, message })?;
        *held = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<jetstream::Context, String> {
        let deadline = self.config.connect_timeout;
        let client = tokio::time::timeout(
            deadline,
            async_nats::ConnectOptions::new()
                .connection_timeout(deadline)
                .request_timeout(Some(self.config.ack_timeout))
                .connect(self.config.url.as_str()),
        )
        .await
        .map_err(|_| format!("cannot connect to {} within {deadline:?}", self.config.url))?
        .map_err(|e| format!("cannot connect to {}: {e}", self.config.url))?;
        let mut js = jetstream::new(client);
        js.set_timeout(self.config.ack_timeout);
        let stream = self.config.stream_config();
        tokio::time::timeout(self.config.ack_timeout, js.create_or_update_stream(stream))
            .await
            .map_err(|_| format!("stream {}: no answer within {:?}", self.config.stream, self.config.ack_timeout))?
            .map_err(|e| format!("cannot create or update stream {}: {e}", self.config.stream))?;
        tracing::info!(url = %self.config.url, stream = %self.config.stream, "NATS JetStream publisher connected");
        Ok(js)
    }

    /// Publishes each event in order, waiting for its acknowledgement before the next (so the
    /// stream holds them in log order even when one fails part-way), each within the ack deadline.
    async fn publish_all(&self, items: &[(&RecordedEvent, &Event)]) -> Result<(), ConsumeError> {
        let js = self.context().await?;
        for (recorded, event) in items {
            let started = Instant::now();
            let message = PublishMessage::build()
                .payload(Envelope::new(recorded, event).to_bytes().into())
                .message_id(recorded.event_id.to_string());
            let acked = tokio::time::timeout(self.config.ack_timeout, async {
                js.send_publish(self.config.subject(recorded), message).await?.await
            })
            .await;
            let outcome = match acked {
                Ok(Ok(ack)) if ack.duplicate => Ok("duplicate"),
                Ok(Ok(_)) => Ok("published"),
                Ok(Err(e)) => Err(format!("publish of event {} failed: {e}", recorded.event_id)),
                Err(_) => Err(format!(
                    "no acknowledgement of event {} within {:?}",
                    recorded.event_id, self.config.ack_timeout
                )),
            };
            metrics::histogram!(PUBLISH_SECONDS, "publisher" => TARGET).record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(o) => metrics::counter!(PUBLISHED, "publisher" => TARGET, "outcome" => o).increment(1),
                Err(message) => {
                    metrics::counter!(PUBLISHED, "publisher" => TARGET, "outcome" => "failed").increment(1);
                    // Connect again next time (the stream may have been deleted meanwhile).
                    *self.context.lock().await = None;
                    return Err(ConsumeError::Downstream { target: TARGET, message });
                }
            }
        }
        Ok(())
    }
}

impl Consumer for NatsPublisher {
    // What was imported or moved here, the database it came from sent already.
    const SKIPS_IMPORTED: bool = true;

    fn name(&self) -> &'static str {
        NAME
    }

    fn pool(&self) -> Pool {
        Pool::Projector
    }

    /// Every event: a subscriber filters by subject.
    fn wants(&self, _event_type: &str) -> bool {
        true
    }

    /// Publishes with no transaction open: waiting for JetStream inside one would hold back
    /// every reader of the log (see `Consumer::DELIVERS`).
    const DELIVERS: bool = true;

    async fn deliver(&self, items: &[Item<'_>]) -> Result<(), ConsumeError> {
        let items: Vec<(&RecordedEvent, &Event)> = items.iter().map(|(r, e)| (*r, e)).collect();
        self.publish_all(&items).await
    }

    async fn consume(
        &self,
        _conn: &mut PgConnection,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ConsumeError> {
        self.publish_all(&[(recorded, event)]).await
    }

    async fn consume_batch(&self, _conn: &mut PgConnection, items: &[Item<'_>]) -> Result<(), ConsumeError> {
        let items: Vec<(&RecordedEvent, &Event)> = items.iter().map(|(r, e)| (*r, e)).collect();
        self.publish_all(&items).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_takes_every_keel_subject_with_the_configured_windows() {
        let c = NatsConfig {
            stream: "KEEL_TEST".into(),
            max_age: Duration::from_secs(60),
            duplicate_window: Duration::from_secs(30),
            ..NatsConfig::new("nats://127.0.0.1:4222")
        };
        let s = c.stream_config();
        assert_eq!(s.name, "KEEL_TEST");
        assert_eq!(s.subjects, vec!["keel.>".to_owned()]);
        assert_eq!((s.max_age, s.duplicate_window), (Duration::from_secs(60), Duration::from_secs(30)));
        let c = NatsConfig { subject_prefix: "acme.keel".into(), ..c };
        assert_eq!(c.stream_config().subjects, vec!["acme.keel.>".to_owned()]);
    }

    #[test]
    fn the_default_subject_names_tenant_stream_type_and_event_type() {
        let tenant = uuid::Uuid::now_v7();
        let recorded = RecordedEvent {
            position: 1,
            xid: 1,
            tenant_id: keel_domain::TenantId(tenant),
            stream_type: "task".into(),
            stream_id: uuid::Uuid::now_v7(),
            stream_version: 1,
            event_id: uuid::Uuid::now_v7(),
            event_type: "TaskCreated".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: serde_json::json!({}),
            recorded_at: chrono::Utc::now(),
            prev_hash: None,
            hash: vec![],
        };
        assert_eq!(NatsConfig::new("nats://x").subject(&recorded), format!("keel.{tenant}.task.TaskCreated"));
    }

    #[test]
    fn a_subject_prefix_is_plain_tokens() {
        for good in ["keel", "acme.keel", "keel-prod_2"] {
            assert_eq!(parse_subject_prefix(good).as_deref(), Ok(good));
        }
        for bad in ["", "keel.", ".keel", "keel.>", "ke*el", "ke el", "a..b"] {
            assert!(parse_subject_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
