//! How every command runs. A command whose events need no inline table, no sealing and no plan
//! limit counted under the tenant row's lock (task commands, a project's update), sent without an
//! idempotency key, runs as two calls (`keel_store::write_path`): one reads the caller's role,
//! the tenant row and what the decision needs, one appends, its own transaction, after checking
//! that none of what was read has changed. Every other command runs in one transaction per
//! attempt in which the caller's membership is read, the idempotency key is claimed, the
//! aggregate is loaded and decided, and the events are appended with the inline tables. Either
//! way a lost race is retried against fresh state.

use crate::CommandState;
use crate::errors;
use crate::request::WriteMeta;
use crate::respond::written_body;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keel_domain::member::{Member, MemberCommand, MemberContext};
use keel_domain::project::{Project, ProjectCommand, TenantContext};
use keel_domain::task::{ProjectState, Task, TaskCommand, TaskContext};
use keel_domain::tenant::{Tenant, TenantCommand, TenantUsage};
use keel_domain::usage::{RecordUsage, UsageBatch, UsageContext};
use keel_domain::webhook::{Webhook, WebhookCommand, WebhookContext};
use keel_domain::{
    Aggregate, Decide, DomainError, Event, MemberId, ProjectId, Role, StreamType, TaskId, TenantId, WebhookId,
};
use keel_gateway::Problem;
use keel_store::access::TenantRow;
use keel_store::log::{KeyToStore, ReadGuard, SnapshotDue};
use keel_store::write_path::{self, KeyRead, ReadRequest, ReadSet, StreamToRead, TenantLock, WriteConn};
use keel_store::{CommitOutcome, EventMetadata, LogPosition, StoreError, TenantTx, log, snapshot};
use tracing::Instrument;
use uuid::Uuid;

/// How many times a command that lost a race is tried again against fresh state.
const RETRIES: usize = 3;

/// A command and the stream it acts on (a tenant command's stream is the tenant, a usage
/// batch's its `batch_id`).
#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    Tenant(TenantCommand),
    Member(MemberId, MemberCommand),
    Project(ProjectId, ProjectCommand),
    Task(TaskId, TaskCommand),
    Usage(RecordUsage),
    /// With the settings its URL rules and rotation read.
    Webhook(WebhookId, WebhookCommand, crate::WebhookSettings),
}

impl Cmd {
    fn is_platform(&self) -> bool {
        matches!(self, Cmd::Tenant(_))
    }

    /// Whether the command locks the tenant row `FOR UPDATE` up front: it counts against a plan
    /// limit or the owner rule, or its events move the tenant's counters (an archive lowers
    /// `active_projects`). Every other command share-locks the row; one that share-locked it and
    /// then updated it in the append would deadlock with a concurrent one doing the same.
    fn locks_tenant(&self) -> bool {
        match self {
            Cmd::Tenant(_) | Cmd::Member(..) => true,
            Cmd::Project(_, c) => {
                matches!(c, ProjectCommand::Create { .. } | ProjectCommand::Restore | ProjectCommand::Archive)
            }
            // A create counts the tenant's endpoints against their limit.
            Cmd::Webhook(_, c, _) => matches!(c, WebhookCommand::Create { .. }),
            Cmd::Task(..) | Cmd::Usage(..) => false,
        }
    }

    /// Whether the command creates a stream whose id the server made for this request.
    fn creates_new_stream(&self) -> bool {
        matches!(
            self,
            Cmd::Member(_, MemberCommand::Invite { .. })
                | Cmd::Project(_, ProjectCommand::Create { .. })
                | Cmd::Task(_, TaskCommand::Create { .. })
                | Cmd::Webhook(_, WebhookCommand::Create { .. }, _)
        )
    }

    /// What the caller's role must allow before anything is loaded.
    fn role_allows(&self, role: Role) -> bool {
        match self {
            Cmd::Tenant(_) => false,
            Cmd::Member(_, MemberCommand::Erase) => role == Role::Owner,
            Cmd::Member(..) => role.can_manage_members(),
            Cmd::Project(..) | Cmd::Task(..) | Cmd::Usage(..) => role.can_write_work(),
            Cmd::Webhook(..) => role.can_manage_webhooks(),
        }
    }
}

/// What a successful attempt wrote.
struct Outcome {
    id: Uuid,
    version: i64,
    position: LogPosition,
    /// Nothing was appended (the command changed nothing).
    unchanged: bool,
}

enum Failure {
    Problem(Problem),
    Domain(DomainError),
    Store(StoreError),
    /// The two-call path met something only a transaction can read (a snapshot in an old
    /// format, a stream it did not fetch): the attempt is made again as a transaction.
    NeedsTransaction,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<DomainError> for Failure {
    fn from(e: DomainError) -> Self {
        Failure::Domain(e)
    }
}

impl From<Problem> for Failure {
    fn from(p: Problem) -> Self {
        Failure::Problem(p)
    }
}

/// The tenant a tenant-scoped command acts in. Platform operators never reach a tenant's data.
pub(crate) fn tenant_of(meta: &WriteMeta) -> Result<TenantId, Problem> {
    let p = &meta.principal;
    if p.platform {
        return Err(Problem::forbidden("platform operators cannot act inside a tenant"));
    }
    p.tenant_id.map(TenantId).ok_or_else(|| Problem::forbidden("the token carries no tenant_id"))
}

/// Where a command's time comes from. Every REST request reads the system clock: no header or
/// field of a request can name another time. Only the demo seeder's in-process entry point
/// (`crate::demo::execute_at`, which acts in the demo tenant alone) passes one, and its events
/// are marked as demo data in their metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    System,
    Demo(DateTime<Utc>),
}

