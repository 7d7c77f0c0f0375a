//! GraphQL object types over the read tables.

use crate::context::{RequestCtx, internal};
use crate::cursor;
use crate::loaders::{MemberLoader, ProjectLoader, ProjectTaskCountLoader, ProjectTasksKey, ProjectTasksLoader};
use async_graphql::dataloader::DataLoader;
use async_graphql::{
    ComplexObject, Context, Enum, ID, InputValueError, InputValueResult, Object, Result, Scalar, ScalarType,
    SimpleObject, Value,
};
use chrono::{DateTime, NaiveDate, Utc};
use keel_store::read::members::MemberRow;
use keel_store::read::projects::ProjectRow;
use keel_store::read::tasks::TaskRow;
use keel_store::read::tenants::PlatformTenantRow;
use std::sync::Arc;
use uuid::Uuid;

/// A calendar date: Keel's own `NaiveDate` scalar (the name clients know), whose input errors
/// say the format instead of the parser's reason ("input contains invalid characters").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub NaiveDate);

/// A calendar date, written `YYYY-MM-DD` (ISO 8601), e.g. `2025-03-31`.
#[Scalar(name = "NaiveDate")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        let wrong = || InputValueError::custom("a date is written YYYY-MM-DD, e.g. \"2025-03-31\"");
        match &value {
            Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Date).map_err(|_| wrong()),
            _ => Err(wrong()),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

impl From<NaiveDate> for Date {
    fn from(d: NaiveDate) -> Date {
        Date(d)
    }
}

pub(crate) fn req<'a>(ctx: &'a Context<'_>) -> &'a Arc<RequestCtx> {
    ctx.data_unchecked::<Arc<RequestCtx>>()
}

/// A GraphQL enum that mirrors a domain enum variant for variant (`remote`: async-graphql writes
/// the conversions both ways), stored and compared as the domain's own names.
macro_rules! domain_enum {
    ($name:ident = $remote:path, $remote_name:literal { $($variant:ident),+ $(,)? }) => {
        #[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
        #[graphql(remote = $remote_name)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The name the read tables store.
            #[allow(dead_code)]
            pub(crate) fn as_str(self) -> &'static str {
                keel_domain::Named::name(<$remote>::from(self))
            }
        }
    };
}

domain_enum!(Role = keel_domain::Role, "keel_domain::Role" { Owner, Admin, Member, Viewer, Auditor });
domain_enum!(Plan = keel_domain::Plan, "keel_domain::Plan" { Free, Team, Enterprise });
domain_enum!(TenantStatus = keel_domain::tenant::TenantStatus, "keel_domain::tenant::TenantStatus" { Active, Suspended, Erased });
domain_enum!(ProjectStatus = keel_domain::project::ProjectStatus, "keel_domain::project::ProjectStatus" { Active, Archived });
domain_enum!(TaskStatus = keel_domain::values::TaskStatus, "keel_domain::values::TaskStatus" { Todo, InProgress, Done });
domain_enum!(Priority = keel_domain::values::Priority, "keel_domain::values::Priority" { Low, Medium, High, Urgent });
domain_enum!(WebhookState = keel_domain::webhook::EndpointState, "keel_domain::webhook::EndpointState" { Active, Failing, Disabled });
domain_enum!(MemberStatus = keel_domain::member::MemberStatus, "keel_domain::member::MemberStatus" { Active, Removed, Erased });

#[derive(SimpleObject)]
pub struct PageInfo {
    pub(crate) has_next_page: bool,
    pub(crate) has_previous_page: bool,
    pub(crate) start_cursor: Option<String>,
    pub(crate) end_cursor: Option<String>,
}

impl PageInfo {
    pub(crate) fn new(has_next_page: bool, after: bool, cursors: &[String]) -> PageInfo {
        PageInfo {
            has_next_page,
            has_previous_page: after,
            start_cursor: cursors.first().cloned(),
            end_cursor: cursors.last().cloned(),
        }
    }
}

#[derive(SimpleObject)]
pub struct Me {
    pub(crate) user_id: String,
    pub(crate) tenant_id: Option<ID>,
    /// `null` for platform operators and for users who are not members of the token's tenant.
    pub(crate) role: Option<Role>,
    pub(crate) platform: bool,
}

