//! Route handlers: parse, pick the command, hand it to `exec`. No SQL, no rules.

pub(crate) mod members;
pub(crate) mod projects;
pub(crate) mod tasks;
pub(crate) mod tenants;
pub(crate) mod usage;

use keel_gateway::Problem;
use uuid::Uuid;

/// A path id that is not a UUID names nothing: 404, as for a missing one.
pub(crate) fn path_id(raw: &str, what: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::not_found(what))
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A field that may be absent but not `null`: it cannot be cleared, so `null` is refused (422)
/// rather than read as "absent".
pub(crate) fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}
