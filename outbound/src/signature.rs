//! Standard Webhooks signatures (standardwebhooks.com, docs/integration.md "Verifying a
//! webhook"): `whsec_` secrets, the `webhook-id`/`webhook-timestamp`/`webhook-signature`
//! headers, HMAC-SHA256 over `id.timestamp.body`, several signatures during a rotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use std::fmt;

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a secret Keel makes (Svix's size: 24 bytes, 32 base64 characters).
pub const SECRET_BYTES: usize = 24;
/// The shortest and longest key Keel accepts when parsing (the spec asks 24 to 64 bytes).
pub const SECRET_MIN_BYTES: usize = 24;
pub const SECRET_MAX_BYTES: usize = 64;
/// How far a timestamp may be from the verifier's clock, either way (the spec's five minutes).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The header names, lower case as HTTP/2 sends them.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

type HmacSha256 = Hmac<Sha256>;

/// An endpoint's signing key. Its `Debug` never shows the key; `expose` gives the `whsec_` text
/// (shown to the tenant once, at creation and rotation).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_`")]
    Prefix,
    #[error("a webhook secret is `whsec_` and base64")]
    Base64,
    #[error("a webhook secret's key has {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes, not {0}")]
    Length(usize),
}

impl Secret {
    /// A new random key from the operating system's generator (through `rand`'s thread RNG,
    /// a CSPRNG seeded from it).
    pub fn generate() -> Secret {
        let mut key = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut key);
        Secret(key)
    }

    /// Reads the `whsec_<base64>` form.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let b64 = text.strip_prefix(SECRET_PREFIX).ok_or(SecretError::Prefix)?;
        let key = B64.decode(b64).map_err(|_| SecretError::Base64)?;
        if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret(key))
    }

    /// The `whsec_<base64>` form: what the tenant is shown and the store keeps (encrypted).
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.0))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// `v1,<base64 HMAC-SHA256 over "{msg_id}.{timestamp}.{body}">`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(msg_id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", B64.encode(tag))
}

/// The three headers of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// The event id: the same on every retry, so receivers deduplicate by it.
    pub id: String,
    /// Unix seconds of this attempt (a retry has its own).
    pub timestamp: i64,
    /// One `v1,...` per secret, space-separated.
    pub signature: String,
}

impl Headers {
    /// Signs with every secret given — the current one, and during a rotation's grace period
    /// the previous one too — so a receiver holding either verifies.
    pub fn new(secrets: &[&Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> Headers {
        let signature = secrets.iter().map(|s| sign(s, msg_id, timestamp, body)).collect::<Vec<_>>().join(" ");
        Headers { id: msg_id.to_owned(), timestamp, signature }
    }

    /// Name and value of each header, in the order they are sent.
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            (HEADER_ID, self.id.clone()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the webhook-timestamp is more than five minutes from now")]
    OutsideTolerance,
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
}

/// Checks a delivery as a receiver would (the spec's algorithm): the timestamp within
/// `TOLERANCE_SECS` of `now` (Unix seconds), and one `v1,` signature of the header matching,
/// compared in constant time. Other versions are skipped.
pub fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::OutsideTolerance);
    }
    let mac = secret.mac(msg_id, ts, body);
    let matched = signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|b64| B64.decode(b64).is_ok_and(|tag| mac.clone().verify_slice(&tag).is_ok()));
    if matched { Ok(()) } else { Err(VerifyError::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector the Standard Webhooks reference libraries (and Svix's) all check.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn vector_secret() -> Secret {
        Secret::parse(VECTOR_SECRET).unwrap()
    }

    #[test]
    fn signs_the_specification_test_vector_exactly() {
        assert_eq!(sign(&vector_secret(), VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
    }

    #[test]
    fn verifies_the_test_vector_within_tolerance_only() {
        let s = vector_secret();
        let ts = VECTOR_TS.to_string();
        assert_eq!(verify(&s, VECTOR_ID, &ts, VECTOR_SIG, VECTOR_BODY, VECTOR_TS + 300), Ok(()));
        assert_eq!(verify(&s, VECTOR_ID, &ts, VECTOR_SIG, VECTOR_BODY, VECTOR_TS - 300), Ok(()));
        assert_eq!(
            verify(&s, VECTOR_ID, &ts, VECTOR_SIG, VECTOR_BODY, VECTOR_TS + 301),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(
            verify(&s, VECTOR_ID, &ts, VECTOR_SIG, VECTOR_BODY, VECTOR_TS - 301),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(verify(&s, VECTOR_ID, "soon", VECTOR_SIG, VECTOR_BODY, VECTOR_TS), Err(VerifyError::BadTimestamp));
    }

    #[test]
    fn a_changed_body_id_timestamp_or_secret_does_not_verify() {
        let s = vector_secret();
        let ts = VECTOR_TS.to_string();
        let at = VECTOR_TS;
        let no = Err(VerifyError::NoMatch);
        assert_eq!(verify(&s, VECTOR_ID, &ts, VECTOR_SIG, br#"{"test": 2432232315}"#, at), no);
        assert_eq!(verify(&s, "msg_other", &ts, VECTOR_SIG, VECTOR_BODY, at), no);
        assert_eq!(verify(&s, VECTOR_ID, &(at + 1).to_string(), VECTOR_SIG, VECTOR_BODY, at), no);
        assert_eq!(verify(&Secret::generate(), VECTOR_ID, &ts, VECTOR_SIG, VECTOR_BODY, at), no);
        // Only v1 counts: the same tag under another version is skipped.
        let v2 = VECTOR_SIG.replacen("v1,", "v2,", 1);
        assert_eq!(verify(&s, VECTOR_ID, &ts, &v2, VECTOR_BODY, at), no);
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_and_either_verifies() {
        let (old, new) = (Secret::generate(), Secret::generate());
        let h = Headers::new(&[&new, &old], "evt_1", 1_700_000_000, b"{}");
        let sigs: Vec<&str> = h.signature.split(' ').collect();
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[0], sign(&new, "evt_1", 1_700_000_000, b"{}"));
        assert_eq!(sigs[1], sign(&old, "evt_1", 1_700_000_000, b"{}"));
        let ts = h.timestamp.to_string();
        for s in [&old, &new] {
            assert_eq!(verify(s, &h.id, &ts, &h.signature, b"{}", h.timestamp), Ok(()));
        }
        let stranger = Secret::generate();
        assert_eq!(verify(&stranger, &h.id, &ts, &h.signature, b"{}", h.timestamp), Err(VerifyError::NoMatch));
        assert_eq!(h.pairs().map(|(n, _)| n), ["webhook-id", "webhook-timestamp", "webhook-signature"]);
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = Secret::generate();
        let text = s.expose();
        assert!(text.starts_with("whsec_") && text.len() == 6 + 32, "{text}");
        assert_eq!(Secret::parse(&text), Ok(s.clone()));
        assert_ne!(Secret::generate(), s, "two generated secrets differ");
        assert!(!format!("{s:?}").contains(&text[6..]), "Debug hides the key");
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(SecretError::Prefix));
        assert_eq!(Secret::parse("whsec_not base64!"), Err(SecretError::Base64));
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), Err(SecretError::Length(5)));
    }
}
