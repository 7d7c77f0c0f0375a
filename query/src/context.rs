//! Per-request context: who asks, in which tenant, their role (looked up once), the
//! read-your-writes position to wait for, and a count of the SQL statements the request ran.

use async_graphql::{Error, ErrorExtensions};
use keel_domain::{Role, TenantId};
use keel_gateway::{Code, Principal};
use keel_store::read::ReadModel;
use keel_store::{LogPosition, Store, StoreError, TenantTx, access, checkpoint};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OnceCell};
use uuid::Uuid;

pub(crate) struct RequestCtx {
    pub(crate) principal: Principal,
    pub(crate) store: Store,
    pub(crate) consistency: Option<LogPosition>,
    pub(crate) wait: Duration,
    pub(crate) stale: AtomicBool,
    pub(crate) statements: Arc<AtomicU64>,
    role: OnceCell<Option<Role>>,
    caught_up: Mutex<Vec<&'static str>>,
}

pub(crate) fn forbidden(msg: &str) -> Error {
    Error::new(msg).extend_with(|_, e| e.set("code", Code::Forbidden.graphql()))
}

pub(crate) fn bad_input(msg: &str) -> Error {
    Error::new(msg).extend_with(|_, e| e.set("code", Code::Validation.graphql()))
}

/// A free-text argument, held to the one rule of every stored text (no NUL characters, which
/// PostgreSQL cannot compare or store).
pub(crate) fn text_arg(field: &str, value: Option<String>) -> Result<Option<String>, Error> {
    match value {
        Some(v) => match keel_domain::values::storable(field, &v) {
            Ok(_) => Ok(Some(v)),
            Err(e) => Err(bad_input(&format!("{field} {}", e.message))),
        },
        None => Ok(None),
    }
}

/// Store failures are logged and answered without their text: no SQL reaches a client.
pub(crate) fn internal(e: StoreError) -> Error {
    if e.is_statement_timeout() {
        tracing::warn!(error = %e, "query cancelled at the reader's statement_timeout");
        keel_gateway::metrics::timed_out("statement_timeout");
        return Error::new("the database did not answer within the reader's statement timeout")
            .extend_with(|_, e| e.set("code", Code::DependencyTimeout.graphql()));
    }
    if matches!(e, StoreError::Unavailable) || e.is_connection_lost() {
        tracing::warn!(error = %e, "query answered 503: the database is unreachable");
        return Error::new("the database is unreachable; retry shortly")
            .extend_with(|_, e| e.set("code", Code::DatabaseUnavailable.graphql()));
    }
    if e.is_pool_timeout() {
        tracing::warn!("no reader connection came free within the pool's acquire timeout");
        keel_gateway::metrics::timed_out("pool_acquire");
        return Error::new("no database connection came free in time")
            .extend_with(|_, e| e.set("code", Code::Timeout.graphql()));
    }
    tracing::error!(error = %e, "query failed");
    Error::new("internal error").extend_with(|_, e| e.set("code", Code::Internal.graphql()))
}

/// A store failure of a listing that takes a cursor: a cursor that does not decode is the
/// client's (`BAD_USER_INPUT`); everything else is ours, logged and opaque.
pub(crate) fn listing(e: StoreError) -> Error {
    match e {
        StoreError::BadCursor => bad_input("after is not a valid cursor"),
        StoreError::Conflict { .. }
        | StoreError::Unique(_)
        | StoreError::Decode { .. }
        | StoreError::Corrupt(_)
        | StoreError::Analyst(_)
        | StoreError::Config(_)
        | StoreError::Migration(_)
        | StoreError::Key(_)
        | StoreError::Encode(_)
        | StoreError::Archive(_)
        | StoreError::Placement(_)
        | StoreError::NothingToAppend
        | StoreError::NoControlPlaneRow(_)
        | StoreError::UsageOverflow(_)
        | StoreError::Backend(_)
        | StoreError::NoStoredResponse(_)
        | StoreError::ReadSetChanged(_)
        | StoreError::OutcomeUnknown
        | StoreError::Unavailable
        | StoreError::Database(_) => internal(e),
    }
}

impl RequestCtx {
    pub(crate) fn new(principal: Principal, store: Store, consistency: Option<LogPosition>, wait: Duration) -> Self {
        RequestCtx {
            principal,
            store,
            consistency,
            wait,
            stale: AtomicBool::new(false),
            statements: Arc::new(AtomicU64::new(0)),
            role: OnceCell::new(),
            caught_up: Mutex::new(Vec::new()),
        }
    }

    /// The tenant of a tenant token; platform operators have none.
    pub(crate) fn tenant(&self) -> Result<TenantId, Error> {
        if self.principal.platform {
            return Err(forbidden("platform operators cannot read a tenant's data"));
        }
        self.principal.tenant_id.map(TenantId).ok_or_else(|| forbidden("the token carries no tenant_id"))
    }

    pub(crate) async fn read_tx(&self) -> Result<TenantTx, Error> {
        let tenant = self.tenant()?;
        Ok(self.store.begin_read(tenant).await.map_err(internal)?.counting(self.statements.clone()))
    }

    /// A read transaction for a platform operator on one of the platform's databases
    /// (`databases`): no tenant, the platform view open.
    pub(crate) async fn platform_tx_on(&self, store: &Store) -> Result<TenantTx, Error> {
        if !self.principal.platform {
            return Err(forbidden("only platform operators read the platform view"));
        }
        let tx = store.begin_read(TenantId(Uuid::nil())).await.map_err(internal)?.counting(self.statements.clone());
        tx.as_platform().await.map_err(internal)
    }

