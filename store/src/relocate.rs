//! Moving a tenant between databases while it serves (docs/tenancy.md, "Moving a tenant").
//!
//! 1. **Copy**: the tenant's events, in the source's gap-safe log order, a batch per target
//!    transaction: COPY in, every hash chain checked on the way, its inline tables applied, the
//!    batch recorded as imported (events out do not send it again) and the source position
//!    reached stored with it (`tenant_arrivals`), so a move resumes exactly where it stopped.
//! 2. **Catch up** the tail the same way until a batch is short.
//! 3. **Fence**: the source's fence lock, held exclusively, makes the tenant's appends wait (the
//!    write path takes it shared per event). The last events, data keys and idempotency keys are
//!    copied; the chains' heads and counts compared end to end; the target commits. The source
//!    then records the tenant as departed (its appends are refused from then on, and the write
//!    path follows the directory) and the directory names the target, reading from the source
//!    until the target's read models have caught up. A fence that would outlast its bound is
//!    rolled back and tried again after more catching up: writes wait, never fail.
//! 4. **Serve**: once every read model of the target has passed the last copied event, reads go
//!    there too.
//! 5. **Retire** the source's rows at once (`purge`) or after the retention period.
//!
//! The tenant is never in two places: the directory has one row, and the source refuses its
//! appends before the directory names the target. Between the source's refusal and the
//! directory's switch (a crash there), commands wait and then answer 503; a run of the move
//! again finishes the switch.

use crate::archive::{EVENT_COLUMNS, SESSION, check_event, field, refuse};
use crate::error::StoreError;
use crate::placement::{CHANNEL, POOL};
use crate::{LogPosition, MasterKey, TenantTx};
use futures::StreamExt;
use keel_domain::TenantId;
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The databases of a move, each by its owner's login.
pub struct Ends {
    /// The platform's own database (the pool): the directory and the move's record.
    pub control: PgPool,
    pub source: PgPool,
    pub source_name: String,
    pub target: PgPool,
    pub target_name: String,
    pub master: Option<MasterKey>,
}

pub struct MoveOptions<'a> {
    /// The longest the tenant's writes may wait at the switch.
    pub fence: Duration,
    /// Retire the source's rows right after the switch.
    pub purge: bool,
    /// How long the source's rows are kept otherwise.
    pub retention: Duration,
    /// How long to wait for the target's read models to catch up before giving up (the move can
    /// be run again).
    pub catch_up: Duration,
    /// Told each step as it completes: `batch`, `target-final`, `departed`, `switched`,
    /// `serving`, `retired` (progress, and where a test stops the process).
    pub step: &'a (dyn Fn(&str) + Sync),
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Moved {
    pub events: u64,
    /// The longest the tenant's writes waited (the fence that switched, from its lock to its
    /// release).
    pub fence_ms: u64,
    /// Fences rolled back because they would have outlasted their bound.
    pub fences_abandoned: u32,
    /// Events copied under the fence.
    pub fenced_events: u64,
    pub resumed: bool,
}

/// Events per copy transaction before the fence.
const BATCH: usize = 20_000;
/// Catching up stops, and the fence is tried, once a batch brings fewer events than this.
const SHORT: usize = 200;
const FENCE_TRIES: u32 = 20;
/// At most this many events are copied under the fence (more: catch up first).
const FENCED_MAX: usize = 2_000;

/// Each stream's last version and hash.
type Chains = HashMap<Uuid, (i64, [u8; 32])>;

async fn tenant_tx(pool: &PgPool, tenant: Uuid, master: Option<&MasterKey>) -> Result<TenantTx, StoreError> {
    let mut tx = TenantTx::begin_owner(pool, TenantId(tenant), master.cloned()).await?;
    sqlx::raw_sql(SESSION).execute(tx.conn()).await?;
    Ok(tx)
}

