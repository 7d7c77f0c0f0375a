//! A tenant as one portable file (docs/tenancy.md, "Export and import"): its events with their
//! hashes, the rows no event derives (sealed data keys, idempotency keys with their answers), and
//! the inline tables the events derive (tenant, memberships, usage, webhook endpoints), each in
//! PostgreSQL's COPY text format under a line naming the table and its columns.
//!
//! ```text
//! KEEL-TENANT-ARCHIVE v1 {"tenant_id":"…","schema_version":18,"exported_at":"…"}
//! @section member_keys tenant_id,member_id,…
//! <one COPY text line per row>
//! \.
//! @section idempotency_keys …
//! @section events tenant_id,stream_type,…,hash      (one line per event, in log order)
//! @section tenants …                                (then memberships, usage, webhook endpoints)
//! @end {"events":1234,"sha256":"<hex of every byte before this line>","seal":"<HMAC>"}
//! ```
//!
//! An import loads the events with COPY, a chunk at a time; a reader thread checks every
//! stream's hash chain in log order a chunk ahead, so parsing and hashing overlap the COPY. Each
//! chunk's inline tables are applied as the write path does (`inline::apply`); then the derived
//! tables are compared with the archive's, row for row. A broken chain, a row of another tenant,
//! a digest or count that does not match, or a derived table that differs refuses the archive
//! and leaves the target as it was (one transaction).

use crate::error::StoreError;
use crate::hash::{HashedFields, canonical_bytes, chain_hash};
use crate::{MasterKey, TenantTx};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use keel_domain::TenantId;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use uuid::Uuid;

pub const MAGIC: &str = "KEEL-TENANT-ARCHIVE v1";

/// The event columns an archive carries: all but the position and transaction id, which the
/// target assigns (the hash covers neither).
pub const EVENT_COLUMNS: &str = "tenant_id,stream_type,stream_id,stream_version,event_id,event_type,schema_version,payload,metadata,recorded_at,prev_hash,hash";

/// Events per COPY in an import, each followed by its inline tables.
const CHUNK: usize = 5_000;

/// Tables copied as they are: nothing in the log derives them.
const KEPT: [&str; 2] = ["member_keys", "idempotency_keys"];
/// Inline tables: the archive carries them, the import derives them from the events and
/// refuses an archive whose rows differ.
const DERIVED: [&str; 5] = ["tenants", "memberships", "usage_counters", "usage_records", "webhook_endpoints"];

/// COPY text is read and written with these settings, so timestamps are ISO in UTC whatever the
/// server's defaults.
pub(crate) const SESSION: &str = "SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL TimeZone = 'UTC'; SET LOCAL IntervalStyle = 'postgres'; SET LOCAL bytea_output = 'hex'; SET LOCAL extra_float_digits = 1";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub tenant_id: Uuid,
    pub schema_version: i64,
    pub exported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Exported {
    pub events: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Imported {
    pub tenant_id: Uuid,
    pub events: u64,
    pub streams: u64,
    /// The target's positions of the first and last imported event (0 when there were none).
    pub first_position: i64,
    pub last_position: i64,
}

/// The highest migration applied to the database `conn` is on: an archive moves only between
/// databases of the same schema.
pub async fn schema_version(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await?)
}

async fn columns(conn: &mut PgConnection, table: &str) -> Result<String, StoreError> {
    let cols: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(quote_ident(column_name), ',' ORDER BY ordinal_position)
           FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await?;
    cols.ok_or_else(|| StoreError::Config(format!("the database has no table {table}")))
}

/// The rows of `table` for `tenant` in a fixed order (every column), as COPY text.
fn select_rows(table: &str, cols: &str, tenant: Uuid) -> String {
    let n = cols.split(',').count();
    let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    format!(
        "COPY (SELECT {cols} FROM {table} WHERE tenant_id = '{}' ORDER BY {}) TO STDOUT",
        tenant.hyphenated(),
        order.join(",")
    )
}

