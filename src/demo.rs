//! Demo data: `keel up --demo` and `keel demo seed` fill a tenant `demo` (team plan) with members
//! of every role, a dozen projects (some archived), a few hundred tasks over the last eight weeks
//! and usage on several metrics, so the dashboard, `completedPerDay`, the usage charts and the
//! audit history have something to show.
//!
//! Everything is written through the command path (`keel_command::demo::execute_at`: the
//! membership check, `decide`, the append with its hash chain and inline tables, quotas), each
//! command at a time in the past; those events carry `demo: true` in their metadata. Ids are
//! UUID v5 of fixed names and every command has a fixed idempotency key, so a repeat within the
//! keys' retention replays; a seed that ran to its end is recognised by its last stream and not
//! run again. The content is arithmetic on a fixed seed: every run writes the same thing.

use anyhow::bail;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use keel_command::demo::{self, DemoCall, DemoCommand, DemoOutcome};
use keel_domain::member::MemberCommand;
use keel_domain::project::ProjectCommand;
use keel_domain::task::TaskCommand;
use keel_domain::tenant::{OwnerInput, ProvisionTenant};
use keel_domain::usage::{RecordUsage, UsageInput};
use keel_domain::{MemberId, ProjectId, Role, TaskId, TenantId, UsageBatchId};
use keel_gateway::Authenticator;
use keel_store::{Store, access, log};
use std::time::Instant;

/// The tenant's members: user id, name, role. The first is the owner (made by provisioning).
pub const MEMBERS: [(&str, &str, &str); 8] = [
    ("demo-owner", "Olivia Owner", "owner"),
    ("demo-admin", "Adam Admin", "admin"),
    ("demo-member", "Mia Member", "member"),
    ("demo-member-2", "Noah Nakamura", "member"),
    ("demo-member-3", "Lena Lindqvist", "member"),
    ("demo-member-4", "Ravi Rao", "member"),
    ("demo-viewer", "Vera Viewer", "viewer"),
    ("demo-auditor", "Aldo Auditor", "auditor"),
];

/// The owner's user id.
pub const OWNER: &str = MEMBERS[0].0;

/// Members who work on tasks (indexes into `MEMBERS`): owner, admin and the members.
const WORKERS: [usize; 6] = [0, 1, 2, 3, 4, 5];

const PROJECTS: [&str; 12] = [
    "Website redesign",
    "Mobile app 2.0",
    "Billing migration",
    "Onboarding flow",
    "Data warehouse",
    "Security audit",
    "Customer portal",
    "Support tooling",
    "Marketing site",
    "Legacy API sunset",
    "Spring offsite",
    "Pilot: Acme Corp",
];
/// The last `ARCHIVED` projects are archived on day `ARCHIVE_DAY`.
const ARCHIVED: usize = 3;
const ARCHIVE_DAY: i64 = 40;
/// Commands in flight at once where their order does not matter (tasks, usage days).
const CONCURRENCY: usize = 12;
/// Tasks the seed creates.
pub const TASKS: usize = 300;
/// Days of history: day 0 is 56 days before the seed's day; the last day written (55) is yesterday.
pub const DAYS: i64 = 56;
const METRICS: [(&str, i64); 4] =
    [("api.calls", 4_000), ("emails.sent", 300), ("storage.gb", 40), ("compute.minutes", 900)];

const VERBS: [&str; 12] = [
    "Draft", "Review", "Fix", "Ship", "Design", "Test", "Document", "Refactor", "Plan", "Migrate", "Measure", "Polish",
];
const OBJECTS: [&str; 15] = [
    "the sign-up form",
    "invoice export",
    "search ranking",
    "the pricing page",
    "push notifications",
    "SSO settings",
    "the weekly report",
    "rate limiting",
    "the mobile menu",
    "CSV import",
    "audit log filters",
    "dark mode",
    "the status page",
    "webhook retries",
    "team invitations",
];
const PRIORITIES: [&str; 4] = ["low", "medium", "high", "urgent"];

/// A fixed-seed generator (SplitMix64): the same numbers in every run and on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

/// What a seed did.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub tenant: TenantId,
    /// The demo tenant had been seeded to the end before: nothing was run.
    pub already_seeded: bool,
    /// Commands run (replays of an idempotency key included).
    pub commands: usize,
    pub elapsed: std::time::Duration,
}