/// Moves `tenant` from `ends.source` to `ends.target`, or resumes the move under way.
pub async fn run(ends: &Ends, tenant: Uuid, opts: &MoveOptions<'_>) -> Result<Moved, StoreError> {
    if ends.master.is_none() {
        return Err(StoreError::Config(
            "a move opens personal data to apply the inline tables: set KEEL_MASTER_KEY".into(),
        ));
    }
    // One move of a tenant at a time: a session lock on the platform's database, held by this
    // connection until the move ends (or its process does).
    let mut guard = ends.control.acquire().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('keel.move:' || $1::text, 0))")
        .bind(tenant)
        .fetch_one(&mut *guard)
        .await?;
    if !mine {
        return Err(StoreError::Placement(format!("another move of tenant {tenant} is running")));
    }
    let result = run_locked(ends, tenant, opts).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended('keel.move:' || $1::text, 0))")
        .bind(tenant)
        .execute(&mut *guard)
        .await;
    result
}

async fn run_locked(ends: &Ends, tenant: Uuid, opts: &MoveOptions<'_>) -> Result<Moved, StoreError> {
    let mut moved = Moved::default();
    let mut step = begin(ends, tenant, opts.purge, &mut moved).await?;
    // Stopped between the source's departure and the directory's switch: the copy is whole;
    // only the switch is left.
    let departed_to: Option<String> = {
        let mut tx = tenant_tx(&ends.source, tenant, None).await?;
        let to = sqlx::query_scalar("SELECT to_database FROM tenants_departed WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(tx.conn())
            .await?;
        tx.rollback().await?;
        to
    };
    if step == "copying" && departed_to.as_deref() == Some(ends.target_name.as_str()) {
        step = "switched".into();
    }
    if step == "copying" {
        prepare_target(ends, tenant).await?;
        let mut chains = target_chains(ends, tenant).await?;
        let mut tries = 0;
        loop {
            // Bulk copy, then the tail, until what is left is small enough to copy under the
            // fence (a long transaction elsewhere can hold the gap-safe horizon back: then wait).
            loop {
                let n = copy_batch(ends, tenant, &mut chains).await?;
                moved.events += n as u64;
                if n > 0 {
                    (opts.step)("batch");
                }
                if n < SHORT && left_to_copy(ends, tenant).await? <= FENCED_MAX as i64 {
                    break;
                }
                if n == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // Everything up to the copy's cursor is the same on both sides before the fence;
            // under it only the tail is copied, each event continuing its checked chain.
            check_copied(ends, tenant).await?;
            match fence(ends, tenant, &mut chains, opts, &mut moved).await? {
                true => break,
                false => {
                    tries += 1;
                    moved.fences_abandoned += 1;
                    if tries >= FENCE_TRIES {
                        return Err(StoreError::Placement(format!(
                            "the tenant's last writes could not be copied within the fence of {} ms in {tries} tries; \
                             nothing changed: run the move again, or with a longer --fence",
                            opts.fence.as_millis()
                        )));
                    }
                    // The chains may hold the rolled-back batch: read them again.
                    chains = target_chains(ends, tenant).await?;
                }
            }
        }
    }
    if step == "copying" || step == "switched" {
        finish_switch(ends, tenant).await?;
        (opts.step)("switched");
        wait_for_read_models(ends, tenant, opts.catch_up).await?;
        let mut c = ends.control.acquire().await?;
        let mut tx = c.begin().await?;
        sqlx::query("UPDATE tenant_placements SET reads_from = NULL WHERE tenant_id = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        set_step(&mut tx, tenant, "serving").await?;
        notify(&mut tx, tenant).await?;
        tx.commit().await?;
        (opts.step)("serving");
    }
    // Serving from the target now. The source's rows go now or after the retention period;
    // instances that read the directory a moment ago look once more before then.
    let purge: bool = sqlx::query_scalar("SELECT purge FROM tenant_moves WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&ends.control)
        .await?;
    if purge {
        tokio::time::sleep(crate::placement::CACHE_TTL + Duration::from_secs(1)).await;
        // The source's events out send what it held before they are deleted (the target skips
        // them as imported).
        wait_for_events_out(ends, tenant, opts.catch_up).await?;
        retire(&ends.source, tenant).await?;
        (opts.step)("retired");
    }
    let mut c = ends.control.acquire().await?;
    set_step(&mut c, tenant, "done").await?;
    Ok(moved)
}

async fn set_step(conn: &mut PgConnection, tenant: Uuid, step: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenant_moves SET step = $2, updated_at = now() WHERE tenant_id = $1")
        .bind(tenant)
        .bind(step)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn notify(conn: &mut PgConnection, tenant: Uuid) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(tenant.to_string()).execute(&mut *conn).await?;
    Ok(())
}

/// The move of `tenant` under way, if any: (from, to).
pub async fn under_way(control: &PgPool, tenant: Uuid) -> Result<Option<(String, String)>, StoreError> {
    Ok(sqlx::query_as("SELECT from_database, to_database FROM tenant_moves WHERE tenant_id = $1 AND step <> 'done'")
        .bind(tenant)
        .fetch_optional(control)
        .await?)
}

/// Starts the move's record, or finds the one under way; its step.
async fn begin(ends: &Ends, tenant: Uuid, purge: bool, moved: &mut Moved) -> Result<String, StoreError> {
    let mut c = ends.control.acquire().await?;
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT from_database, to_database, step FROM tenant_moves WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *c)
            .await?;
    if let Some((from, to, step)) = row
        && step != "done"
    {
        if from != ends.source_name || to != ends.target_name {
            return Err(StoreError::Placement(format!(
                "a move of tenant {tenant} from {from} to {to} is under way: run it again with --to {to}"
            )));
        }
        moved.resumed = true;
        return Ok(step);
    }
    let at = crate::placement::placement_of(&mut c, tenant).await?;
    if at.database != ends.source_name {
        return Err(StoreError::Placement(format!(
            "tenant {tenant} lives in {}, not {}",
            at.database, ends.source_name
        )));
    }
    if ends.source_name == ends.target_name {
        return Err(StoreError::Placement(format!("tenant {tenant} lives in {} already", ends.target_name)));
    }
    if at.reads_from.is_some() {
        return Err(StoreError::Placement(format!("tenant {tenant} is still settling in after its last move")));
    }
    sqlx::query(
        "INSERT INTO tenant_moves (tenant_id, from_database, to_database, step, purge) VALUES ($1, $2, $3, 'copying', $4)
         ON CONFLICT (tenant_id) DO UPDATE SET from_database = $2, to_database = $3, step = 'copying', purge = $4,
             started_at = now(), updated_at = now(), fence_ms = NULL",
    )
    .bind(tenant)
    .bind(&ends.source_name)
    .bind(&ends.target_name)
    .bind(purge)
    .execute(&mut *c)
    .await?;
    Ok("copying".into())
}

/// The target must hold nothing of the tenant but what this move copied: rows it kept from an
/// earlier departure are retired first.
async fn prepare_target(ends: &Ends, tenant: Uuid) -> Result<(), StoreError> {
    // Rows kept from when the tenant left the target are stale: retired (a partial copy of
    // this move too, while the target still counts the tenant as departed: the copy starts
    // again).
    let departed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants_departed WHERE tenant_id = $1)")
        .bind(tenant)
        .fetch_one(&ends.target)
        .await?;
    if departed {
        retire(&ends.target, tenant).await?;
        // Retired: the target takes the tenant's copy now (a resumed move keeps what it copied).
        let mut c = ends.target.acquire().await?;
        let mut tx = c.begin().await?;
        sqlx::query("SELECT set_config('keel.tenant_id', $1, true)").bind(tenant.to_string()).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM tenants_departed WHERE tenant_id = $1").bind(tenant).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let arriving: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenant_arrivals WHERE tenant_id = $1 AND from_database = $2)")
            .bind(tenant)
            .bind(&ends.source_name)
            .fetch_one(&ends.target)
            .await?;
    if !arriving && crate::archive::has_events(&mut *ends.target.acquire().await?, tenant).await? {
        return Err(StoreError::Placement(format!(
            "database {} holds events of tenant {tenant} that no move brought there",
            ends.target_name
        )));
    }
    Ok(())
}

/// The chains' heads as the target has them.
async fn target_chains(ends: &Ends, tenant: Uuid) -> Result<Chains, StoreError> {
    let mut tx = tenant_tx(&ends.target, tenant, None).await?;
    let rows: Vec<(Uuid, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT DISTINCT ON (stream_id) stream_id, stream_version, hash FROM events WHERE tenant_id = $1
          ORDER BY stream_id, stream_version DESC",
    )
    .bind(tenant)
    .fetch_all(tx.conn())
    .await?;
    tx.rollback().await?;
    rows.into_iter()
        .map(|(s, v, h)| Ok((s, (v, h.try_into().map_err(|_| StoreError::Corrupt("a hash is not 32 bytes".into()))?))))
        .collect()
}

/// Where the copy stands in the source's log order (the start when nothing was copied).
async fn cursor(target: &mut PgConnection, tenant: Uuid) -> Result<LogPosition, StoreError> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT source_xid, source_position FROM tenant_arrivals WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *target)
            .await?;
    Ok(match row {
        Some((x, p)) => {
            LogPosition { xid: x.parse().map_err(|_| StoreError::Corrupt(format!("bad xid8 {x}")))?, position: p }
        }
        None => LogPosition::START,
    })
}

