//! The GraphQL schema: `me`, `tenant`, `project`, `projects`.

use crate::context::{RequestCtx, bad_input, internal};
use crate::cursor;
use async_graphql::{Context, EmptyMutation, EmptySubscription, Enum, ID, Object, Result, Schema, SimpleObject};
use chrono::{DateTime, Utc};
use keel_domain::{Plan as DomainPlan, Role as DomainRole};
use keel_store::access;
use keel_store::read::projects::{self, ProjectKey, ProjectRow};
use uuid::Uuid;

pub type KeelSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

pub const MAX_PAGE: i32 = 100;
const DEFAULT_PAGE: i32 = 20;

pub fn build_schema() -> KeelSchema {
    Schema::build(QueryRoot, EmptyMutation, EmptySubscription).limit_depth(12).limit_complexity(2_000).finish()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
    Auditor,
}

impl From<DomainRole> for Role {
    fn from(r: DomainRole) -> Self {
        match r {
            DomainRole::Owner => Role::Owner,
            DomainRole::Admin => Role::Admin,
            DomainRole::Member => Role::Member,
            DomainRole::Viewer => Role::Viewer,
            DomainRole::Auditor => Role::Auditor,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Plan {
    Free,
    Team,
    Enterprise,
}

impl From<DomainPlan> for Plan {
    fn from(p: DomainPlan) -> Self {
        match p {
            DomainPlan::Free => Plan::Free,
            DomainPlan::Team => Plan::Team,
            DomainPlan::Enterprise => Plan::Enterprise,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ProjectStatus {
    Active,
    Archived,
}

#[derive(SimpleObject)]
pub struct Me {
    user_id: String,
    tenant_id: Option<ID>,
    /// `null` for platform operators and for users who are not members of the token's tenant.
    role: Option<Role>,
    platform: bool,
}

#[derive(SimpleObject)]
pub struct Tenant {
    id: ID,
    name: String,
    slug: String,
    plan: Plan,
    status: TenantStatus,
    seats_used: i32,
    /// `null` means unlimited.
    seat_limit: Option<i32>,
    active_projects: i32,
    /// `null` means unlimited.
    project_limit: Option<i32>,
}

#[derive(SimpleObject)]
pub struct TaskCounts {
    todo: i32,
    in_progress: i32,
    done: i32,
    total: i32,
}

#[derive(SimpleObject)]
pub struct Project {
    id: ID,
    name: String,
    description: Option<String>,
    status: ProjectStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    task_counts: TaskCounts,
    /// Share of tasks done, 0.0 to 1.0 (0.0 without tasks).
    progress: f64,
}

impl From<ProjectRow> for Project {
    fn from(r: ProjectRow) -> Self {
        let total = r.tasks_todo + r.tasks_in_progress + r.tasks_done;
        Project {
            id: ID(r.project_id.to_string()),
            name: r.name,
            description: r.description,
            status: if r.status == "archived" { ProjectStatus::Archived } else { ProjectStatus::Active },
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            task_counts: TaskCounts { todo: r.tasks_todo, in_progress: r.tasks_in_progress, done: r.tasks_done, total },
            progress: if total == 0 { 0.0 } else { f64::from(r.tasks_done) / f64::from(total) },
        }
    }
}

#[derive(SimpleObject)]
pub struct PageInfo {
    has_next_page: bool,
    has_previous_page: bool,
    start_cursor: Option<String>,
    end_cursor: Option<String>,
}

#[derive(SimpleObject)]
pub struct ProjectEdge {
    cursor: String,
    node: Project,
}

#[derive(SimpleObject)]
pub struct ProjectConnection {
    edges: Vec<ProjectEdge>,
    page_info: PageInfo,
    total_count: i64,
}

pub struct QueryRoot;

fn req<'a>(ctx: &'a Context<'_>) -> &'a RequestCtx {
    ctx.data_unchecked::<std::sync::Arc<RequestCtx>>()
}

fn limit_of(plan: DomainPlan, f: fn(DomainPlan) -> Option<u64>) -> Option<i32> {
    f(plan).map(|v| v as i32)
}

#[Object]
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
        let t = row.ok_or_else(|| crate::context::forbidden("you are not an active member of this tenant"))?;
        Ok(Tenant {
            id: ID(r.tenant()?.to_string()),
            name: t.name,
            slug: t.slug,
            plan: t.plan.into(),
            status: if t.suspended { TenantStatus::Suspended } else { TenantStatus::Active },
            seats_used: t.seats_used as i32,
            seat_limit: limit_of(t.plan, DomainPlan::seat_limit),
            active_projects: t.active_projects as i32,
            project_limit: limit_of(t.plan, DomainPlan::active_project_limit),
        })
    }

    /// One project; `null` when it does not exist or belongs to another tenant.
    async fn project(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Project>> {
        let r = req(ctx);
        r.require(DomainRole::can_read_data).await?;
        let Ok(id) = Uuid::parse_str(&id) else { return Ok(None) };
        r.consistent("projects").await?;
        let mut tx = r.read_tx().await?;
        let row = projects::get(&mut tx, id).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(row.map(Project::from))
    }

    /// Projects, oldest first, as a Relay connection. `first` is at most 100.
    async fn projects(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<ProjectConnection> {
        let r = req(ctx);
        r.require(DomainRole::can_read_data).await?;
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(0..=MAX_PAGE).contains(&first) {
            return Err(bad_input(&format!("first must be between 0 and {MAX_PAGE}")));
        }
        let after_key = match &after {
            Some(c) => Some(cursor::decode_project(c).ok_or_else(|| bad_input("after is not a valid cursor"))?),
            None => None,
        };
        r.consistent("projects").await?;
        let mut tx = r.read_tx().await?;
        let mut rows = projects::list(&mut tx, after_key, i64::from(first) + 1).await.map_err(internal)?;
        let total_count = projects::count(&mut tx).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        let has_next_page = rows.len() > first as usize;
        rows.truncate(first as usize);
        let edges: Vec<ProjectEdge> = rows
            .into_iter()
            .map(|row| ProjectEdge {
                cursor: cursor::encode_project(&ProjectKey { created_at: row.created_at, project_id: row.project_id }),
                node: row.into(),
            })
            .collect();
        Ok(ProjectConnection {
            page_info: PageInfo {
                has_next_page,
                has_previous_page: after.is_some(),
                start_cursor: edges.first().map(|e| e.cursor.clone()),
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
            total_count,
        })
    }
}
