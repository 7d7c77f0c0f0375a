//! `keel chaos`: runs Keel against a private PostgreSQL under a mixed command load while it
//! kills and restarts Keel, stops and starts the database, terminates Keel's backends and sends
//! SIGTERM, then checks every answer against the log (docs/reliability.md, "Chaos harness").

mod check;
mod cluster;
mod faults;
mod load;

use anyhow::{Context, bail};
pub use check::CheckResult;
use cluster::{Cluster, Keel};
use faults::{FaultLog, Injected};
use load::{Answer, Class, CommandRecord, Load, Tenant};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// How long the load and the faults run (the checks come after).
    pub duration: Duration,
    pub clients: usize,
    pub seed: u64,
    /// Mean time between two faults.
    pub fault_every: Duration,
    pub keel_bin: PathBuf,
    /// Where the run's directory goes (a new `keel-chaos-*` directory inside).
    pub dir: PathBuf,
    pub keep: bool,
    pub pg_bindir: PathBuf,
}

/// The figures of a run and the verdict of every check.
#[derive(Debug, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub duration_secs: f64,
    pub clients: usize,
    pub tenants: Vec<String>,
    pub commands: u64,
    pub commands_by_kind: BTreeMap<String, u64>,
    /// Every request's answer: `2xx`, `422 limit-exceeded`, `503 database-unavailable`,
    /// `connection error`, ...
    pub requests: BTreeMap<String, u64>,
    /// Every request by what its answer says: `written` (2xx), `rejected` (4xx), `not written`
    /// (503 `database-unavailable`, `overloaded`, `not-ready`), `ambiguous` (connection error, 500, 504, 503
    /// `outcome-unknown`, `timeout`, `shutting-down`).
    pub requests_by_class: BTreeMap<String, u64>,
    /// 5xx answers by status and code.
    pub server_errors: BTreeMap<String, u64>,
    pub faults: BTreeMap<String, u64>,
    pub fault_log: Vec<serde_json::Value>,
    pub keel_restarts: u64,
    pub keel_unplanned_exits: u64,
    pub events_checked: u64,
    /// The longest stretch without a 2xx answer while the clients were sending.
    pub longest_unavailability_ms: u64,
    /// For each restart of the database: from accepting connections to the next 2xx.
    pub db_back_to_first_2xx_ms: Vec<u64>,
    /// For each new Keel process: from its start to the next 2xx.
    pub keel_back_to_first_2xx_ms: Vec<u64>,
    /// Answers to requests sent while the database was stopped, by class, and the slowest of
    /// them: the issue wants a fast 503 `database-unavailable` here.
    pub during_db_outage: BTreeMap<String, u64>,
    pub during_db_outage_slowest_ms: u64,
    /// Lines of Keel's log that report a deadlock (retried or not): the issue wants none.
    pub keel_log_deadlocks: u64,
    /// From the end of the load until every projection was past the last event.
    pub projections_caught_up_ms: u64,
    pub checks: Vec<CheckResult>,
    pub passed: bool,
    /// The run's directory when kept (`--keep`): PostgreSQL's and Keel's logs, the journal.
    pub kept: Option<PathBuf>,
}

const JWT_SECRET_BYTES: usize = 32;

/// Runs the harness; the report says whether every check held.
pub async fn run(opts: &ChaosOptions) -> anyhow::Result<ChaosReport> {
    let dir = opts.dir.join(format!("keel-chaos-{}-{}", std::process::id(), opts.seed));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(opts, &dir).await;
    // A failed run keeps its evidence: the logs and the journal name every violation's request.
    match &result {
        Ok(report) if report.passed && !opts.keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!("chaos: the run's directory is kept: {}", dir.display()),
    }
    result
}