/// One task's commands, in order (they run one after another; tasks run side by side).
struct TaskPlan {
    calls: Vec<DemoCall>,
}

/// The stream written last: when it exists, the seed ran to its end.
fn last_stream() -> uuid::Uuid {
    demo::id(&format!("usage/{}", DAYS - 1))
}

fn member_id(user: &str) -> MemberId {
    MemberId(demo::id(&format!("member/{user}")))
}

fn email(name: &str) -> String {
    let first = name.split(' ').next().unwrap_or(name).to_lowercase();
    format!("{first}@demo.example.com")
}

fn call(actor: &str, key: String, at: DateTime<Utc>, command: DemoCommand) -> DemoCall {
    DemoCall { actor: actor.to_owned(), key: format!("demo-seed:v1:{key}"), at, command }
}

/// Whether the demo tenant exists and was seeded to the end.
pub async fn is_seeded(store: &Store) -> anyhow::Result<bool> {
    let mut tx = store.begin_read(demo::tenant_id()).await?;
    let events = log::read_stream(&mut tx, last_stream()).await?;
    tx.rollback().await?;
    Ok(!events.is_empty())
}

/// The demo tenant's id and its owner's user id, when the demo tenant exists and that user is an
/// active owner of it (for a development token, e.g. GraphiQL's).
pub async fn owner_user(store: &Store) -> anyhow::Result<Option<(TenantId, String)>> {
    let tenant = demo::tenant_id();
    let mut tx = store.begin_read(tenant).await?;
    let role = access::member_role(&mut tx, OWNER).await?;
    tx.rollback().await?;
    Ok((role == Some(Role::Owner)).then(|| (tenant, OWNER.to_owned())))
}