/// The source's events of `tenant` after `after`, as COPY text lines without their last two
/// fields (transaction id and position), with the position of the last one. Gap-safe (never past
/// a transaction still running) unless the fence holds the tenant's writers.
async fn read_source(
    source: &mut PgConnection,
    tenant: Uuid,
    after: LogPosition,
    limit: Option<usize>,
    fenced: bool,
) -> Result<(Vec<Vec<u8>>, LogPosition), StoreError> {
    let sql = format!(
        "COPY (SELECT {EVENT_COLUMNS}, transaction_id, position FROM events
                WHERE tenant_id = '{tenant}' AND (transaction_id, position) > ('{}'::xid8, {}) {}
                ORDER BY transaction_id, position {}) TO STDOUT",
        after.xid,
        after.position,
        if fenced { "" } else { "AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())" },
        limit.map(|l| format!("LIMIT {l}")).unwrap_or_default()
    );
    let mut lines = Vec::new();
    let mut last = after;
    let mut pending: Vec<u8> = Vec::new();
    {
        let mut stream = source.copy_out_raw(&sql).await?;
        while let Some(chunk) = stream.next().await {
            pending.extend_from_slice(&chunk?);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let line = &line[..line.len() - 1];
                let mut cut = line.len();
                let mut tail = Vec::new();
                for _ in 0..2 {
                    let tab =
                        line[..cut].iter().rposition(|b| *b == b'\t').ok_or_else(|| refuse("a short event line"))?;
                    tail.push(&line[tab + 1..cut]);
                    cut = tab;
                }
                let num = |f: &[u8]| -> Result<u64, StoreError> {
                    std::str::from_utf8(field(f).as_deref().unwrap_or_default())
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| refuse("a position does not parse"))
                };
                last = LogPosition { xid: num(tail[1])?, position: num(tail[0])? as i64 };
                lines.push(line[..cut].to_vec());
            }
        }
    }
    Ok((lines, last))
}