async fn run_in(opts: &ChaosOptions, dir: &std::path::Path) -> anyhow::Result<ChaosReport> {
    let say = |m: &str| eprintln!("chaos: {m}");
    say(&format!("seed {}; a private PostgreSQL in {}", opts.seed, dir.display()));
    let cluster = Cluster::start(dir, &opts.pg_bindir).await?;
    let jwt_secret = hex::encode(random_bytes(JWT_SECRET_BYTES));
    let master_key = hex::encode(random_bytes(32));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let tools_env = vec![
        ("DATABASE_URL".to_owned(), cluster.owner_url.clone()),
        ("KEEL_MASTER_KEY".to_owned(), master_key.clone()),
        ("KEEL_JWT_SECRET".to_owned(), jwt_secret.clone()),
        ("KEEL_DATA_DIR".to_owned(), dir.join("keel").display().to_string()),
        ("KEEL_LOG".to_owned(), "warn".to_owned()),
    ];
    let migrate = tokio::process::Command::new(&opts.keel_bin)
        .arg("migrate")
        .envs(tools_env.iter().map(|(k, v)| (k, v)))
        .output()
        .await?;
    if !migrate.status.success() {
        bail!("keel migrate failed: {}", String::from_utf8_lossy(&migrate.stderr));
    }
    let mut serve_env = tools_env.clone();
    serve_env.retain(|(k, _)| k != "KEEL_LOG");
    serve_env.extend([
        ("KEEL_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
        ("KEEL_LOG".to_owned(), "info,sqlx=warn".to_owned()),
        ("KEEL_LOG_FORMAT".to_owned(), "json".to_owned()),
    ]);
    let keel = Arc::new(Keel::new(opts.keel_bin.clone(), serve_env, dir.join("keel.log")));
    keel.start().await?;
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    cluster::wait_ready(&probe, &format!("{base}/readyz"), Duration::from_secs(60)).await?;

    // Tenants: one on the free plan, whose limits the load runs into, and two on team.
    let signer =
        keel_gateway::Signer::hs256(&keel_gateway::auth::Secret::new(jwt_secret.clone().into_bytes()), None, None);
    let day = Duration::from_secs(24 * 3600);
    let platform = signer.issue("chaos-operator", None, true, day);
    let mut tenants = Vec::new();
    for (slug, plan) in [("chaos-free", "free"), ("chaos-team-a", "team"), ("chaos-team-b", "team")] {
        let owner = format!("owner-{slug}");
        let r = probe
            .post(format!("{base}/api/v1/tenants"))
            .bearer_auth(&platform)
            .header("Idempotency-Key", format!("chaos-setup-{slug}"))
            .json(&json!({ "name": slug, "slug": slug, "plan": plan,
                           "owner": { "user_id": owner, "email": format!("{owner}@chaos.example"), "name": owner } }))
            .send()
            .await?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        let id: Uuid = body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("provisioning {slug} answered {status}: {body}"))?;
        tenants.push(Tenant::new(id, slug.to_owned(), signer.issue(&owner, Some(id), false, day)));
    }
    let tenant_ids: Vec<Uuid> = tenants.iter().map(|t| t.id).collect();
    let tenant_names: Vec<String> = tenants.iter().map(|t| format!("{} ({})", t.slug, t.id)).collect();

    // The load and the faults, side by side; a supervisor restarts a Keel that exited.
    let t0 = Instant::now();
    let until = t0 + opts.duration;
    let load = Arc::new(Load::new(base.clone(), tenants, t0)?);
    say(&format!("{} clients for {:?}, a fault every ~{:?}", opts.clients, opts.duration, opts.fault_every));
    let grace = Duration::from_secs(30);
    let clients: Vec<_> = (0..opts.clients.max(1))
        .map(|i| {
            let load = load.clone();
            let seed = opts.seed;
            tokio::spawn(async move { load.client(i, seed, until, grace).await })
        })
        .collect();
    let supervisor = {
        let keel = keel.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e) = keel.supervise().await {
                    eprintln!("chaos: cannot restart Keel: {e:#}");
                }
            }
        })
    };
    let fault_log = faults::run(&cluster, &keel, t0, until, opts.fault_every, opts.seed).await;
    let mut records: Vec<CommandRecord> = Vec::new();
    for c in clients {
        records.extend(c.await?);
    }
    let load_end = Instant::now();
    let fault_log = match fault_log {
        Ok(f) => f,
        Err(e) => {
            supervisor.abort();
            keel.stop(Duration::from_secs(20)).await;
            return Err(e.context("a fault could not be undone"));
        }
    };
    say(&format!("load done: {} commands; resolving the open ones", records.len()));

    // Every command still without a definite answer is sent again now that nothing fails.
    let open: Vec<usize> = (0..records.len()).filter(|i| records[*i].outcome().is_none()).collect();
    let stop_at = Instant::now() + Duration::from_secs(60);
    for i in open {
        let token =
            load.tenants.iter().find(|t| t.id == records[i].tenant).map(|t| t.token.clone()).unwrap_or_default();
        load.resolve(&mut records[i], &token, stop_at).await;
    }

    // Projections catch up, then Keel stops so nothing moves while the checks read.
    let caught_up = wait_caught_up(&cluster.owner_url, Duration::from_secs(120)).await;
    let projections_caught_up_ms = load_end.elapsed().as_millis() as u64;
    supervisor.abort();
    keel.stop(Duration::from_secs(30)).await;
    let journal = dir.join("journal.jsonl");
    write_journal(&journal, &records)?;

    say("checking the log");
    let log = check::read_log(&cluster.owner_url, &tenant_ids).await?;
    let mut checks: Vec<CheckResult> = Vec::new();
    checks.extend(check::answers(&records, &log));
    checks.push(check::quotas(&cluster.owner_url, &tenant_ids, &log).await?);
    checks.push(check::hash_chains(&opts.keel_bin, &tools_env, log.len() as u64).await?);
    say("rebuilding every read model to compare");
    checks.push(check::rebuilds(&cluster.owner_url, &opts.keel_bin, &tools_env).await?);
    let mut dead = check::dead_letters(&cluster.owner_url).await?;
    if let Err(behind) = caught_up {
        dead.listed.insert(0, format!("(projections not caught up within 120 s: {behind})"));
        dead.violations += 1;
    }
    checks.push(dead);
    let logged = logged_errors(&dir.join("keel.log"));
    checks.push(check::no_500(&records, |request_id, at, took| {
        let mut why = String::new();
        if let Some(e) = logged.get(request_id) {
            why.push_str(&format!("; Keel logged: {e}"));
        }
        let around =
            fault_log.injected.iter().filter(|f| f.at_ms <= at + took + 1_000 && at <= f.at_ms + f.lasted_ms + 1_000);
        for f in around {
            why.push_str(&format!("; during {} at {} ms", f.fault.name(), f.at_ms));
        }
        why
    }));

    let report =
        figures(opts, tenant_names, &records, &fault_log, &keel, log.len() as u64, projections_caught_up_ms, checks);
    let kept = (opts.keep || !report.passed).then(|| dir.to_path_buf());
    Ok(ChaosReport { kept, keel_log_deadlocks: count_lines(&dir.join("keel.log"), "deadlock detected"), ..report })
}