/// Seeds the demo tenant, or does nothing when it was seeded before. `now` is the end of the
/// history (the seed's own time, normally `Utc::now()`).
pub async fn seed(store: &Store, now: DateTime<Utc>) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    let tenant = demo::tenant_id();
    if is_seeded(store).await? {
        return Ok(SeedReport { tenant, already_seeded: true, commands: 0, elapsed: started.elapsed() });
    }
    // Day 0 is DAYS days before today (UTC), its work starting at 08:00; day DAYS-1 is
    // yesterday. A time on day `d` is `minutes` after 08:00 (at most 14 hours): every one of them
    // lies on a past day.
    let day0 = (now.date_naive() - Duration::days(DAYS)).and_hms_opt(8, 0, 0).expect("a valid time").and_utc();
    let at = |d: i64, minutes: i64| day0 + Duration::days(d) + Duration::minutes(minutes.clamp(0, 14 * 60));
    let mut commands = 0usize;

    // 1. The tenant, its members and projects: each counts against a plan limit, so they are
    // decided one at a time anyway.
    let (owner, owner_name, _) = MEMBERS[0];
    let mut setup = vec![call(
        "demo-seed",
        "tenant".into(),
        at(0, 0),
        DemoCommand::Provision(ProvisionTenant {
            tenant_id: tenant,
            owner_member_id: member_id(owner),
            name: "Demo Company".into(),
            slug: demo::SLUG.into(),
            plan: "team".into(),
            owner: OwnerInput { user_id: owner.into(), email: email(owner_name), name: owner_name.into() },
        }),
    )];
    for (i, (user, name, role)) in MEMBERS.iter().enumerate().skip(1) {
        let command = MemberCommand::Invite {
            member_id: member_id(user),
            user_id: (*user).into(),
            email: email(name),
            name: (*name).into(),
            role: (*role).into(),
        };
        setup.push(call(
            owner,
            format!("member/{user}"),
            at(0, 10 + i as i64 * 7),
            DemoCommand::Member(member_id(user), command),
        ));
    }
    let project_ids: Vec<ProjectId> =
        (0..PROJECTS.len()).map(|p| ProjectId(demo::id(&format!("project/{p}")))).collect();
    for (p, name) in PROJECTS.iter().enumerate() {
        let actor = if p % 2 == 0 { owner } else { MEMBERS[1].0 };
        let command = ProjectCommand::Create {
            project_id: project_ids[p],
            name: (*name).into(),
            description: Some(format!("{name}: demo project")),
        };
        setup.push(call(
            actor,
            format!("project/{p}/create"),
            at(0, 60 + p as i64 * 20),
            DemoCommand::Project(project_ids[p], command),
        ));
    }
    for c in setup {
        run(store, c).await?;
        commands += 1;
    }

    // 2. Tasks, side by side (each task's own commands in order).
    let mut rng = Rng(0x6b65_656c_6465_6d6f);
    let mut plans = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let p = i % PROJECTS.len();
        let archived = p >= PROJECTS.len() - ARCHIVED;
        // Tasks of archived projects happen before the archive.
        let last_day = if archived { ARCHIVE_DAY - 1 } else { DAYS - 1 };
        let created = 2 + rng.below(if archived { 28 } else { 50 });
        let id = TaskId(demo::id(&format!("task/{i}")));
        let assignee = (i % 7 != 0).then(|| MEMBERS[WORKERS[rng.below(WORKERS.len() as u64) as usize]].0);
        let assign_later = assignee.is_some() && i % 5 == 0;
        let creator = MEMBERS[WORKERS[i % WORKERS.len()]].0;
        let priority = PRIORITIES[match rng.below(10) {
            0..=2 => 0,
            3..=6 => 1,
            7..=8 => 2,
            _ => 3,
        }];
        let due = (i % 9 != 0).then(|| (day0 + Duration::days(created + 3 + rng.below(24))).date_naive());
        let title = format!("{} {}", VERBS[rng.below(VERBS.len() as u64) as usize], OBJECTS[i % OBJECTS.len()]);
        let mut calls = vec![call(
            creator,
            format!("task/{i}/create"),
            at(created, rng.below(300)),
            DemoCommand::Task(
                id,
                TaskCommand::Create {
                    task_id: id,
                    project_id: project_ids[p],
                    title,
                    description: (i % 4 == 0).then(|| "Seeded demo task.".to_owned()),
                    assignee: if assign_later { None } else { assignee.map(member_id) },
                    due_date: due,
                    priority: Some(priority.into()),
                },
            ),
        )];
        let worker = assignee.unwrap_or(MEMBERS[2].0);
        if let Some(a) = assignee.filter(|_| assign_later) {
            calls.push(call(
                MEMBERS[1].0,
                format!("task/{i}/assign"),
                at(created, 400),
                DemoCommand::Task(id, TaskCommand::Assign { assignee: Some(member_id(a)) }),
            ));
        }
        let fate = rng.below(100);
        let started = (created + 1 + rng.below(3)).min(last_day);
        let status = |s: &str| TaskCommand::ChangeStatus { status: s.into() };
        if fate < 62 {
            // Done: some by way of in progress; completed within 12 days, never after `last_day`.
            let done = started + rng.below((last_day - started + 1).min(12) as u64);
            if i % 3 == 0 {
                calls.push(call(
                    worker,
                    format!("task/{i}/start"),
                    at(started, 480),
                    DemoCommand::Task(id, status("in_progress")),
                ));
            }
            calls.push(call(worker, format!("task/{i}/done"), at(done, 600), DemoCommand::Task(id, status("done"))));
        } else if fate < 80 {
            calls.push(call(
                worker,
                format!("task/{i}/start"),
                at(started, 480),
                DemoCommand::Task(id, status("in_progress")),
            ));
        }
        plans.push(TaskPlan { calls });
    }
    let results: Vec<anyhow::Result<usize>> = futures::stream::iter(plans)
        .map(|plan| async move {
            let n = plan.calls.len();
            for c in plan.calls {
                run(store, c).await?;
            }
            Ok(n)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for r in results {
        commands += r?;
    }

    // 3. Archive the last projects (their tasks' history is before the archive).
    for (p, project) in project_ids.iter().enumerate().skip(PROJECTS.len() - ARCHIVED) {
        run(
            store,
            call(
                MEMBERS[1].0,
                format!("project/{p}/archive"),
                at(ARCHIVE_DAY, 30 + p as i64),
                DemoCommand::Project(*project, ProjectCommand::Archive),
            ),
        )
        .await?;
        commands += 1;
    }

    // 4. Usage: one batch a day of every metric (weekends quieter); the last day's batch last,
    // since its stream says the seed ran to its end.
    let usage: Vec<DemoCall> = (0..DAYS)
        .map(|d| {
            let date = (day0 + Duration::days(d)).date_naive();
            let weekend = matches!(chrono::Datelike::weekday(&date), chrono::Weekday::Sat | chrono::Weekday::Sun);
            let records = METRICS
                .iter()
                .map(|(metric, base)| {
                    let wave = 100 + (d % 7) * 6 + d; // a slow rise with a weekly ripple
                    let mut q = base * wave / 100 + (base / 10) * ((d * 7 + metric.len() as i64) % 5);
                    if weekend {
                        q /= 3;
                    }
                    UsageInput {
                        id: format!("demo-{date}-{metric}"),
                        metric: (*metric).into(),
                        quantity: q.max(1),
                        occurred_at: at(d, 240),
                    }
                })
                .collect();
            let batch = UsageBatchId(demo::id(&format!("usage/{d}")));
            call(
                MEMBERS[(d % 2) as usize].0,
                format!("usage/{d}"),
                at(d, 600),
                DemoCommand::Usage(RecordUsage { batch_id: batch, records }),
            )
        })
        .collect();
    let (last, rest) = usage.split_last().expect("DAYS > 0");
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(rest.iter().cloned())
        .map(|c| run(store, c))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for r in results {
        r?;
        commands += 1;
    }
    run(store, last.clone()).await?;
    commands += 1;
    Ok(SeedReport { tenant, already_seeded: false, commands, elapsed: started.elapsed() })
}

/// Runs one call; a problem becomes an error naming the call.
async fn run(store: &Store, c: DemoCall) -> anyhow::Result<()> {
    let key = c.key.clone();
    match demo::execute_at(store, c).await {
        Ok(DemoOutcome::Written { .. } | DemoOutcome::Replayed) => Ok(()),
        Err(p) if key.ends_with(":tenant") && p.code == keel_gateway::Code::Taken => bail!(
            "the slug `{}` is taken by a tenant that is not the demo tenant: the demo seed cannot run here",
            demo::SLUG
        ),
        Err(p) => Err(anyhow::anyhow!("{} ({}): {}", key, p.status(), p.detail)),
    }
}

/// The bearer tokens of the demo tenant's members, one per role (signed like `keel token`).
pub fn tokens(auth: &Authenticator, ttl: std::time::Duration) -> Vec<(&'static str, &'static str, String)> {
    let tenant = demo::tenant_id();
    let mut seen = Vec::new();
    MEMBERS
        .iter()
        .filter(|(_, _, role)| {
            let first = !seen.contains(role);
            seen.push(*role);
            first
        })
        .map(|(user, _, role)| (*role, *user, auth.issue(user, Some(tenant.0), false, ttl)))
        .collect()
}

/// A sample GraphQL query over the demo data.
pub const SAMPLE_QUERY: &str = "{ dashboard { tasksByStatus { todo inProgress done } overdueTasks activeProjects \
     memberCount usage { month units quota } completedPerDay(days: 56) { date count } } }";

/// What `keel up --demo` and `keel demo seed` print: the outcome, a token per role, a sample
/// query and a curl line against `base` (e.g. `http://localhost:8080`).
pub fn banner(report: &SeedReport, tokens: &[(&str, &str, String)], base: &str) -> String {
    let mut out = String::new();
    if report.already_seeded {
        out.push_str(&format!("Demo tenant `demo` ({}) was seeded before: nothing written.\n", report.tenant.0));
    } else {
        out.push_str(&format!(
            "Demo tenant `demo` ({}) seeded: {} commands in {:.1} s (events marked demo: true).\n",
            report.tenant.0,
            report.commands,
            report.elapsed.as_secs_f64()
        ));
    }
    out.push_str("  Tokens (one per role):\n");
    for (role, user, token) in tokens {
        out.push_str(&format!("    {role:<8} {user:<14} {token}\n"));
    }
    let owner = tokens.iter().find(|(r, _, _)| *r == "owner").map(|(_, _, t)| t.as_str()).unwrap_or("");
    let body = serde_json::json!({ "query": SAMPLE_QUERY }).to_string();
    out.push_str(&format!("  Sample query:\n    {SAMPLE_QUERY}\n"));
    out.push_str(&format!(
        "  Try it:\n    curl -s {base}/graphql -H 'Authorization: Bearer {owner}' -H 'Content-Type: application/json' \
         -d '{body}'\n"
    ));
    out
}
