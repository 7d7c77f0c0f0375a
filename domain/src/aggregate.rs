//! The shape every aggregate shares: a state folded from its own stream's events.

use crate::event::Event;
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
}

impl StreamType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Tenant => "tenant",
            StreamType::Member => "member",
            StreamType::Project => "project",
            StreamType::Task => "task",
            StreamType::Usage => "usage",
        }
    }

    pub fn parse(s: &str) -> Option<StreamType> {
        match s {
            "tenant" => Some(StreamType::Tenant),
            "member" => Some(StreamType::Member),
            "project" => Some(StreamType::Project),
            "task" => Some(StreamType::Task),
            "usage" => Some(StreamType::Usage),
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

/// given(events) / when(command) / then(events | error), for the domain's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Aggregate;
    use crate::error::DomainError;
    use crate::event::Event;

    pub(crate) struct Scenario<A: Aggregate> {
        state: A,
    }

    pub(crate) struct Outcome(Result<Vec<Event>, DomainError>);

    impl<A: Aggregate> Scenario<A> {
        pub(crate) fn given(events: Vec<Event>) -> Self {
            Scenario { state: A::from_events(&events) }
        }

        pub(crate) fn decide(
            self,
            f: impl FnOnce(&A) -> Result<Vec<Event>, DomainError>,
        ) -> Result<Vec<Event>, DomainError> {
            f(&self.state)
        }

        pub(crate) fn when(self, f: impl FnOnce(&A) -> Result<Vec<Event>, DomainError>) -> Outcome {
            Outcome(f(&self.state))
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
    }
}
