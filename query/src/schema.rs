//! The GraphQL schema (`docs/api.md`, "GraphQL"): the root fields, the dashboard, the platform view.

use crate::context::{bad_input, forbidden, internal, listing, text_arg};
use crate::cursor;
use crate::limits::{GraphqlLimits, Guard};
use crate::subscription::SubscriptionRoot;
use crate::types::*;
use async_graphql::{Context, EmptyMutation, Enum, ID, InputObject, Object, Result, Schema};
use chrono::{Datelike, NaiveDate, Utc};
use keel_domain::{Plan as DomainPlan, Role as DomainRole};
use keel_store::access;
use keel_store::placement::POOL;
use keel_store::read::{members, projects, tasks, tenants, throughput, usage};
use uuid::Uuid;

pub type KeelSchema = Schema<QueryRoot, EmptyMutation, SubscriptionRoot>;

pub const MAX_PAGE: i32 = 100;
const DEFAULT_PAGE: i32 = 20;

/// The schema with the default limits (what `keel graphql-schema` prints).
pub fn build_schema() -> KeelSchema {
    build_schema_with(GraphqlLimits::default())
}

/// The schema data queries run on: depth and complexity limited, the document guard installed.
pub fn build_schema_with(limits: GraphqlLimits) -> KeelSchema {
    Schema::build(QueryRoot, EmptyMutation, SubscriptionRoot)
        .extension(Guard(limits))
        .extension(crate::spans::ResolverSpans)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .finish()
}

/// The schema a query that reads only `__schema`/`__type`/`__typename` runs on: the same types
/// and the same document guard (nesting, expanded fields), without the depth and complexity
/// limits that standard introspection queries (graphql-js, graphql-core) exceed.
pub fn build_introspection_schema(limits: GraphqlLimits) -> KeelSchema {
    Schema::build(QueryRoot, EmptyMutation, SubscriptionRoot).extension(Guard(limits)).finish()
}

/// Complexity of a connection: its children once per item it may return (`first`, as GitHub's
/// and Shopify's APIs count), plus one.
pub(crate) fn connection_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize;
    items.saturating_mul(child_complexity).saturating_add(1)
}

pub(crate) fn page_size(first: Option<i32>) -> Result<i32> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    if !(0..=MAX_PAGE).contains(&first) {
        return Err(bad_input(&format!("first must be between 0 and {MAX_PAGE}")));
    }
    Ok(first)
}

/// The (time, id) a cursor of a list ordered by a timestamp continues after.
fn time_cursor(ordering: &str, after: &str) -> Result<(chrono::DateTime<Utc>, Uuid)> {
    let invalid = || bad_input("after is not a valid cursor");
    let c = cursor::decode(ordering, after).ok_or_else(invalid)?;
    let micros: i64 = c.k.as_deref().and_then(|k| k.parse().ok()).ok_or_else(invalid)?;
    Ok((chrono::DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?, c.i))
}