impl Clock {
    fn now(self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Demo(at) => at,
        }
    }

    fn is_demo(self) -> bool {
        matches!(self, Clock::Demo(_))
    }
}

/// What a command answered: written (or unchanged), or the stored answer to its idempotency key.
pub(crate) enum Done {
    Written { status: StatusCode, id: Uuid, version: i64, position: LogPosition, database: String },
    Replayed { status: u16, response: serde_json::Value },
}

impl Done {
    pub(crate) fn into_response(self) -> Response {
        match self {
            Done::Written { status, id, version, position, database } => {
                crate::respond::written(status, id, version, &keel_store::placement::token(position, &database))
            }
            Done::Replayed { status, response } => crate::respond::replay(status, response),
        }
    }

    /// The answer as the tenant's database `database` gives it: its token names that database
    /// (a stored answer's too, which was stored without it).
    fn in_database(self, database: &str) -> Done {
        match self {
            Done::Written { status, id, version, position, .. } => {
                Done::Written { status, id, version, position, database: database.to_owned() }
            }
            Done::Replayed { status, mut response } => {
                if let Some(t) = response["position"].as_str() {
                    response["position"] = keel_store::placement::tag_token(t, database).into();
                }
                Done::Replayed { status, response }
            }
        }
    }
}

/// How long a command waits for a moving tenant's new database to be named in the directory
/// before it answers 503 (the move's fence itself is bounded by `keel tenant move --fence`).
const MOVED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `cmd` in `tenant` and answers `created` (201) or 200.
pub(crate) async fn execute(
    state: &CommandState,
    meta: &WriteMeta,
    tenant: TenantId,
    cmd: Cmd,
    created: bool,
) -> Result<Response, Problem> {
    execute_with(state, meta, tenant, cmd, created, Clock::System).await.map(Done::into_response)
}

/// `execute` at the time `clock` gives (see `Clock`). An attempt that fails on a transient
/// error — a lost race, a serialization failure or deadlock, a connection cut at any step before
/// the commit — is run again against fresh state, up to `RETRIES` times; a commit whose answer
/// was lost is resolved by asking the database (`Store::commit_outcome`), never guessed.
pub(crate) async fn execute_with(
    state: &CommandState,
    meta: &WriteMeta,
    tenant: TenantId,
    cmd: Cmd,
    created: bool,
    clock: Clock,
) -> Result<Done, Problem> {
    if cmd.is_platform() && !meta.principal.platform {
        return Err(Problem::forbidden("this command needs the platform:admin scope"));
    }
    // The tenant's own database (docs/tenancy.md): the pool's store unless it is placed elsewhere.
    let base = state;
    let route = async || -> Result<CommandState, Problem> {
        Ok(CommandState { store: base.store.for_tenant(tenant).await.map_err(errors::store)?, ..base.clone() })
    };
    let mut routed = route().await?;
    let mut moved_since: Option<std::time::Instant> = None;
    let md = metadata(meta, clock.is_demo());
    let mut attempt = 0;
    // Whether an earlier attempt lost a race (not only its connection).
    let mut raced = false;
    // Behind a transaction pooler two calls cannot be two transactions of one session: one
    // transaction then.
    let mut in_calls = in_two_calls(&cmd) && !routed.store.pooled();
    loop {
        let state = &routed;
        let tried = if in_calls {
            attempt_calls(state, meta, tenant, &cmd, created, clock, &md, attempt).await
        } else {
            attempt_once(state, meta, tenant, &cmd, created, clock, &md, attempt).await
        };
        let failure = match tried {
            Ok(done) => return Ok(done.in_database(state.store.database_name())),
            Err(f) => f,
        };
        // The tenant moved while this command ran (or the directory was read before the move):
        // nothing was written; it runs again where the directory now says, waiting, not failing,
        // while the move switches over.
        if let Failure::Store(e) = &failure
            && e.is_tenant_moved()
        {
            let since = *moved_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= MOVED_WAIT {
                return Err(errors::store(StoreError::Unavailable));
            }
            tracing::info!("the tenant moved to another database; following it");
            base.store.forget_placement(tenant);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            routed = route().await?;
            in_calls = in_calls && !routed.store.pooled();
            continue;
        }
        match failure {
            Failure::NeedsTransaction if in_calls => {
                in_calls = false;
            }
            Failure::Store(StoreError::Conflict { .. }) if pins_version(meta) => {
                return Err(errors::precondition_failed());
            }
            Failure::Store(e) if transient(&e) && attempt < RETRIES => {
                if e.is_connection_lost() {
                    state.store.connection_lost();
                    tracing::warn!(attempt, error = %e, "lost the database connection before the commit; retrying");
                    // A moment for the pool to replace the connection (or the breaker to open).
                    tokio::time::sleep(std::time::Duration::from_millis(20 * (attempt as u64 + 1))).await;
                } else {
                    raced = true;
                    tracing::info!(attempt, error = %e, "lost a race; retrying against fresh state");
                }
                attempt += 1;
            }
            Failure::Domain(e)
                if raced && matches!(e, DomainError::RuleViolated(_) | DomainError::AlreadyExists(_)) =>
            {
                // The race was lost to a change after which the command no longer holds.
                return Err(errors::conflict(&e.to_string()));
            }
            Failure::Domain(e) => return Err(errors::domain(e)),
            Failure::Store(e) => return Err(errors::store(e)),
            Failure::Problem(p) => return Err(p),
            Failure::NeedsTransaction => return Err(Problem::internal()),
        }
    }
}

