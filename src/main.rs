//! `keel`: parses the command line and runs it.

use anyhow::{Context, bail};
use clap::Parser;
use keel::cli::{Cli, Cmd, ServeRole, Settings, TokenArgs};
use keel::embedded::{EmbeddedPg, find_bindir};
use keel::{App, AppConfig, Roles, secrets, telemetry};
use keel_gateway::auth::Secret;
use keel_gateway::{Authenticator, JwtConfig};
use keel_projections::RunnerConfig;
use keel_store::PoolSizes;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    telemetry::init(&cli.settings.log, cli.settings.log_format);
    let result = match cli.command {
        Cmd::Up => up(&cli.settings).await,
        Cmd::Serve { role } => serve(&cli.settings, role).await,
        Cmd::Migrate => migrate(&cli.settings).await,
        Cmd::Token(args) => token(&cli.settings, &args),
    };
    if let Err(e) = result {
        eprintln!("keel: {e:#}");
        std::process::exit(1);
    }
}

/// The JWT settings; without KEEL_JWT_SECRET, `dev` allows a generated development secret.
fn jwt(s: &Settings, dev: bool) -> anyhow::Result<JwtConfig> {
    let secret = match &s.jwt_secret {
        Some(v) if v.len() >= 32 => v.clone(),
        Some(_) => bail!("KEEL_JWT_SECRET must be at least 32 bytes"),
        None if dev => {
            let path = s.data_dir.join("jwt-secret");
            let (secret, created) = secrets::load_or_create(&path)?;
            if created {
                eprintln!("keel: KEEL_JWT_SECRET is unset; generated a development secret in {}", path.display());
            }
            secret
        }
        None => bail!("KEEL_JWT_SECRET is required"),
    };
    Ok(JwtConfig {
        secret: Secret::new(secret.into_bytes()),
        issuer: s.jwt_issuer.clone(),
        audience: s.jwt_audience.clone(),
    })
}

fn app_config(s: &Settings, database_url: String, jwt: JwtConfig, roles: Roles) -> AppConfig {
    AppConfig {
        database_url,
        listen: s.listen.clone(),
        jwt,
        consistency_wait: Duration::from_millis(s.consistency_wait_ms),
        body_limit: s.body_limit,
        roles,
        runner: RunnerConfig { poll_interval: Duration::from_millis(s.poll_interval_ms), ..RunnerConfig::default() },
        pools: PoolSizes::default(),
    }
}

async fn start_embedded(s: &Settings) -> anyhow::Result<EmbeddedPg> {
    let bindir = find_bindir(s.pg_bindir.as_deref())?;
    let data_dir = s.data_dir.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&data_dir, &bindir)).await??;
    if let Err(e) = pg.ensure_database().await {
        let _ = pg.stop();
        return Err(e);
    }
    Ok(pg)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn up(s: &Settings) -> anyhow::Result<()> {
    let embedded = match &s.database_url {
        Some(_) => None,
        None => Some(start_embedded(s).await?),
    };
    let result = run_up(s, embedded.as_ref()).await;
    if let Some(pg) = &embedded {
        eprintln!("keel: stopping the embedded PostgreSQL");
        pg.stop()?;
    }
    result
}

async fn run_up(s: &Settings, embedded: Option<&EmbeddedPg>) -> anyhow::Result<()> {
    let url = match (&s.database_url, embedded) {
        (Some(u), _) => u.clone(),
        (None, Some(pg)) => pg.database_url(),
        (None, None) => unreachable!("up starts the embedded cluster when DATABASE_URL is unset"),
    };
    keel_store::migrate(&url).await.context("migrations failed")?;
    let jwt = jwt(s, true)?;
    let token = Authenticator::hs256(jwt.clone()).issue("operator", None, true, Duration::from_secs(12 * 3600));
    let app = App::build(app_config(s, url, jwt, Roles::ALL)).await?;
    let addr = app.local_addr();
    let host = if addr.ip().is_unspecified() { "localhost".to_owned() } else { addr.ip().to_string() };
    let base = format!("http://{host}:{}", addr.port());
    println!("Keel is up.");
    println!("  REST      {base}/api/v1");
    println!("  GraphQL   {base}/graphql");
    println!("  Health    {base}/healthz  {base}/readyz  {base}/metrics");
    match embedded {
        Some(pg) => println!(
            "  Database  embedded PostgreSQL on 127.0.0.1:{} (data in {})",
            pg.port(),
            s.data_dir.join("pg").display()
        ),
        None => println!("  Database  DATABASE_URL"),
    }
    println!("  Platform token (12 h, development):\n    {token}");
    println!("Press Ctrl-C to stop.");
    app.run(shutdown_signal()).await
}

async fn serve(s: &Settings, role: ServeRole) -> anyhow::Result<()> {
    let url =
        s.database_url.clone().context("DATABASE_URL is required for `keel serve` (use `keel up` for development)")?;
    let roles = match role {
        ServeRole::All => Roles::ALL,
        ServeRole::Command => Roles { command: true, query: false, projector: false },
        ServeRole::Query => Roles { command: false, query: true, projector: false },
        ServeRole::Projector => Roles { command: false, query: false, projector: true },
    };
    let app = App::build(app_config(s, url, jwt(s, false)?, roles)).await?;
    tracing::info!(addr = %app.local_addr(), ?role, "serving");
    app.run(shutdown_signal()).await
}

async fn migrate(s: &Settings) -> anyhow::Result<()> {
    match &s.database_url {
        Some(url) => keel_store::migrate(url).await?,
        None => {
            let pg = start_embedded(s).await?;
            let r = keel_store::migrate(&pg.database_url()).await;
            pg.stop()?;
            r?
        }
    }
    println!("migrations applied");
    Ok(())
}

fn token(s: &Settings, args: &TokenArgs) -> anyhow::Result<()> {
    let auth = Authenticator::hs256(jwt(s, true)?);
    let t = if args.platform {
        auth.issue(args.user.as_deref().unwrap_or("operator"), None, true, args.ttl)
    } else {
        let user = args.user.as_deref().context("--user is required with --tenant")?;
        auth.issue(user, args.tenant, false, args.ttl)
    };
    println!("{t}");
    Ok(())
}
