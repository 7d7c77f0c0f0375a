//! Opaque, stable cursors: base64url of the ordering, the last row's sort key and its id. A
//! cursor from one ordering is refused by another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// Which list and ordering this cursor belongs to.
    pub(crate) o: String,
    pub(crate) k: Option<String>,
    pub(crate) i: Uuid,
}

pub(crate) fn encode(ordering: &str, key: Option<String>, id: Uuid) -> String {
    let c = Cursor { o: ordering.to_owned(), k: key, i: id };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).expect("serializes"))
}

pub(crate) fn decode(ordering: &str, s: &str) -> Option<Cursor> {
    let c: Cursor = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    // A key PostgreSQL cannot compare (a NUL) is no cursor Keel made.
    (c.o == ordering && c.k.as_deref().is_none_or(|k| !k.contains('\0'))).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_one_ordering() {
        let id = Uuid::now_v7();
        let c = encode("tasks:due:asc", Some("2027-01-01".into()), id);
        assert_eq!(
            decode("tasks:due:asc", &c),
            Some(Cursor { o: "tasks:due:asc".into(), k: Some("2027-01-01".into()), i: id })
        );
        assert_eq!(decode("tasks:due:desc", &c), None);
        assert_eq!(decode("tasks:due:asc", "garbage"), None);
    }
}
