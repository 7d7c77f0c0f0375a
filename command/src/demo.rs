//! The in-process entry point of the demo seeder: a command of the demo tenant, run through the
//! same path as every REST command (`exec`: membership, idempotency key, load, `decide`, append
//! with the hash chain and the inline tables, retries) at a time the caller gives.
//!
//! This is the only way a command gets a time other than the system clock, and it is not
//! reachable over HTTP: no route calls it. It acts in one tenant only, the demo tenant (its id
//! is fixed, see `tenant_id`), and every event it appends carries `demo: true` in its metadata.

use crate::exec::{Clock, Cmd, Done, execute_with};
use crate::request::WriteMeta;
use crate::{CommandState, WebhookSettings};
use chrono::{DateTime, Utc};
use keel_domain::member::MemberCommand;
use keel_domain::project::ProjectCommand;
use keel_domain::task::TaskCommand;
use keel_domain::tenant::{ProvisionTenant, TenantCommand};
use keel_domain::usage::RecordUsage;
use keel_domain::{MemberId, ProjectId, TaskId, TenantId};
use keel_gateway::{Principal, Problem};
use keel_store::Store;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The namespace of every demo id (UUID v5): the same names give the same ids in every run.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6b65_656c_6465_4d6f_8000_0000_0000_0001);

/// The slug of the demo tenant.
pub const SLUG: &str = "demo";

/// A demo id: UUID v5 of `name` in `NAMESPACE`.
pub fn id(name: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// The demo tenant's id; the only tenant `execute_at` acts in.
pub fn tenant_id() -> TenantId {
    TenantId(id("tenant"))
}

/// A command of the demo tenant.
#[derive(Debug, Clone)]
pub enum DemoCommand {
    /// Creates the demo tenant; its `tenant_id` must be `tenant_id()`.
    Provision(ProvisionTenant),
    Member(MemberId, MemberCommand),
    Project(ProjectId, ProjectCommand),
    Task(TaskId, TaskCommand),
    Usage(RecordUsage),
}

/// One command as the seeder issues it.
#[derive(Debug, Clone)]
pub struct DemoCall {
    /// The user id of the member who issues it (authorized from its membership like any
    /// caller); for `Provision`, the name of the platform actor.
    pub actor: String,
    /// Its idempotency key (a repeat within the keys' retention answers what was answered).
    pub key: String,
    /// The time it happens at: the events' `at` and their recorded-at.
    pub at: DateTime<Utc>,
    pub command: DemoCommand,
}

/// What a call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoOutcome {
    /// Events were appended (or the command changed nothing); the stream's version after it.
    Written { id: Uuid, version: i64 },
    /// The idempotency key had been used already: nothing was run.
    Replayed,
}

/// Runs `call` in the demo tenant through the command path, at `call.at`; its events are marked
/// `demo: true`. Errors are the problems a REST client would get.
pub async fn execute_at(store: &Store, call: DemoCall) -> Result<DemoOutcome, Problem> {
    let tenant = tenant_id();
    let (cmd, created, platform) = match call.command {
        DemoCommand::Provision(p) => {
            if p.tenant_id != tenant {
                return Err(Problem::forbidden("only the demo tenant is provisioned by the demo seeder"));
            }
            (Cmd::Tenant(TenantCommand::Provision(p)), true, true)
        }
        DemoCommand::Member(id, c) => (Cmd::Member(id, c), true, false),
        DemoCommand::Project(id, c) => (Cmd::Project(id, c), true, false),
        DemoCommand::Task(id, c) => (Cmd::Task(id, c), true, false),
        DemoCommand::Usage(c) => (Cmd::Usage(c), true, false),
    };
    let mut h = Sha256::new();
    h.update(b"demo-seed\n");
    h.update(call.key.as_bytes());
    let meta = WriteMeta {
        principal: Principal { subject: call.actor, tenant_id: (!platform).then_some(tenant.0), platform },
        request_id: None,
        if_match: None,
        idempotency_key: Some(call.key),
        request_hash: h.finalize().to_vec(),
    };
    let state = CommandState { store: store.clone(), webhooks: WebhookSettings::default() };
    match execute_with(&state, &meta, tenant, cmd, created, Clock::Demo(call.at)).await? {
        Done::Written { id, version, .. } => Ok(DemoOutcome::Written { id, version }),
        Done::Replayed { .. } => Ok(DemoOutcome::Replayed),
    }
}