#[derive(SimpleObject)]
pub struct Tenant {
    pub(crate) id: ID,
    pub(crate) name: String,
    pub(crate) slug: String,
    pub(crate) plan: Plan,
    pub(crate) status: TenantStatus,
    pub(crate) seats_used: i32,
    /// `null` means unlimited.
    pub(crate) seat_limit: Option<i32>,
    pub(crate) active_projects: i32,
    /// `null` means unlimited.
    pub(crate) project_limit: Option<i32>,
}

#[derive(SimpleObject)]
pub struct TaskCounts {
    pub(crate) todo: i32,
    pub(crate) in_progress: i32,
    pub(crate) done: i32,
    pub(crate) total: i32,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Project {
    pub(crate) id: ID,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) status: ProjectStatus,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) version: i64,
    pub(crate) task_counts: TaskCounts,
    /// Share of tasks done, 0.0 to 1.0 (0.0 without tasks).
    pub(crate) progress: f64,
    #[graphql(skip)]
    pub(crate) uuid: Uuid,
}

impl From<ProjectRow> for Project {
    fn from(r: ProjectRow) -> Self {
        let total = r.tasks_todo + r.tasks_in_progress + r.tasks_done;
        Project {
            id: ID(r.project_id.to_string()),
            uuid: r.project_id,
            name: r.name,
            description: r.description,
            status: r.status.into(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            task_counts: TaskCounts { todo: r.tasks_todo, in_progress: r.tasks_in_progress, done: r.tasks_done, total },
            progress: if total == 0 { 0.0 } else { f64::from(r.tasks_done) / f64::from(total) },
        }
    }
}

#[ComplexObject]
impl Project {
    /// The project's tasks, oldest first.
    #[graphql(complexity = "crate::schema::connection_cost(first, child_complexity)")]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<TaskStatus>,
    ) -> Result<TaskConnection> {
        let r = req(ctx);
        let first = crate::schema::page_size(first)?;
        r.consistent(&[&keel_store::read::tasks::MODEL]).await?;
        let status = status.map(|s| s.as_str().to_owned());
        let rows = match &after {
            // The first page of many projects loads in one statement.
            None => ctx
                .data_unchecked::<DataLoader<ProjectTasksLoader>>()
                .load_one(ProjectTasksKey { project: self.uuid, status: status.clone(), take: i64::from(first) + 1 })
                .await
                .map_err(|e| (*e).clone())?
                .unwrap_or_default(),
            Some(c) => {
                let c = cursor::decode("project-tasks", c)
                    .ok_or_else(|| crate::context::bad_input("after is not a valid cursor"))?;
                let filter = keel_store::read::tasks::TaskFilter {
                    project_id: Some(self.uuid),
                    status: status.clone(),
                    ..Default::default()
                };
                let mut tx = r.read_tx().await?;
                let at = keel_store::read::tasks::TaskCursor { key: c.k, id: c.i };
                let rows = keel_store::read::tasks::list(
                    &mut tx,
                    &filter,
                    keel_store::read::tasks::TaskSort::CreatedAt,
                    false,
                    Some(&at),
                    i64::from(first) + 1,
                )
                .await
                .map_err(internal)?;
                tx.commit().await.map_err(internal)?;
                rows
            }
        };
        Ok(TaskConnection::from_rows(
            rows,
            first,
            after.is_some(),
            TotalCount::ProjectTasks(self.uuid, status),
            |row| cursor::encode("project-tasks", Some(row.created_at.timestamp_micros().to_string()), row.task_id),
        ))
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Task {
    pub(crate) id: ID,
    pub(crate) title: String,
    pub(crate) description: Option<String>,
    pub(crate) status: TaskStatus,
    pub(crate) priority: Priority,
    pub(crate) due_date: Option<Date>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
    pub(crate) version: i64,
    #[graphql(skip)]
    pub(crate) project_id: Uuid,
    #[graphql(skip)]
    pub(crate) assignee_id: Option<Uuid>,
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Self {
        Task {
            id: ID(r.task_id.to_string()),
            title: r.title,
            description: r.description,
            status: r.status.into(),
            priority: r.priority.into(),
            due_date: r.due_date.map(Date),
            created_at: r.created_at,
            updated_at: r.updated_at,
            completed_at: r.completed_at,
            version: r.version,
            project_id: r.project_id,
            assignee_id: r.assignee,
        }
    }
}

#[ComplexObject]
impl Task {
    async fn project(&self, ctx: &Context<'_>) -> Result<Option<Project>> {
        req(ctx).consistent(&[&keel_store::read::projects::MODEL]).await?;
        let row = ctx
            .data_unchecked::<DataLoader<ProjectLoader>>()
            .load_one(self.project_id)
            .await
            .map_err(|e| (*e).clone())?;
        Ok(row.map(Project::from))
    }

    async fn assignee(&self, ctx: &Context<'_>) -> Result<Option<Member>> {
        let Some(id) = self.assignee_id else { return Ok(None) };
        req(ctx).consistent(&[&keel_store::read::members::MODEL]).await?;
        let row = ctx.data_unchecked::<DataLoader<MemberLoader>>().load_one(id).await.map_err(|e| (*e).clone())?;
        Ok(row.map(Member::from))
    }
}

#[derive(SimpleObject)]
pub struct Member {
    pub(crate) id: ID,
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) status: MemberStatus,
    pub(crate) joined_at: DateTime<Utc>,
}

impl From<MemberRow> for Member {
    fn from(r: MemberRow) -> Self {
        Member {
            id: ID(r.member_id.to_string()),
            user_id: r.user_id,
            email: r.email,
            name: r.name,
            role: r.role.into(),
            status: r.status.into(),
            joined_at: r.joined_at,
        }
    }
}

/// How a connection's `totalCount` is found, when asked for.
pub(crate) enum TotalCount {
    Known(keel_store::read::Count),
    ProjectTasks(Uuid, Option<String>),
    /// The query selected neither `totalCount` nor `totalCountCapped`: nothing was counted.
    NotAsked,
}

/// Whether the connection being resolved selects its count: a page that does not ask for it
/// costs no count.
pub(crate) fn wants_total(ctx: &Context<'_>) -> bool {
    let l = ctx.look_ahead();
    l.field("totalCount").exists() || l.field("totalCountCapped").exists()
}

macro_rules! connection {
    ($conn:ident, $edge:ident, $node:ident, $row:ty) => {
        #[derive(SimpleObject)]
        pub struct $edge {
            pub(crate) cursor: String,
            pub(crate) node: $node,
        }

        pub struct $conn {
            pub(crate) edges: Vec<$edge>,
            pub(crate) page_info: PageInfo,
            pub(crate) total: TotalCount,
        }

        impl $conn {
            pub(crate) fn from_rows(
                mut rows: Vec<$row>,
                first: i32,
                after: bool,
                total: TotalCount,
                cursor_of: impl Fn(&$row) -> String,
            ) -> $conn {
                let has_next = rows.len() > first as usize;
                rows.truncate(first as usize);
                let cursors: Vec<String> = rows.iter().map(&cursor_of).collect();
                let page_info = PageInfo::new(has_next, after, &cursors);
                let edges = rows.into_iter().zip(cursors).map(|(r, cursor)| $edge { cursor, node: r.into() }).collect();
                $conn { edges, page_info, total }
            }
        }

        #[Object]
        impl $conn {
            async fn edges(&self) -> &Vec<$edge> {
                &self.edges
            }

            async fn page_info(&self) -> &PageInfo {
                &self.page_info
            }

            /// How many items match, at any page: exact where a counter keeps it (tasks unfiltered
            /// or by project and status), else counted up to 1,000 — beyond that it is
            /// 1,000 and `totalCountCapped` is true (docs/api.md, "Counts").
            async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
                match &self.total {
                    TotalCount::Known(c) => Ok(c.n),
                    TotalCount::ProjectTasks(p, s) => Ok(ctx
                        .data_unchecked::<DataLoader<ProjectTaskCountLoader>>()
                        .load_one((*p, s.clone()))
                        .await
                        .map_err(|e| (*e).clone())?
                        .unwrap_or(0)),
                    TotalCount::NotAsked => Err("totalCount was not counted".into()),
                }
            }

            /// True when more than 1,000 items match a filter no counter answers: `totalCount`
            /// then says 1,000.
            async fn total_count_capped(&self) -> bool {
                matches!(&self.total, TotalCount::Known(c) if c.capped)
            }
        }
    };
}

