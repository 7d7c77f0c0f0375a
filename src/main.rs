//! `keel`: parses the command line and runs it.

use anyhow::{Context, bail};
use keel::cli::{
    AnalystCmd, AuditCmd, BenchArgs, ChaosArgs, Command, DeadLettersCmd, DemoCmd, KeysCmd, OutboundCmd, ProjectionsCmd,
    Service, Settings, SubscribeArgs, TenantCmd, TokenArgs,
};
use keel::embedded::{EmbeddedPg, find_bindir};
use keel::{App, AppConfig, DatabaseUrl, Services, secrets, telemetry};
use keel_gateway::auth::Secret;
use keel_gateway::{Authenticator, JwtConfig, KeySource, Signer};
use keel_projections::RunnerConfig;
use keel_store::PoolSizes;
use secrecy::ExposeSecret;
use std::time::Duration;

#[tokio::main]
async fn main() {
    // The command line over the environment over the configuration file (`--config`).
    let parsed = match keel::config::parse_from(std::env::args_os().collect()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("keel: {e:#}");
            std::process::exit(1);
        }
    };
    let effective = matches!(parsed.cli.command, Command::Config { .. }).then(|| keel::config::effective(&parsed));
    let cli = parsed.cli;
    telemetry::init(&cli.settings.log, cli.settings.log_format, cli.settings.otlp_endpoint.as_deref());
    let result = match cli.command {
        Command::Up { demo } => up(&cli.settings, demo).await,
        Command::Serve { service } => serve(&cli.settings, service).await,
        Command::Migrate => migrate(&cli.settings).await,
        Command::Token(args) => token(&cli.settings, &args).await,
        Command::Projections { command } => projections(&cli.settings, command).await,
        Command::Outbound { command: OutboundCmd::Status } => outbound_status(&cli.settings).await,
        Command::GraphqlSchema { out } => graphql_schema(out),
        Command::Bench(args) => bench(&cli.settings, args).await,
        Command::Audit { command } => audit(&cli.settings, command).await,
        Command::Keys { command } => keys(&cli.settings, command).await,
        Command::Analyst { command } => analyst(&cli.settings, command).await,
        Command::Subscribe(args) => subscribe(args).await,
        Command::Demo { command } => demo(&cli.settings, command).await,
        Command::Config { .. } => config_check(&cli.settings, effective.unwrap_or_default()),
        Command::Tenant { command } => tenant(&cli.settings, command).await,
        Command::Databases { command } => databases(&cli.settings, command).await,
        Command::Chaos(args) => chaos(&cli.settings, args).await,
    };
    // The last spans leave before the process does (a few seconds at most, off the runtime).
    let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
    if let Err(e) = result {
        eprintln!("keel: {e:#}");
        std::process::exit(1);
    }
    // Everything has been stopped and flushed; exiting here means a worker thread stuck in a
    // request that ignored cancellation cannot hold the process after its shutdown deadline.
    std::process::exit(0);
}

/// Where a development secret may come from when KEEL_JWT_SECRET is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DevSecret {
    /// `keel up`: the one under KEEL_DATA_DIR, generated there the first time.
    Create,
    /// A command-line tool (`keel token`): the one `keel up` wrote under KEEL_DATA_DIR, never a
    /// new one (a secret invented here would sign tokens the server refuses).
    Existing,
    /// `keel serve`: none; KEEL_JWT_SECRET is required.
    Refuse,
}

