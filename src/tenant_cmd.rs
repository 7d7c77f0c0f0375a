//! `keel tenant`: the control plane on the command line. Writes go through
//! `keel_command::platform::execute` (the REST platform routes' commands, events and
//! validation) as the platform operator `cli:<os user>`; `show` reads the control-plane row,
//! `list` the platform view. Tenants are named by id or slug (`tenant_arg`).

use crate::cli::TenantCmd;
use anyhow::Context;
use keel_command::platform::{self, PlatformCommand, PlatformOutcome};
use keel_domain::TenantId;
use keel_domain::names::Named;
use keel_domain::tenant::OwnerInput;
use keel_gateway::Problem;
use keel_store::{PoolSizes, Store};
use serde::Serialize;

/// A tenant's control-plane row (`store::access::TenantRow`, current at once) as printed.
#[derive(Debug, Serialize)]
pub struct TenantDetail {
    pub tenant_id: uuid::Uuid,
    pub name: String,
    pub slug: String,
    pub plan: &'static str,
    pub status: &'static str,
    pub seats_used: u64,
    pub active_projects: u64,
}

/// The control-plane row of `id` (read in a write transaction of the tenant, rolled back: the
/// row is the writer's).
async fn detail(store: &Store, id: TenantId) -> anyhow::Result<Option<TenantDetail>> {
    let mut tx = store.for_tenant(id).await?.begin_write(id).await?;
    let row = keel_store::access::tenant_row(&mut tx, false).await;
    tx.rollback().await?;
    Ok(row?.map(|r| TenantDetail {
        tenant_id: id.0,
        name: r.name,
        slug: r.slug,
        plan: r.plan.as_str(),
        status: r.status.name(),
        seats_used: r.seats_used,
        active_projects: r.active_projects,
    }))
}

/// The operator the CLI acts as: `cli:<os user>` (events record `platform:cli:<os user>`).
pub fn operator() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{user}")
}

/// A problem as the command line reports it: its code, detail and each field at fault.
#[derive(Debug)]
pub struct ProblemError(pub Problem);

