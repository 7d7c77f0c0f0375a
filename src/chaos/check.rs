//! The checks of `keel chaos`, run after the load: each judges what clients were answered
//! against what the log holds. They read the database as its owner with their own SQL (the one
//! file of the harness that has any), so the verdict does not rest on the code it judges.

use super::load::{Answer, Class, CommandRecord};
use anyhow::Context;
use keel_domain::Plan;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;
use uuid::Uuid;

/// Shown in the report: at most this many violations of a check are listed (all are counted).
const LISTED: usize = 25;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    /// How many things it looked at (commands, events, rows...).
    pub checked: u64,
    pub violations: u64,
    /// The first violations, each naming the request, what it was answered and what the log holds.
    pub listed: Vec<String>,
}

impl CheckResult {
    fn new(name: &'static str) -> CheckResult {
        CheckResult { name, checked: 0, violations: 0, listed: Vec::new() }
    }

    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.listed.len() < LISTED {
            self.listed.push(what);
        }
    }

    pub fn ok(&self) -> bool {
        self.violations == 0
    }
}

/// A connection as the owner, named so that `terminate_backends` never picks it.
async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let opts = PgConnectOptions::from_str(url)?.application_name("keel-chaos");
    Ok(PgConnection::connect_with(&opts).await?)
}

/// Fault (c): every backend of Keel (its pools name themselves `keel`) is terminated.
pub(crate) async fn terminate_backends(url: &str) -> anyhow::Result<u64> {
    let mut c = connect(url).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE application_name = 'keel' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut c)
    .await?;
    let _ = c.close().await;
    Ok(n as u64)
}

/// The projections whose checkpoint is not past every event (or that have none yet).
pub(crate) async fn lagging_projections(url: &str) -> anyhow::Result<Vec<String>> {
    let mut c = connect(url).await?;
    let names: Vec<String> = keel_store::read::MODELS.iter().map(|m| m.name.to_owned()).collect();
    let behind: Vec<String> = sqlx::query_scalar(
        "SELECT n FROM unnest($1::text[]) n
          WHERE NOT EXISTS (SELECT 1 FROM projection_checkpoints c WHERE c.name = n)
             OR EXISTS (SELECT 1 FROM projection_checkpoints c, events e
                         WHERE c.name = n AND (e.transaction_id, e.position) > (c.last_xid, c.last_position))",
    )
    .bind(&names)
    .fetch_all(&mut c)
    .await?;
    let _ = c.close().await;
    Ok(behind)
}

/// One event, as much of it as the checks need.
#[derive(Debug, Clone)]
pub(crate) struct LogRow {
    pub(crate) position: i64,
    pub(crate) xid: u64,
    pub(crate) tenant: Uuid,
    pub(crate) stream_id: Uuid,
    pub(crate) version: i64,
    pub(crate) event_type: String,
    pub(crate) payload: serde_json::Value,
    pub(crate) request_id: Option<String>,
}

impl LogRow {
    fn short(&self) -> String {
        format!("{}@{}.{} (v{} of {})", self.event_type, self.xid, self.position, self.version, self.stream_id)
    }
}

/// The tenants' events in log order.
pub(crate) async fn read_log(url: &str, tenants: &[Uuid]) -> anyhow::Result<Vec<LogRow>> {
    let mut c = connect(url).await?;
    let rows = sqlx::query(
        "SELECT position, transaction_id::text AS xid, tenant_id, stream_id, stream_version, event_type, payload,
                metadata->>'request_id' AS request_id
           FROM events WHERE tenant_id = ANY($1) ORDER BY position",
    )
    .bind(tenants)
    .fetch_all(&mut c)
    .await?;
    let _ = c.close().await;
    rows.iter()
        .map(|r| {
            Ok(LogRow {
                position: r.try_get("position")?,
                xid: r.try_get::<String, _>("xid")?.parse()?,
                tenant: r.try_get("tenant_id")?,
                stream_id: r.try_get("stream_id")?,
                version: r.try_get("stream_version")?,
                event_type: r.try_get("event_type")?,
                payload: r.try_get("payload")?,
                request_id: r.try_get("request_id")?,
            })
        })
        .collect()
}

