//! Opaque, stable cursors: base64url of the keyset a page continues after.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DateTime;
use keel_store::read::projects::ProjectKey;
use uuid::Uuid;

pub(crate) fn encode_project(k: &ProjectKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("p:{}:{}", k.created_at.timestamp_micros(), k.project_id))
}

pub(crate) fn decode_project(s: &str) -> Option<ProjectKey> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let mut parts = raw.splitn(3, ':');
    if parts.next()? != "p" {
        return None;
    }
    let micros: i64 = parts.next()?.parse().ok()?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    Some(ProjectKey { created_at: DateTime::from_timestamp_micros(micros)?, project_id: id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let k = ProjectKey {
            created_at: DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap(),
            project_id: Uuid::now_v7(),
        };
        assert_eq!(decode_project(&encode_project(&k)), Some(k));
        assert_eq!(decode_project("not a cursor"), None);
        assert_eq!(decode_project(&URL_SAFE_NO_PAD.encode("t:1:x")), None);
    }
}