    /// The platform's databases: the pool, then each dedicated one (docs/tenancy.md).
    pub(crate) fn databases(&self) -> Vec<(String, Store)> {
        let mut all = vec![(keel_store::placement::POOL.to_owned(), self.store.clone())];
        all.extend(self.store.shards());
        all
    }

    /// Where each tenant placed outside the pool lives (empty with no dedicated database).
    pub(crate) async fn directory(&self) -> Result<std::collections::HashMap<Uuid, String>, Error> {
        if self.store.shards().is_empty() {
            return Ok(Default::default());
        }
        self.store.guarded(self.store.directory()).await.map_err(internal)
    }

    /// The caller's active role in the tenant, or `None` for a non-member.
    pub(crate) async fn role(&self) -> Result<Option<Role>, Error> {
        if self.principal.platform || self.principal.tenant_id.is_none() {
            return Ok(None);
        }
        self.role
            .get_or_try_init(|| async {
                self.until_replica_reached().await?;
                let mut tx = self.read_tx().await?;
                let role = access::member_role(&mut tx, &self.principal.subject).await.map_err(internal)?;
                tx.commit().await.map_err(internal)?;
                Ok::<_, Error>(role)
            })
            .await
            .copied()
    }

    /// Whether the caller may still read what `allowed` guards, as the database says now (not the
    /// role cached for the request): an active member, of a tenant that is active. Subscriptions
    /// ask before every push.
    pub(crate) async fn still_allowed(&self, allowed: fn(Role) -> bool) -> Result<bool, Error> {
        let mut tx = self.read_tx().await?;
        let role = access::member_role(&mut tx, &self.principal.subject).await.map_err(internal)?;
        let tenant = access::tenant_row(&mut tx, false).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(role.is_some_and(allowed) && tenant.is_some_and(|t| t.status == keel_domain::tenant::TenantStatus::Active))
    }

    /// Requires an active membership whose role passes `allowed`.
    pub(crate) async fn require(&self, allowed: fn(Role) -> bool) -> Result<Role, Error> {
        self.tenant()?;
        match self.role().await? {
            Some(r) if allowed(r) => Ok(r),
            Some(r) => Err(forbidden(&format!("the {} role cannot read this", r.as_str()))),
            None => Err(forbidden("you are not an active member of this tenant")),
        }
    }

    /// With a read replica and a `Keel-Consistency` position: waits (at most the configured
    /// time, then marks the answer stale) until the replica has replayed that position, so the
    /// membership a command just made is there before the role is looked up.
    async fn until_replica_reached(&self) -> Result<(), Error> {
        let Some(want) = self.consistency.filter(|_| self.store.has_read_replica()) else { return Ok(()) };
        let deadline = Instant::now() + self.wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let at = self.store.guarded(checkpoint::highest(self.store.read_pool())).await.map_err(internal)?;
            if at >= want {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                self.stale.store(true, Ordering::Relaxed);
                return Ok(());
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    /// Waits until each of the read models has applied the request's `Keel-Consistency`
    /// position, at most the configured time; past it the answer is marked stale instead of
    /// blocking.
    pub(crate) async fn consistent(&self, models: &[&'static ReadModel]) -> Result<(), Error> {
        let Some(want) = self.consistency else { return Ok(()) };
        let mut done = self.caught_up.lock().await;
        for projection in models.iter().map(|m| m.name) {
            if done.contains(&projection) {
                continue;
            }
            if !self.wait_for(projection, want).await? {
                self.stale.store(true, Ordering::Relaxed);
            }
            done.push(projection);
        }
        Ok(())
    }

    /// Waits until `projection` has applied `want`, at most the configured time; whether it did.
    /// A worker of this process that commits a checkpoint wakes the wait at once
    /// (`Store::checkpoint_moved`); otherwise it looks again after 2, 4, 8, ... up to 25 ms.
    pub(crate) async fn wait_for(&self, projection: &str, want: LogPosition) -> Result<bool, Error> {
        let deadline = Instant::now() + self.wait;
        let mut pause = Duration::from_millis(2);
        loop {
            // Enabled before the read, so a move between the read and the wait is not missed.
            let moved = self.store.checkpoint_moves();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let at =
                self.store.guarded(checkpoint::read(self.store.read_pool(), projection)).await.map_err(internal)?;
            if at >= want {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::select! {
                _ = moved => {}
                _ = tokio::time::sleep(pause.min(deadline - now)) => pause = (pause * 2).min(Duration::from_millis(25)),
            }
        }
    }

    /// Where `projection` stands now.
    pub(crate) async fn checkpoint_of(&self, projection: &str) -> Result<LogPosition, Error> {
        self.store.guarded(checkpoint::read(self.store.read_pool(), projection)).await.map_err(internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: &Error) -> Option<String> {
        e.extensions.as_ref().and_then(|x| x.get("code")).map(|v| v.to_string())
    }

    #[test]
    fn only_a_bad_cursor_is_the_clients_fault_in_a_listing() {
        let bad = listing(StoreError::BadCursor);
        assert_eq!(
            (bad.message.as_str(), code(&bad).as_deref()),
            ("after is not a valid cursor", Some("\"BAD_USER_INPUT\""))
        );
        let corrupt = listing(StoreError::Corrupt("unknown role auditor".into()));
        assert_eq!((corrupt.message.as_str(), code(&corrupt).as_deref()), ("internal error", Some("\"INTERNAL\"")));
    }
}