connection!(ProjectConnection, ProjectEdge, Project, ProjectRow);
connection!(TaskConnection, TaskEdge, Task, TaskRow);
connection!(MemberConnection, MemberEdge, Member, MemberRow);
connection!(TenantConnection, TenantEdge, PlatformTenant, (String, PlatformTenantRow));
connection!(EventConnection, EventEdge, AuditEvent, keel_store::RecordedEvent);

/// One event of the log, for audit reviewers. `payload` has the current shape of its type
/// (older schema versions upcast); personal data of erased members reads "[erased]".
#[derive(SimpleObject)]
pub struct AuditEvent {
    pub(crate) position: i64,
    pub(crate) event_id: ID,
    pub(crate) stream_id: ID,
    pub(crate) stream_type: String,
    pub(crate) version: i64,
    pub(crate) event_type: String,
    /// The schema version it was written with.
    pub(crate) schema_version: i32,
    pub(crate) actor: Option<String>,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) payload: async_graphql::Json<serde_json::Value>,
    pub(crate) metadata: async_graphql::Json<serde_json::Value>,
    /// SHA-256 chaining this event to the previous one of its stream (hex).
    pub(crate) hash: String,
    pub(crate) prev_hash: Option<String>,
}

impl From<keel_store::RecordedEvent> for AuditEvent {
    fn from(e: keel_store::RecordedEvent) -> Self {
        let mut payload = match e.decode() {
            Ok(event) => event.payload(),
            Err(_) => e.payload.clone(),
        };
        // The audit shows who pointed data where, never a webhook's secret (not even sealed).
        keel_store::crypto::redact_secrets(&e.event_type, &mut payload);
        AuditEvent {
            position: e.position,
            event_id: ID(e.event_id.to_string()),
            stream_id: ID(e.stream_id.to_string()),
            stream_type: e.stream_type,
            version: e.stream_version,
            event_type: e.event_type,
            schema_version: e.schema_version,
            actor: e.metadata.get("actor").and_then(|a| a.as_str()).map(str::to_owned),
            recorded_at: e.recorded_at,
            payload: async_graphql::Json(payload),
            metadata: async_graphql::Json(e.metadata),
            hash: hex::encode(&e.hash),
            prev_hash: e.prev_hash.as_ref().map(hex::encode),
        }
    }
}