/// Counts and hashes what is written, so the trailer can carry the digest of everything before it.
struct Digesting<W: Write> {
    out: W,
    sha: Sha256,
    seal: Option<Hmac<Sha256>>,
    bytes: u64,
}

/// The archive's seal: HMAC-SHA256 under a key derived from the master key, so an archive
/// changed and re-digested by someone without the key is refused.
fn sealer(master: Option<&MasterKey>) -> Option<Hmac<Sha256>> {
    master.map(|m| Hmac::<Sha256>::new_from_slice(&m.derive("tenant-archive")).expect("HMAC takes any key"))
}

impl<W: Write> Digesting<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sha.update(b);
        if let Some(h) = self.seal.as_mut() {
            h.update(b);
        }
        self.bytes += b.len() as u64;
        self.out.write_all(b)
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Config(format!("cannot write the archive: {e}"))
}

/// Writes `tenant` to `out`: one consistent cut (a repeatable-read snapshot) of its events and
/// rows. `conn` must see every row of the tenant (the owner's login; the tenant is set for
/// Row-Level Security).
pub async fn export(
    conn: &mut PgConnection,
    tenant: TenantId,
    master: Option<&MasterKey>,
    out: impl Write,
) -> Result<Exported, StoreError> {
    let mut w = Digesting { out: std::io::BufWriter::new(out), sha: Sha256::new(), seal: sealer(master), bytes: 0 };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {SESSION}; SELECT set_config('keel.tenant_id', '{}', true)",
        tenant.0.hyphenated()
    )))
    .execute(&mut *conn)
    .await?;
    let result = export_in(conn, tenant.0, &mut w).await;
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    let events = result?;
    let bytes = w.bytes;
    let digest = hex::encode(w.sha.finalize_reset());
    let mut end = serde_json::json!({ "events": events, "sha256": digest });
    if let Some(h) = w.seal.take() {
        end["seal"] = hex::encode(h.finalize().into_bytes()).into();
    }
    w.out.write_all(format!("@end {end}\n").as_bytes()).map_err(io)?;
    w.out.flush().map_err(io)?;
    Ok(Exported { events, bytes })
}

async fn export_in<W: Write>(conn: &mut PgConnection, tenant: Uuid, w: &mut Digesting<W>) -> Result<u64, StoreError> {
    let header = Header { tenant_id: tenant, schema_version: schema_version(conn).await?, exported_at: Utc::now() };
    w.put(format!("{MAGIC} {}\n", serde_json::to_string(&header).expect("header serializes")).as_bytes())
        .map_err(io)?;
    let events_sql = format!(
        "COPY (SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = '{}' ORDER BY transaction_id, position) TO STDOUT",
        tenant.hyphenated()
    );
    // The data keys first: an import opens personal data with them as the events stream in.
    for table in KEPT {
        let cols = columns(conn, table).await?;
        copy_section(conn, w, table, &cols, &select_rows(table, &cols, tenant)).await?;
    }
    let events = copy_section(conn, w, "events", EVENT_COLUMNS, &events_sql).await?;
    for table in DERIVED {
        let cols = columns(conn, table).await?;
        copy_section(conn, w, table, &cols, &select_rows(table, &cols, tenant)).await?;
    }
    Ok(events)
}

async fn copy_section<W: Write>(
    conn: &mut PgConnection,
    w: &mut Digesting<W>,
    table: &str,
    cols: &str,
    sql: &str,
) -> Result<u64, StoreError> {
    w.put(format!("@section {table} {cols}\n").as_bytes()).map_err(io)?;
    let mut rows = 0u64;
    let mut stream = conn.copy_out_raw(sql).await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        w.put(&chunk).map_err(io)?;
    }
    w.put(b"\\.\n").map_err(io)?;
    Ok(rows)
}

