//! The shape every aggregate shares: a state folded from its own stream's events.

use crate::error::DomainError;
use crate::event::Event;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of stream an event belongs to; stored beside every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamType {
    Tenant,
    Member,
    Project,
    Task,
    Usage,
    Webhook,
}

impl StreamType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Tenant => "tenant",
            StreamType::Member => "member",
            StreamType::Project => "project",
            StreamType::Task => "task",
            StreamType::Usage => "usage",
            StreamType::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<StreamType> {
        match s {
            "tenant" => Some(StreamType::Tenant),
            "member" => Some(StreamType::Member),
            "project" => Some(StreamType::Project),
            "task" => Some(StreamType::Task),
            "usage" => Some(StreamType::Usage),
            "webhook" => Some(StreamType::Webhook),
            _ => None,
        }
    }
}

impl fmt::Display for StreamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State rebuilt from a stream. `apply` only changes state; rules live in each aggregate's `decide`.
pub trait Aggregate: Default + Clone + Serialize + serde::de::DeserializeOwned + Sized {
    const STREAM_TYPE: StreamType;

    /// The format of this state in snapshots: bumped when the struct changes, so that a snapshot
    /// of the old format is ignored (and replaced) instead of misread.
    const STATE_VERSION: i32 = 1;

    fn apply(self, event: &Event) -> Self;

    fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        events.into_iter().fold(Self::default(), |s, e| s.apply(e))
    }
}

/// The one shape of deciding: a command, the context it needs from outside the stream (plain data
/// the caller read beforehand) and the time, against the state; the events to append, or why not.
/// Pure: the same state, command, context and `now` always decide the same.
pub trait Decide: Aggregate {
    type Command;
    type Context;

    /// Refuses input that cannot be right in any state (a field's shape, an unknown enum
    /// value), looking at the command alone. The command path runs it before anything else, so
    /// such a request is 422 whatever the stream, the tenant or an `If-Match` say; `decide`
    /// checks the same things again in its own order.
    fn check_input(_cmd: &Self::Command) -> Result<(), DomainError> {
        Ok(())
    }

    fn decide(&self, cmd: Self::Command, ctx: &Self::Context, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError>;
}

/// given(events) / when(command, context, now) / then(events | error), for the domain's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Decide;
    use crate::error::DomainError;
    use crate::event::Event;
    use chrono::{DateTime, Utc};

    pub(crate) struct Scenario<A: Decide> {
        state: A,
    }

    pub(crate) struct Outcome(Result<Vec<Event>, DomainError>);

    impl<A: Decide> Scenario<A> {
        pub(crate) fn given(events: Vec<Event>) -> Self {
            Scenario { state: A::from_events(&events) }
        }

        pub(crate) fn when(self, cmd: A::Command, ctx: &A::Context, now: DateTime<Utc>) -> Outcome {
            Outcome(self.state.decide(cmd, ctx, now))
        }
    }

    impl Outcome {
        #[track_caller]
        pub(crate) fn then(self, expected: Vec<Event>) {
            assert_eq!(self.0, Ok(expected));
        }

        #[track_caller]
        pub(crate) fn then_error(self, expected: DomainError) {
            assert_eq!(self.0, Err(expected));
        }

        /// The decision itself, for a test that checks only part of it.
        pub(crate) fn result(self) -> Result<Vec<Event>, DomainError> {
            self.0
        }
    }
}