/// Whether `cmd` runs as the write path's two calls: its events need no sealing, and no limit
/// counted under the tenant row's update lock (a usage batch's months are checked again by the
/// append). Its idempotency key, if any, is looked up by the read and stored with its answer by
/// the append.
fn in_two_calls(cmd: &Cmd) -> bool {
    !cmd.is_platform()
        && !cmd.locks_tenant()
        && matches!(cmd, Cmd::Task(..) | Cmd::Project(_, ProjectCommand::Update { .. }) | Cmd::Usage(..))
}

fn to_read<A: Aggregate>(id: Uuid) -> StreamToRead {
    StreamToRead { id, stream_type: A::STREAM_TYPE.as_str(), state_version: A::STATE_VERSION }
}

/// Everything a command decides on, read in one call: the caller's role and the tenant row (locked
/// as the command needs, in a transaction), its idempotency key, its stream (unless the server
/// just made its id), a task's project (named by a create, else followed from the task's first
/// event) and the member it names, a member command's active owners, a webhook create's
/// endpoints, and a usage batch's months and record ids.
fn read_request<'a>(cmd: &'a Cmd, meta: &'a WriteMeta, tenant: TenantId, fresh: bool, in_tx: bool) -> ReadRequest<'a> {
    let mut req = ReadRequest {
        user: (!cmd.is_platform()).then_some(meta.principal.subject.as_str()),
        key: meta.idempotency_key.as_deref().map(|k| (k, meta.request_hash.as_slice())),
        ..ReadRequest::default()
    };
    if in_tx {
        req.lock = match cmd {
            Cmd::Tenant(TenantCommand::Provision(_)) => None,
            _ if cmd.is_platform() || cmd.locks_tenant() => Some(TenantLock::Update),
            _ => Some(TenantLock::Share),
        };
    }
    match cmd {
        Cmd::Tenant(TenantCommand::Provision(p)) => req.streams.push(to_read::<Tenant>(p.tenant_id.0)),
        Cmd::Tenant(_) => req.streams.push(to_read::<Tenant>(tenant.0)),
        // A new member's or endpoint's stream is read too (it is empty): the read then says that
        // it has no data key yet, which its sealed fields need.
        Cmd::Member(id, _) => {
            req.streams.push(to_read::<Member>(id.0));
            req.owners = true;
        }
        Cmd::Task(id, c) => {
            if !fresh {
                req.streams.push(to_read::<Task>(id.0));
            }
            match c {
                TaskCommand::Create { project_id, .. } => req.streams.push(to_read::<Project>(project_id.0)),
                _ if !fresh => req.follow = Some(("project_id", to_read::<Project>(Uuid::nil()))),
                _ => {}
            }
            match c {
                TaskCommand::Create { assignee: Some(m), .. } | TaskCommand::Assign { assignee: Some(m) } => {
                    req.members.push(m.0)
                }
                _ => {}
            }
        }
        Cmd::Project(id, _) if !fresh => req.streams.push(to_read::<Project>(id.0)),
        Cmd::Project(..) => {}
        Cmd::Usage(c) => {
            req.months = keel_domain::usage::months(&c.records);
            req.usage_ids = c.records.iter().map(|r| r.id.as_str()).collect();
        }
        Cmd::Webhook(id, c, _) => {
            req.streams.push(to_read::<Webhook>(id.0));
            req.endpoints = matches!(c, WebhookCommand::Create { .. });
        }
    }
    req
}

/// The answer to a key an earlier request holds: its stored response, or 409 when it was sent
/// with another request.
fn held_key(meta: &WriteMeta, key: KeyRead) -> Result<Done, Failure> {
    match key {
        KeyRead::Held { request_hash, .. } if request_hash != meta.request_hash => {
            Err(errors::idempotency_key_reused().into())
        }
        KeyRead::Held { status: Some(status), response: Some(response), .. } => Ok(Done::Replayed { status, response }),
        _ => Err(StoreError::NoStoredResponse(meta.idempotency_key.clone().unwrap_or_default()).into()),
    }
}

/// The idempotency key the append stores with the command's answer.
#[derive(Clone, Copy)]
struct KeyAnswer<'a> {
    key: &'a str,
    request_hash: &'a [u8],
    /// The command answers 201 when it appends.
    created: bool,
}

/// One attempt of a command as the write path's two calls: read, decide, append (its own
/// transaction, guarded by what was read).
#[allow(clippy::too_many_arguments)]
async fn attempt_calls(
    state: &CommandState,
    meta: &WriteMeta,
    tenant: TenantId,
    cmd: &Cmd,
    created: bool,
    clock: Clock,
    md: &EventMetadata,
    attempt: usize,
) -> Result<Done, Failure> {
    let now = clock.now();
    let fresh = attempt == 0 && cmd.creates_new_stream();
    let mut conn = state.store.write_conn().await?;
    let mut read = conn
        .read(tenant, &read_request(cmd, meta, tenant, fresh, false))
        .instrument(tracing::info_span!("read"))
        .await?;
    let role = authorize(cmd, read.role)?;
    if let Some(key) = read.key.take() {
        return held_key(meta, key);
    }
    let usage = matches!(cmd, Cmd::Usage(_));
    let guard = ReadGuard {
        tenant_status: read.tenant_status.clone(),
        caller: Some((meta.principal.subject.clone(), role.as_str().to_owned())),
        // Usage is decided under the plan's monthly limit, which the append checks again.
        tenant_plan: read.tenant.as_ref().filter(|_| usage).map(|t| t.plan.as_str().to_owned()),
        month_limit: read.tenant.as_ref().filter(|_| usage).map(|t| keel_domain::usage::month_limit(Some(t.plan))),
        ..ReadGuard::default()
    };
    let row = read.tenant.clone();
    let key = key_answer(meta, created);
    let mut src = Source::Calls { conn: &mut conn, tenant, read: Box::new(read), guard, key };
    let o = run(&mut src, Some(role), row, fresh, cmd, meta, md, now).await?;
    store_key_if_unchanged(&mut src, &o, md, now).await?;
    let status = if created && !o.unchanged { StatusCode::CREATED } else { StatusCode::OK };
    if !o.unchanged {
        state.store.events_appended();
    }
    Ok(Done::Written { status, id: o.id, version: o.version, position: o.position, database: String::new() })
}