/// Checks 1–3: every answer against the log.
pub(crate) fn answers(records: &[CommandRecord], log: &[LogRow]) -> [CheckResult; 3] {
    let mut c1 =
        CheckResult::new("every 2xx is in the log exactly once, with the id, version and position it returned");
    let mut c2 = CheckResult::new("no command answered 4xx or a 503 that wrote nothing is in the log");
    let mut c3 = CheckResult::new(
        "every ambiguous request (connection error, 5xx, 503 outcome-unknown/timeout/shutting-down) landed at most once, and its retry exactly once",
    );
    let mut by_request: HashMap<&str, Vec<&LogRow>> = HashMap::new();
    for row in log {
        if let Some(r) = &row.request_id {
            by_request.entry(r.as_str()).or_default().push(row);
        }
    }
    let by_position: HashMap<i64, &LogRow> = log.iter().map(|r| (r.position, r)).collect();
    for rec in records {
        let what = |rid: &str| {
            format!("{} {} {} (key {}, request {rid})", rec.kind, rec.method, rec.path, rec.idempotency_key)
        };
        let rows: Vec<&LogRow> = rec
            .attempts
            .iter()
            .flat_map(|a| by_request.get(a.request_id.as_str()).into_iter().flatten().copied())
            .collect();
        let xids: BTreeSet<u64> = rows.iter().map(|r| r.xid).collect();
        let written = || rows.iter().map(|r| r.short()).collect::<Vec<_>>().join(", ");
        for a in &rec.attempts {
            if matches!(a.answer.class(), Class::Rejected | Class::NotWritten) {
                c2.checked += 1;
                if let Some(found) = by_request.get(a.request_id.as_str()) {
                    let found: Vec<String> = found.iter().map(|r| r.short()).collect();
                    c2.violation(format!(
                        "{} answered {} at {} ms, but the log holds {}",
                        what(&a.request_id),
                        a.answer.label(),
                        a.at_ms,
                        found.join(", ")
                    ));
                }
            }
        }
        let ambiguous = rec.attempts.iter().any(|a| a.answer.class() == Class::Ambiguous);
        if ambiguous {
            c3.checked += 1;
            if xids.len() > 1 {
                c3.violation(format!("{} was written {} times: {}", what(""), xids.len(), written()));
            }
            match rec.outcome() {
                None => c3.violation(format!(
                    "{} never got a definite answer in {} attempts (last: {}); the log holds [{}]",
                    what(&rec.attempts.last().map(|a| a.request_id.clone()).unwrap_or_default()),
                    rec.attempts.len(),
                    rec.attempts.last().map(|a| a.answer.label()).unwrap_or_default(),
                    written()
                )),
                Some(a) if a.answer.class() == Class::Rejected && !xids.is_empty() => c3.violation(format!(
                    "{} was finally answered {} though an earlier attempt was written: {}",
                    what(&a.request_id),
                    a.answer.label(),
                    written()
                )),
                _ => {}
            }
        }
        let Some(done) = rec.outcome().filter(|a| a.answer.class() == Class::Success) else { continue };
        c1.checked += 1;
        let Answer::Http { id, version, position, replayed, .. } = &done.answer else { continue };
        let head = position.as_deref().and_then(|p| {
            let (x, p) = p.split_once('.')?;
            Some((x.parse::<u64>().ok()?, p.parse::<i64>().ok()?))
        });
        let (Some(id), Some(version), Some((xid, pos))) = (id, version, head) else {
            c1.violation(format!(
                "{} answered {} without an id, version and position",
                what(&done.request_id),
                done.answer.label()
            ));
            continue;
        };
        match by_position.get(&pos) {
            None => c1.violation(format!(
                "{} answered {id} v{version} at {xid}.{pos}, but the log has no event at position {pos} (written: [{}])",
                what(&done.request_id),
                written()
            )),
            Some(row) if row.xid != xid || row.stream_id != *id || row.version != *version => c1.violation(format!(
                "{} answered {id} v{version} at {xid}.{pos}, but that position holds {}",
                what(&done.request_id),
                row.short()
            )),
            Some(_) => {}
        }
        if xids.len() > 1 && !ambiguous {
            c1.violation(format!("{} was written {} times: {}", what(&done.request_id), xids.len(), written()));
        } else if xids.len() == 1 && !xids.contains(&xid) {
            c1.violation(format!(
                "{} answered position {xid}.{pos}{}, but its events were written by another transaction: {}",
                what(&done.request_id),
                if *replayed { " (replayed)" } else { "" },
                written()
            ));
        }
    }
    [c1, c2, c3]
}

