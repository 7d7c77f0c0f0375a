//! Envelope encryption of personal data (`docs/guarantees.md`, "Erasure"). Each member has a data key of its own; the
//! personal fields of its events (email, name) are sealed with it, and the data key is stored in
//! `member_keys` sealed by the master key. Erasing a member deletes its data key: the events
//! stay, their hashes still verify (they cover the sealed text), and nothing can open the
//! personal data again. Rotating the master key re-seals the data keys and touches no event.

use crate::error::StoreError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use keel_domain::Event;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use std::fmt;
use uuid::Uuid;

/// What a personal field reads as once its member's data key is gone.
pub const ERASED: &str = "[erased]";

/// The prefix of a sealed field in a stored payload: `enc:v1:<base64(nonce ‖ ciphertext)>`.
const SEALED: &str = "enc:v1:";

/// What a secret field reads as wherever an event leaves Keel or is shown (audit, envelope).
pub const REDACTED: &str = "[redacted]";

/// The personal fields of each event type that carries any: sealed, and opened for readers
/// while their data key exists.
fn personal_fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "MemberInvited" => &["email", "name"],
        _ => &[],
    }
}

/// The secret fields of each event type that carries any (a webhook's signing secret): sealed
/// like personal data, but under the key of what they belong to (not a member, so erasing a
/// member leaves them readable) and never opened by `reveal`; only `open_secret` opens one.
fn secret_fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "WebhookCreated" | "WebhookSecretRotated" => &["secret"],
        _ => &[],
    }
}

/// Whether an event type carries a secret field (stored sealed, also in the inline tables).
pub fn has_secrets(event_type: &str) -> bool {
    !secret_fields(event_type).is_empty()
}

/// The payload field naming whose data key seals an event's fields: a member's, or a webhook
/// endpoint's (its keys live in `member_keys` too, keyed by the endpoint's id).
fn key_owner_field(event_type: &str) -> Option<&'static str> {
    if !personal_fields(event_type).is_empty() {
        Some("member_id")
    } else if has_secrets(event_type) {
        Some("webhook_id")
    } else {
        None
    }
}

/// The key that seals every data key. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    bytes: [u8; 32],
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system provides randomness");
    b
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        let id = hex::encode(&Sha256::digest([b"keel-master-key-id:".as_slice(), &bytes].concat())[..8]);
        MasterKey { cipher: Aes256Gcm::new(&bytes.into()), bytes, id }
    }

    pub fn generate() -> MasterKey {
        MasterKey::from_bytes(random())
    }

    /// 64 hexadecimal digits, or the base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, StoreError> {
        let t = text.trim();
        let bytes = hex::decode(t)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .ok_or_else(|| StoreError::Config("the master key is neither hex nor base64".into()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| StoreError::Config(format!("the master key has {} bytes, not 32", b.len())))?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// The text form `parse` reads (for writing a key file).
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// A short fingerprint naming this key in `member_keys` (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A key for `purpose` derived from this one (the tenant archive's seal): never the master
    /// key itself.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        Sha256::digest([b"keel-derive:", purpose.as_bytes(), b":", self.bytes.as_slice()].concat()).into()
    }

    /// Seals a platform setting (a registered database's URL) bound to what it is for: a sealed
    /// value moved under another name does not open.
    pub fn seal_setting(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        seal_bytes(&self.cipher, plain, format!("keel-setting:{purpose}").as_bytes())
    }

    pub fn open_setting(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        open_bytes(&self.cipher, sealed, format!("keel-setting:{purpose}").as_bytes())
            .ok_or_else(|| StoreError::Key(format!("the sealed {purpose} does not open with master key {}", self.id)))
    }

    fn wrap(&self, data_key: &[u8; 32], tenant: Uuid, member: Uuid) -> Vec<u8> {
        seal_bytes(&self.cipher, data_key, &aad(tenant, member, "data-key"))
    }

    fn unwrap(&self, wrapped: &[u8], tenant: Uuid, member: Uuid) -> Result<[u8; 32], StoreError> {
        let key = open_bytes(&self.cipher, wrapped, &aad(tenant, member, "data-key")).ok_or_else(|| {
            StoreError::Key(format!("the data key of member {member} does not open with master key {}", self.id))
        })?;
        key.try_into().map_err(|_| StoreError::Key("a data key is not 32 bytes".into()))
    }
}