fn key_answer(meta: &WriteMeta, created: bool) -> Option<KeyAnswer<'_>> {
    meta.idempotency_key.as_deref().map(|key| KeyAnswer { key, request_hash: &meta.request_hash, created })
}

/// A command that changed nothing still answers its idempotency key: the answer is stored by an
/// append of no event (a command that appended stored it with its events).
async fn store_key_if_unchanged(
    src: &mut Source<'_>,
    o: &Outcome,
    md: &EventMetadata,
    now: DateTime<Utc>,
) -> Result<(), Failure> {
    let Some(k) = src.key() else { return Ok(()) };
    if !o.unchanged {
        return Ok(());
    }
    let body = written_body(o.id, o.version, o.position);
    let key = KeyToStore { key: k.key, request_hash: k.request_hash, status: StatusCode::OK.as_u16(), response: &body };
    match src {
        Source::Tx { tx, .. } => {
            keel_store::log::append_in(tx, &[], &[], md, now, None, Some(&key)).await?;
        }
        Source::Calls { conn, tenant, guard, .. } => {
            conn.append(*tenant, &[], &[], md, now, guard, None, Some(&key)).await?;
        }
    }
    Ok(())
}

/// Where a command reads what it decides on and appends what it decided: its transaction, or the
/// write path's two calls (what was read, and what the append must check again).
enum Source<'a> {
    Tx {
        tx: &'a mut TenantTx,
        read: Box<ReadSet>,
        key: Option<KeyAnswer<'a>>,
    },
    Calls {
        conn: &'a mut WriteConn,
        tenant: TenantId,
        read: Box<ReadSet>,
        guard: ReadGuard,
        key: Option<KeyAnswer<'a>>,
    },
}

impl<'a> Source<'a> {
    fn tenant(&self) -> TenantId {
        match self {
            Source::Tx { tx, .. } => tx.tenant(),
            Source::Calls { tenant, .. } => *tenant,
        }
    }

    /// What the command's read call found.
    fn read(&mut self) -> &mut ReadSet {
        match self {
            Source::Tx { read, .. } | Source::Calls { read, .. } => read,
        }
    }

    fn key(&self) -> Option<KeyAnswer<'a>> {
        match self {
            Source::Tx { key, .. } | Source::Calls { key, .. } => *key,
        }
    }

    /// The transaction, for a read only a transaction makes.
    fn tx(&mut self) -> Result<&mut TenantTx, Failure> {
        match self {
            Source::Tx { tx, .. } => Ok(tx),
            Source::Calls { .. } => Err(Failure::NeedsTransaction),
        }
    }

    /// A member of the tenant by id (one the read was asked for): role and whether active. On the
    /// two-call path a member read as active must still be at the append.
    fn member(&mut self, id: Uuid) -> Option<(Role, bool)> {
        let found = self.read().members.iter().find(|(m, _, _)| *m == id).map(|(_, r, a)| (*r, *a));
        if let Source::Calls { guard, .. } = self
            && found.is_some_and(|(_, active)| active)
        {
            guard.active_members.push(id);
        }
        found
    }
}

/// The caller's active role, when it may issue `cmd` (403 otherwise).
fn authorize(cmd: &Cmd, role: Option<Role>) -> Result<Role, Failure> {
    let role = role.ok_or_else(|| Problem::forbidden("you are not an active member of this tenant"))?;
    if !cmd.role_allows(role) {
        return Err(Problem::forbidden(format!("the {} role cannot do this", role.as_str())).into());
    }
    Ok(role)
}

/// One attempt of a command, in one transaction, through its commit.
#[allow(clippy::too_many_arguments)]
async fn attempt_once(
    state: &CommandState,
    meta: &WriteMeta,
    tenant: TenantId,
    cmd: &Cmd,
    created: bool,
    clock: Clock,
    md: &EventMetadata,
    attempt: usize,
) -> Result<Done, Failure> {
    let mut tx = state.store.begin_write(tenant).await?;
    let now = clock.now();
    // A create's id was just made by the server (UUIDv7): on the first attempt its stream is
    // new without asking; were it not, the append's unique version would say so and the
    // retry loads it.
    let fresh = attempt == 0 && cmd.creates_new_stream();
    // Everything the decision needs, with the tenant row locked as the command needs and the
    // idempotency key claimed, in one statement.
    let mut read = write_path::read_in(&mut tx, &read_request(cmd, meta, tenant, fresh, true))
        .instrument(tracing::info_span!("read"))
        .await?;
    let role = if cmd.is_platform() { None } else { Some(authorize(cmd, read.role)?) };
    // The transaction's id once it has written (a claimed key or appended events): what the
    // database is asked about when the answer to `COMMIT` is lost.
    let mut xid = None;
    match read.key.take() {
        Some(KeyRead::Claimed { xid: claimed }) => xid = Some(claimed),
        Some(held) => {
            // The answer is known; the transaction ends either way.
            let _ = tx.rollback().await;
            return held_key(meta, held);
        }
        None => {}
    }
    let row = read.tenant.clone();
    let mut src = Source::Tx { tx: &mut tx, read: Box::new(read), key: key_answer(meta, created) };
    let o = run(&mut src, role, row, fresh, cmd, meta, md, now).await?;
    store_key_if_unchanged(&mut src, &o, md, now).await?;
    let status = if created && !o.unchanged { StatusCode::CREATED } else { StatusCode::OK };
    if !o.unchanged {
        xid = Some(o.position.xid);
    }
    match xid {
        // Nothing was written: nothing to commit.
        None => {
            let _ = tx.rollback().await;
        }
        Some(xid) => commit(state, tx, xid).await?,
    }
    if !o.unchanged {
        state.store.events_appended();
    }
    Ok(Done::Written { status, id: o.id, version: o.version, position: o.position, database: String::new() })
}

