//! The hash chain of a stream: SHA-256 over the previous event's hash and this event's canonical
//! bytes. Canonical bytes are a compact JSON array with object keys sorted by byte order, so they
//! can be recomputed from the stored row whatever order jsonb keeps keys in.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The fields of an event that its hash covers: everything but position and transaction id,
/// which the database assigns at insert.
pub struct HashedFields<'a> {
    pub tenant_id: Uuid,
    pub stream_type: &'a str,
    pub stream_id: Uuid,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub recorded_at: DateTime<Utc>,
    pub payload: &'a Value,
    pub metadata: &'a Value,
}

pub fn canonical_bytes(f: &HashedFields<'_>) -> Vec<u8> {
    let head = serde_json::json!([
        f.tenant_id.to_string(),
        f.stream_type,
        f.stream_id.to_string(),
        f.stream_version,
        f.event_id.to_string(),
        f.event_type,
        f.schema_version,
        f.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    ]);
    let mut out = Vec::with_capacity(256);
    out.push(b'[');
    for (i, v) in head.as_array().expect("array").iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_canonical(v, &mut out);
    }
    out.push(b',');
    write_canonical(f.payload, &mut out);
    out.push(b',');
    write_canonical(f.metadata, &mut out);
    out.push(b']');
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("string serializes"));
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("scalar serializes")),
    }
}

/// SHA-256(prev_hash || canonical); the first event of a stream chains from 32 zero bytes.
pub fn chain_hash(prev: Option<&[u8]>, canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev.unwrap_or(&[0u8; 32]));
    h.update(canonical);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(payload: &'a Value, metadata: &'a Value) -> HashedFields<'a> {
        HashedFields {
            tenant_id: Uuid::from_u128(1),
            stream_type: "project",
            stream_id: Uuid::from_u128(2),
            stream_version: 1,
            event_id: Uuid::from_u128(3),
            event_type: "ProjectCreated",
            schema_version: 1,
            recorded_at: DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap(),
            payload,
            metadata,
        }
    }

    #[test]
    fn key_order_does_not_change_the_bytes() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":"é"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,{"c":3,"d":2}]},"b":1}"#).unwrap();
        let m = serde_json::json!({});
        assert_eq!(canonical_bytes(&fields(&a, &m)), canonical_bytes(&fields(&b, &m)));
    }

    #[test]
    fn any_field_change_changes_the_hash() {
        let p = serde_json::json!({"name": "Apollo"});
        let m = serde_json::json!({"actor": "user:1"});
        let base = chain_hash(None, &canonical_bytes(&fields(&p, &m)));
        let p2 = serde_json::json!({"name": "Apollo2"});
        assert_ne!(base, chain_hash(None, &canonical_bytes(&fields(&p2, &m))));
        let mut f = fields(&p, &m);
        f.stream_version = 2;
        assert_ne!(base, chain_hash(None, &canonical_bytes(&f)));
        assert_ne!(base, chain_hash(Some(&[1u8; 32]), &canonical_bytes(&fields(&p, &m))));
    }
}