/// Binds a ciphertext to where it belongs: a sealed field copied into another member's event,
/// or another field, does not open.
fn aad(tenant: Uuid, member: Uuid, field: &str) -> Vec<u8> {
    [tenant.as_bytes().as_slice(), member.as_bytes(), field.as_bytes()].concat()
}

fn seal_bytes(cipher: &Aes256Gcm, plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce: [u8; 12] = random();
    let ct = cipher.encrypt(&Nonce::from(nonce), Payload { msg: plain, aad }).expect("AES-GCM seals any input");
    [nonce.as_slice(), &ct].concat()
}

fn open_bytes(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 12 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    cipher.decrypt(&Nonce::from(nonce), Payload { msg: ct, aad }).ok()
}

/// The member (or webhook endpoint) whose data key seals an event's fields.
fn owner_of(event_type: &str, payload: &Value) -> Option<Uuid> {
    payload.get(key_owner_field(event_type)?)?.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

/// The data keys of some members or endpoints of one tenant, as a command's read call found them
/// (`write_path`): for each owner asked about, its wrapped key, or none when it has none.
#[derive(Debug, Clone, Default)]
pub struct DataKeys {
    pub tenant: Uuid,
    pub asked: Vec<Uuid>,
    pub wrapped: Vec<(Uuid, Vec<u8>)>,
}

impl DataKeys {
    /// `Some(wrapped key or none)` when `owner` of `tenant` was asked about.
    fn get(&self, tenant: Uuid, owner: Uuid) -> Option<Option<&[u8]>> {
        (tenant == self.tenant && self.asked.contains(&owner))
            .then(|| self.wrapped.iter().find(|(m, _)| *m == owner).map(|(_, k)| k.as_slice()))
    }
}

/// Seals the personal fields of `payloads` (one per event, as they will be stored) in the
/// transaction's tenant: a member's first event makes its data key, returned wrapped (as
/// `(owner, wrapped key)`) for the append to store. A key `known` from the command's read is not
/// looked up again.
pub(crate) async fn seal(
    conn: &mut PgConnection,
    master: Option<&MasterKey>,
    tenant: Uuid,
    events: &[Event],
    payloads: &mut [Value],
    known: Option<&DataKeys>,
) -> Result<Vec<(Uuid, Vec<u8>)>, StoreError> {
    let mut keys: HashMap<Uuid, Aes256Gcm> = HashMap::new();
    let mut made = Vec::new();
    for (event, payload) in events.iter().zip(payloads.iter_mut()) {
        let fields = personal_fields(event.event_type()).iter().chain(secret_fields(event.event_type()));
        let Some(member) = owner_of(event.event_type(), payload) else { continue };
        let master = master
            .ok_or_else(|| StoreError::Config("no master key is configured: personal data cannot be written".into()))?;
        if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(member) {
            let wrapped: Option<Vec<u8>> = match known.and_then(|k| k.get(tenant, member)) {
                Some(found) => found.map(<[u8]>::to_vec),
                None => {
                    sqlx::query_scalar("SELECT wrapped_key FROM member_keys WHERE tenant_id = $1 AND member_id = $2")
                        .bind(tenant)
                        .bind(member)
                        .fetch_optional(&mut *conn)
                        .await?
                }
            };
            let cipher = match wrapped {
                Some(wrapped) => Aes256Gcm::new(&master.unwrap(&wrapped, tenant, member)?.into()),
                None => {
                    let data_key: [u8; 32] = random();
                    made.push((member, master.wrap(&data_key, tenant, member)));
                    Aes256Gcm::new(&data_key.into())
                }
            };
            slot.insert(cipher);
        }
        let cipher = &keys[&member];
        for field in fields {
            if let Some(Value::String(plain)) = payload.get(*field) {
                let sealed = seal_bytes(cipher, plain.as_bytes(), &aad(tenant, member, field));
                payload[*field] = Value::String(format!("{SEALED}{}", B64.encode(sealed)));
            }
        }
    }
    Ok(made)
}

/// One stored event's identity for `reveal`.
pub struct Sealed<'a> {
    pub tenant_id: Uuid,
    pub event_type: &'a str,
    pub payload: &'a mut Value,
}