/// Commits the attempt. When the connection is lost with the `COMMIT` in flight, the events may
/// or may not be in the log: the database is asked. Committed is success; aborted is a lost
/// connection like any other before the commit (the attempt is run again); a database that
/// cannot be asked within the resolve window is `outcome-unknown`, never a failure.
async fn commit(state: &CommandState, tx: TenantTx, xid: u64) -> Result<(), Failure> {
    let (tenant, witness) = (tx.tenant(), tx.witness());
    let e = match tx.commit().await {
        Ok(()) => return Ok(()),
        Err(e) if e.is_connection_lost() => e,
        Err(e) => return Err(e.into()),
    };
    state.store.connection_lost();
    tracing::warn!(xid, error = %e, "the connection was lost during COMMIT; asking whether it landed");
    match state.store.commit_outcome(tenant, xid, &witness).await {
        CommitOutcome::Committed => {
            tracing::info!(xid, "the commit had landed");
            Ok(())
        }
        CommitOutcome::Aborted => {
            tracing::info!(xid, "the commit had not landed; running the command again");
            Err(e.into())
        }
        CommitOutcome::Unknown => {
            tracing::error!(xid, "cannot learn whether the commit landed: the database stays unreachable");
            Err(errors::outcome_unknown().into())
        }
    }
}

/// Worth another attempt against fresh state: a lost race, or a connection lost before the
/// commit (whatever it had done is rolled back). A pool with no free connection or a database
/// known to be away is not retried here: it is answered 503 at once.
fn transient(e: &StoreError) -> bool {
    match e {
        StoreError::Conflict { .. } => true,
        // A usage record id recorded by a concurrent call: on retry it is skipped.
        StoreError::Unique(c) => c == "usage_records_pkey",
        StoreError::Unavailable => false,
        other if other.is_pool_timeout() => false,
        other => other.is_retryable(),
    }
}

fn metadata(meta: &WriteMeta, demo: bool) -> EventMetadata {
    let correlation_id = meta.request_id.as_deref().and_then(|r| Uuid::parse_str(r).ok()).unwrap_or_else(Uuid::now_v7);
    EventMetadata {
        actor: meta.principal.actor(),
        correlation_id,
        causation_id: None,
        request_id: meta.request_id.clone(),
        demo,
    }
}

/// Where a loaded stream stands: what an append after it chains to.
#[derive(Debug, Clone, Default)]
struct Head {
    version: i64,
    /// The position of its last event (the answer when a command changes nothing).
    last: LogPosition,
    hash: Option<Vec<u8>>,
    /// The version of the snapshot it was loaded from (0: none).
    snapshot: i64,
}

/// A stream of the transaction's tenant: its latest snapshot and the events after it, folded.
/// `None` when it does not exist; `Err(NotFound)` when it is a stream of another type.
async fn load_stream<A: Aggregate>(src: &mut Source<'_>, id: Uuid) -> Result<Option<(A, Head)>, Failure> {
    // Taken from the read, not copied. A stream the read was not asked for (or one asked for
    // twice) is read now in a transaction.
    let (snapshot, mut stored) = match src.read().take_stream(id) {
        Some(s) => (s.snapshot, s.events),
        None => snapshot::load(src.tx()?, id, A::STREAM_TYPE.as_str(), A::STATE_VERSION).await?,
    };
    let mut base = None;
    if let Some(s) = snapshot {
        match serde_json::from_value::<A>(s.state) {
            Ok(a) => {
                base =
                    Some((a, Head { version: s.version, last: s.last, hash: Some(s.last_hash), snapshot: s.version }))
            }
            // A snapshot that no longer reads as this state is ignored: the stream is loaded whole.
            Err(_) => stored = log::read_stream(src.tx()?, id).await?,
        }
    }
    if let Source::Calls { guard, .. } = src {
        // Decided on at this version: the append checks it has not moved (its own stream's
        // version is checked by the append itself).
        let version = stored.last().map(|e| e.stream_version).or(base.as_ref().map(|(_, h)| h.version));
        guard.streams.push((id, version.unwrap_or(0)));
    }
    if base.is_none() && stored.is_empty() {
        return Ok(None);
    }
    if let Some(first) = stored.first()
        && first.stream_type != A::STREAM_TYPE.as_str()
    {
        return Err(Failure::Domain(DomainError::NotFound(stream_noun(A::STREAM_TYPE))));
    }
    let events: Vec<Event> = stored.iter().map(|e| e.decode()).collect::<Result<_, _>>()?;
    let (state, mut head) = base.unwrap_or_default();
    if let Some(e) = stored.last() {
        head.version = e.stream_version;
        head.last = e.log_position();
        head.hash = Some(e.hash.clone());
    }
    Ok(Some((events.iter().fold(state, |a, e| a.apply(e)), head)))
}

