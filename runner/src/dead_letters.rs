//! Working dead letters: re-applying a parked event through its consumer after a fix
//! (`keel projections dead-letters retry`). The event, its consumer's writes and the parked
//! row's removal (or its new error) commit together, with the record of who did it.

use crate::{ConsumeError, Consumer};
use keel_store::dead_letter::{self, DeadLetter};
use keel_store::{Store, StoreError, checkpoint, log};

/// How a retry ended.
#[derive(Debug)]
pub enum Retried {
    /// The consumer took the event (or no longer reads its type): the parked row is gone.
    Applied {
        dead_letter: DeadLetter,
        /// Later events of its stream the consumer had read while it was parked: a read model
        /// that guards by stream version may now hold this event's state over theirs (a rebuild
        /// puts them in order).
        later_in_stream: i64,
    },
    /// It failed again: still parked, with this error and one more attempt.
    Failed(DeadLetter),
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("there is no dead letter {0}")]
    NotFound(i64),
    #[error("dead letter {id} is projection {projection}'s, not {consumer}'s")]
    OtherConsumer { id: i64, projection: String, consumer: &'static str },
    /// A transient database error (or a broken log): nothing was changed or recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The consumer's destination did not take it: nothing was changed or recorded.
    #[error("{0}")]
    Downstream(String),
}

impl From<sqlx::Error> for RetryError {
    fn from(e: sqlx::Error) -> Self {
        RetryError::Store(e.into())
    }
}

/// Re-applies dead letter `id` through `consumer`, as `actor` (e.g. `cli:<os user>`), in one
/// transaction that also holds the consumer's checkpoint row: the live worker's batch and a
/// retry never interleave. A deterministic failure is recorded (the row stays parked, attempts
/// + 1); a transient one changes nothing and is returned.
pub async fn retry<C: Consumer>(store: &Store, consumer: &C, id: i64, actor: &str) -> Result<Retried, RetryError> {
    let name = consumer.name();
    let mut tx = store.begin(consumer.pool()).await?;
    let at = checkpoint::lock(&mut tx, name, None).await?.unwrap_or(keel_store::LogPosition::START);
    let Some(dl) = dead_letter::lock(&mut tx, id).await? else { return Err(RetryError::NotFound(id)) };
    if dl.projection != name {
        return Err(RetryError::OtherConsumer { id, projection: dl.projection, consumer: name });
    }
    let mut event =
        log::read_at(&mut tx, dl.position).await?.filter(|e| e.event_id == dl.event_id).ok_or_else(|| {
            StoreError::Corrupt(format!("dead letter {id}: no event {} at position {}", dl.event_id, dl.position))
        })?;
    log::reveal(&mut tx, store.master_key(), std::slice::from_mut(&mut event)).await?;
    checkpoint::begin_batch(&mut tx).await?;
    let wanted = consumer.wants(&event.event_type);
    let applied = if wanted {
        match event.decode() {
            Ok(decoded) => consumer.consume(&mut tx, &event, &decoded).await,
            Err(e) => Err(e.into()),
        }
    } else {
        Ok(())
    };
    match applied {
        Ok(()) => {
            let later_in_stream = if wanted {
                log::later_in_stream(&mut tx, event.tenant_id, event.stream_id, event.stream_version, at).await?
            } else {
                0
            };
            consumer.before_commit(&mut tx, std::slice::from_ref(&event)).await?;
            dead_letter::resolved(&mut tx, &dl, actor).await?;
            tx.commit().await?;
            tracing::info!(projection = name, dead_letter = id, tenant_id = %dl.tenant_id, position = dl.position, actor, "dead letter re-applied");
            Ok(Retried::Applied { dead_letter: dl, later_in_stream })
        }
        Err(ConsumeError::Store(e)) if e.is_retryable() => Err(e.into()),
        Err(ConsumeError::Downstream { target, message }) => {
            Err(RetryError::Downstream(format!("{target}: {message}")))
        }
        Err(ConsumeError::Store(e)) => {
            checkpoint::rollback_batch(&mut tx).await?;
            let error = e.to_string();
            dead_letter::failed_again(&mut tx, &dl, &error, actor).await?;
            tx.commit().await?;
            tracing::warn!(projection = name, dead_letter = id, tenant_id = %dl.tenant_id, position = dl.position, actor, error = %error, "dead letter failed again; still parked");
            Ok(Retried::Failed(DeadLetter { error, attempts: dl.attempts + 1, ..dl }))
        }
    }
}