pub(crate) fn refuse(why: impl Into<String>) -> StoreError {
    StoreError::Archive(why.into())
}

/// Reads archive lines, hashing every byte before the `@end` line.
struct Lines<R: BufRead> {
    input: R,
    sha: Sha256,
    seal: Option<Hmac<Sha256>>,
    line: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// The next line without its newline; `None` at the end of the input.
    fn next(&mut self) -> Result<Option<&[u8]>, StoreError> {
        self.line.clear();
        let n = self.input.read_until(b'\n', &mut self.line).map_err(|e| refuse(format!("cannot read: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.last() != Some(&b'\n') {
            return Err(refuse("the archive ends in the middle of a line (truncated)"));
        }
        if !self.line.starts_with(b"@end ") {
            self.sha.update(&self.line);
            if let Some(h) = self.seal.as_mut() {
                h.update(&self.line);
            }
        }
        Ok(Some(&self.line[..self.line.len() - 1]))
    }

    fn expect(&mut self) -> Result<&[u8], StoreError> {
        self.next()?.ok_or_else(|| refuse("the archive ends early (truncated)"))
    }
}

/// The section line `@section TABLE COLUMNS`, which must name `table`.
fn section(line: &[u8], table: &str) -> Result<String, StoreError> {
    let text = std::str::from_utf8(line).map_err(|_| refuse("a section line is not UTF-8"))?;
    let rest = text.strip_prefix("@section ").ok_or_else(|| refuse(format!("expected the {table} section")))?;
    let (name, cols) = rest.split_once(' ').ok_or_else(|| refuse("a section line names no columns"))?;
    if name != table {
        return Err(refuse(format!("expected the {table} section, found {name}")));
    }
    Ok(cols.to_owned())
}

/// One field of a COPY text line, unescaped; `None` for `\N`.
pub(crate) fn field(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if raw == b"\\N" {
        return None;
    }
    if !raw.contains(&b'\\') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' || i + 1 == raw.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = raw[i + 1];
        i += 2;
        match n {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(n - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(Cow::Owned(out))
}

fn text<'a>(f: &'a Option<Cow<'a, [u8]>>, name: &str) -> Result<&'a str, StoreError> {
    let b = f.as_deref().ok_or_else(|| refuse(format!("{name} is null")))?;
    std::str::from_utf8(b).map_err(|_| refuse(format!("{name} is not UTF-8")))
}

fn parsed<T: std::str::FromStr>(f: &Option<Cow<'_, [u8]>>, name: &str) -> Result<T, StoreError> {
    text(f, name)?.parse().map_err(|_| refuse(format!("{name} does not parse")))
}

fn bytea(f: &Option<Cow<'_, [u8]>>, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(b) = f.as_deref() else { return Ok(None) };
    let hex_text = b.strip_prefix(b"\\x").ok_or_else(|| refuse(format!("{name} is not hex bytea")))?;
    hex::decode(hex_text).map(Some).map_err(|_| refuse(format!("{name} is not hex")))
}

/// An event line, parsed, after checking it against `chains` (each stream's last version and
/// hash so far); the line is refused unless it continues its stream's chain. Its position and
/// transaction id are the target's to assign (0 here).
pub(crate) fn check_event(
    line: &[u8],
    tenant: Uuid,
    chains: &mut HashMap<Uuid, (i64, [u8; 32])>,
) -> Result<crate::RecordedEvent, StoreError> {
    let raw: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
    if raw.len() != 12 {
        return Err(refuse(format!("an event line has {} fields, not 12", raw.len())));
    }
    let f: Vec<Option<Cow<'_, [u8]>>> = raw.into_iter().map(field).collect();
    let tenant_id: Uuid = parsed(&f[0], "tenant_id")?;
    if tenant_id != tenant {
        return Err(refuse(format!("an event belongs to tenant {tenant_id}, not to the archive's {tenant}")));
    }
    let stream_id: Uuid = parsed(&f[2], "stream_id")?;
    let stream_version: i64 = parsed(&f[3], "stream_version")?;
    let event_id: Uuid = parsed(&f[4], "event_id")?;
    let at_text = text(&f[9], "recorded_at")?;
    // PostgreSQL keeps microseconds: more digits would be hashed here and rounded there.
    if at_text.split_once('.').is_some_and(|(_, frac)| frac.chars().take_while(char::is_ascii_digit).count() > 6) {
        return Err(refuse("recorded_at has more than microseconds"));
    }
    let recorded_at = DateTime::parse_from_str(at_text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map_err(|_| refuse("recorded_at does not parse"))?
        .with_timezone(&Utc);
    let payload: serde_json::Value =
        serde_json::from_slice(f[7].as_deref().unwrap_or_default()).map_err(|_| refuse("a payload is not JSON"))?;
    let metadata: serde_json::Value =
        serde_json::from_slice(f[8].as_deref().unwrap_or_default()).map_err(|_| refuse("a metadata is not JSON"))?;
    let prev_hash = bytea(&f[10], "prev_hash")?;
    let hash = bytea(&f[11], "hash")?.ok_or_else(|| refuse("an event has no hash"))?;
    let broken =
        |why: &str| refuse(format!("the hash chain breaks at stream {stream_id} version {stream_version}: {why}"));
    let (want_version, want_prev) = match chains.get(&stream_id) {
        Some((v, h)) => (v + 1, Some(h.as_slice())),
        None => (1, None),
    };
    if stream_version != want_version {
        return Err(broken(&format!("version {stream_version} follows version {}", want_version - 1)));
    }
    if prev_hash.as_deref() != want_prev {
        return Err(broken("prev_hash is not the hash of the previous event"));
    }
    let (stream_type, event_type) = (text(&f[1], "stream_type")?, text(&f[5], "event_type")?);
    let schema_version = parsed(&f[6], "schema_version")?;
    let canonical = canonical_bytes(&HashedFields {
        tenant_id,
        stream_type,
        stream_id,
        stream_version,
        event_id,
        event_type,
        schema_version,
        recorded_at,
        payload: &payload,
        metadata: &metadata,
    });
    let computed = chain_hash(prev_hash.as_deref(), &canonical);
    if computed.as_slice() != hash.as_slice() {
        return Err(broken("the stored hash does not match the event's contents"));
    }
    chains.insert(stream_id, (stream_version, computed));
    Ok(crate::RecordedEvent {
        position: 0,
        xid: 0,
        tenant_id: TenantId(tenant_id),
        stream_type: stream_type.to_owned(),
        stream_id,
        stream_version,
        event_id,
        event_type: event_type.to_owned(),
        schema_version,
        payload,
        metadata,
        recorded_at,
        prev_hash,
        hash,
    })
}

/// The value of column `tenant_id` in a COPY text line of `cols`.
fn tenant_of(line: &[u8], cols: &str) -> Result<Uuid, StoreError> {
    let at = cols.split(',').position(|c| c == "tenant_id").ok_or_else(|| refuse("a section has no tenant_id"))?;
    let raw = line.split(|b| *b == b'\t').nth(at).ok_or_else(|| refuse("a row is short of fields"))?;
    parsed(&field(raw), "tenant_id")
}

/// COPYs checked event lines (`buf`, parsed as `events` by `check_event`) into `events` and
/// applies their inline tables as the write path does; the tenant is `tx`'s.
pub(crate) async fn load_events(
    tx: &mut TenantTx,
    buf: &[u8],
    events: &mut [crate::RecordedEvent],
) -> Result<(), StoreError> {
    let mut copy = tx.conn().copy_in_raw(&format!("COPY events ({EVENT_COLUMNS}) FROM STDIN")).await?;
    copy.send(buf).await?;
    copy.finish().await?;
    crate::log::reveal_in(tx, events).await?;
    let decoded = events.iter().map(|e| e.decode()).collect::<Result<Vec<_>, _>>()?;
    let tenant = tx.tenant();
    crate::inline::apply(tx.conn(), tenant, &decoded).await
}

/// Records the events `tx` loaded as imported from `source` (events out skip them); the first
/// position and the last event's log position, `None` when it loaded none.
pub(crate) async fn record_imported(
    tx: &mut TenantTx,
    source: &str,
) -> Result<Option<(i64, crate::LogPosition)>, StoreError> {
    let (xid, first, last): (String, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT pg_current_xact_id()::text, min(position), max(position) FROM events
          WHERE tenant_id = $1 AND transaction_id = pg_current_xact_id()",
    )
    .bind(tx.tenant().0)
    .fetch_one(tx.conn())
    .await?;
    let (Some(first), Some(last)) = (first, last) else { return Ok(None) };
    sqlx::query(
        "INSERT INTO imported_events (tenant_id, first_position, last_position, source) VALUES ($1, $2, $3, $4)",
    )
    .bind(tx.tenant().0)
    .bind(first)
    .bind(last)
    .bind(source)
    .execute(tx.conn())
    .await?;
    let xid = xid.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {xid}")))?;
    Ok(Some((first, crate::LogPosition { xid, position: last })))
}

/// The tenant an archive file holds, from its first line.
pub fn peek_tenant(path: &std::path::Path) -> Result<Uuid, StoreError> {
    let file = std::fs::File::open(path).map_err(|e| refuse(format!("cannot open {}: {e}", path.display())))?;
    let mut first = String::new();
    std::io::BufReader::new(file)
        .take(64 * 1024)
        .read_line(&mut first)
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    let json = first.strip_prefix(MAGIC).ok_or_else(|| refuse("this is not a Keel tenant archive"))?;
    let header: Header = serde_json::from_str(json.trim()).map_err(|e| refuse(format!("the header: {e}")))?;
    Ok(header.tenant_id)
}

/// Whether the database of `conn` holds any event of `tenant`.
pub async fn has_events(conn: &mut PgConnection, tenant: Uuid) -> Result<bool, StoreError> {
    use sqlx::Connection;
    // Row-Level Security binds the owner too: the tenant is set for the one query.
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('keel.tenant_id', $1, true)").bind(tenant.to_string()).execute(&mut *tx).await?;
    let found = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE tenant_id = $1)")
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(found)
}

/// Loads an archive into the database of `pool` (the owner's login; see `TenantTx::begin_owner`)
/// in one transaction, or refuses it and writes nothing. `source` names where it came from in
/// `imported_events`. The tenant must have no event in the target yet.
pub async fn import(
    pool: &PgPool,
    master: Option<MasterKey>,
    input: impl BufRead + Send + 'static,
    source: &str,
) -> Result<Imported, StoreError> {
    let mut lines = Lines { input, sha: Sha256::new(), seal: sealer(master.as_ref()), line: Vec::with_capacity(4096) };
    let first = lines.expect()?;
    let text = std::str::from_utf8(first).map_err(|_| refuse("the first line is not UTF-8"))?;
    let json = text.strip_prefix(MAGIC).ok_or_else(|| refuse("this is not a Keel tenant archive"))?;
    let header: Header = serde_json::from_str(json.trim()).map_err(|e| refuse(format!("the header: {e}")))?;
    let tenant = header.tenant_id;
    // The digest and the chains are what anyone could compute again; only the seal says the
    // archive is as this platform wrote it.
    if master.is_none() {
        return Err(refuse("the archive's seal is checked with the master key: set KEEL_MASTER_KEY"));
    }
    let mut tx = TenantTx::begin_owner(pool, TenantId(tenant), master).await?;
    let started = std::time::Instant::now();
    // A bulk load of a tenant that is not served here yet: the write fence does not apply.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{SESSION}; SET LOCAL keel.bulk = 'on'"))).execute(tx.conn()).await?;
    let here = schema_version(tx.conn()).await?;
    if here != header.schema_version {
        return Err(refuse(format!(
            "the archive is of schema version {}, the database of {here}; migrate both to the same version",
            header.schema_version
        )));
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE tenant_id = $1)")
        .bind(tenant)
        .fetch_one(tx.conn())
        .await?;
    if exists {
        return Err(refuse(format!("tenant {tenant} already has events in this database")));
    }
    let departed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants_departed WHERE tenant_id = $1)")
        .bind(tenant)
        .fetch_one(tx.conn())
        .await?;
    if departed {
        return Err(refuse(format!(
            "tenant {tenant} departed from this database: keel tenant retire --now first, or import elsewhere"
        )));
    }

    // Rows no event derives, as they are (each row of this tenant): the data keys open the
    // events' personal data as they come.
    for table in KEPT {
        let cols = section(lines.expect()?, table)?;
        if cols != columns(tx.conn(), table).await? {
            return Err(refuse(format!("the {table} section has other columns than this database")));
        }
        let mut rows: Vec<u8> = Vec::new();
        loop {
            let line = lines.expect()?;
            if line == b"\\." {
                break;
            }
            if tenant_of(line, &cols)? != tenant {
                return Err(refuse(format!("a row of {table} belongs to another tenant")));
            }
            rows.extend_from_slice(line);
            rows.push(b'\n');
        }
        if !rows.is_empty() {
            let mut copy = tx.conn().copy_in_raw(&format!("COPY {table} ({cols}) FROM STDIN")).await?;
            copy.send(rows.as_slice()).await?;
            copy.finish().await?;
        }
    }
    let kept = started.elapsed();

    // The events: COPY a chunk at a time while each line's chain is checked (a break aborts
    // the COPY), then the chunk's inline tables, derived from the events themselves.
    let cols = section(lines.expect()?, "events")?;
    if cols != EVENT_COLUMNS {
        return Err(refuse("the events section has other columns than this version of Keel writes"));
    }
    // A thread of its own reads and checks the events (JSON, canonical bytes, SHA-256) a chunk
    // ahead while this connection COPYs the chunk before: the two costs overlap instead of
    // adding up. A break stops the reader; the loader's error drops the channel, which stops it.
    let (send, mut chunks) = tokio::sync::mpsc::channel::<(Vec<u8>, Vec<crate::RecordedEvent>)>(2);
    let reader = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let mut chains: HashMap<Uuid, (i64, [u8; 32])> = HashMap::new();
        let mut events = 0u64;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut chunk: Vec<crate::RecordedEvent> = Vec::with_capacity(CHUNK);
        loop {
            let line = lines.expect()?;
            let end = line == b"\\.";
            if !end {
                chunk.push(check_event(line, tenant, &mut chains)?);
                buf.extend_from_slice(line);
                buf.push(b'\n');
                events += 1;
            }
            if (end && !chunk.is_empty()) || chunk.len() >= CHUNK {
                let next = (Vec::with_capacity(buf.capacity()), Vec::with_capacity(CHUNK));
                let full = (std::mem::replace(&mut buf, next.0), std::mem::replace(&mut chunk, next.1));
                if send.blocking_send(full).is_err() {
                    return Err(refuse("the import stopped"));
                }
            }
            if end {
                return Ok((lines, chains.len() as u64, events));
            }
        }
    });
    let mut loaded = Ok(());
    while let Some((buf, mut chunk)) = chunks.recv().await {
        loaded = load_events(&mut tx, &buf, &mut chunk).await;
        if loaded.is_err() {
            break;
        }
    }
    drop(chunks);
    let read = reader.await.map_err(|e| StoreError::Corrupt(format!("the archive reader failed: {e}")))?;
    // The loader's error says why the reader stopped, when it was the one to stop first.
    loaded?;
    let (mut lines, streams, events) = read?;
    let derived = started.elapsed();

    // The inline tables, derived from the events just loaded, must equal the archive's.

    for table in DERIVED {
        let cols = section(lines.expect()?, table)?;
        if cols != columns(tx.conn(), table).await? {
            return Err(refuse(format!("the {table} section has other columns than this database")));
        }
        let mut derived: Vec<u8> = Vec::new();
        {
            let mut stream = tx.conn().copy_out_raw(&select_rows(table, &cols, tenant)).await?;
            while let Some(chunk) = stream.next().await {
                derived.extend_from_slice(&chunk?);
            }
        }
        let mut archived: Vec<u8> = Vec::with_capacity(derived.len());
        loop {
            let line = lines.expect()?;
            if line == b"\\." {
                break;
            }
            archived.extend_from_slice(line);
            archived.push(b'\n');
        }
        if archived != derived {
            return Err(refuse(format!("the archive's {table} rows differ from what its events derive")));
        }
    }

    tracing::debug!(
        events,
        kept_ms = kept.as_millis() as u64,
        events_ms = (derived - kept).as_millis() as u64,
        compare_ms = (started.elapsed() - derived).as_millis() as u64,
        "import phases"
    );
    let end = lines.expect()?.to_vec();
    let digest = hex::encode(lines.sha.finalize_reset());
    let trailer: serde_json::Value = std::str::from_utf8(&end)
        .ok()
        .and_then(|t| t.strip_prefix("@end "))
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| refuse("the archive has no end line (truncated)"))?;
    if trailer["sha256"].as_str() != Some(digest.as_str()) {
        return Err(refuse("the archive's digest does not match its contents"));
    }
    if let Some(h) = lines.seal.take() {
        let seal = trailer["seal"].as_str().and_then(|s| hex::decode(s).ok());
        match seal {
            None => return Err(refuse("the archive is not sealed (exported without the master key)")),
            Some(s) if h.verify_slice(&s).is_err() => {
                return Err(refuse(
                    "the archive's seal does not match: it was changed, or sealed with another master key",
                ));
            }
            Some(_) => {}
        }
    }
    if trailer["events"].as_u64() != Some(events) {
        return Err(refuse("the archive's event count does not match its events"));
    }
    if lines.next()?.is_some() {
        return Err(refuse("the archive has data after its end line"));
    }