/// Check 4: replays each tenant's log in position order and checks the plan's limits at every
/// event (active projects, seats, units per calendar month), then that the tenant's counters
/// equal the replay.
pub(crate) async fn quotas(url: &str, tenants: &[Uuid], log: &[LogRow]) -> anyhow::Result<CheckResult> {
    let (mut check, mut counts) = replay_quotas(log);
    // The control plane's counters must say what the log says.
    let mut conn = connect(url).await?;
    let rows = sqlx::query("SELECT tenant_id, seats_used, active_projects FROM tenants WHERE tenant_id = ANY($1)")
        .bind(tenants)
        .fetch_all(&mut conn)
        .await?;
    for r in rows {
        let (t, seats, projects): (Uuid, i32, i32) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let c = counts.entry(t).or_default();
        if (i64::from(seats), i64::from(projects)) != (c.seats, c.projects) {
            check.violation(format!(
                "tenant {t}: the tenants row counts {seats} seats and {projects} active projects, the log {} and {}",
                c.seats, c.projects
            ));
        }
    }
    let rows = sqlx::query(
        "SELECT tenant_id, to_char(month, 'YYYY-MM') AS month, units FROM usage_counters WHERE tenant_id = ANY($1)",
    )
    .bind(tenants)
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    for r in rows {
        let (t, month, units): (Uuid, String, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let logged = counts.get(&t).and_then(|c| c.months.get(&month)).copied().unwrap_or(0);
        if units as u64 != logged {
            check.violation(format!("tenant {t}: usage_counters has {units} units in {month}, the log {logged}"));
        }
    }
    Ok(check)
}

/// A tenant's plan and counts, replayed from its events.
#[derive(Default)]
struct Count {
    plan: Option<Plan>,
    projects: i64,
    seats: i64,
    months: BTreeMap<String, u64>,
    /// The limits already reported (each once per tenant).
    over: BTreeSet<&'static str>,
}

fn replay_quotas(log: &[LogRow]) -> (CheckResult, HashMap<Uuid, Count>) {
    let mut check = CheckResult::new("quotas never exceeded (active projects, seats, usage units per month)");
    let mut counts: HashMap<Uuid, Count> = HashMap::new();
    for row in log {
        check.checked += 1;
        let c = counts.entry(row.tenant).or_default();
        let p = &row.payload;
        match row.event_type.as_str() {
            "TenantProvisioned" => c.plan = p["plan"].as_str().and_then(Plan::parse),
            "TenantPlanChanged" => c.plan = p["to"].as_str().and_then(Plan::parse),
            "MemberInvited" => c.seats += 1,
            "MemberRemoved" => c.seats -= 1,
            "MemberErased" if p["was_active"].as_bool() == Some(true) => c.seats -= 1,
            "ProjectCreated" | "ProjectRestored" => c.projects += 1,
            "ProjectArchived" => c.projects -= 1,
            "UsageRecorded" => {
                for r in p["records"].as_array().into_iter().flatten() {
                    let month =
                        r["occurred_at"].as_str().map(|t| t.get(..7).unwrap_or(t).to_owned()).unwrap_or_default();
                    *c.months.entry(month).or_default() += r["quantity"].as_u64().unwrap_or(0);
                }
            }
            _ => {}
        }
        let Some(plan) = c.plan else { continue };
        let limits: [(&'static str, Option<u64>, i64); 2] =
            [("active projects", plan.active_project_limit(), c.projects), ("seats", plan.seat_limit(), c.seats)];
        let mut found = Vec::new();
        for (what, limit, n) in limits {
            if let Some(l) = limit
                && n > l as i64
                && c.over.insert(what)
            {
                found.push(format!(
                    "tenant {}: {n} {what} on the {} plan (limit {l}) after {}",
                    row.tenant,
                    plan.as_str(),
                    row.short()
                ));
            }
        }
        if let Some(l) = plan.monthly_usage_limit() {
            for (month, units) in &c.months {
                if *units > l && c.over.insert("usage units") {
                    found.push(format!(
                        "tenant {}: {units} usage units in {month} on the {} plan (limit {l}) after {}",
                        row.tenant,
                        plan.as_str(),
                        row.short()
                    ));
                }
            }
        }
        for f in found {
            check.violation(f);
        }
    }
    (check, counts)
}

/// Check 5: `keel audit verify` over every tenant.
pub(crate) async fn hash_chains(keel_bin: &Path, env: &[(String, String)], events: u64) -> anyhow::Result<CheckResult> {
    let mut check = CheckResult::new("every hash chain verifies (keel audit verify)");
    check.checked = events;
    let out = run_keel(keel_bin, env, &["audit", "verify"]).await?;
    if !out.status.success() {
        check.violation(format!("keel audit verify exited {}: {}", out.status, tail(&out)));
    }
    Ok(check)
}

/// Check 6: each read model's tables, row for row, before and after `keel projections rebuild`.
/// No column is left out: a read row is made of the events it applied (their times included),
/// never of the moment it was applied.
pub(crate) async fn rebuilds(url: &str, keel_bin: &Path, env: &[(String, String)]) -> anyhow::Result<CheckResult> {
    let mut check = CheckResult::new("every read table equals a rebuild (keel projections rebuild, all columns)");
    for model in keel_store::read::MODELS {
        let before = read_tables(url, model.tables).await?;
        let out = run_keel(keel_bin, env, &["projections", "rebuild", model.name]).await?;
        if !out.status.success() {
            check.violation(format!("keel projections rebuild {} exited {}: {}", model.name, out.status, tail(&out)));
            continue;
        }
        let after = read_tables(url, model.tables).await?;
        for table in model.tables {
            let (b, a) = (&before[*table], &after[*table]);
            check.checked += b.len() as u64;
            let missing: Vec<&String> = b.iter().filter(|r| a.binary_search(r).is_err()).collect();
            let extra: Vec<&String> = a.iter().filter(|r| b.binary_search(r).is_err()).collect();
            if !missing.is_empty() || !extra.is_empty() {
                let cut = |r: Option<&&String>| r.map(|s| s.chars().take(300).collect::<String>()).unwrap_or_default();
                check.violation(format!(
                    "{table}: {} rows only in the live table (e.g. {}), {} only in the rebuild (e.g. {})",
                    missing.len(),
                    cut(missing.first()),
                    extra.len(),
                    cut(extra.first())
                ));
            }
        }
    }
    Ok(check)
}

/// Every row of each table as text, sorted.
async fn read_tables(url: &str, tables: &[&str]) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut c = connect(url).await?;
    let mut out = BTreeMap::new();
    for table in tables {
        // The names come from the read model registry, never from input.
        let sql = format!("SELECT t::text FROM public.{table} t ORDER BY 1");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut c).await?;
        out.insert((*table).to_owned(), rows);
    }
    let _ = c.close().await;
    Ok(out)
}

/// Check 7: no event was parked.
pub(crate) async fn dead_letters(url: &str) -> anyhow::Result<CheckResult> {
    let mut check = CheckResult::new("no dead letters");
    let mut c = connect(url).await?;
    let rows = sqlx::query(
        "SELECT projection, position, event_type, error FROM projection_dead_letters ORDER BY projection, position",
    )
    .fetch_all(&mut c)
    .await?;
    let _ = c.close().await;
    check.checked = keel_store::read::MODELS.len() as u64;
    for r in rows {
        let (p, pos, t, e): (String, i64, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        check.violation(format!("{p}: {t} at position {pos} parked: {e}"));
    }
    Ok(check)
}

/// Check 8: no request was answered a plain 500. Each one names the cause Keel logged for it
/// (`cause`: by request id) and the fault injected around it.
pub(crate) fn no_500(records: &[CommandRecord], cause: impl Fn(&str, u64, u64) -> String) -> CheckResult {
    let mut check = CheckResult::new("no 500: a fault is answered 503 (or resolved), never 500 internal");
    for rec in records {
        for a in &rec.attempts {
            check.checked += 1;
            if let Answer::Http { status: 500, code, .. } = &a.answer {
                check.violation(format!(
                    "{} {} {} answered 500 {} at {} ms after {} ms (request {}){}",
                    rec.kind,
                    rec.method,
                    rec.path,
                    code.as_deref().unwrap_or("-"),
                    a.at_ms,
                    a.took_ms,
                    a.request_id,
                    cause(&a.request_id, a.at_ms, a.took_ms)
                ));
            }
        }
    }
    check
}

async fn run_keel(bin: &Path, env: &[(String, String)], args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && (k.starts_with("KEEL_") || k == "DATABASE_URL")
        {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))).kill_on_drop(true);
    let run = cmd.output();
    tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .with_context(|| format!("keel {} did not finish in 10 minutes", args.join(" ")))?
        .with_context(|| format!("cannot run {}", bin.display()))
}