/// A stream's aggregate as of one of its versions.
#[derive(SimpleObject)]
pub struct AggregateState {
    pub(crate) stream_id: ID,
    pub(crate) stream_type: String,
    pub(crate) version: i64,
    /// When its last applied event was recorded.
    pub(crate) at: DateTime<Utc>,
    pub(crate) state: async_graphql::Json<serde_json::Value>,
}

/// One event of a stream's history and the state after it.
#[derive(SimpleObject)]
pub struct HistoryStep {
    pub(crate) version: i64,
    pub(crate) event_type: String,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) actor: Option<String>,
    pub(crate) event: async_graphql::Json<serde_json::Value>,
    pub(crate) state: async_graphql::Json<serde_json::Value>,
}

/// A tenant as the platform sees it.
#[derive(SimpleObject)]
pub struct PlatformTenant {
    pub(crate) id: ID,
    pub(crate) name: String,
    pub(crate) slug: String,
    pub(crate) plan: Plan,
    pub(crate) status: TenantStatus,
    pub(crate) seats_used: i32,
    pub(crate) active_projects: i32,
    pub(crate) created_at: DateTime<Utc>,
    /// Where the tenant lives: `pool` (the platform's own database) or the name of a dedicated
    /// database (docs/tenancy.md).
    pub(crate) database: String,
}