/// Opens the personal fields of stored payloads in place; a field whose member's data key was
/// erased reads `ERASED`. One query for all the data keys the payloads need, on a connection
/// that can see them (the tenant's transaction, or a projector's).
pub async fn reveal(
    conn: &mut PgConnection,
    master: Option<&MasterKey>,
    items: &mut [Sealed<'_>],
) -> Result<(), StoreError> {
    reveal_known(conn, master, items, None).await
}

/// `reveal`, with the keys `known` from a command's read: when they cover every owner, nothing
/// is queried.
pub(crate) async fn reveal_known(
    conn: &mut PgConnection,
    master: Option<&MasterKey>,
    items: &mut [Sealed<'_>],
    known: Option<&DataKeys>,
) -> Result<(), StoreError> {
    let mut wanted: Vec<(Uuid, Uuid)> = Vec::new();
    for it in items.iter() {
        if let Some(m) = owner_of(it.event_type, it.payload)
            && is_sealed(it.event_type, it.payload)
            && !wanted.contains(&(it.tenant_id, m))
        {
            wanted.push((it.tenant_id, m));
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let mut wrapped: Vec<(Uuid, Uuid, Vec<u8>)> = Vec::new();
    let from_read: Option<Vec<_>> = wanted.iter().map(|(t, m)| known.and_then(|k| k.get(*t, *m))).collect();
    match from_read {
        Some(found) => {
            for ((t, m), k) in wanted.iter().zip(found) {
                if let Some(k) = k {
                    wrapped.push((*t, *m, k.to_vec()));
                }
            }
        }
        None => {
            let (tenants, members): (Vec<Uuid>, Vec<Uuid>) = wanted.iter().copied().unzip();
            let rows = sqlx::query(
                "SELECT k.tenant_id, k.member_id, k.wrapped_key FROM member_keys k
                   JOIN UNNEST($1::uuid[], $2::uuid[]) AS w(t, m) ON k.tenant_id = w.t AND k.member_id = w.m",
            )
            .bind(&tenants)
            .bind(&members)
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                wrapped.push((row.try_get("tenant_id")?, row.try_get("member_id")?, row.try_get("wrapped_key")?));
            }
        }
    }
    let mut keys: HashMap<(Uuid, Uuid), Aes256Gcm> = HashMap::new();
    for (t, m, k) in wrapped {
        let master = master.ok_or_else(|| StoreError::Config("no master key is configured".into()))?;
        keys.insert((t, m), Aes256Gcm::new(&master.unwrap(&k, t, m)?.into()));
    }
    for it in items.iter_mut() {
        let Some(member) = owner_of(it.event_type, it.payload) else { continue };
        let key = keys.get(&(it.tenant_id, member));
        for field in personal_fields(it.event_type) {
            let Some(Value::String(text)) = it.payload.get(*field) else { continue };
            let Some(b64) = text.strip_prefix(SEALED) else { continue };
            let opened = key
                .and_then(|k| open_bytes(k, &B64.decode(b64).ok()?, &aad(it.tenant_id, member, field)))
                .and_then(|p| String::from_utf8(p).ok());
            it.payload[*field] = Value::String(opened.unwrap_or_else(|| ERASED.to_owned()));
        }
    }
    Ok(())
}

/// Replaces any personal field still sealed in `payload` with `ERASED`, and every secret field
/// with `REDACTED`: what leaves Keel (a publish, a webhook) or is shown to a reader never carries
/// the sealed text, nor a secret.
pub fn redact_sealed(event_type: &str, payload: &mut Value) {
    for field in personal_fields(event_type) {
        if payload.get(*field).and_then(Value::as_str).is_some_and(|s| s.starts_with(SEALED)) {
            payload[*field] = Value::String(ERASED.to_owned());
        }
    }
    redact_secrets(event_type, payload);
}

/// Replaces every secret field of `payload` (sealed or not) with `REDACTED`.
pub fn redact_secrets(event_type: &str, payload: &mut Value) {
    for field in secret_fields(event_type) {
        if payload.get(*field).is_some() {
            payload[*field] = Value::String(REDACTED.to_owned());
        }
    }
}

/// Opens a sealed secret of webhook endpoint `owner` in `tenant` (as stored in the log and in
/// `webhook_endpoints`), on a connection that can read the tenant's keys. `None` when its key is
/// gone (the tenant was erased) or the text does not open.
pub async fn open_secret(
    conn: &mut PgConnection,
    master: Option<&MasterKey>,
    tenant: Uuid,
    owner: Uuid,
    sealed: &str,
) -> Result<Option<String>, StoreError> {
    let Some(b64) = sealed.strip_prefix(SEALED) else { return Ok(None) };
    let Some(bytes) = B64.decode(b64).ok() else { return Ok(None) };
    let Some(row) = sqlx::query("SELECT wrapped_key FROM member_keys WHERE tenant_id = $1 AND member_id = $2")
        .bind(tenant)
        .bind(owner)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let master = master.ok_or_else(|| StoreError::Config("no master key is configured".into()))?;
    let key = Aes256Gcm::new(&master.unwrap(row.try_get("wrapped_key")?, tenant, owner)?.into());
    Ok(open_bytes(&key, &bytes, &aad(tenant, owner, "secret")).and_then(|p| String::from_utf8(p).ok()))
}

fn is_sealed(event_type: &str, payload: &Value) -> bool {
    personal_fields(event_type)
        .iter()
        .any(|f| payload.get(*f).and_then(Value::as_str).is_some_and(|s| s.starts_with(SEALED)))
}

/// `rotate` in a transaction of its own on the owner's connection `conn`, as `keel_keys` (which
/// sees every tenant's keys and nothing else).
pub async fn rotate_as_keys_role(conn: &mut PgConnection, old: &MasterKey, new: &MasterKey) -> Result<u64, StoreError> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL ROLE keel_keys").execute(&mut *tx).await?;
    let n = rotate(&mut tx, old, new).await?;
    tx.commit().await?;
    Ok(n)
}

/// Re-seals every data key sealed by `old` under `new`, in one transaction, as a role that sees
/// every tenant's keys. Events are not touched. Returns how many keys were re-sealed.
pub async fn rotate(conn: &mut PgConnection, old: &MasterKey, new: &MasterKey) -> Result<u64, StoreError> {
    let rows = sqlx::query("SELECT tenant_id, member_id, wrapped_key, master_key_id FROM member_keys FOR UPDATE")
        .fetch_all(&mut *conn)
        .await?;
    let mut n = 0;
    for row in rows {
        let (t, m, id): (Uuid, Uuid, String) =
            (row.try_get("tenant_id")?, row.try_get("member_id")?, row.try_get("master_key_id")?);
        if id == new.id() {
            continue; // already under the new key (a rotation that was interrupted and rerun)
        }
        let data_key = old.unwrap(row.try_get("wrapped_key")?, t, m)?;
        sqlx::query(
            "UPDATE member_keys SET wrapped_key = $3, master_key_id = $4, rotated_at = now()
              WHERE tenant_id = $1 AND member_id = $2",
        )
        .bind(t)
        .bind(m)
        .bind(new.wrap(&data_key, t, m))
        .bind(new.id())
        .execute(&mut *conn)
        .await?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_key_opens_only_under_its_master_key_and_its_member() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        let (t, m) = (Uuid::new_v4(), Uuid::new_v4());
        let dk: [u8; 32] = random();
        let wrapped = a.wrap(&dk, t, m);
        assert_eq!(a.unwrap(&wrapped, t, m).unwrap(), dk);
        assert!(b.unwrap(&wrapped, t, m).is_err());
        assert!(a.unwrap(&wrapped, t, Uuid::new_v4()).is_err());
    }

    #[test]
    fn a_webhook_secret_never_leaves_and_a_personal_field_leaves_erased() {
        let mut hook =
            serde_json::json!({"webhook_id": Uuid::nil(), "secret": "enc:v1:abc", "url": "https://x.example/"});
        redact_sealed("WebhookCreated", &mut hook);
        assert_eq!(hook["secret"], REDACTED);
        assert_eq!(hook["url"], "https://x.example/");
        let mut clear = serde_json::json!({"secret": "whsec_abc"});
        redact_sealed("WebhookSecretRotated", &mut clear);
        assert_eq!(clear["secret"], REDACTED, "even a secret that is not sealed");
        let mut member = serde_json::json!({"member_id": Uuid::nil(), "email": "enc:v1:x", "name": "Ada"});
        redact_sealed("MemberInvited", &mut member);
        assert_eq!((member["email"].as_str(), member["name"].as_str()), (Some(ERASED), Some("Ada")));
        assert_eq!(key_owner_field("WebhookCreated"), Some("webhook_id"));
        assert_eq!(key_owner_field("MemberInvited"), Some("member_id"));
        assert_eq!(key_owner_field("TaskCreated"), None);
    }

    #[test]
    fn master_keys_parse_from_hex_and_base64_and_print_no_secret() {
        let k = MasterKey::generate();
        assert_eq!(MasterKey::parse(&k.to_hex()).unwrap().id(), k.id());
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.bytes);
        assert_eq!(MasterKey::parse(&b64).unwrap().id(), k.id());
        assert!(MasterKey::parse("abcd").is_err());
        assert!(!format!("{k:?}").contains(&k.to_hex()));
    }
}