    let run = record_imported(&mut tx, source).await?;
    sqlx::query("SELECT pg_notify($1, '')").bind(crate::EVENTS_CHANNEL).execute(tx.conn()).await?;
    tx.commit().await?;
    Ok(Imported {
        tenant_id: tenant,
        events,
        streams,
        first_position: run.map_or(0, |(first, _)| first),
        last_position: run.map_or(0, |(_, last)| last.position),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields_unescape_as_postgresql_writes_them() {
        assert_eq!(field(b"\\N"), None);
        assert_eq!(field(b"plain").unwrap().as_ref(), b"plain");
        assert_eq!(field(b"a\\tb\\nc\\\\d").unwrap().as_ref(), b"a\tb\nc\\d");
        assert_eq!(field(b"\\101\\x42").unwrap().as_ref(), b"AB");
        // bytea in hex output: the backslash of `\x` is doubled by COPY.
        assert_eq!(bytea(&field(b"\\\\x0aff"), "h").unwrap(), Some(vec![0x0a, 0xff]));
    }

    #[test]
    fn timestamps_in_iso_utc_parse_to_the_microsecond() {
        let t = DateTime::parse_from_str("2026-11-30 16:07:18.123456+00", "%Y-%m-%d %H:%M:%S%.f%#z").unwrap();
        assert_eq!(t.timestamp_subsec_micros(), 123_456);
        assert!(DateTime::parse_from_str("2026-11-30 16:07:18+00", "%Y-%m-%d %H:%M:%S%.f%#z").is_ok());
    }
}
