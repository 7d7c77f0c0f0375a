//! Route handlers: parse, pick the command, hand it to `exec`. No SQL, no rules.

pub(crate) mod members;
pub(crate) mod projects;
pub(crate) mod tasks;
pub(crate) mod tenants;
pub(crate) mod usage;
pub(crate) mod webhooks;

use keel_gateway::Problem;
use uuid::Uuid;

/// A path id that is not a UUID names nothing: 404, as for a missing one.
pub(crate) fn path_id(raw: &str, what: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::not_found(what))
}

/// What a date field's 422 says: its format, not the parser's reason.
pub(crate) const DATE_FORMAT: &str = "a date is written YYYY-MM-DD, e.g. \"2025-03-31\"";

/// A date field that may be absent or `null`; a value must be a `YYYY-MM-DD` calendar date.
pub(crate) fn date<'de, D>(d: D) -> Result<Option<chrono::NaiveDate>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    match <Option<serde_json::Value> as serde::Deserialize>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d").map(Some).map_err(|_| D::Error::custom(DATE_FORMAT))
        }
        Some(_) => Err(D::Error::custom(DATE_FORMAT)),
    }
}

/// `date` for a field whose `null` clears it: absent is `None`, `null` is `Some(None)`.
pub(crate) fn present_date<'de, D>(d: D) -> Result<Option<Option<chrono::NaiveDate>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    date(d).map(Some)
}

/// A moment: an RFC 3339 date and time; a 422 says so rather than the parser's reason.
pub(crate) fn date_time<'de, D>(d: D) -> Result<chrono::DateTime<chrono::Utc>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let wrong = || D::Error::custom("a time is written in RFC 3339, e.g. \"2025-03-31T12:00:00Z\"");
    match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
        serde_json::Value::String(s) => {
            chrono::DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&chrono::Utc)).map_err(|_| wrong())
        }
        _ => Err(wrong()),
    }
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
