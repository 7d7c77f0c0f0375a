//! `keel audit export|verify` and `keel keys rotate`: the command line's side of
//! `docs/guarantees.md` ("Audit", "Erasure").

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use keel_domain::TenantId;
use keel_store::audit::{self, EventFilter};
use keel_store::{MasterKey, RecordedEvent, Store};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::io::Write;

/// One exported line: the event as stored, with personal data opened (or `[erased]`).
pub fn export_line(e: &RecordedEvent) -> serde_json::Value {
    json!({
        "position": e.position,
        "transaction_id": e.xid.to_string(),
        "tenant_id": e.tenant_id.0,
        "stream_type": e.stream_type,
        "stream_id": e.stream_id,
        "stream_version": e.stream_version,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "payload": e.payload,
        "metadata": e.metadata,
        "recorded_at": e.recorded_at,
        "prev_hash": e.prev_hash.as_ref().map(hex::encode),
        "hash": hex::encode(&e.hash),
    })
}

/// Writes the tenant's events to `out` as NDJSON in position order, a page at a time inside one
/// snapshot (so the file is one consistent cut of the log, and memory stays constant). Returns
/// how many events were written.
pub async fn export(
    store: &Store,
    tenant: TenantId,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    out: impl Write,
) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(out);
    let mut tx = store.begin_read_snapshot(tenant).await?;
    let filter = EventFilter { from, to, ..EventFilter::default() };
    let (mut after, mut n) = (0i64, 0u64);
    loop {
        let page = audit::events(&mut tx, &filter, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            serde_json::to_writer(&mut out, &export_line(e))?;
            out.write_all(b"\n")?;
            n += 1;
        }
    }
    tx.rollback().await?;
    out.flush()?;
    Ok(n)
}

/// Recomputes every hash chain (of one tenant, or all) and prints a summary; a broken link is
/// printed with its stream, version and position and ends in an error (exit code 1).
pub async fn verify(store: &Store, tenant: Option<uuid::Uuid>) -> anyhow::Result<()> {
    let mut conn = store.projector().unit().await?;
    let report = audit::verify(&mut conn, tenant, |n| {
        if n % 100_000 == 0 {
            eprintln!("keel: verified {n} events");
        }
    })
    .await?;
    println!("verified {} events in {} streams of {} tenants", report.events, report.streams, report.tenants);
    if let Some(b) = report.first_break {
        println!(
            "BROKEN: tenant {} stream {} version {} position {}: {}",
            b.tenant_id, b.stream_id, b.stream_version, b.position, b.reason
        );
        bail!(
            "the hash chain is broken at stream {} version {} (position {})",
            b.stream_id,
            b.stream_version,
            b.position
        );
    }
    println!("every hash chain holds");
    Ok(())
}

/// Re-seals every data key under `new`, in one transaction as `keel_keys` (which sees every
/// tenant's keys and nothing else). Events are not touched.
/// Every dedicated database's keys first, then the pool's with the sealed database URLs
/// (docs/tenancy.md): until the pool's commit the URLs open with the old key, so a rotation
/// stopped part way is run again with the old key.
pub async fn rotate_keys(database_url: &str, old: &MasterKey, new: &MasterKey) -> anyhow::Result<u64> {
    let mut conn = PgConnection::connect(database_url).await.context("cannot connect (DATABASE_URL)")?;
    let mut n = 0;
    for (name, url) in keel_store::placement::urls(&mut conn, Some(old)).await? {
        let mut c = PgConnection::connect(&url).await.with_context(|| format!("cannot connect to database {name}"))?;
        n += keel_store::crypto::rotate_as_keys_role(&mut c, old, new).await?;
        let _ = c.close().await;
    }
    n += keel_store::crypto::rotate_as_keys_role(&mut conn, old, new).await?;
    let mut tx = conn.begin().await?;
    keel_store::placement::reseal(&mut tx, old, new).await?;
    tx.commit().await?;
    Ok(n)
}