/// A stream of the transaction's tenant, decoded; `None` when it does not exist or is of another type.
async fn load<A: Aggregate>(src: &mut Source<'_>, id: Uuid) -> Result<Option<(A, Head)>, Failure> {
    match load_stream::<A>(src, id).await {
        Err(Failure::Domain(DomainError::NotFound(_))) => Ok(None),
        other => other,
    }
}

/// The loaded state (or a fresh one) and where its stream stands.
async fn load_or_new<A: Aggregate>(src: &mut Source<'_>, id: Uuid) -> Result<(A, Head), Failure> {
    Ok(load_stream::<A>(src, id).await?.unwrap_or_default())
}

fn stream_noun(t: StreamType) -> &'static str {
    match t {
        StreamType::Tenant => "tenant",
        StreamType::Member => "member",
        StreamType::Project => "project",
        StreamType::Task => "task",
        StreamType::Usage => "usage batch",
        StreamType::Webhook => "webhook",
    }
}

/// Whether `If-Match` names versions: a lost race is then 412, not retried against a newer one.
fn pins_version(meta: &WriteMeta) -> bool {
    meta.if_match.as_ref().is_some_and(|m| m.pins_version())
}

/// `If-Match` against the loaded stream. A stream that does not exist (version 0) is left to
/// `decide`, whose 404 takes precedence over the precondition (RFC 9110 §13.2.1).
fn check_if_match(meta: &WriteMeta, version: i64) -> Result<(), Failure> {
    match &meta.if_match {
        Some(m) if version > 0 && !m.matches(version) => Err(Failure::Problem(errors::precondition_failed())),
        _ => Ok(()),
    }
}

/// The outcome of `decide` under an `If-Match` precondition. Input that cannot be right is
/// refused whatever the precondition (422 before 412: the request's shape is checked first, as a
/// schema would), every other outcome only when the precondition holds. `decide` is pure, so
/// running it first changes nothing else.
fn after_precondition(
    pre: Result<(), Failure>,
    decided: Result<Vec<Event>, DomainError>,
) -> Result<Vec<Event>, Failure> {
    match decided {
        Err(e @ DomainError::Validation(_)) => Err(Failure::Domain(e)),
        decided => {
            pre?;
            Ok(decided?)
        }
    }
}

/// The tenant row the read found (locked as the command needs).
fn tenant_row(read: Option<TenantRow>) -> Result<TenantRow, Failure> {
    read.ok_or_else(|| Failure::Problem(Problem::not_found("tenant")))
}

/// Appends `events` to `stream` after `head`, or reports that nothing changed.
async fn append_events(
    src: &mut Source<'_>,
    stream: Uuid,
    head: &Head,
    events: &[Event],
    md: &EventMetadata,
    now: DateTime<Utc>,
    snapshot: Option<&SnapshotDue<'_>>,
) -> Result<Outcome, Failure> {
    if events.is_empty() {
        return Ok(Outcome { id: stream, version: head.version, position: head.last, unchanged: true });
    }
    let known = [log::StreamHead { stream_id: stream, version: head.version, hash: head.hash.clone() }];
    let known = if head.version == 0 { &known[..0] } else { &known[..] };
    // The answer stored with the idempotency key: its position is set by the append.
    let version = head.version + events.iter().filter(|e| e.stream().1 == stream).count() as i64;
    let body = written_body(stream, version, head.last);
    let key = src.key().map(|k| KeyToStore {
        key: k.key,
        request_hash: k.request_hash,
        status: if k.created { StatusCode::CREATED } else { StatusCode::OK }.as_u16(),
        response: &body,
    });
    let appended = match src {
        Source::Tx { tx, .. } => append_in_tx(tx, known, events, md, now, snapshot, key.as_ref()).await?,
        Source::Calls { conn, tenant, guard, .. } => {
            guard.streams.retain(|(s, _)| *s != stream);
            conn.append(*tenant, known, events, md, now, guard, snapshot, key.as_ref()).await?
        }
    };
    let version = appended.version_of(stream).unwrap_or(head.version);
    Ok(Outcome { id: stream, version, position: appended.last, unchanged: false })
}

/// The transaction path's append, with the inline tables.
async fn append_in_tx(
    tx: &mut TenantTx,
    known: &[log::StreamHead],
    events: &[Event],
    md: &EventMetadata,
    now: DateTime<Utc>,
    snapshot: Option<&SnapshotDue<'_>>,
    key: Option<&KeyToStore<'_>>,
) -> Result<log::Appended, Failure> {
    // Moving the counters updates the tenant row: a command that only share-locked it (every
    // command does, against a concurrent suspension) and updates it in the append deadlocks with
    // another doing the same. `Cmd::locks_tenant` must name every such command; every test run
    // checks it here.
    debug_assert!(
        tx.tenant_locked() || !keel_store::inline::moves_counters(events),
        "an append moves the tenant's counters without the tenant row locked up front (Cmd::locks_tenant)"
    );
    Ok(log::append_in(tx, known, events, md, now, snapshot, key).await?)
}

