//! The in-process entry point of the control plane for `keel tenant`: the platform commands of
//! the REST routes (`routes/tenants.rs`), run through the same path (`exec`: validation in
//! `decide`, append with the hash chain, inline tables, retries) as a platform operator, at the
//! system clock. The same commands give the same events and the same problems as over REST.
//!
//! It is not reachable over HTTP: the caller (the `keel` binary, run by someone who holds the
//! database URL) is the platform operator, recorded as `platform:<actor>` in every event.

use crate::exec::{Clock, Cmd, Done, execute_with};
use crate::request::WriteMeta;
use crate::{CommandState, WebhookSettings};
use keel_domain::tenant::{OwnerInput, ProvisionTenant, TenantCommand};
use keel_domain::{MemberId, TenantId};
use keel_gateway::{Principal, Problem};
use keel_store::Store;
use sha2::{Digest, Sha256};

/// A platform command, as the REST platform routes take it.
#[derive(Debug, Clone)]
pub enum PlatformCommand {
    /// `POST /api/v1/tenants`: a new tenant (its id made here, UUIDv7) with its owner.
    Provision { name: String, slug: String, plan: String, owner: OwnerInput },
    /// `PUT /api/v1/tenants/{id}/plan`.
    ChangePlan { tenant: TenantId, plan: String },
    /// `POST /api/v1/tenants/{id}/suspend`.
    Suspend { tenant: TenantId, reason: Option<String> },
    /// `POST /api/v1/tenants/{id}/reactivate`.
    Reactivate { tenant: TenantId },
    /// `POST /api/v1/tenants/{id}/erase`.
    Erase { tenant: TenantId },
}

/// What a platform command wrote: the body a REST client gets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlatformOutcome {
    /// The tenant.
    pub id: uuid::Uuid,
    /// Its stream's version after the command.
    pub version: i64,
    /// The consistency token of the write.
    pub position: String,
}

/// Runs `command` as the platform operator `actor` (recorded as `platform:<actor>`). Errors are
/// the problems the REST route would answer.
pub async fn execute(store: &Store, actor: &str, command: PlatformCommand) -> Result<PlatformOutcome, Problem> {
    let (tenant, cmd, created) = match command {
        PlatformCommand::Provision { name, slug, plan, owner } => {
            let tenant = TenantId::new_v7();
            let p = ProvisionTenant { tenant_id: tenant, owner_member_id: MemberId::new_v7(), name, slug, plan, owner };
            (tenant, TenantCommand::Provision(p), true)
        }
        PlatformCommand::ChangePlan { tenant, plan } => (tenant, TenantCommand::ChangePlan { plan }, false),
        PlatformCommand::Suspend { tenant, reason } => (tenant, TenantCommand::Suspend { reason }, false),
        PlatformCommand::Reactivate { tenant } => (tenant, TenantCommand::Reactivate, false),
        PlatformCommand::Erase { tenant } => (tenant, TenantCommand::Erase, false),
    };
    let mut h = Sha256::new();
    h.update(b"platform-cli\n");
    h.update(tenant.0.as_bytes());
    let meta = WriteMeta {
        principal: Principal { subject: actor.to_owned(), tenant_id: None, platform: true },
        request_id: None,
        if_match: None,
        idempotency_key: None,
        request_hash: h.finalize().to_vec(),
    };
    let state = CommandState { store: store.clone(), webhooks: WebhookSettings::default() };
    match execute_with(&state, &meta, tenant, Cmd::Tenant(cmd), created, Clock::System).await? {
        Done::Written { id, version, position, database, .. } => {
            Ok(PlatformOutcome { id, version, position: keel_store::placement::token(position, &database) })
        }
        // Without an idempotency key nothing is replayed.
        Done::Replayed { .. } => Err(Problem::internal()),
    }
}