/// Writes `lines` (checked against `chains`) into the target in `tx`: COPY, inline tables, the
/// imported range, the arrival's cursor. Returns the target's position of the last one.
async fn write_target(
    tx: &mut TenantTx,
    ends: &Ends,
    source: &mut PgConnection,
    tenant: Uuid,
    lines: &[Vec<u8>],
    chains: &mut Chains,
    reached: LogPosition,
) -> Result<Option<LogPosition>, StoreError> {
    sqlx::query("SET LOCAL keel.bulk = 'on'").execute(tx.conn()).await?;
    // The data keys first: applying the inline tables opens personal data with them.
    copy_member_keys(source, tx.conn(), tenant).await?;
    let mut last = None;
    if !lines.is_empty() {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        let mut events = Vec::with_capacity(lines.len());
        for l in lines {
            events.push(check_event(l, tenant, chains)?);
            buf.extend_from_slice(l);
            buf.push(b'\n');
        }
        crate::archive::load_events(tx, &buf, &mut events).await?;
        last = crate::archive::record_imported(tx, &format!("move from {}", ends.source_name)).await?.map(|(_, l)| l);
    }
    sqlx::query(
        "INSERT INTO tenant_arrivals (tenant_id, from_database, source_xid, source_position, events, last_xid, last_position)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id) DO UPDATE SET source_xid = $3, source_position = $4,
             events = tenant_arrivals.events + $5, last_xid = COALESCE($6, tenant_arrivals.last_xid),
             last_position = COALESCE($7, tenant_arrivals.last_position), complete = false, updated_at = now()",
    )
    .bind(tenant)
    .bind(&ends.source_name)
    .bind(reached.xid.to_string())
    .bind(reached.position)
    .bind(lines.len() as i64)
    .bind(last.map(|l: LogPosition| l.xid.to_string()))
    .bind(last.map(|l| l.position))
    .execute(tx.conn())
    .await?;
    Ok(last)
}