impl std::fmt::Display for ProblemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.0;
        write!(f, "{} ({}): {}", p.code.title(), p.code.as_str(), p.detail)?;
        for e in &p.errors {
            write!(f, "\n  {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProblemError {}

/// The problem+json body REST would answer.
pub fn problem_json(p: &Problem) -> serde_json::Value {
    serde_json::json!({
        "type": p.type_uri(),
        "title": p.code.title(),
        "status": p.status().as_u16(),
        "detail": p.detail,
        "code": p.code.as_str(),
        "errors": p.errors,
    })
}

fn json_flag(c: &TenantCmd) -> bool {
    match c {
        TenantCmd::Create { json, .. }
        | TenantCmd::List { json, .. }
        | TenantCmd::Show { json, .. }
        | TenantCmd::Plan { json, .. }
        | TenantCmd::Suspend { json, .. }
        | TenantCmd::Reactivate { json, .. }
        | TenantCmd::Erase { json, .. } => *json,
        TenantCmd::Export { .. } | TenantCmd::Import { .. } | TenantCmd::Move { .. } | TenantCmd::Retire { .. } => {
            false
        }
    }
}

/// Runs `command` against the database at `url` (`key`: the master key, needed to seal a new
/// owner's personal data). Output goes to stdout; a problem is an error (and, with `--json`,
/// its problem+json body on stdout).
pub async fn run(url: &str, key: Option<keel_store::MasterKey>, command: TenantCmd) -> anyhow::Result<()> {
    let json = json_flag(&command);
    let store = Store::connect(url, PoolSizes { writer: 1, reader: 1, projector: 1 }, key.clone())
        .await
        .context("cannot connect (is the database migrated? run keel migrate)")?;
    // A tenant placed in a dedicated database is written there (docs/tenancy.md).
    let router = keel_store::placement::Router::connect(
        &store,
        PoolSizes { writer: 1, reader: 1, projector: 1 },
        keel_store::PoolTimeouts::default(),
        key.as_ref(),
    )
    .await?;
    let store = store.with_router(router);
    let result = run_on(&store, url, command).await;
    store.close().await;
    match result {
        Ok(out) => {
            print!("{out}");
            Ok(())
        }
        Err(e) => {
            if json && let Some(p) = e.downcast_ref::<ProblemError>() {
                println!("{}", problem_json(&p.0));
            }
            Err(e)
        }
    }
}

async fn run_on(store: &Store, url: &str, command: TenantCmd) -> anyhow::Result<String> {
    let actor = operator();
    let write = async |cmd: PlatformCommand, json: bool| -> anyhow::Result<String> {
        let done = platform::execute(store, &actor, cmd).await.map_err(ProblemError)?;
        Ok(written(&done, detail(store, TenantId(done.id)).await?.as_ref(), json))
    };
    match command {
        TenantCmd::Create { name, slug, plan, owner_user, owner_email, owner_name, json } => {
            let owner = OwnerInput {
                name: owner_name.unwrap_or_else(|| owner_user.clone()),
                user_id: owner_user,
                email: owner_email,
            };
            write(PlatformCommand::Provision { name, slug, plan, owner }, json).await
        }
        TenantCmd::Plan { tenant, plan, json } => {
            let tenant = find(url, &tenant).await?;
            write(PlatformCommand::ChangePlan { tenant, plan }, json).await
        }
        TenantCmd::Suspend { tenant, reason, json } => {
            let tenant = find(url, &tenant).await?;
            write(PlatformCommand::Suspend { tenant, reason }, json).await
        }
        TenantCmd::Reactivate { tenant, json } => {
            let tenant = find(url, &tenant).await?;
            write(PlatformCommand::Reactivate { tenant }, json).await
        }
        TenantCmd::Erase { tenant, json } => {
            let tenant = find(url, &tenant).await?;
            write(PlatformCommand::Erase { tenant }, json).await
        }
        TenantCmd::Show { tenant, json } => {
            let id = find(url, &tenant).await?;
            let detail = detail(store, id).await?.with_context(|| format!("there is no tenant {}", id.0))?;
            Ok(if json { format!("{}\n", serde_json::to_string_pretty(&detail)?) } else { text(&detail) })
        }
        TenantCmd::List { plan, json } => list(store, plan.as_deref(), json).await,
        TenantCmd::Export { .. } | TenantCmd::Import { .. } | TenantCmd::Move { .. } | TenantCmd::Retire { .. } => {
            anyhow::bail!("bridge tenancy commands run through keel::tenancy_cmd")
        }
    }
}

async fn find(url: &str, tenant: &str) -> anyhow::Result<TenantId> {
    Ok(TenantId(crate::tenant_arg::find_anywhere(url, tenant).await?.0))
}

fn written(done: &PlatformOutcome, detail: Option<&TenantDetail>, json: bool) -> String {
    if json {
        let mut v = serde_json::to_value(done).expect("serializes");
        if let Some(d) = detail {
            v["tenant"] = serde_json::to_value(d).expect("serializes");
        }
        return format!("{}\n", serde_json::to_string_pretty(&v).expect("serializes"));
    }
    let mut out = format!("tenant {} at version {} (consistency token {})\n", done.id, done.version, done.position);
    if let Some(d) = detail {
        out.push_str(&text(d));
    }
    out
}

fn text(d: &TenantDetail) -> String {
    format!(
        "id               {}\nname             {}\nslug             {}\nplan             {}\nstatus           {}\nseats used       {}\nactive projects  {}\n",
        d.tenant_id, d.name, d.slug, d.plan, d.status, d.seats_used, d.active_projects
    )
}

async fn list(store: &Store, plan: Option<&str>, json: bool) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let mut tx = store.begin_read(TenantId(uuid::Uuid::nil())).await?.as_platform().await?;
        let page = keel_store::read::tenants::page(&mut tx, plan, after, 500).await;
        tx.rollback().await?;
        let page = page?;
        let done = page.len() < 500;
        after = page.last().map(|r| (r.created_at, r.tenant_id));
        rows.extend(page);
        if done {
            break;
        }
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "tenant_id": r.tenant_id,
                    "name": r.name,
                    "slug": r.slug,
                    "plan": r.plan.as_str(),
                    "status": r.status.name(),
                    "seats_used": r.seats_used,
                    "active_projects": r.active_projects,
                    "created_at": r.created_at,
                })
            })
            .collect();
        return Ok(format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    let mut out =
        format!("{:<36}  {:<24}  {:<10}  {:<9}  {:>5}  {:>8}\n", "ID", "SLUG", "PLAN", "STATUS", "SEATS", "PROJECTS");
    for r in &rows {
        out.push_str(&format!(
            "{:<36}  {:<24}  {:<10}  {:<9}  {:>5}  {:>8}\n",
            r.tenant_id,
            r.slug,
            r.plan.as_str(),
            r.status.name(),
            r.seats_used,
            r.active_projects
        ));
    }
    Ok(out)
}