/// `append_events` for an aggregate's stream: when the stream grows `snapshot::EVERY` events past
/// its snapshot, the state after the append is stored as the new snapshot, in the same
/// transaction.
async fn append<A: Aggregate>(
    src: &mut Source<'_>,
    stream: Uuid,
    state: &A,
    head: Head,
    events: Vec<Event>,
    md: &EventMetadata,
    now: DateTime<Utc>,
) -> Result<Outcome, Failure> {
    let version = head.version + events.iter().filter(|e| e.stream().1 == stream).count() as i64;
    let json = if !events.is_empty() && version - head.snapshot >= snapshot::EVERY {
        let after = events.iter().fold(state.clone(), |a, e| a.apply(e));
        Some(serde_json::to_value(&after).map_err(|e| StoreError::Encode(e.to_string()))?)
    } else {
        None
    };
    let due = json.as_ref().map(|state| SnapshotDue {
        stream_id: stream,
        stream_type: A::STREAM_TYPE.as_str(),
        state_version: A::STATE_VERSION,
        state,
    });
    append_events(src, stream, &head, &events, md, now, due.as_ref()).await
}

/// What a command is decided against, read in its transaction: the part that differs per
/// aggregate.
struct Loaded<A: Decide> {
    stream: Uuid,
    state: A,
    head: Head,
    /// `If-Match` against the loaded stream (`Ok` for a command that creates its stream).
    pre: Result<(), Failure>,
    ctx: A::Context,
}

impl<A: Decide> Loaded<A> {
    /// A stream that is about to be created: nothing to load and no precondition.
    fn new(stream: Uuid, ctx: A::Context) -> Self {
        Loaded { stream, state: A::default(), head: Head::default(), pre: Ok(()), ctx }
    }
}

/// The part every command shares: the aggregate's `decide`, then the append.
async fn decide_and_append<A: Decide>(
    src: &mut Source<'_>,
    loaded: Loaded<A>,
    cmd: A::Command,
    md: &EventMetadata,
    now: DateTime<Utc>,
) -> Result<Outcome, Failure> {
    let Loaded { stream, state, head, pre, ctx } = loaded;
    // Input that cannot be right is 422 before any state, precondition or rule is consulted.
    A::check_input(&cmd).map_err(Failure::Domain)?;
    let events = {
        let _decide = tracing::info_span!("decide").entered();
        after_precondition(pre, state.decide(cmd, &ctx, now))?
    };
    let started = std::time::Instant::now();
    let outcome = append(src, stream, &state, head, events, md, now).instrument(tracing::info_span!("append")).await;
    metrics::histogram!(APPEND_DURATION).record(started.elapsed().as_secs_f64());
    outcome
}

/// Time to append a command's events (with inline tables and snapshot), in seconds.
pub(crate) const APPEND_DURATION: &str = "keel_append_duration_seconds";

#[allow(clippy::too_many_arguments)]
async fn run(
    src: &mut Source<'_>,
    role: Option<Role>,
    read: Option<TenantRow>,
    fresh: bool,
    cmd: &Cmd,
    meta: &WriteMeta,
    md: &EventMetadata,
    now: DateTime<Utc>,
) -> Result<Outcome, Failure> {
    match cmd.clone() {
        Cmd::Tenant(c) => {
            let loaded = load_tenant(src, read, &c, meta).instrument(tracing::info_span!("load")).await?;
            decide_and_append(src, loaded, c, md, now).await
        }
        Cmd::Member(id, c) => {
            let actor = role.expect("tenant commands have a role");
            let loaded =
                load_member(src, read, actor, fresh, id, &c, meta).instrument(tracing::info_span!("load")).await?;
            decide_and_append(src, loaded, c, md, now).await
        }
        Cmd::Project(id, c) => {
            let loaded = load_project(src, read, fresh, id, &c, meta).instrument(tracing::info_span!("load")).await?;
            decide_and_append(src, loaded, c, md, now).await
        }
        Cmd::Task(id, c) => {
            let loaded = load_task(src, read, fresh, id, &c, meta).instrument(tracing::info_span!("load")).await?;
            decide_and_append(src, loaded, c, md, now).await
        }
        Cmd::Webhook(id, c, settings) => {
            let loaded =
                load_webhook(src, read, fresh, id, &c, settings, meta).instrument(tracing::info_span!("load")).await?;
            decide_and_append(src, loaded, c, md, now).await
        }
        Cmd::Usage(c) => {
            let loaded = load_usage(src, read, &c).instrument(tracing::info_span!("load")).await?;
            let outcome = decide_and_append(src, loaded, c, md, now).await?;
            if !outcome.unchanged {
                return Ok(outcome);
            }
            // Every record was recorded before: the batch's own stream stays empty, so the answer
            // is the batch that recorded them (its id, version and position), whose position
            // reads the records back with `Keel-Consistency`.
            Ok(match src.read().recording {
                Some((id, version, position)) => Outcome { id, version, position, unchanged: true },
                None => outcome,
            })
        }
    }
}

/// Provisioning: the new tenant's stream. Every other tenant command: the transaction's tenant,
/// which must exist, and its usage from the tenant row, locked.
async fn load_tenant(
    src: &mut Source<'_>,
    read: Option<TenantRow>,
    c: &TenantCommand,
    meta: &WriteMeta,
) -> Result<Loaded<Tenant>, Failure> {
    if let TenantCommand::Provision(p) = c {
        let stream = p.tenant_id.0;
        let (state, head) = load_or_new::<Tenant>(src, stream).await?;
        return Ok(Loaded { stream, state, head, pre: Ok(()), ctx: TenantUsage::default() });
    }
    let stream = src.tenant().0;
    let Some((state, head)) = load::<Tenant>(src, stream).await? else {
        return Err(Failure::Problem(Problem::not_found("tenant")));
    };
    let pre = check_if_match(meta, head.version);
    let row = tenant_row(read)?;
    let ctx = TenantUsage { seats_used: row.seats_used, active_projects: row.active_projects };
    Ok(Loaded { stream, state, head, pre, ctx })
}