fn count_lines(path: &std::path::Path, needle: &str) -> u64 {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().filter(|l| l.contains(needle)).count() as u64)
}

/// The last error Keel logged for each request id (its JSON log: `fields.error` of a line at
/// ERROR level in a request span), so a 500 in the report names its cause.
fn logged_errors(path: &std::path::Path) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else { return out };
    for line in text.lines().filter(|l| l.contains("\"ERROR\"")) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(rid), Some(err)) = (v["span"]["request_id"].as_str(), v["fields"]["error"].as_str()) else {
            continue;
        };
        out.insert(rid.to_owned(), err.chars().take(200).collect());
    }
    out
}

async fn wait_caught_up(url: &str, within: Duration) -> Result<(), String> {
    let end = Instant::now() + within;
    loop {
        match check::lagging_projections(url).await {
            Ok(behind) if behind.is_empty() => return Ok(()),
            Ok(behind) if Instant::now() > end => return Err(behind.join(", ")),
            Err(e) if Instant::now() > end => return Err(format!("{e:#}")),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn write_journal(path: &std::path::Path, records: &[CommandRecord]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in records {
        serde_json::to_writer(&mut f, r)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn figures(
    opts: &ChaosOptions,
    tenants: Vec<String>,
    records: &[CommandRecord],
    faults: &FaultLog,
    keel: &Keel,
    events: u64,
    projections_caught_up_ms: u64,
    checks: Vec<CheckResult>,
) -> ChaosReport {
    let mut requests = BTreeMap::new();
    let mut server_errors = BTreeMap::new();
    let mut by_class = BTreeMap::new();
    let mut by_kind = BTreeMap::new();
    let mut successes: Vec<u64> = Vec::new();
    for rec in records {
        *by_kind.entry(rec.kind.to_owned()).or_insert(0) += 1;
        for a in &rec.attempts {
            *requests.entry(a.answer.label()).or_insert(0) += 1;
            let class = match a.answer.class() {
                Class::Success => "written",
                Class::Rejected => "rejected",
                Class::NotWritten => "not written",
                Class::Ambiguous => "ambiguous",
            };
            *by_class.entry(class.to_owned()).or_insert(0) += 1;
            if let Answer::Http { status: 500.., .. } = &a.answer {
                *server_errors.entry(a.answer.label()).or_insert(0) += 1;
            }
            if a.answer.class() == Class::Success {
                successes.push(a.at_ms + a.took_ms);
            }
        }
    }
    successes.sort_unstable();
    let load_ms = opts.duration.as_millis() as u64;
    let mut longest = 0;
    let mut last = 0;
    for &s in successes.iter().filter(|s| **s <= load_ms) {
        longest = longest.max(s.saturating_sub(last));
        last = s;
    }
    let outages: Vec<(u64, u64)> = faults
        .injected
        .iter()
        .filter(|i| matches!(i.fault, faults::Fault::PgFast | faults::Fault::PgImmediate))
        .map(|i| (i.at_ms, i.at_ms + i.lasted_ms))
        .collect();
    let mut during_db_outage = BTreeMap::new();
    let mut during_db_outage_slowest_ms = 0;
    for a in records.iter().flat_map(|r| &r.attempts) {
        if outages.iter().any(|(from, to)| (*from..*to).contains(&a.at_ms)) {
            *during_db_outage.entry(a.answer.label()).or_insert(0) += 1;
            during_db_outage_slowest_ms = during_db_outage_slowest_ms.max(a.took_ms);
        }
    }
    let next_success = |from: &u64| successes.iter().find(|s| **s >= *from).map(|s| s - from);
    let mut fault_counts = BTreeMap::new();
    for Injected { fault, .. } in &faults.injected {
        *fault_counts.entry(fault.name().to_owned()).or_insert(0) += 1;
    }
    let passed = checks.iter().all(CheckResult::ok);
    ChaosReport {
        seed: opts.seed,
        duration_secs: opts.duration.as_secs_f64(),
        clients: opts.clients,
        tenants,
        commands: records.len() as u64,
        commands_by_kind: by_kind,
        requests,
        requests_by_class: by_class,
        server_errors,
        faults: fault_counts,
        fault_log: faults
            .injected
            .iter()
            .map(|i| json!({ "at_ms": i.at_ms, "fault": i.fault.name(), "lasted_ms": i.lasted_ms, "detail": i.detail }))
            .collect(),
        keel_restarts: keel.restarts.load(std::sync::atomic::Ordering::Relaxed),
        keel_unplanned_exits: keel.unplanned_exits.load(std::sync::atomic::Ordering::Relaxed),
        events_checked: events,
        longest_unavailability_ms: longest,
        db_back_to_first_2xx_ms: faults.db_back_ms.iter().filter_map(next_success).collect(),
        keel_back_to_first_2xx_ms: faults.keel_back_ms.iter().filter_map(next_success).collect(),
        during_db_outage,
        during_db_outage_slowest_ms,
        projections_caught_up_ms,
        checks,
        passed,
        keel_log_deadlocks: 0,
        kept: None,
    }
}

/// The report as people read it.
pub fn render(r: &ChaosReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "keel chaos: seed {}, {} s, {} clients", r.seed, r.duration_secs, r.clients);
    let _ = writeln!(s, "tenants: {}", r.tenants.join(", "));
    let _ = writeln!(s, "commands: {} ({})", r.commands, join(&r.commands_by_kind));
    let total: u64 = r.requests.values().sum();
    let _ = writeln!(s, "requests: {total} ({})", join(&r.requests_by_class));
    for (k, v) in &r.requests {
        let _ = writeln!(s, "  {k:<40} {v:>7}");
    }
    let _ = writeln!(
        s,
        "5xx answers: {}",
        if r.server_errors.is_empty() { "none".to_owned() } else { join(&r.server_errors) }
    );
    let _ = writeln!(
        s,
        "faults: {} ({}); Keel restarts {}, of which exits on its own {}",
        r.faults.values().sum::<u64>(),
        join(&r.faults),
        r.keel_restarts,
        r.keel_unplanned_exits
    );
    let _ = writeln!(s, "events checked: {}", r.events_checked);
    let _ = writeln!(s, "longest unavailability (no 2xx): {} ms", r.longest_unavailability_ms);
    let _ = writeln!(s, "database back -> first 2xx: {}", ms_list(&r.db_back_to_first_2xx_ms));
    let _ = writeln!(s, "Keel restarted -> first 2xx: {}", ms_list(&r.keel_back_to_first_2xx_ms));
    let _ = writeln!(
        s,
        "answers to requests sent while the database was down: {} (slowest {} ms)",
        if r.during_db_outage.is_empty() { "none".to_owned() } else { join(&r.during_db_outage) },
        r.during_db_outage_slowest_ms
    );
    let _ = writeln!(s, "deadlocks in Keel's log: {}", r.keel_log_deadlocks);
    if let Some(dir) = &r.kept {
        let _ = writeln!(s, "kept: {} (keel.log, pg/postgres.log, journal.jsonl)", dir.display());
    }
    let _ = writeln!(s, "projections caught up {} ms after the load", r.projections_caught_up_ms);
    let _ = writeln!(s, "checks:");
    for (i, c) in r.checks.iter().enumerate() {
        let verdict = if c.ok() { "ok  ".to_owned() } else { format!("FAIL ({} violations)", c.violations) };
        let _ = writeln!(s, "  {}. {verdict} {} [checked {}]", i + 1, c.name, c.checked);
        for v in &c.listed {
            let _ = writeln!(s, "       - {v}");
        }
    }
    let _ = writeln!(s, "result: {}", if r.passed { "PASS" } else { "FAIL" });
    s
}

fn join(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn ms_list(v: &[u64]) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    let max = v.iter().max().copied().unwrap_or(0);
    format!("max {max} ms ({})", v.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(", "))
}

fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    b
}