fn uuid_of(id: &ID) -> Option<Uuid> {
    Uuid::parse_str(id).ok()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum SortDirection {
    Asc,
    Desc,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ProjectOrderField {
    CreatedAt,
    UpdatedAt,
    Name,
}

#[derive(InputObject)]
pub struct ProjectOrder {
    field: ProjectOrderField,
    #[graphql(default_with = "SortDirection::Asc")]
    direction: SortDirection,
}

#[derive(InputObject, Default)]
pub struct ProjectFilter {
    status: Option<ProjectStatus>,
    /// Case-insensitive part of the name.
    search: Option<String>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum TaskOrderField {
    /// Soonest first (tasks without a due date last).
    DueDate,
    /// Most urgent first.
    Priority,
    CreatedAt,
}

#[derive(InputObject)]
pub struct TaskOrder {
    field: TaskOrderField,
    #[graphql(default_with = "SortDirection::Asc")]
    direction: SortDirection,
}

#[derive(InputObject, Default)]
pub struct TaskFilter {
    project_id: Option<ID>,
    status: Option<TaskStatus>,
    priority: Option<Priority>,
    assignee_id: Option<ID>,
    due_before: Option<Date>,
    due_after: Option<Date>,
    /// Not done and due before today.
    overdue: Option<bool>,
}

pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// Who the token says you are, and your role in its tenant.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let r = req(ctx);
        Ok(Me {
            user_id: r.principal.subject.clone(),
            tenant_id: r.principal.tenant_id.map(|t| ID(t.to_string())),
            role: r.role().await?.map(Role::from),
            platform: r.principal.platform,
        })
    }

    /// Your tenant: plan, status, seats and limits. Any member may read it.
    async fn tenant(&self, ctx: &Context<'_>) -> Result<Tenant> {
        let r = req(ctx);
        r.require(|_| true).await?;
        let mut tx = r.read_tx().await?;
        let row = access::tenant_row(&mut tx, false).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        let t = row.ok_or_else(|| forbidden("you are not an active member of this tenant"))?;
        let limit = |f: fn(DomainPlan) -> Option<u64>| f(t.plan).map(|v| v as i32);
        Ok(Tenant {
            id: ID(r.tenant()?.to_string()),
            name: t.name.clone(),
            slug: t.slug.clone(),
            plan: t.plan.into(),
            status: t.status.into(),
            seats_used: t.seats_used as i32,
            seat_limit: limit(DomainPlan::seat_limit),
            active_projects: t.active_projects as i32,
            project_limit: limit(DomainPlan::active_project_limit),
        })
    }

    /// Members by join date, optionally of one role.
    #[graphql(complexity = "crate::schema::connection_cost(first, child_complexity)")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        role: Option<Role>,
    ) -> Result<MemberConnection> {
        let r = req(ctx);
        r.require(DomainRole::can_read_data).await?;
        let first = page_size(first)?;
        let ordering = members::MODEL.name;
        let at = after.as_deref().map(|c| time_cursor(ordering, c)).transpose()?;
        r.consistent(&[&members::MODEL]).await?;
        let role = role.map(|x| x.as_str());
        let mut tx = r.read_tx().await?;
        let rows = members::page(&mut tx, role, at, i64::from(first) + 1).await.map_err(internal)?;
        let total = if wants_total(ctx) {
            TotalCount::Known(members::count(&mut tx, role, false).await.map_err(internal)?)
        } else {
            TotalCount::NotAsked
        };
        tx.commit().await.map_err(internal)?;
        Ok(MemberConnection::from_rows(rows, first, after.is_some(), total, |m| {
            cursor::encode(ordering, Some(m.joined_at.timestamp_micros().to_string()), m.member_id)
        }))
    }

    /// Projects, filtered and ordered (oldest first by default).
    #[graphql(complexity = "crate::schema::connection_cost(first, child_complexity)")]
    async fn projects(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<ProjectFilter>,
        order_by: Option<ProjectOrder>,
    ) -> Result<ProjectConnection> {
        let r = req(ctx);
        r.require(DomainRole::can_read_data).await?;
        let first = page_size(first)?;
        let filter = filter.unwrap_or_default();
        let f = projects::ProjectFilter {
            status: filter.status.map(|s| s.as_str().to_owned()),
            search: text_arg("filter.search", filter.search)?,
        };
        let (field, dir) =
            order_by.map(|o| (o.field, o.direction)).unwrap_or((ProjectOrderField::CreatedAt, SortDirection::Asc));
        let sort = match field {
            ProjectOrderField::CreatedAt => projects::ProjectSort::CreatedAt,
            ProjectOrderField::UpdatedAt => projects::ProjectSort::UpdatedAt,
            ProjectOrderField::Name => projects::ProjectSort::Name,
        };
        let desc = dir == SortDirection::Desc;
        let ordering = format!("projects:{sort:?}:{desc}");
        let at = match &after {
            Some(c) => Some(cursor::decode(&ordering, c).ok_or_else(|| bad_input("after is not a valid cursor"))?),
            None => None,
        };
        r.consistent(&[&projects::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let rows = projects::page(
            &mut tx,
            &f,
            sort,
            desc,
            at.as_ref().map(|c| (c.k.as_deref().unwrap_or(""), c.i)),
            i64::from(first) + 1,
        )
        .await
        .map_err(listing)?;
        let total = if wants_total(ctx) {
            TotalCount::Known(projects::count_filtered(&mut tx, &f).await.map_err(internal)?)
        } else {
            TotalCount::NotAsked
        };
        tx.commit().await.map_err(internal)?;
        Ok(ProjectConnection::from_rows(rows, first, after.is_some(), total, |p| {
            cursor::encode(&ordering, Some(sort.key_of(p)), p.project_id)
        }))
    }

    /// One project; `null` when it does not exist or belongs to another tenant.
    async fn project(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Project>> {
        let r = req(ctx);
        r.require(DomainRole::can_read_data).await?;
        let Some(id) = uuid_of(&id) else { return Ok(None) };
        r.consistent(&[&projects::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let row = projects::get(&mut tx, id).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(row.map(Project::from))
    }

    /// Tasks, filtered and ordered (by creation by default).
    #[graphql(complexity = "crate::schema::connection_cost(first, child_complexity)")]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<TaskFilter>,
        order_by: Option<TaskOrder>,
    ) -> Result<TaskConnection> {
        let r = req(ctx);
        r.require(DomainRole::can_read_data).await?;
        let first = page_size(first)?;
        let filter = filter.unwrap_or_default();
        let bad_id = || bad_input("not a valid id");
        let f = tasks::TaskFilter {
            project_id: filter.project_id.as_ref().map(|p| uuid_of(p).ok_or_else(bad_id)).transpose()?,
            status: filter.status.map(|s| s.as_str().to_owned()),
            priority: filter.priority.map(|p| p.as_str().to_owned()),
            assignee: filter.assignee_id.as_ref().map(|a| uuid_of(a).ok_or_else(bad_id)).transpose()?,
            due_before: filter.due_before.map(|d| d.0),
            due_after: filter.due_after.map(|d| d.0),
            overdue: filter.overdue.filter(|o| *o).map(|_| Utc::now().date_naive()),
        };
        let (field, dir) =
            order_by.map(|o| (o.field, o.direction)).unwrap_or((TaskOrderField::CreatedAt, SortDirection::Asc));
        let sort = match field {
            TaskOrderField::DueDate => tasks::TaskSort::DueDate,
            TaskOrderField::Priority => tasks::TaskSort::Priority,
            TaskOrderField::CreatedAt => tasks::TaskSort::CreatedAt,
        };
        let desc = dir == SortDirection::Desc;
        let ordering = format!("tasks:{sort:?}:{desc}");
        let at = match &after {
            Some(c) => {
                let c = cursor::decode(&ordering, c).ok_or_else(|| bad_input("after is not a valid cursor"))?;
                Some(tasks::TaskCursor { key: c.k, id: c.i })
            }
            None => None,
        };
        // A count the projects' task counters answer waits for that model too.
        let by_counters = wants_total(ctx) && tasks::counters_answer(&f);
        if by_counters {
            r.consistent(&[&tasks::MODEL, &projects::MODEL]).await?;
        } else {
            r.consistent(&[&tasks::MODEL]).await?;
        }
        let mut tx = r.read_tx().await?;
        let rows = tasks::list(&mut tx, &f, sort, desc, at.as_ref(), i64::from(first) + 1).await.map_err(listing)?;
        let total = if !wants_total(ctx) {
            TotalCount::NotAsked
        } else if by_counters {
            let n = tasks::count_by_counters(&mut tx, &f).await.map_err(internal)?.unwrap_or(0);
            TotalCount::Known(keel_store::read::Count::exact(n))
        } else {
            TotalCount::Known(tasks::count(&mut tx, &f).await.map_err(internal)?)
        };
        tx.commit().await.map_err(internal)?;
        Ok(TaskConnection::from_rows(rows, first, after.is_some(), total, |t| {
            cursor::encode(&ordering, sort.key_of(t), t.task_id)
        }))
    }

    /// One task; `null` when it does not exist or belongs to another tenant.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Task>> {
        let r = req(ctx);
        r.require(DomainRole::can_read_data).await?;
        let Some(id) = uuid_of(&id) else { return Ok(None) };
        r.consistent(&[&tasks::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let row = tasks::get(&mut tx, id).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(row.map(Task::from))
    }

    /// The tenant's webhook endpoints, oldest first (owner, admin). Read from the inline table
    /// written with the command, so a create is visible at once; never the secret.
    async fn webhooks(&self, ctx: &Context<'_>) -> Result<Vec<crate::types::Webhook>> {
        let r = req(ctx);
        r.require(DomainRole::can_manage_webhooks).await?;
        let mut tx = r.read_tx().await?;
        let rows = keel_store::webhooks::list(&mut tx).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(rows.into_iter().map(crate::types::Webhook::from).collect())
    }

    /// Counts for a dashboard. Members of every role may read it (auditors too).
    async fn dashboard(&self, ctx: &Context<'_>) -> Result<Dashboard> {
        req(ctx).require(|_| true).await?;
        Ok(Dashboard)
    }

    /// Units per day and metric between `from` and `to` (inclusive, at most 366 days).
    async fn usage(&self, ctx: &Context<'_>, metric: Option<String>, from: Date, to: Date) -> Result<Vec<UsageDay>> {
        let (from, to) = (from.0, to.0);
        let r = req(ctx);
        r.require(|role| role.can_read_data() || role == DomainRole::Auditor).await?;
        let metric = text_arg("metric", metric)?;
        if to < from || (to - from).num_days() > 366 {
            return Err(bad_input("from must not be after to, and the range at most 366 days"));
        }
        r.consistent(&[&usage::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let rows = usage::daily(&mut tx, metric.as_deref(), from, to).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(rows.into_iter().map(|(date, metric, units)| UsageDay { date: Date(date), metric, units }).collect())
    }

    /// The tenant's event log, oldest first, filtered (owner, admin, auditor).
    #[graphql(complexity = "crate::schema::connection_cost(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<crate::audit::EventFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<EventConnection> {
        crate::audit::events(req(ctx), crate::types::wants_total(ctx), filter, first, after).await
    }

    /// A stream's state as of `version` or `at` (default: now); null when it has no events then
    /// (owner, admin, auditor).
    async fn aggregate(
        &self,
        ctx: &Context<'_>,
        stream_id: ID,
        version: Option<i64>,
        at: Option<chrono::DateTime<Utc>>,
    ) -> Result<Option<AggregateState>> {
        crate::audit::aggregate(req(ctx), stream_id, version, at).await
    }

    /// Every event of a stream with the state after it (owner, admin, auditor).
    async fn aggregate_history(&self, ctx: &Context<'_>, stream_id: ID) -> Result<Vec<HistoryStep>> {
        crate::audit::history(req(ctx), stream_id).await
    }

    /// The platform view; platform operators only (`null` with an error for anyone else).
    async fn platform(&self, ctx: &Context<'_>) -> Result<Option<Platform>> {
        if !req(ctx).principal.platform {
            return Err(forbidden("only platform operators read the platform view"));
        }
        Ok(Some(Platform))
    }
}

pub struct Dashboard;

#[Object]
impl Dashboard {
    async fn tasks_by_status(&self, ctx: &Context<'_>) -> Result<TaskCounts> {
        let r = req(ctx);
        r.consistent(&[&tasks::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let (todo, in_progress, done, _) = tasks::summary(&mut tx, Utc::now().date_naive()).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(TaskCounts {
            todo: todo as i32,
            in_progress: in_progress as i32,
            done: done as i32,
            total: (todo + in_progress + done) as i32,
        })
    }

    /// Tasks completed on each of the last `days` days (UTC, today included; 1 to 366).
    async fn completed_per_day(&self, ctx: &Context<'_>, #[graphql(default = 14)] days: i32) -> Result<Vec<DayCount>> {
        if !(1..=366).contains(&days) {
            return Err(bad_input("days must be between 1 and 366"));
        }
        let r = req(ctx);
        r.consistent(&[&throughput::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let rows = throughput::completed_per_day(&mut tx, Utc::now().date_naive(), days).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(rows.into_iter().map(|(date, count)| DayCount { date: Date(date), count }).collect())
    }

    /// Tasks not done and due before today.
    async fn overdue_tasks(&self, ctx: &Context<'_>) -> Result<i64> {
        let r = req(ctx);
        r.consistent(&[&tasks::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let (_, _, _, overdue) = tasks::summary(&mut tx, Utc::now().date_naive()).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(overdue)
    }

    async fn active_projects(&self, ctx: &Context<'_>) -> Result<i64> {
        let r = req(ctx);
        r.consistent(&[&projects::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let n = projects::active_count(&mut tx).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(n)
    }

    async fn member_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let r = req(ctx);
        r.consistent(&[&members::MODEL]).await?;
        let mut tx = r.read_tx().await?;
        let n = members::count(&mut tx, None, true).await.map_err(internal)?.n;
        tx.commit().await.map_err(internal)?;
        Ok(n)
    }

    /// This calendar month's usage against the plan's quota.
    async fn usage(&self, ctx: &Context<'_>) -> Result<UsageQuota> {
        let r = req(ctx);
        r.consistent(&[&usage::MODEL]).await?;
        let today = Utc::now().date_naive();
        let month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).expect("first of the month");
        let mut tx = r.read_tx().await?;
        let units = usage::month(&mut tx, month).await.map_err(internal)?;
        let plan = access::tenant_row(&mut tx, false).await.map_err(internal)?.map(|t| t.plan);
        tx.commit().await.map_err(internal)?;
        Ok(UsageQuota {
            month: Date(month),
            units,
            quota: plan.and_then(DomainPlan::monthly_usage_limit).map(|q| q as i64),
        })
    }
}

pub struct Platform;

#[Object]
impl Platform {
    /// Every tenant, oldest first, optionally of one plan.
    #[graphql(complexity = "crate::schema::connection_cost(first, child_complexity)")]
    async fn tenants(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        plan: Option<Plan>,
    ) -> Result<TenantConnection> {
        let r = req(ctx);
        let first = page_size(first)?;
        let ordering = "platform-tenants";
        let at = after.as_deref().map(|c| time_cursor(ordering, c)).transpose()?;
        r.consistent(&[&tenants::MODEL]).await?;
        let plan = plan.map(|p| p.as_str());
        // Every database's page from the same cursor, merged in (created, id) order: the
        // platform's tenants wherever they live (docs/tenancy.md). A tenant's rows left behind
        // in a database it moved from are not its placement and are skipped.
        let directory = r.directory().await?;
        let (mut rows, mut total) = (Vec::new(), keel_store::read::Count::exact(0));
        for (database, store) in r.databases() {
            let mut tx = r.platform_tx_on(&store).await?;
            let page = tenants::page(&mut tx, plan, at, i64::from(first) + 1).await.map_err(internal)?;
            if wants_total(ctx) {
                let c = tenants::count(&mut tx, plan).await.map_err(internal)?;
                total = keel_store::read::Count { n: total.n + c.n, capped: total.capped || c.capped };
            }
            tx.commit().await.map_err(internal)?;
            rows.extend(
                page.into_iter()
                    .filter(|t| directory.get(&t.tenant_id).map_or(POOL, String::as_str) == database)
                    .map(|t| (database.clone(), t)),
            );
        }
        rows.sort_by_key(|(_, t)| (t.created_at, t.tenant_id));
        rows.truncate(first as usize + 1);
        let total = if wants_total(ctx) { TotalCount::Known(total) } else { TotalCount::NotAsked };
        Ok(TenantConnection::from_rows(rows, first, after.is_some(), total, |(_, t)| {
            cursor::encode(ordering, Some(t.created_at.timestamp_micros().to_string()), t.tenant_id)
        }))
    }

    /// Each tenant's use of the platform — requests, events, storage bytes — largest storage
    /// first, at most `first` tenants (1 to 100). Storage is measured at most once a minute.
    async fn tenant_usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<TenantPlatformUsage>> {
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(bad_input(&format!("first must be between 1 and {MAX_PAGE}")));
        }
        let r = req(ctx);
        if !r.principal.platform {
            return Err(forbidden("only platform operators read the platform view"));
        }
        // Every database's footprints, largest first; a tenant's rows left in a database it
        // moved from are not counted as its use.
        let directory = r.directory().await?;
        let (mut rows, mut age) = (Vec::new(), std::time::Duration::ZERO);
        for (database, store) in r.databases() {
            let (some, a) = store.tenant_footprints(std::time::Duration::from_secs(60)).await.map_err(internal)?;
            age = age.max(a);
            rows.extend(
                some.iter().filter(|f| directory.get(&f.tenant_id).map_or(POOL, String::as_str) == database).cloned(),
            );
        }
        rows.sort_by(|a, b| b.storage_bytes.cmp(&a.storage_bytes).then(a.tenant_id.cmp(&b.tenant_id)));
        Ok(rows
            .iter()
            .take(first as usize)
            .map(|f| TenantPlatformUsage {
                tenant_id: ID(f.tenant_id.to_string()),
                requests: keel_gateway::metrics::tenant_requests(f.tenant_id).min(i64::MAX as u64) as i64,
                events_appended: f.events,
                storage_bytes: f.storage_bytes,
                measured_seconds_ago: age.as_secs() as i64,
            })
            .collect())
    }

    async fn tenants_by_plan(&self, ctx: &Context<'_>) -> Result<Vec<PlanCount>> {
        let r = req(ctx);
        r.consistent(&[&tenants::MODEL]).await?;
        // Summed over every database.
        let mut counts: Vec<(keel_domain::Plan, i64)> = Vec::new();
        for (_, store) in r.databases() {
            let mut tx = r.platform_tx_on(&store).await?;
            for (plan, n) in tenants::by_plan(&mut tx).await.map_err(internal)? {
                match counts.iter_mut().find(|(p, _)| *p == plan) {
                    Some((_, total)) => *total += n,
                    None => counts.push((plan, n)),
                }
            }
            tx.commit().await.map_err(internal)?;
        }
        counts.sort_by_key(|(p, _)| p.as_str());
        Ok(counts.into_iter().map(|(p, count)| PlanCount { plan: p.into(), count }).collect())
    }
}