/// Every member command locks the tenant row: seats and "one owner remains" are decided one
/// command at a time.
async fn load_member(
    src: &mut Source<'_>,
    read: Option<TenantRow>,
    actor: Role,
    fresh: bool,
    id: MemberId,
    c: &MemberCommand,
    meta: &WriteMeta,
) -> Result<Loaded<Member>, Failure> {
    let row = tenant_row(read)?;
    let (state, head) = if fresh { Default::default() } else { load_or_new::<Member>(src, id.0).await? };
    let pre = if matches!(c, MemberCommand::Invite { .. }) { Ok(()) } else { check_if_match(meta, head.version) };
    let ctx = MemberContext {
        plan: row.plan,
        suspended: row.suspended,
        seats_used: row.seats_used,
        active_owners: src.read().owners,
        actor,
    };
    Ok(Loaded { stream: id.0, state, head, pre, ctx })
}

async fn load_project(
    src: &mut Source<'_>,
    read: Option<TenantRow>,
    fresh: bool,
    id: ProjectId,
    c: &ProjectCommand,
    meta: &WriteMeta,
) -> Result<Loaded<Project>, Failure> {
    let row = tenant_row(read)?;
    let (state, head) = if fresh { Default::default() } else { load_or_new::<Project>(src, id.0).await? };
    let pre = if matches!(c, ProjectCommand::Create { .. }) { Ok(()) } else { check_if_match(meta, head.version) };
    let ctx = TenantContext { plan: row.plan, suspended: row.suspended, active_projects: row.active_projects };
    Ok(Loaded { stream: id.0, state, head, pre, ctx })
}

/// The task, its project (the one it is in, or the one a create names) and the assignee it names.
async fn load_task(
    src: &mut Source<'_>,
    read: Option<TenantRow>,
    fresh: bool,
    id: TaskId,
    c: &TaskCommand,
    meta: &WriteMeta,
) -> Result<Loaded<Task>, Failure> {
    let row = tenant_row(read)?;
    let (state, head) = if fresh { Default::default() } else { load_or_new::<Task>(src, id.0).await? };
    let project_id = match c {
        TaskCommand::Create { project_id, .. } => Some(*project_id),
        _ => state.project_id,
    };
    let mut pre = Ok(());
    if !matches!(c, TaskCommand::Create { .. }) {
        if state.id.is_none() {
            return Err(Failure::Domain(DomainError::NotFound("task")));
        }
        pre = check_if_match(meta, head.version);
    }
    let project = match project_id {
        None => ProjectState::Missing,
        Some(p) => match load::<Project>(src, p.0).await? {
            None => ProjectState::Missing,
            Some((p, _)) if p.status == Some(keel_domain::project::ProjectStatus::Archived) => ProjectState::Archived,
            Some(_) => ProjectState::Active,
        },
    };
    // The project is the target of a create (`/projects/{id}/tasks`): when it is not in
    // this tenant the answer is 404, the same whether it is missing or another tenant's.
    if matches!(c, TaskCommand::Create { .. }) && project == ProjectState::Missing {
        return Err(Failure::Domain(DomainError::NotFound("project")));
    }
    let assignee = match c {
        TaskCommand::Create { assignee, .. } => *assignee,
        TaskCommand::Assign { assignee } => *assignee,
        _ => None,
    };
    let assignee_active = assignee.map(|m| src.member(m.0).is_some_and(|(_, active)| active));
    let ctx = TaskContext { suspended: row.suspended, project, assignee_active };
    Ok(Loaded { stream: id.0, state, head, pre, ctx })
}

/// A usage batch is a new stream per call (its id is made for the request), so nothing is
/// loaded; the months it falls in are locked and the record ids already seen are read.
async fn load_usage(
    src: &mut Source<'_>,
    read: Option<TenantRow>,
    c: &RecordUsage,
) -> Result<Loaded<UsageBatch>, Failure> {
    let row = tenant_row(read)?;
    let month_units = std::mem::take(&mut src.read().months);
    let already_recorded = std::mem::take(&mut src.read().recorded);
    let ctx = UsageContext { plan: Some(row.plan), suspended: row.suspended, month_units, already_recorded };
    Ok(Loaded::new(c.batch_id.0, ctx))
}

/// The endpoint (a command on a missing one is decided as such: 404), the tenant's status, and
/// for a create the endpoints it has, counted under the tenant row lock.
async fn load_webhook(
    src: &mut Source<'_>,
    read: Option<TenantRow>,
    fresh: bool,
    id: WebhookId,
    c: &WebhookCommand,
    settings: crate::WebhookSettings,
    meta: &WriteMeta,
) -> Result<Loaded<Webhook>, Failure> {
    let create = matches!(c, WebhookCommand::Create { .. });
    let row = tenant_row(read)?;
    let (state, head) = if fresh { Default::default() } else { load_or_new::<Webhook>(src, id.0).await? };
    let pre = if create { Ok(()) } else { check_if_match(meta, head.version) };
    let endpoints = src.read().endpoints;
    let ctx = WebhookContext {
        suspended: row.suspended,
        endpoints,
        policy: settings.policy,
        rotation_grace: chrono::TimeDelta::from_std(settings.rotation_grace).unwrap_or(chrono::TimeDelta::MAX),
    };
    Ok(Loaded { stream: id.0, state, head, pre, ctx })
}