/// The identity provider's keys when one of KEEL_JWT_JWKS_FILE, KEEL_JWT_JWKS_URL or
/// KEEL_JWT_PUBLIC_KEY_FILE is set (at most one, and not with KEEL_JWT_SECRET).
fn provider_keys(s: &Settings) -> anyhow::Result<Option<KeySource>> {
    let set: Vec<&str> = [
        (s.jwt_jwks_file.is_some(), "KEEL_JWT_JWKS_FILE"),
        (s.jwt_jwks_url.is_some(), "KEEL_JWT_JWKS_URL"),
        (s.jwt_public_key_file.is_some(), "KEEL_JWT_PUBLIC_KEY_FILE"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if set.len() > 1 {
        bail!("{} are exclusive: set one source of token keys", set.join(" and "));
    }
    if let (Some(name), Some(_)) = (set.first(), &s.jwt_secret) {
        bail!(
            "{name} and KEEL_JWT_SECRET are exclusive: tokens are verified by the identity provider's keys or by the secret, not both"
        );
    }
    let read = |path: &std::path::Path, name: &str| {
        std::fs::read(path).with_context(|| format!("{name}: cannot read {}", path.display()))
    };
    Ok(if let Some(path) = &s.jwt_jwks_file {
        Some(KeySource::JwksDocument(read(path, "KEEL_JWT_JWKS_FILE")?))
    } else if let Some(path) = &s.jwt_public_key_file {
        Some(KeySource::PublicKeyPem(read(path, "KEEL_JWT_PUBLIC_KEY_FILE")?))
    } else if let Some(url) = &s.jwt_jwks_url {
        let parsed = url::Url::parse(url).context("KEEL_JWT_JWKS_URL is not a URL")?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("KEEL_JWT_JWKS_URL must be an http(s) URL");
        }
        Some(KeySource::JwksUrl(keel_gateway::RemoteJwksConfig {
            url: url.clone(),
            refresh: Duration::from_secs(s.jwt_jwks_refresh_secs.max(1)),
            cooldown: Duration::from_secs(s.jwt_jwks_cooldown_secs),
            timeout: Duration::from_millis(s.jwt_jwks_timeout_ms.max(1)),
        }))
    } else {
        None
    })
}

/// The JWT settings: the identity provider's keys, KEEL_JWT_SECRET, or a development secret as
/// `dev` allows.
fn jwt(s: &Settings, dev: DevSecret) -> anyhow::Result<JwtConfig> {
    if let Some(keys) = provider_keys(s)? {
        return Ok(JwtConfig { keys, issuer: s.jwt_issuer.clone(), audience: s.jwt_audience.clone() });
    }
    let secret = match &s.jwt_secret {
        Some(v) if v.expose_secret().len() >= 32 => v.expose_secret().to_owned(),
        Some(_) => bail!("KEEL_JWT_SECRET must be at least 32 bytes"),
        None => {
            let path = s.data_dir.join("jwt-secret");
            match dev {
                DevSecret::Create => {
                    let (secret, created) = secrets::load_or_create(&path)?;
                    if created {
                        eprintln!(
                            "keel: KEEL_JWT_SECRET is unset; generated a development secret in {}",
                            path.display()
                        );
                    }
                    secret
                }
                DevSecret::Existing => existing_dev_secret(s, &path)?,
                DevSecret::Refuse => bail!("KEEL_JWT_SECRET is required"),
            }
        }
    };
    Ok(JwtConfig {
        keys: KeySource::Secret(Secret::new(secret.into_bytes())),
        issuer: s.jwt_issuer.clone(),
        audience: s.jwt_audience.clone(),
    })
}

/// An authenticator that signs with the shared secret; none when the keys are an identity
/// provider's (its tokens come from there, or from `keel token --key-file`).
fn secret_signer(jwt: &JwtConfig) -> Option<Authenticator> {
    matches!(jwt.keys, KeySource::Secret(_)).then(|| Authenticator::hs256(jwt.clone()))
}

/// The development secret `keel up` wrote in `path`; when there is none, an error that says
/// where it looked and what to do instead of generating one.
fn existing_dev_secret(s: &Settings, path: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => bail!("{} is empty: it is not a development secret written by `keel up`", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "KEEL_JWT_SECRET is unset and there is no development secret at {} ({} is not a Keel data directory: \
             only `keel up` creates one). A secret made up here would sign tokens the server refuses. Run this \
             in the directory where `keel up` runs, pass --data-dir (KEEL_DATA_DIR) with its data directory, or \
             set KEEL_JWT_SECRET to the server's secret.",
            absolute(path).display(),
            absolute(&s.data_dir).display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `path` made absolute against the working directory, for messages that say where Keel looked.
fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The master key: KEEL_MASTER_KEY, KEEL_MASTER_KEY_FILE, or (with `dev`) a development key
/// generated once under the data directory.
fn master_key(s: &Settings, dev: bool) -> anyhow::Result<keel_store::MasterKey> {
    if let Some(k) = &s.master_key {
        return keel_store::MasterKey::parse(k.expose_secret()).context("KEEL_MASTER_KEY");
    }
    if let Some(path) = &s.master_key_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        return keel_store::MasterKey::parse(&text).with_context(|| format!("KEEL_MASTER_KEY_FILE {}", path.display()));
    }
    if !dev {
        bail!("KEEL_MASTER_KEY or KEEL_MASTER_KEY_FILE is required (use `keel up` for a development key)");
    }
    let path = dev_key_path(s);
    let (key, created) = secrets::load_or_create(&path)?;
    if created {
        eprintln!("keel: KEEL_MASTER_KEY is unset; generated a development master key in {}", path.display());
    }
    keel_store::MasterKey::parse(&key).with_context(|| format!("the development master key in {}", path.display()))
}

/// The master key for a command-line tool: the configured one, else the development key that
/// `keel up` wrote under KEEL_DATA_DIR. Never a new one: a key invented here would open nothing.
fn cli_master_key(s: &Settings) -> anyhow::Result<Option<keel_store::MasterKey>> {
    if s.master_key.is_some() || s.master_key_file.is_some() {
        return master_key(s, false).map(Some);
    }
    let path = dev_key_path(s);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => keel_store::MasterKey::parse(&text)
            .with_context(|| format!("the development master key in {}", path.display()))
            .map(Some),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The master key for a tool that reads or writes personal data; without one it says which
/// variable to set.
fn required_cli_master_key(s: &Settings) -> anyhow::Result<keel_store::MasterKey> {
    cli_master_key(s)?.with_context(|| {
        format!(
            "no master key: KEEL_MASTER_KEY and KEEL_MASTER_KEY_FILE are unset and there is no development key at {} \
             (only `keel up` creates one; a key made up here would open nothing). Run this in the directory where \
             `keel up` runs, pass --data-dir (KEEL_DATA_DIR) with its data directory, or set KEEL_MASTER_KEY (64 hex \
             digits or base64) or KEEL_MASTER_KEY_FILE (a file holding it).",
            absolute(&dev_key_path(s)).display()
        )
    })
}

fn dev_key_path(s: &Settings) -> std::path::PathBuf {
    s.data_dir.join("master-key")
}

fn app_config(
    s: &Settings,
    database_url: DatabaseUrl,
    jwt: JwtConfig,
    services: Services,
    master_key: keel_store::MasterKey,
    console: keel_console::ConsoleConfig,
) -> AppConfig {
    AppConfig {
        database_url,
        listen: s.listen.clone(),
        read_database_url: s.read_database_url.clone(),
        direct_database_url: s.direct_database_url.clone(),
        jwt,
        consistency_wait: Duration::from_millis(s.consistency_wait_ms),
        body_limit: s.body_limit,
        services,
        runner: runner_config(s),
        outbound: outbound_config(s),
        webhooks: webhook_settings(s),
        pools: PoolSizes {
            writer: s.db_writer_connections,
            reader: s.db_reader_connections,
            projector: s.db_projector_connections,
        },
        master_key,
        limits: keel::EdgeLimits {
            request_timeout: Duration::from_millis(s.request_timeout_ms.max(1)),
            drain: Duration::from_millis(s.drain_ms),
            shutdown_timeout: Duration::from_millis(s.shutdown_timeout_ms),
            graphql: keel_query::GraphqlLimits {
                max_depth: s.graphql_max_depth,
                max_complexity: s.graphql_max_complexity,
                max_nesting: s.graphql_max_nesting,
                max_fields: s.graphql_max_fields,
                body_limit: s.graphql_body_limit,
                timeout: Duration::from_millis(s.request_timeout_ms.max(1)),
            },
            traffic: s.traffic(),
            db: keel_store::PoolTimeouts {
                acquire: Duration::from_millis(s.db_acquire_timeout_ms.max(1)),
                writer_statement: Duration::from_millis(s.db_writer_statement_timeout_ms),
                reader_statement: Duration::from_millis(s.db_reader_statement_timeout_ms),
                projector_statement: Duration::from_millis(s.db_projector_statement_timeout_ms),
                probe: keel_store::breaker::ProbeSettings {
                    open_interval: Duration::from_millis(s.db_probe_interval_ms.max(10)),
                    timeout: Duration::from_millis(s.db_probe_timeout_ms.max(10)),
                    ..keel_store::breaker::ProbeSettings::default()
                },
                commit_resolve: Duration::from_millis(s.commit_resolve_ms),
            },
            metrics_tenants: s.metrics_tenants,
            metrics_rank: Duration::from_secs(s.metrics_rank_secs),
        },
        console,
    }
}

fn webhook_settings(s: &Settings) -> keel_command::WebhookSettings {
    keel_command::WebhookSettings {
        policy: keel_domain::webhook::UrlPolicy {
            allow_http: s.webhooks_allow_http,
            allow_private: s.webhooks_allow_private,
        },
        rotation_grace: Duration::from_secs(s.webhooks_rotation_grace_secs),
    }
}

fn outbound_config(s: &Settings) -> keel_outbound::OutboundConfig {
    keel_outbound::OutboundConfig {
        nats: s.nats_url.as_ref().map(|url| keel_outbound::NatsConfig {
            url: url.clone(),
            subject_prefix: s.nats_subject_prefix.clone(),
            stream: s.nats_stream.clone(),
            max_age: Duration::from_secs(s.nats_max_age_secs),
            duplicate_window: Duration::from_secs(s.nats_duplicate_window_secs),
            connect_timeout: Duration::from_millis(s.nats_connect_timeout_ms),
            ack_timeout: Duration::from_millis(s.nats_ack_timeout_ms),
        }),
        webhooks: keel_outbound::WebhookConfig {
            policy: keel_outbound::destination::DestinationPolicy {
                allow_http: s.webhooks_allow_http,
                allow_private: s.webhooks_allow_private,
            },
            attempt_timeout: Duration::from_millis(s.webhooks_timeout_ms),
            retry: keel_outbound::schedule::RetryPolicy {
                delays: s.webhooks_retry_schedule.0.clone(),
                ..Default::default()
            },
            concurrency: s.webhooks_concurrency as usize,
            tenant_concurrency: s.webhooks_tenant_concurrency as usize,
            db_connections: s.webhooks_db_connections as usize,
            queue_max: s.webhooks_queue_max as i64,
            delivery_log_keep: Duration::from_secs(s.webhooks_delivery_log_days * 86_400),
            max_endpoints: s.webhooks_max_endpoints_per_process as i64,
            ..Default::default()
        },
    }
}

fn runner_config(s: &Settings) -> RunnerConfig {
    RunnerConfig {
        batch_size: s.projection_batch.max(1),
        poll_interval: Duration::from_millis(s.poll_interval_ms),
        lease_ttl: Duration::from_secs(s.lease_ttl_secs.max(1)),
        ..RunnerConfig::default()
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

async fn up(s: &Settings, demo: bool) -> anyhow::Result<()> {
    let embedded = match &s.database_url {
        Some(_) => None,
        None => Some(start_embedded(s).await?),
    };
    let result = run_up(s, embedded.as_ref(), demo).await;
    if let Some(pg) = &embedded {
        eprintln!("keel: stopping the embedded PostgreSQL");
        pg.stop()?;
    }
    result
}

async fn run_up(s: &Settings, embedded: Option<&EmbeddedPg>, demo: bool) -> anyhow::Result<()> {
    let url = match (&s.database_url, embedded) {
        (Some(u), _) => u.clone(),
        (None, Some(pg)) => DatabaseUrl::from(pg.database_url()),
        (None, None) => unreachable!("up starts the embedded cluster when DATABASE_URL is unset"),
    };
    keel_store::migrate(url.expose_secret()).await.context("migrations failed")?;
    let jwt = jwt(s, DevSecret::Create)?;
    let auth = secret_signer(&jwt);
    let ttl = Duration::from_secs(12 * 3600);
    let token = auth.as_ref().map(|a| a.issue("operator", None, true, ttl));
    let master = master_key(s, true)?;
    // The demo tenant, seeded now when asked for; its owner is who the console's pages act as
    // when it exists (a platform token cannot read a tenant's data).
    let store = keel_store::Store::connect(
        url.expose_secret(),
        PoolSizes { writer: 12, reader: 2, projector: 1 },
        Some(master.clone()),
    )
    .await?;
    let seeded =
        if demo { Some(keel::demo::seed(&store, chrono::Utc::now()).await.context("demo seed failed")) } else { None };
    let owner = keel::demo::owner_user(&store).await;
    store.close().await;
    let seeded = seeded.transpose()?;
    let (page_token, page_who) = match (owner?, &auth) {
        (_, None) => (None, "nobody (tokens come from the identity provider)".to_owned()),
        (Some((tenant, user)), Some(auth)) => {
            (Some(auth.issue(&user, Some(tenant.0), false, ttl)), format!("{user}, owner of the demo tenant"))
        }
        (None, Some(_)) => (token.clone(), "the platform operator".to_owned()),
    };
    let database = match embedded {
        Some(_) => "embedded PostgreSQL",
        None => "PostgreSQL (DATABASE_URL)",
    };
    // The pages of the console carry the development token; `keel serve` never sets one.
    let console = keel_console::ConsoleConfig { dev_token: page_token, database: Some(database.to_owned()) };
    let app = App::build(app_config(s, url, jwt, Services::ALL, master, console)).await?;
    let addr = app.local_addr();
    let host = if addr.ip().is_unspecified() { "localhost".to_owned() } else { addr.ip().to_string() };
    let base = format!("http://{host}:{}", addr.port());
    println!("Keel {} is up.", env!("CARGO_PKG_VERSION"));
    println!("  Console           {base}/");
    println!("  REST              {base}/api/v1");
    for link in keel_console::links(keel_console::Surfaces { rest: true, graphql: true }) {
        println!("  {:<16}  {base}{}", link.label, link.path);
    }
    println!("  Liveness          {base}/healthz");
    println!("  Docs              README.md, ARCHITECTURE.md and docs/ in the repository");
    match embedded {
        Some(pg) => println!(
            "  Database          embedded PostgreSQL on 127.0.0.1:{} (data in {})",
            pg.port(),
            s.data_dir.join("pg").display()
        ),
        None => println!("  Database          DATABASE_URL"),
    }
    println!("  GraphiQL and the explorer act as {page_who} (development token in their headers).");
    if let Some(token) = &token {
        println!("  Platform token (12 h, development):\n    {token}");
    }
    if let Some(report) = seeded {
        let tokens = auth.as_ref().map(|a| keel::demo::tokens(a, ttl)).unwrap_or_default();
        print!("{}", keel::demo::banner(&report, &tokens, &base));
    }
    println!("Press Ctrl-C to stop.");
    app.run(shutdown_signal()).await
}

async fn serve(s: &Settings, service: Service) -> anyhow::Result<()> {
    let url =
        s.database_url.clone().context("DATABASE_URL is required for `keel serve` (use `keel up` for development)")?;
    let services = match service {
        Service::All => Services::ALL,
        Service::Command => Services { command: true, query: false, projector: false },
        Service::Query => Services { command: false, query: true, projector: false },
        Service::Projector => Services { command: false, query: false, projector: true },
    };
    let console = keel_console::ConsoleConfig { dev_token: None, database: Some("PostgreSQL".to_owned()) };
    let app =
        App::build(app_config(s, url, jwt(s, DevSecret::Refuse)?, services, master_key(s, false)?, console)).await?;
    tracing::info!(addr = %app.local_addr(), ?service, "serving");
    app.run(shutdown_signal()).await
}

async fn migrate(s: &Settings) -> anyhow::Result<()> {
    // Migrations hold a session's advisory lock: past a transaction pooler when there is one.
    match s.direct_database_url.as_ref().or(s.database_url.as_ref()) {
        Some(url) => keel_store::migrate(url.expose_secret()).await?,
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

async fn token(s: &Settings, args: &TokenArgs) -> anyhow::Result<()> {
    let signer = match &args.key_file {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("--key-file: cannot read {}", path.display()))?;
            Signer::private_pem(&pem, args.kid.clone(), s.jwt_issuer.clone(), s.jwt_audience.clone())
                .map_err(|e| anyhow::anyhow!("--key-file {}: {e}", path.display()))?
        }
        None => {
            let jwt = jwt(s, DevSecret::Existing)?;
            let KeySource::Secret(secret) = &jwt.keys else {
                bail!(
                    "the server's tokens are verified by an identity provider's keys (KEEL_JWT_JWKS_*, \
                     KEEL_JWT_PUBLIC_KEY_FILE): sign with --key-file and --kid, or get a token from the provider"
                );
            };
            Signer::hs256(secret, jwt.issuer.clone(), jwt.audience.clone())
        }
    };
    let auth = &signer;
    let t = if args.platform {
        auth.issue(args.user.as_deref().unwrap_or("operator"), None, true, args.ttl)
    } else {
        let user = args.user.as_deref().context("--user is required with --tenant")?;
        let tenant = args.tenant.as_deref().context("--tenant or --platform is required")?;
        // An id signs without the database; a slug is looked up there.
        let id = match tenant.trim().parse::<uuid::Uuid>() {
            Ok(id) => id,
            Err(_) => {
                with_keel_database(s, async |url: &str| Ok(keel::tenant_arg::find_at(url, tenant).await?.tenant_id))
                    .await?
            }
        };
        auth.issue(user, Some(id), false, args.ttl)
    };
    println!("{t}");
    Ok(())
}

/// Runs `f` against DATABASE_URL, or the embedded cluster (started for the call when it is not
/// running already) when it is unset.
async fn with_database<T>(s: &Settings, f: impl AsyncFnOnce(&str) -> anyhow::Result<T>) -> anyhow::Result<T> {
    match &s.database_url {
        Some(url) => f(url.expose_secret()).await,
        None => {
            let pg = start_embedded(s).await?;
            let r = f(&pg.database_url()).await;
            pg.stop()?;
            r
        }
    }
}

/// `with_database` for a tool that reads what Keel wrote (audit, keys, analyst, projections):
/// without DATABASE_URL it uses the embedded cluster `keel up` made under KEEL_DATA_DIR, and
/// refuses to make a new, empty one.
async fn outbound_status(s: &Settings) -> anyhow::Result<()> {
    let key = cli_master_key(s)?;
    let names = keel_outbound::names(&outbound_config(s));
    with_keel_database(s, async |url: &str| keel::outbound_cmd::status(url, key, &names).await).await
}

async fn with_keel_database<T>(s: &Settings, f: impl AsyncFnOnce(&str) -> anyhow::Result<T>) -> anyhow::Result<T> {
    if s.database_url.is_none() {
        let cluster = s.data_dir.join("pg").join("data").join("PG_VERSION");
        if !cluster.is_file() {
            bail!(
                "DATABASE_URL is unset and {} holds no embedded database ({} is not a Keel data directory: only \
                 `keel up` creates one). Run this in the directory where `keel up` runs, pass --data-dir \
                 (KEEL_DATA_DIR) with its data directory, or set DATABASE_URL.",
                absolute(&s.data_dir.join("pg")).display(),
                absolute(&s.data_dir).display()
            );
        }
    }
    with_database(s, f).await
}

async fn projections(s: &Settings, command: ProjectionsCmd) -> anyhow::Result<()> {
    // A rebuild opens every member's personal data: without the key it could only fail.
    // So does re-applying a dead letter.
    let key = match &command {
        ProjectionsCmd::Status => cli_master_key(s)?,
        ProjectionsCmd::Rebuild { .. } => Some(required_cli_master_key(s)?),
        ProjectionsCmd::DeadLetters(args) => match args.command {
            Some(DeadLettersCmd::Retry { .. }) => Some(required_cli_master_key(s)?),
            _ => cli_master_key(s)?,
        },
    };
    with_keel_database(s, async |url: &str| {
        let store = keel_store::Store::connect(url, PoolSizes { writer: 1, reader: 1, projector: 2 }, key)
            .await
            .context("cannot connect (is the database migrated? run keel migrate)")?;
        match command {
            ProjectionsCmd::Status => {
                println!(
                    "{:<20} {:>12} {:>10} {:>9} {:<12} {:<34} {:>6} {:>6}",
                    "projection", "checkpoint", "lag", "lag (s)", "state", "lease holder", "dead", "acked"
                );
                let extra = keel_store::checkpoint::rebuild_names(store.projector()).await?;
                // The publishers this configuration runs follow the log like projections do.
                let outbound = keel_outbound::names(&outbound_config(s)).into_iter().map(str::to_owned);
                let names = keel_projections::names().map(str::to_owned).chain(outbound).chain(extra);
                for name in names {
                    let st = keel_store::checkpoint::status(store.projector(), &name).await?;
                    println!(
                        "{:<20} {:>12} {:>10} {:>9.1} {:<12} {:<34} {:>6} {:>6}",
                        st.name,
                        st.checkpoint.position,
                        st.lag_events,
                        st.lag_seconds,
                        st.state,
                        st.lease_holder.as_deref().unwrap_or("-"),
                        st.dead_letters,
                        st.acknowledged
                    );
                    if let Some(e) = st.last_error {
                        println!("{:<20} last error: {e}", "");
                    }
                    if let Some(live) = name.strip_suffix("@rebuild") {
                        println!(
                            "{:<20} a rebuild of {live} is running, or was killed: `keel projections rebuild {live}` starts it over and removes it when done or failed",
                            ""
                        );
                    }
                }
            }
            ProjectionsCmd::Rebuild { name } => {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {pos}/{len} events, {per_sec}, {eta} left",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bar.set_message(format!("rebuilding {name}"));
                let rebuild = keel_projections::rebuild::rebuild(&store, url, &name, runner_config(s), |p| {
                    bar.set_length(p.total);
                    bar.set_position(p.done);
                });
                let done = tokio::select! {
                    r = rebuild => r,
                    () = shutdown_signal() => {
                        bar.abandon();
                        keel_projections::rebuild::discard(url, &name).await?;
                        bail!("interrupted: the partial rebuild of {name} was removed; the live projection is unchanged");
                    }
                };
                bar.finish_and_clear();
                let done = done?;
                println!("{name}: rebuilt from {done} events and swapped in");
            }
            ProjectionsCmd::DeadLetters(args) => {
                let r = keel::dead_letters_cmd::run(&store, args).await;
                store.close().await;
                return r;
            }
        }
        store.close().await;
        Ok(())
    })
    .await
}

fn graphql_schema(out: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let sdl = keel_query::build_schema().sdl();
    match out {
        Some(path) => std::fs::write(&path, sdl).with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{sdl}"),
    }
    Ok(())
}

async fn bench(s: &Settings, args: BenchArgs) -> anyhow::Result<()> {
    let mut opts = if args.quick {
        keel::bench::BenchOptions::quick()
    } else {
        keel::bench::BenchOptions {
            clients: args.clients.max(1),
            round: Duration::from_secs_f64(args.duration.max(0.1)),
            rounds: args.rounds.max(1),
            events: args.events.max(1),
            async_commit: false,
            traffic: Default::default(),
            scale: 1.0,
            only: Vec::new(),
        }
    };
    opts.async_commit = args.async_commit;
    opts.traffic = s.traffic();
    if let Some(scale) = args.scale {
        opts.scale = scale;
    }
    opts.only = args.cases.clone();
    let out = args.out.clone();
    with_database(s, async |url: &str| {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.enable_steady_tick(Duration::from_millis(200));
        let report = keel::bench::run(url, &opts, &|m: &str| spinner.set_message(m.to_owned())).await;
        spinner.finish_and_clear();
        let report = report?;
        print!("{}", keel::bench::table(&report));
        println!("machine: {}", report.machine);
        if let Some(path) = &out {
            std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    })
    .await
}

async fn audit(s: &Settings, command: AuditCmd) -> anyhow::Result<()> {
    // An export opens personal data; verifying the hash chains needs no key.
    let key = match command {
        AuditCmd::Export { .. } => Some(required_cli_master_key(s)?),
        AuditCmd::Verify { .. } => cli_master_key(s)?,
    };
    with_keel_database(s, async |url: &str| {
        let sizes = PoolSizes { writer: 1, reader: 1, projector: 1 };
        let store = keel_store::Store::connect(url, sizes, key.clone())
            .await
            .context("cannot connect (is the database migrated? run keel migrate)")?;
        // Tenants placed in dedicated databases are read there (docs/tenancy.md).
        let router =
            keel_store::placement::Router::connect(&store, sizes, keel_store::PoolTimeouts::default(), key.as_ref())
                .await?;
        let store = store.with_router(router);
        let result = async {
            match command {
                AuditCmd::Export { tenant, from, to } => {
                    let (id, slug) = keel::tenant_arg::find_anywhere(url, &tenant).await?;
                    let out = std::io::stdout().lock();
                    let at = store.for_tenant(keel_domain::TenantId(id)).await?;
                    let n = keel::audit::export(&at, keel_domain::TenantId(id), from, to, out).await?;
                    eprintln!("keel: exported {n} events of tenant {id} ({slug})");
                    Ok(())
                }
                AuditCmd::Verify { tenant: Some(t) } => {
                    let (id, _) = keel::tenant_arg::find_anywhere(url, &t).await?;
                    keel::audit::verify(&store.for_tenant(keel_domain::TenantId(id)).await?, Some(id)).await
                }
                AuditCmd::Verify { tenant: None } => {
                    keel::audit::verify(&store, None).await?;
                    for (name, shard) in store.shards() {
                        println!("database {name}:");
                        keel::audit::verify(&shard, None).await?;
                    }
                    Ok(())
                }
            }
        }
        .await;
        store.close().await;
        result
    })
    .await
}

async fn keys(s: &Settings, command: KeysCmd) -> anyhow::Result<()> {
    let KeysCmd::Rotate { new_key_file } = command;
    let old = required_cli_master_key(s)?;
    let dev = s.master_key.is_none() && s.master_key_file.is_none();
    let (new, new_path) = match &new_key_file {
        Some(path) => {
            let (text, created) = secrets::load_or_create(path)?;
            if created {
                eprintln!("keel: generated a new master key in {}", path.display());
            }
            (
                keel_store::MasterKey::parse(&text).with_context(|| format!("the new key in {}", path.display()))?,
                Some(path.clone()),
            )
        }
        None if dev => (keel_store::MasterKey::generate(), None),
        None => {
            bail!("--new-key-file is required when the master key comes from KEEL_MASTER_KEY or KEEL_MASTER_KEY_FILE")
        }
    };
    if new.id() == old.id() {
        bail!("the new master key is the current one");
    }
    // The development key: the new one is on disk before any data key is sealed under it.
    let pending = dev_key_path(s).with_extension("new");
    if new_path.is_none() {
        secrets::write_new(&pending, &new.to_hex())?;
        std::fs::File::open(&pending)?.sync_all()?;
    }
    let n = with_keel_database(s, async |url: &str| keel::audit::rotate_keys(url, &old, &new).await).await?;
    match new_path {
        Some(path) => println!(
            "re-sealed {n} data keys under master key {}; from now on run Keel with KEEL_MASTER_KEY_FILE={}",
            new.id(),
            path.display()
        ),
        None => {
            // The development key is replaced by the new one; the old one is kept beside it.
            let path = dev_key_path(s);
            std::fs::rename(&path, path.with_extension("retired"))?;
            std::fs::rename(&pending, &path)?;
            println!(
                "re-sealed {n} data keys under master key {}; the development key in {} is replaced",
                new.id(),
                path.display()
            );
        }
    }
    Ok(())
}

async fn analyst(s: &Settings, command: AnalystCmd) -> anyhow::Result<()> {
    with_keel_database(s, async |url: &str| keel::analyst::run(url, command).await).await
}

/// `keel subscribe`: one JSON line per result on stdout.
async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let variables = match &args.variables {
        Some(v) => Some(serde_json::from_str(v).context("--variables must be a JSON object")?),
        None => None,
    };
    let sub = keel::subscribe::Subscription {
        url: args.url,
        token: args.token,
        query: args.query,
        variables,
        count: args.count,
        timeout: args.timeout,
    };
    let stop = tokio::signal::ctrl_c();
    let mut out = std::io::stdout();
    tokio::select! {
        r = keel::subscribe::run(&sub, &mut out) => r.map(|_| ()),
        _ = stop => Ok(()),
    }
}

async fn demo(s: &Settings, command: DemoCmd) -> anyhow::Result<()> {
    let DemoCmd::Seed { ttl, base_url } = command;
    // Invitations seal the members' personal data: the key must be the one the server uses.
    let key = required_cli_master_key(s)?;
    let auth = secret_signer(&jwt(s, DevSecret::Existing)?);
    let base = base_url.unwrap_or_else(|| {
        let port = s.listen.rsplit_once(':').map_or("8080", |(_, p)| p);
        format!("http://localhost:{port}")
    });
    with_database(s, async |url: &str| {
        let store = keel_store::Store::connect(url, PoolSizes { writer: 12, reader: 2, projector: 1 }, Some(key))
            .await
            .context("cannot connect (is the database migrated? run keel migrate)")?;
        let report = keel::demo::seed(&store, chrono::Utc::now()).await;
        store.close().await;
        let report = report?;
        let tokens = auth.as_ref().map(|a| keel::demo::tokens(a, ttl)).unwrap_or_default();
        print!("{}", keel::demo::banner(&report, &tokens, &base));
        Ok(())
    })
    .await
}

/// `keel config check FILE`: the file was read and every value parsed on the way here; the
/// checks start-up makes of the secrets follow, then the effective settings.
fn config_check(s: &Settings, effective: String) -> anyhow::Result<()> {
    if let Some(v) = &s.jwt_secret
        && v.expose_secret().len() < 32
    {
        bail!("jwt_secret (KEEL_JWT_SECRET) must be at least 32 bytes");
    }
    if s.master_key.is_some() || s.master_key_file.is_some() {
        master_key(s, false)?;
    }
    print!("{effective}");
    Ok(())
}

async fn databases(s: &Settings, command: keel::cli::DatabasesCmd) -> anyhow::Result<()> {
    let key = cli_master_key(s)?;
    with_keel_database(s, async |url: &str| keel::tenancy_cmd::databases(url, key, command).await).await
}

async fn tenant(s: &Settings, command: TenantCmd) -> anyhow::Result<()> {
    if matches!(
        command,
        TenantCmd::Export { .. } | TenantCmd::Import { .. } | TenantCmd::Move { .. } | TenantCmd::Retire { .. }
    ) {
        let key = cli_master_key(s)?;
        return with_keel_database(s, async |url: &str| keel::tenancy_cmd::tenant(url, key, command).await).await;
    }
    // A new tenant's owner has personal data, sealed under the key the server uses.
    let key = match command {
        TenantCmd::Create { .. } => Some(required_cli_master_key(s)?),
        _ => cli_master_key(s)?,
    };
    with_keel_database(s, async |url: &str| keel::tenant_cmd::run(url, key, command).await).await
}

/// `keel chaos`: the figures on stdout (and as JSON in --report); exit 1 when a check failed.
async fn chaos(s: &Settings, args: ChaosArgs) -> anyhow::Result<()> {
    let opts = keel::chaos::ChaosOptions {
        duration: args.duration,
        clients: args.clients.max(1),
        seed: args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        }),
        fault_every: args.fault_every.max(Duration::from_millis(500)),
        keel_bin: match args.keel_bin {
            Some(p) => p,
            None => std::env::current_exe().context("cannot find this binary (pass --keel-bin)")?,
        },
        dir: args.dir.unwrap_or_else(std::env::temp_dir),
        keep: args.keep,
        pg_bindir: find_bindir(s.pg_bindir.as_deref())?,
    };
    let report = keel::chaos::run(&opts).await?;
    print!("{}", keel::chaos::render(&report));
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed = report.checks.iter().filter(|c| c.violations > 0).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed (seed {})", report.checks.len(), report.seed);
    }
    Ok(())
}