impl From<(String, PlatformTenantRow)> for PlatformTenant {
    fn from((database, r): (String, PlatformTenantRow)) -> Self {
        PlatformTenant {
            database,
            id: ID(r.tenant_id.to_string()),
            name: r.name,
            slug: r.slug,
            plan: r.plan.into(),
            status: r.status.into(),
            seats_used: r.seats_used,
            active_projects: r.active_projects,
            created_at: r.created_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct DayCount {
    pub(crate) date: Date,
    pub(crate) count: i64,
}

#[derive(SimpleObject)]
pub struct UsageDay {
    pub(crate) date: Date,
    pub(crate) metric: String,
    pub(crate) units: i64,
}

#[derive(SimpleObject)]
pub struct UsageQuota {
    /// First day of the calendar month (UTC).
    pub(crate) month: Date,
    pub(crate) units: i64,
    /// `null` means unlimited.
    pub(crate) quota: Option<i64>,
}

/// What one tenant costs the platform (the platform view's `tenantUsage`), for cost allocation.
#[derive(SimpleObject)]
pub struct TenantPlatformUsage {
    pub(crate) tenant_id: ID,
    /// Requests this Keel process has answered for the tenant since it started (each process
    /// counts its own: add them up over the instances).
    pub(crate) requests: i64,
    /// Events the tenant has in the log (everything its commands appended).
    pub(crate) events_appended: i64,
    /// Bytes of the tenant's rows in the event log and the read tables (`pg_column_size`).
    pub(crate) storage_bytes: i64,
    /// Age of the storage measurement, in seconds (it is taken at most once a minute).
    pub(crate) measured_seconds_ago: i64,
}

#[derive(SimpleObject)]
pub struct PlanCount {
    pub(crate) plan: Plan,
    pub(crate) count: i64,
}

/// A webhook endpoint of the tenant (`docs/integration.md`). Its signing secret is never readable:
/// it is shown once, in the answer to the create or rotation that made it.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Webhook {
    pub(crate) id: ID,
    #[graphql(skip)]
    pub(crate) uuid: Uuid,
    pub(crate) url: String,
    /// Event type names, or `*` for every event.
    pub(crate) event_types: Vec<String>,
    pub(crate) description: Option<String>,
    /// Its delivery health: `ACTIVE`; `FAILING` after three failed attempts in a row (still
    /// retried on the schedule); `DISABLED` after the schedule's last attempt failed (a change of
    /// the endpoint, or a replay, enables it again; nothing after its last delivery is lost).
    pub(crate) state: WebhookState,
    /// Events waiting to be delivered to it.
    pub(crate) pending: i64,
    /// Why its last attempt failed (null after a delivery).
    pub(crate) last_error: Option<String>,
    /// Until when the secret before the last rotation still signs (null: no rotation pending).
    pub(crate) previous_secret_valid_until: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

/// One delivery attempt of an event to an endpoint (the delivery log, kept
/// `KEEL_WEBHOOKS_DELIVERY_LOG_DAYS` days).
#[derive(SimpleObject)]
pub struct WebhookDelivery {
    pub(crate) attempted_at: DateTime<Utc>,
    /// The event's id: the `webhook-id` header, the same on every attempt.
    pub(crate) event_id: ID,
    pub(crate) event_type: String,
    /// The event's position in the log.
    pub(crate) position: i64,
    /// 1 for the event's first attempt.
    pub(crate) attempt: i32,
    /// `delivered` (a 2xx) or `failed`.
    pub(crate) outcome: String,
    /// The receiver's HTTP status (null when there was no answer).
    pub(crate) status_code: Option<i32>,
    pub(crate) latency_ms: f64,
    pub(crate) error: Option<String>,
}

/// The most deliveries one endpoint lists.
pub const MAX_DELIVERIES: i32 = 100;

#[ComplexObject]
impl Webhook {
    /// Its newest delivery attempts, newest first (`first`: 1 to 100, default 20).
    async fn deliveries(&self, ctx: &Context<'_>, first: Option<i32>) -> Result<Vec<WebhookDelivery>> {
        let first = first.unwrap_or(20);
        if !(1..=MAX_DELIVERIES).contains(&first) {
            return Err(crate::context::bad_input(&format!("first must be between 1 and {MAX_DELIVERIES}")));
        }
        let mut tx = req(ctx).read_tx().await?;
        let rows = keel_store::webhooks::deliveries(&mut tx, &[self.uuid], i64::from(first)).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(|d| WebhookDelivery {
                attempted_at: d.attempted_at,
                event_id: ID(d.event_id.to_string()),
                event_type: d.event_type,
                position: d.position,
                attempt: d.attempt,
                outcome: d.outcome,
                status_code: d.status_code,
                latency_ms: d.latency_ms,
                error: d.error,
            })
            .collect())
    }
}

impl From<keel_store::webhooks::WebhookRow> for Webhook {
    fn from(r: keel_store::webhooks::WebhookRow) -> Self {
        Webhook {
            id: ID(r.webhook_id.to_string()),
            uuid: r.webhook_id,
            url: r.url,
            event_types: r.event_types,
            description: r.description,
            state: r.state.into(),
            pending: r.pending,
            last_error: r.last_error,
            previous_secret_valid_until: r.previous_valid_until,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}