/// One gap-safe batch from the source into the target, committed; how many events it copied.
async fn copy_batch(ends: &Ends, tenant: Uuid, chains: &mut Chains) -> Result<usize, StoreError> {
    let mut tx = tenant_tx(&ends.target, tenant, ends.master.as_ref()).await?;
    let after = cursor(tx.conn(), tenant).await?;
    let mut src = ends.source.acquire().await?;
    let mut read = src.begin().await?;
    sqlx::query("SELECT set_config('keel.tenant_id', $1, true)").bind(tenant.to_string()).execute(&mut *read).await?;
    sqlx::raw_sql(SESSION).execute(&mut *read).await?;
    let (lines, reached) = read_source(&mut read, tenant, after, Some(BATCH), false).await?;
    if lines.is_empty() {
        read.rollback().await?;
        tx.rollback().await?;
        return Ok(0);
    }
    let mut snapshot = chains.clone();
    write_target(&mut tx, ends, &mut read, tenant, &lines, &mut snapshot, reached).await?;
    read.rollback().await?;
    tx.commit().await?;
    *chains = snapshot;
    Ok(lines.len())
}

/// Copies the tenant's data keys from the source, as they are now (a rotation or a new member
/// since the last copy included).
async fn copy_member_keys(
    source: &mut PgConnection,
    target: &mut PgConnection,
    tenant: Uuid,
) -> Result<(), StoreError> {
    type Key = (Uuid, Vec<u8>, String, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>);
    let keys: Vec<Key> = sqlx::query_as(
        "SELECT member_id, wrapped_key, master_key_id, created_at, rotated_at FROM member_keys WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&mut *source)
    .await?;
    for (member, wrapped, key_id, created, rotated) in keys {
        sqlx::query(
            "INSERT INTO member_keys (tenant_id, member_id, wrapped_key, master_key_id, created_at, rotated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, member_id) DO UPDATE
                SET wrapped_key = $3, master_key_id = $4, created_at = $5, rotated_at = $6",
        )
        .bind(tenant)
        .bind(member)
        .bind(wrapped)
        .bind(key_id)
        .bind(created)
        .bind(rotated)
        .execute(&mut *target)
        .await?;
    }
    Ok(())
}

/// Copies the tenant's idempotency keys as they are now; an answer's token that names no
/// database is the source's, and is written naming it.
async fn copy_idempotency_keys(
    source: &mut PgConnection,
    target: &mut PgConnection,
    tenant: Uuid,
    from: &str,
) -> Result<(), StoreError> {
    type Key = (String, Vec<u8>, Option<i32>, Option<serde_json::Value>, chrono::DateTime<chrono::Utc>);
    let keys: Vec<Key> = sqlx::query_as(
        "SELECT key, request_hash, status, response, created_at FROM idempotency_keys WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&mut *source)
    .await?;
    for (key, hash, status, mut response, created) in keys {
        if let Some(t) = response.as_ref().and_then(|r| r["position"].as_str()).filter(|t| !t.contains('@')) {
            let tagged = format!("{t}@{from}");
            if let Some(r) = response.as_mut() {
                r["position"] = tagged.into();
            }
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, response, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = $3, status = $4, response = $5, created_at = $6",
        )
        .bind(tenant)
        .bind(key)
        .bind(hash)
        .bind(status)
        .bind(response)
        .bind(created)
        .execute(&mut *target)
        .await?;
    }
    Ok(())
}

/// How many of the tenant's source events lie past the copy's cursor, committed or not yet
/// visible to the gap-safe read.
async fn left_to_copy(ends: &Ends, tenant: Uuid) -> Result<i64, StoreError> {
    let after = cursor(&mut *ends.target.acquire().await?, tenant).await?;
    let mut c = ends.source.acquire().await?;
    let mut tx = c.begin().await?;
    sqlx::query("SELECT set_config('keel.tenant_id', $1, true)").bind(tenant.to_string()).execute(&mut *tx).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND (transaction_id, position) > ($2::text::xid8, $3)",
    )
    .bind(tenant)
    .bind(after.xid.to_string())
    .bind(after.position)
    .fetch_one(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(n)
}

/// Compares what the target holds with the source's events up to the copy's cursor (which no
/// late commit can change): the same number, and every stream's head (version and hash).
async fn check_copied(ends: &Ends, tenant: Uuid) -> Result<(), StoreError> {
    let mut t = tenant_tx(&ends.target, tenant, None).await?;
    let upto = cursor(t.conn(), tenant).await?;
    let have = heads(t.conn(), tenant, None).await?;
    t.rollback().await?;
    let mut c = ends.source.acquire().await?;
    let mut s = c.begin().await?;
    sqlx::query("SELECT set_config('keel.tenant_id', $1, true)").bind(tenant.to_string()).execute(&mut *s).await?;
    let want = heads(&mut s, tenant, Some(upto)).await?;
    s.rollback().await?;
    if want != have {
        return Err(StoreError::Placement(format!(
            "the copy does not match the source ({} events against {}); nothing was switched",
            have.0, want.0
        )));
    }
    Ok(())
}

/// Each stream's head and the number of events: equal on both sides when the copy is whole.
/// `upto`: only the events at or before that position of the log.
async fn heads(conn: &mut PgConnection, tenant: Uuid, upto: Option<LogPosition>) -> Result<(i64, String), StoreError> {
    let (xid, position) = match upto {
        Some(p) => (Some(p.xid.to_string()), Some(p.position)),
        None => (None, None),
    };
    Ok(sqlx::query_as(
        "WITH mine AS (SELECT stream_id, stream_version, hash FROM events WHERE tenant_id = $1
                         AND ($2::text IS NULL OR (transaction_id, position) <= ($2::text::xid8, $3)))
         SELECT (SELECT count(*) FROM mine),
                COALESCE(string_agg(h, ',' ORDER BY h), '')
           FROM (SELECT DISTINCT ON (stream_id) stream_id::text || ':' || stream_version || ':' || encode(hash, 'hex') AS h
                   FROM mine ORDER BY stream_id, stream_version DESC) s",
    )
    .bind(tenant)
    .bind(xid)
    .bind(position)
    .fetch_one(&mut *conn)
    .await?)
}

/// The fence: the tenant's writes wait while the last events are copied and the switch is
/// made. `false` when it would have outlasted its bound (rolled back: nothing changed).
async fn fence(
    ends: &Ends,
    tenant: Uuid,
    chains: &mut Chains,
    opts: &MoveOptions<'_>,
    moved: &mut Moved,
) -> Result<bool, StoreError> {
    let mut src = ends.source.acquire().await?;
    let mut s = src.begin().await?;
    sqlx::query("SELECT set_config('keel.tenant_id', $1, true)").bind(tenant.to_string()).execute(&mut *s).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "{SESSION}; SET LOCAL lock_timeout = {}",
        opts.fence.as_millis().max(1)
    )))
    .execute(&mut *s)
    .await?;
    match sqlx::query("SELECT pg_advisory_xact_lock(keel_fence_key($1))").bind(tenant).execute(&mut *s).await {
        Ok(_) => {}
        // Writers held the lock past the bound: try again after the next catch-up.
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let fenced_at = Instant::now();
    let budget = opts.fence.mul_f64(0.8);
    // The source must still be the tenant's home: not departed (another move, or this one's
    // earlier run, switched it away) and named by the directory.
    let departed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants_departed WHERE tenant_id = $1)")
        .bind(tenant)
        .fetch_one(&mut *s)
        .await?;
    let home = crate::placement::placement_of(&mut *ends.control.acquire().await?, tenant).await?.database;
    if departed || home != ends.source_name {
        return Err(StoreError::Placement(format!(
            "tenant {tenant} no longer lives in {} (the directory names {home}); nothing was switched",
            ends.source_name
        )));
    }
    // Every writer of the tenant has committed or waits: what is in the log is all there is.
    // Nothing under the fence may take longer than its bound: past it, it is rolled back.
    let timeout = format!("SET LOCAL statement_timeout = {}", budget.as_millis().max(1));
    sqlx::raw_sql(sqlx::AssertSqlSafe(timeout.clone())).execute(&mut *s).await?;
    let mut tx = tenant_tx(&ends.target, tenant, ends.master.as_ref()).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(timeout)).execute(tx.conn()).await?;
    let mut snapshot = chains.clone();
    let copied = async {
        let after = cursor(tx.conn(), tenant).await?;
        let (lines, reached) = read_source(&mut s, tenant, after, Some(FENCED_MAX + 1), true).await?;
        if lines.len() > FENCED_MAX {
            return Ok(None);
        }
        write_target(&mut tx, ends, &mut s, tenant, &lines, &mut snapshot, reached).await?;
        copy_idempotency_keys(&mut s, tx.conn(), tenant, &ends.source_name).await?;
        sqlx::query("DELETE FROM tenants_departed WHERE tenant_id = $1").bind(tenant).execute(tx.conn()).await?;
        Ok::<_, StoreError>(Some(lines.len()))
    }
    .await;
    let fenced_lines = match copied {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(false),
        Err(e) if e.is_statement_timeout() => return Ok(false),
        Err(e) => return Err(e),
    };
    let arrived: (Option<String>, Option<i64>) = sqlx::query_as(
        "UPDATE tenant_arrivals SET complete = true WHERE tenant_id = $1 RETURNING last_xid, last_position",
    )
    .bind(tenant)
    .fetch_one(tx.conn())
    .await?;
    if fenced_at.elapsed() > budget {
        tx.rollback().await?;
        s.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    *chains = snapshot;
    (opts.step)("target-final");
    // The source refuses the tenant's appends from its commit on; with the source the platform's
    // own database, the directory switches in the same commit.
    sqlx::query(
        "INSERT INTO tenants_departed (tenant_id, to_database, retire_after) VALUES ($1, $2, now() + $3::interval)
         ON CONFLICT (tenant_id) DO UPDATE SET to_database = $2, departed_at = now(), retire_after = now() + $3::interval, retired_at = NULL",
    )
    .bind(tenant)
    .bind(&ends.target_name)
    .bind(format!("{} seconds", opts.retention.as_secs()))
    .execute(&mut *s)
    .await?;
    if ends.source_name == POOL {
        switch_directory(&mut s, tenant, &ends.source_name, &ends.target_name, arrived).await?;
    }
    s.commit().await?;
    moved.fence_ms = fenced_at.elapsed().as_millis() as u64;
    moved.fenced_events = fenced_lines as u64;
    moved.events += fenced_lines as u64;
    sqlx::query("UPDATE tenant_moves SET fence_ms = $2 WHERE tenant_id = $1")
        .bind(tenant)
        .bind(moved.fence_ms as i32)
        .execute(&ends.control)
        .await?;
    (opts.step)("departed");
    Ok(true)
}