fn tail(out: &std::process::Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::load::Attempt;

    fn http(status: u16, code: Option<&str>, id: Uuid, version: i64, position: &str) -> Answer {
        Answer::Http {
            status,
            code: code.map(str::to_owned),
            id: (status < 300).then_some(id),
            version: (status < 300).then_some(version),
            position: (status < 300).then(|| position.to_owned()),
            replayed: false,
            retry_after: false,
        }
    }

    fn attempt(request_id: &str, answer: Answer) -> Attempt {
        Attempt { request_id: request_id.to_owned(), at_ms: 0, took_ms: 1, answer }
    }

    fn command(attempts: Vec<Attempt>) -> CommandRecord {
        CommandRecord {
            tenant: Uuid::nil(),
            kind: "create-project",
            method: "POST",
            path: "/projects".to_owned(),
            body: None,
            idempotency_key: "k".to_owned(),
            attempts,
        }
    }

    fn row(position: i64, xid: u64, stream: Uuid, version: i64, request_id: &str) -> LogRow {
        LogRow {
            position,
            xid,
            tenant: Uuid::nil(),
            stream_id: stream,
            version,
            event_type: "ProjectCreated".to_owned(),
            payload: serde_json::Value::Null,
            request_id: Some(request_id.to_owned()),
        }
    }

    fn violations(records: &[CommandRecord], log: &[LogRow]) -> [u64; 3] {
        answers(records, log).map(|c| c.violations)
    }

    #[test]
    fn a_2xx_matching_its_one_event_passes() {
        let p = Uuid::new_v4();
        let rec = command(vec![attempt("r1", http(201, None, p, 1, "7.3"))]);
        assert_eq!(violations(&[rec], &[row(3, 7, p, 1, "r1")]), [0, 0, 0]);
    }

    #[test]
    fn a_2xx_whose_position_holds_another_event_fails() {
        let p = Uuid::new_v4();
        let rec = command(vec![attempt("r1", http(201, None, p, 1, "7.4"))]);
        assert_eq!(violations(&[rec], &[row(3, 7, p, 1, "r1")]), [1, 0, 0]);
    }

    #[test]
    fn a_rejected_or_503_request_found_in_the_log_fails() {
        let p = Uuid::new_v4();
        let refused = command(vec![attempt("r1", http(409, Some("rule-violated"), p, 0, ""))]);
        let unavailable = command(vec![
            attempt("r2", http(503, Some("database-unavailable"), p, 0, "")),
            attempt("r3", http(422, Some("limit-exceeded"), p, 0, "")),
        ]);
        let log = [row(3, 7, p, 1, "r1"), row(4, 8, Uuid::new_v4(), 1, "r2")];
        assert_eq!(violations(&[refused, unavailable], &log), [0, 2, 0]);
    }

    #[test]
    fn an_ambiguous_request_written_then_replayed_passes_and_written_twice_fails() {
        let p = Uuid::new_v4();
        let once = command(vec![
            attempt("r1", Answer::ConnectionError { error: "reset".into() }),
            attempt("r2", http(201, None, p, 1, "7.3")),
        ]);
        assert_eq!(violations(&[once], &[row(3, 7, p, 1, "r1")]), [0, 0, 0]);
        let q = Uuid::new_v4();
        let log = [row(3, 7, p, 1, "r1"), row(5, 9, q, 1, "r2")];
        let twice = command(vec![
            attempt("r1", Answer::ConnectionError { error: "reset".into() }),
            attempt("r2", http(201, None, q, 1, "9.5")),
        ]);
        assert_eq!(violations(&[twice], &log), [0, 0, 1]);
    }

    #[test]
    fn an_ambiguous_request_finally_refused_though_written_fails_and_one_never_answered_fails() {
        let p = Uuid::new_v4();
        let refused = command(vec![
            attempt("r1", http(500, Some("internal"), p, 0, "")),
            attempt("r2", http(422, Some("limit-exceeded"), p, 0, "")),
        ]);
        assert_eq!(violations(&[refused], &[row(3, 7, p, 1, "r1")]), [0, 0, 1]);
        let open = command(vec![attempt("r1", Answer::ConnectionError { error: "refused".into() })]);
        assert_eq!(violations(&[open], &[]), [0, 0, 1]);
    }

    fn event(position: i64, event_type: &str, payload: serde_json::Value) -> LogRow {
        LogRow { event_type: event_type.to_owned(), payload, ..row(position, position as u64, Uuid::new_v4(), 1, "r") }
    }

    #[test]
    fn a_fourth_active_project_or_a_month_over_the_free_quota_is_found() {
        let mut log = vec![event(1, "TenantProvisioned", serde_json::json!({ "plan": "free" }))];
        for p in 2..=4 {
            log.push(event(p, "ProjectCreated", serde_json::Value::Null));
        }
        assert_eq!(replay_quotas(&log).0.violations, 0, "three projects fit the free plan");
        log.push(event(5, "ProjectArchived", serde_json::Value::Null));
        log.push(event(6, "ProjectRestored", serde_json::Value::Null));
        assert_eq!(replay_quotas(&log).0.violations, 0, "archived, then restored: still three");
        log.push(event(7, "ProjectCreated", serde_json::Value::Null));
        assert_eq!(replay_quotas(&log).0.violations, 1, "a fourth");
        let usage =
            |q: u64| serde_json::json!({ "records": [{ "quantity": q, "occurred_at": "2026-11-30T00:00:00Z" }] });
        let mut log = vec![event(1, "TenantProvisioned", serde_json::json!({ "plan": "free" }))];
        log.push(event(2, "UsageRecorded", usage(9_999)));
        log.push(event(3, "UsageRecorded", usage(1)));
        assert_eq!(replay_quotas(&log).0.violations, 0, "10,000 units fit");
        log.push(event(4, "UsageRecorded", usage(1)));
        assert_eq!(replay_quotas(&log).0.violations, 1, "10,001 do not");
    }

    #[test]
    fn a_500_is_counted() {
        let p = Uuid::new_v4();
        let rec = command(vec![
            attempt("r1", http(500, Some("internal"), p, 0, "")),
            attempt("r2", http(201, None, p, 1, "7.3")),
        ]);
        assert_eq!(no_500(&[rec], |_, _, _| String::new()).violations, 1);
    }
}