/// The directory names the target, reading from the source until the target caught up.
async fn switch_directory(
    control: &mut PgConnection,
    tenant: Uuid,
    from: &str,
    to: &str,
    arrived: (Option<String>, Option<i64>),
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenant_placements (tenant_id, database, epoch, reads_from, arrived_xid, arrived_position)
         VALUES ($1, $2, 1, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET database = $2, epoch = tenant_placements.epoch + 1, reads_from = $3,
             arrived_xid = $4, arrived_position = $5, placed_at = now()",
    )
    .bind(tenant)
    .bind(to)
    .bind(from)
    .bind(arrived.0)
    .bind(arrived.1)
    .execute(&mut *control)
    .await?;
    set_step(control, tenant, "switched").await?;
    notify(control, tenant).await
}

/// After the fence: the directory names the target (done already when the source is the pool;
/// otherwise done here, also when a crash came between the source's refusal and the switch).
async fn finish_switch(ends: &Ends, tenant: Uuid) -> Result<(), StoreError> {
    let mut c = ends.control.acquire().await?;
    let at = crate::placement::placement_of(&mut c, tenant).await?;
    if at.database == ends.target_name {
        set_step(&mut c, tenant, "switched").await?;
        return Ok(());
    }
    let departed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants_departed WHERE tenant_id = $1)")
        .bind(tenant)
        .fetch_one(&ends.source)
        .await?;
    if !departed {
        return Err(StoreError::Placement(
            "the source has not refused the tenant's writes yet: run the move again".into(),
        ));
    }
    let arrived: (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT last_xid, last_position FROM tenant_arrivals WHERE tenant_id = $1 AND complete")
            .bind(tenant)
            .fetch_one(&ends.target)
            .await?;
    let mut tx = c.begin().await?;
    switch_directory(&mut tx, tenant, &ends.source_name, &ends.target_name, arrived).await?;
    tx.commit().await?;
    Ok(())
}

/// Waits until every read model of the target has applied the last copied event.
async fn wait_for_read_models(ends: &Ends, tenant: Uuid, deadline: Duration) -> Result<(), StoreError> {
    let (xid, position): (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT last_xid, last_position FROM tenant_arrivals WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&ends.target)
            .await?;
    let (Some(xid), Some(position)) = (xid, position) else { return Ok(()) };
    let names: Vec<&str> = crate::read::MODELS.iter().map(|m| m.name).collect();
    let until = Instant::now() + deadline;
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM unnest($1::text[]) AS m(name)
               LEFT JOIN projection_checkpoints c ON c.name = m.name
              WHERE c.name IS NULL OR (c.last_xid, c.last_position) < ($2::text::xid8, $3)",
        )
        .bind(&names)
        .bind(&xid)
        .bind(position)
        .fetch_one(&ends.target)
        .await?;
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(StoreError::Placement(format!(
                "{behind} read models of {} have not caught up with the moved tenant (are its projection workers \
                 running?); the tenant is served, its reads from the database it left: run the move again to finish",
                ends.target_name
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every events-out consumer of the source (`outbound.*`) has passed the tenant's
/// last event there.
async fn wait_for_events_out(ends: &Ends, tenant: Uuid, deadline: Duration) -> Result<(), StoreError> {
    let until = Instant::now() + deadline;
    loop {
        let mut tx = tenant_tx(&ends.source, tenant, None).await?;
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projection_checkpoints c
              WHERE c.name LIKE 'outbound.%'
                AND (c.last_xid, c.last_position) <
                    (SELECT transaction_id, position FROM events WHERE tenant_id = $1
                      ORDER BY transaction_id DESC, position DESC LIMIT 1)",
        )
        .bind(tenant)
        .fetch_one(tx.conn())
        .await?;
        tx.rollback().await?;
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(StoreError::Placement(format!(
                "the events out of {} have not sent the tenant's last events yet; its rows are kept: run the move \
                 again, or retire them later",
                ends.source_name
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every row of a tenant that departed from the database of `pool` (its events included,
/// the one deletion the log allows) and marks it retired.
pub async fn retire(pool: &PgPool, tenant: Uuid) -> Result<u64, StoreError> {
    let mut c = pool.acquire().await?;
    let mut tx = c.begin().await?;
    let departed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants_departed WHERE tenant_id = $1)")
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
    if !departed {
        return Err(StoreError::Placement(format!("tenant {tenant} has not departed from this database")));
    }
    sqlx::query("SELECT set_config('keel.retire', $1, true), set_config('keel.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.table_name::text FROM information_schema.columns c
           JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
          WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
            AND c.table_name NOT IN ('tenants_departed', 'tenant_placements', 'tenant_moves', 'keel_databases')
          ORDER BY (c.table_name = 'events'), c.table_name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut deleted = 0;
    for table in tables {
        let sql = format!("DELETE FROM {} WHERE tenant_id = $1", quote(&table));
        deleted += sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).execute(&mut *tx).await?.rows_affected();
    }
    sqlx::query("UPDATE tenants_departed SET retired_at = now() WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(deleted)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Retires every tenant that departed from the database of `pool` and whose retention has passed
/// (every one with `now`); the tenants retired.
pub async fn retire_due(pool: &PgPool, now: bool) -> Result<Vec<Uuid>, StoreError> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM tenants_departed WHERE retired_at IS NULL AND ($1 OR retire_after <= now()) ORDER BY departed_at",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    for t in &due {
        retire(pool, *t).await?;
    }
    Ok(due)
}
