//! The `keel` command line: every setting is a flag and an environment variable, read and
//! checked once at start-up.

use crate::database_url::DatabaseUrl;
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel: a multi-tenant, event-sourced SaaS backend core",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

/// `Debug` never shows a secret: the JWT secret and the master key print as redacted, the
/// database URL without its password. They apply to every subcommand, and a subcommand's help
/// lists them after its own options, under "Global options".
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Settings {
    /// A TOML file of settings: each environment variable's name in snake case without `KEEL_`
    /// (`listen`, `database_url`, `jwt_secret`, ...); the environment and flags override it.
    #[arg(long, env = "KEEL_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// PostgreSQL URL of Keel's database (a role that owns it and can create roles). Unset: `up`,
    /// `migrate` and `bench` start a private cluster under KEEL_DATA_DIR, and the other tools use
    /// the one found there (never a new one).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    /// PostgreSQL URL of a streaming replica of DATABASE_URL's database: GraphQL and audit reads
    /// go there (with `Keel-Consistency` waiting for the replica), commands and projections stay
    /// on the primary. Unset: everything reads the primary.
    #[arg(long, env = "KEEL_READ_DATABASE_URL", global = true, hide_env_values = true)]
    pub read_database_url: Option<DatabaseUrl>,

    /// The same database as DATABASE_URL reached directly, when DATABASE_URL is a transaction
    /// pooler (PgBouncer with pool_mode = transaction): LISTEN connects here, and every unit of
    /// work through the pooler is a transaction that sets its role. The pooled login must be the
    /// `keel_pooled` role (or another that is neither superuser nor owner). Unset: DATABASE_URL
    /// is a direct connection.
    #[arg(long, env = "KEEL_DIRECT_DATABASE_URL", global = true, hide_env_values = true)]
    pub direct_database_url: Option<DatabaseUrl>,

    /// Address the HTTP server (REST and GraphQL) listens on.
    #[arg(long, env = "KEEL_LISTEN", global = true, default_value = "0.0.0.0:8080")]
    pub listen: String,

    /// Directory for the embedded PostgreSQL cluster and development secrets.
    #[arg(long, env = "KEEL_DATA_DIR", global = true, default_value = "./.keel")]
    pub data_dir: PathBuf,

    /// HS256 secret for bearer tokens (at least 32 bytes). Unset: `up` generates a development
    /// secret under KEEL_DATA_DIR (once), and `token` signs with that one (never a new one).
    #[arg(long, env = "KEEL_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// The master key that seals every member's data key: 64 hex digits or base64 of 32 bytes.
    /// Unset (and no KEEL_MASTER_KEY_FILE): `up` uses a development key generated under KEEL_DATA_DIR;
    /// `audit`, `projections` and `keys` use that key when it exists and never generate one.
    #[arg(long, env = "KEEL_MASTER_KEY", global = true, hide_env_values = true)]
    pub master_key: Option<SecretString>,

    /// A file holding the master key (instead of KEEL_MASTER_KEY).
    #[arg(long, env = "KEEL_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,

    /// A JWKS document (JSON file) of the identity provider's public keys, read at start-up:
    /// RS256/ES256 tokens naming one of its keys by `kid` are accepted (instead of KEEL_JWT_SECRET).
    #[arg(long, env = "KEEL_JWT_JWKS_FILE", global = true)]
    pub jwt_jwks_file: Option<PathBuf>,

    /// The identity provider's JWKS URL (its `jwks_uri`), fetched at start-up and cached; an
    /// unknown `kid` fetches it again (instead of KEEL_JWT_SECRET).
    #[arg(long, env = "KEEL_JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,

    /// Age in seconds after which the cached JWKS is fetched again in the background (requests
    /// never wait for it; a key removed from the set stops verifying within this).
    #[arg(long, env = "KEEL_JWT_JWKS_REFRESH_SECS", global = true, default_value_t = 300)]
    pub jwt_jwks_refresh_secs: u64,

    /// Least seconds between two JWKS fetches: tokens with unknown `kid`s fetch at most once per this.
    #[arg(long, env = "KEEL_JWT_JWKS_COOLDOWN_SECS", global = true, default_value_t = 30)]
    pub jwt_jwks_cooldown_secs: u64,

    /// Deadline of one JWKS fetch, in ms; a failed fetch keeps the cached keys.
    #[arg(long, env = "KEEL_JWT_JWKS_TIMEOUT_MS", global = true, default_value_t = 3000)]
    pub jwt_jwks_timeout_ms: u64,

    /// A PEM public key (RSA: RS256; EC P-256: ES256) that verifies tokens (instead of KEEL_JWT_SECRET).
    #[arg(long, env = "KEEL_JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` of tokens, when set.
    #[arg(long, env = "KEEL_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of tokens, when set.
    #[arg(long, env = "KEEL_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// How long a GraphQL request with `Keel-Consistency` waits for the projections, in ms.
    #[arg(long, env = "KEEL_CONSISTENCY_WAIT_MS", global = true, default_value_t = 2000)]
    pub consistency_wait_ms: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "KEEL_BODY_LIMIT", global = true, default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Deadline of every REST and GraphQL request, in ms; past it the request is cancelled (503).
    #[arg(long, env = "KEEL_REQUEST_TIMEOUT_MS", global = true, default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Connections the writer role's pool may open (commands). An instance holds at most the
    /// three pools' sum plus three LISTEN connections and the probe's (docs/scaling.md).
    #[arg(long, env = "KEEL_DB_WRITER_CONNECTIONS", global = true, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_writer_connections: u32,

    /// Connections the reader role's pool may open (GraphQL, memberships).
    #[arg(long, env = "KEEL_DB_READER_CONNECTIONS", global = true, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_reader_connections: u32,

    /// Connections the projector role's pool may open (projections, publishers, webhooks).
    #[arg(long, env = "KEEL_DB_PROJECTOR_CONNECTIONS", global = true, default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_projector_connections: u32,

    /// How long a request may wait for a connection from a database pool, in ms (503 past it).
    #[arg(long, env = "KEEL_DB_ACQUIRE_TIMEOUT_MS", global = true, default_value_t = 5_000)]
    pub db_acquire_timeout_ms: u64,

    /// While the database is unreachable, how often it is probed, in ms: requests are answered
    /// 503 at once meanwhile, and the first answering probe lets them through again.
    #[arg(long, env = "KEEL_DB_PROBE_INTERVAL_MS", global = true, default_value_t = 200)]
    pub db_probe_interval_ms: u64,

    /// How long a probe of the database (reconnect and `SELECT 1`) may take before the database
    /// counts as unreachable, in ms; also the bound of `/readyz`'s check.
    #[arg(long, env = "KEEL_DB_PROBE_TIMEOUT_MS", global = true, default_value_t = 1_000)]
    pub db_probe_timeout_ms: u64,

    /// How long a command whose COMMIT lost its connection keeps asking the database whether it
    /// landed, in ms, before it answers 503 `outcome-unknown`.
    #[arg(long, env = "KEEL_COMMIT_RESOLVE_MS", global = true, default_value_t = 5_000)]
    pub commit_resolve_ms: u64,

    /// `statement_timeout` of the writer role's connections (commands), in ms; 0 disables it.
    #[arg(long, env = "KEEL_DB_WRITER_STATEMENT_TIMEOUT_MS", global = true, default_value_t = 5_000)]
    pub db_writer_statement_timeout_ms: u64,

    /// `statement_timeout` of the reader role's connections (GraphQL queries), in ms; 0 disables it.
    #[arg(long, env = "KEEL_DB_READER_STATEMENT_TIMEOUT_MS", global = true, default_value_t = 5_000)]
    pub db_reader_statement_timeout_ms: u64,

    /// `statement_timeout` of the projector role's connections (projection batches, rebuilds), in
    /// ms; 0 disables it.
    #[arg(long, env = "KEEL_DB_PROJECTOR_STATEMENT_TIMEOUT_MS", global = true, default_value_t = 60_000)]
    pub db_projector_statement_timeout_ms: u64,

    /// OTLP/HTTP endpoint spans are exported to (e.g. `http://collector:4318/v1/traces`); unset,
    /// nothing is exported (log lines still carry trace and span ids).
    #[arg(long, env = "KEEL_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// How many tenants get their own `tenant` label on `/metrics`: the busiest of the last
    /// ranking window; every other tenant is counted under `other`.
    #[arg(long, env = "KEEL_METRICS_TENANTS", global = true, default_value_t = 20)]
    pub metrics_tenants: usize,

    /// How often the busiest tenants are re-ranked for their `/metrics` labels, in seconds (a
    /// series idle for two windows is dropped).
    #[arg(long, env = "KEEL_METRICS_RANK_SECS", global = true, default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub metrics_rank_secs: u64,

    /// After SIGTERM or Ctrl-C, how long Keel goes on serving before it stops accepting, in ms:
    /// /readyz answers 503 (a load balancer stops sending) and every response carries
    /// `Connection: close` (clients leave their keep-alive connections). 0: no drain.
    #[arg(long, env = "KEEL_DRAIN_MS", global = true, default_value_t = 3_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub drain_ms: u64,

    /// After the drain, how long in-flight work may finish before it is cancelled, in ms.
    #[arg(long, env = "KEEL_SHUTDOWN_TIMEOUT_MS", global = true, default_value_t = 15_000)]
    pub shutdown_timeout_ms: u64,

    /// Deepest selection of a GraphQL data query (introspection is counted apart).
    #[arg(long, env = "KEEL_GRAPHQL_MAX_DEPTH", global = true, default_value_t = 10)]
    pub graphql_max_depth: usize,

    /// Largest complexity of a GraphQL query: one per field, a connection's fields times its `first`.
    #[arg(long, env = "KEEL_GRAPHQL_MAX_COMPLEXITY", global = true, default_value_t = 10_000)]
    pub graphql_max_complexity: usize,

    /// Brackets ({ [ () open at once in a GraphQL document, input values included.
    #[arg(long, env = "KEEL_GRAPHQL_MAX_NESTING", global = true, default_value_t = 32)]
    pub graphql_max_nesting: usize,

    /// Fields of a GraphQL document once its fragments are expanded.
    #[arg(long, env = "KEEL_GRAPHQL_MAX_FIELDS", global = true, default_value_t = 2_000)]
    pub graphql_max_fields: u64,

    /// Largest body of POST /graphql, in bytes.
    #[arg(long, env = "KEEL_GRAPHQL_BODY_LIMIT", global = true, default_value_t = 256 * 1024)]
    pub graphql_body_limit: usize,

    /// Requests per tenant (the free plan's; team ×4, enterprise and platform operators ×16):
    /// `off`, or `N/s`, `N/m`, `N/h` with an optional burst, e.g. `50/s,burst=100`.
    #[arg(long, env = "KEEL_RATE_LIMIT", global = true, default_value = "off",
          value_parser = |v: &str| keel_gateway::limits::Rate::parse_setting("KEEL_RATE_LIMIT", v).map(RateSetting))]
    pub rate_limit: RateSetting,

    /// With it, REST requests (commands) have a budget of their own per tenant at this rate,
    /// same syntax and plan factors, and `KEEL_RATE_LIMIT` counts GraphQL only.
    #[arg(long, env = "KEEL_RATE_LIMIT_WRITES", global = true, default_value = "off",
          value_parser = |v: &str| keel_gateway::limits::Rate::parse_setting("KEEL_RATE_LIMIT_WRITES", v).map(RateSetting))]
    pub rate_limit_writes: RateSetting,

    /// Redis shared by every Keel process for the rate limit (`redis://host:port/db`, no TLS);
    /// without it, the limit is per process.
    #[arg(long, env = "KEEL_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// Prefix of the rate limit's Redis keys.
    #[arg(long, env = "KEEL_REDIS_KEY_PREFIX", global = true, default_value = "keel:rl")]
    pub redis_key_prefix: String,

    /// Timeout of every Redis call, in ms; past it the request is limited per process instead.
    #[arg(long, env = "KEEL_REDIS_TIMEOUT_MS", global = true, default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub redis_timeout_ms: u64,

    /// REST requests in flight before new ones are shed (503).
    #[arg(long, env = "KEEL_MAX_INFLIGHT_COMMANDS", global = true, default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_inflight_commands: u64,

    /// GraphQL requests in flight before new ones are shed (503).
    #[arg(long, env = "KEEL_MAX_INFLIGHT_QUERIES", global = true, default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_inflight_queries: u64,

    /// Open subscription sockets before new ones are refused (503).
    #[arg(long, env = "KEEL_MAX_SUBSCRIPTIONS", global = true, default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_subscriptions: u64,

    /// REST requests of one tenant running at once (its share of the writer pool).
    #[arg(long, env = "KEEL_TENANT_MAX_INFLIGHT", global = true, default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tenant_max_inflight: u64,

    /// REST requests of one tenant waiting for its share; past this they are shed (503).
    #[arg(long, env = "KEEL_TENANT_QUEUE", global = true, default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub tenant_queue: u64,

    /// How long a REST request waits for its tenant's share before it is shed, in ms.
    #[arg(long, env = "KEEL_TENANT_WAIT_MS", global = true, default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub tenant_wait_ms: u64,

    /// Events a projection applies per transaction.
    #[arg(long, env = "KEEL_PROJECTION_BATCH", global = true, default_value_t = 500)]
    pub projection_batch: i64,

    /// Seconds a projection worker's lease lasts without renewal (takeover time after a crash).
    #[arg(long, env = "KEEL_LEASE_TTL_SECS", global = true, default_value_t = 5)]
    pub lease_ttl_secs: u64,

    /// How often projections look for new events when no notification arrives, in ms.
    #[arg(long, env = "KEEL_POLL_INTERVAL_MS", global = true, default_value_t = 500)]
    pub poll_interval_ms: u64,

    /// Publish every event to NATS JetStream at this URL (e.g. `nats://127.0.0.1:4222`), on
    /// `keel.<tenant_id>.<stream_type>.<event_type>` (see the prefix); unset: no publisher.
    #[arg(long, env = "KEEL_NATS_URL", global = true)]
    pub nats_url: Option<String>,

    /// The first token(s) of the published subjects: `<prefix>.<tenant_id>.<stream_type>.<event_type>`.
    #[arg(long, env = "KEEL_NATS_SUBJECT_PREFIX", global = true, default_value = "keel",
          value_parser = keel_outbound::nats::parse_subject_prefix)]
    pub nats_subject_prefix: String,

    /// The JetStream stream the publisher creates (or updates) for the subjects `<prefix>.>`.
    #[arg(long, env = "KEEL_NATS_STREAM", global = true, default_value = "KEEL")]
    pub nats_stream: String,

    /// How long the JetStream stream keeps a message, in seconds (0: no limit).
    #[arg(long, env = "KEEL_NATS_MAX_AGE_SECS", global = true, default_value_t = 7 * 24 * 3600)]
    pub nats_max_age_secs: u64,

    /// How long JetStream remembers a message id, in seconds: a republish after a crash within
    /// it is dropped as a duplicate.
    #[arg(long, env = "KEEL_NATS_DUPLICATE_WINDOW_SECS", global = true, default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 3600))]
    pub nats_duplicate_window_secs: u64,

    /// Deadline of a connection attempt to NATS, in ms.
    #[arg(long, env = "KEEL_NATS_CONNECT_TIMEOUT_MS", global = true, default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub nats_connect_timeout_ms: u64,

    /// Deadline of each publish's acknowledgement from JetStream, in ms.
    #[arg(long, env = "KEEL_NATS_ACK_TIMEOUT_MS", global = true, default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub nats_ack_timeout_ms: u64,

    /// Accept plain `http` webhook URLs (`true`/`false`; for tests and local receivers).
    #[arg(long, env = "KEEL_WEBHOOKS_ALLOW_HTTP", global = true, default_value_t = false, action = clap::ArgAction::Set,
          value_parser = parse_switch)]
    pub webhooks_allow_http: bool,

    /// Accept webhook URLs on loopback, private, link-local and metadata addresses (`true`/`false`).
    #[arg(long, env = "KEEL_WEBHOOKS_ALLOW_PRIVATE", global = true, default_value_t = false, action = clap::ArgAction::Set,
          value_parser = parse_switch)]
    pub webhooks_allow_private: bool,

    /// How long a webhook's previous secret still signs after a rotation, in seconds.
    #[arg(long, env = "KEEL_WEBHOOKS_ROTATION_GRACE_SECS", global = true, default_value_t = 24 * 3600,
          value_parser = clap::value_parser!(u64).range(0..=30 * 24 * 3600))]
    pub webhooks_rotation_grace_secs: u64,

    /// Deadline of one webhook delivery attempt, connect to response, in ms.
    #[arg(long, env = "KEEL_WEBHOOKS_TIMEOUT_MS", global = true, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub webhooks_timeout_ms: u64,

    /// The waits before each attempt of a webhook delivery, comma-separated (units ms, s, m, h,
    /// d; 1 to 20 attempts), each jittered by ±20%; after the last, the endpoint is disabled.
    #[arg(long, env = "KEEL_WEBHOOKS_RETRY_SCHEDULE", global = true, default_value = "0,5s,5m,30m,2h,5h,10h,10h",
          value_parser = parse_retry_schedule)]
    pub webhooks_retry_schedule: RetrySchedule,

    /// Webhook delivery attempts in flight in this process, across all endpoints.
    #[arg(long, env = "KEEL_WEBHOOKS_CONCURRENCY", global = true, default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub webhooks_concurrency: u64,

    /// Webhook delivery attempts in flight for one tenant in this process (its endpoints share them).
    #[arg(long, env = "KEEL_WEBHOOKS_TENANT_CONCURRENCY", global = true, default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub webhooks_tenant_concurrency: u64,

    /// Projector connections webhook delivery may hold at once (keep it below the projector pool).
    #[arg(long, env = "KEEL_WEBHOOKS_DB_CONNECTIONS", global = true, default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub webhooks_db_connections: u64,

    /// The most events waiting for one webhook endpoint; later ones are counted as dropped
    /// (shown by `keel outbound status`) until there is room, and a replay resends them.
    #[arg(long, env = "KEEL_WEBHOOKS_QUEUE_MAX", global = true, default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub webhooks_queue_max: u64,

    /// How many days the webhook delivery log keeps an attempt.
    #[arg(long, env = "KEEL_WEBHOOKS_DELIVERY_LOG_DAYS", global = true, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub webhooks_delivery_log_days: u64,

    /// The most webhook endpoints this process delivers; the rest wait for another process.
    #[arg(long, env = "KEEL_WEBHOOKS_MAX_ENDPOINTS_PER_PROCESS", global = true, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub webhooks_max_endpoints_per_process: u64,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `keel=debug,sqlx=warn`.
    #[arg(long, env = "KEEL_LOG", global = true, default_value = "info,sqlx=warn")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "KEEL_LOG_FORMAT", global = true, value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Directory of the PostgreSQL server binaries for the embedded cluster (default: found on
    /// PATH, by pg_config, or under /usr/lib/postgresql/*/bin).
    #[arg(long, env = "KEEL_PG_BINDIR", global = true)]
    pub pg_bindir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: (embedded) database, migrations, REST, GraphQL, projections.
    Up {
        /// Seed the demo tenant (slug `demo`) once the server is up, unless it was seeded before,
        /// and print a token per role (see `keel demo seed`).
        #[arg(long)]
        demo: bool,
    },
    /// Run one part of Keel against DATABASE_URL (which must be migrated).
    Serve {
        /// Which service this process runs (`--role` is accepted too).
        #[arg(long, alias = "role", value_enum, default_value = "all")]
        service: Service,
    },
    /// Apply pending migrations to DATABASE_URL (or to the embedded cluster when unset).
    Migrate,
    /// Print a signed bearer token for development and tests.
    Token(TokenArgs),
    /// Measure Keel against plain PostgreSQL on the same server, in alternating rounds.
    Bench(BenchArgs),
    /// Print the GraphQL schema (SDL), or write it to --out (the repository keeps it in schema.graphql).
    GraphqlSchema {
        /// Write the schema to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Export and verify a tenant's history.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Manage the master key that seals personal data.
    Keys {
        #[command(subcommand)]
        command: KeysCmd,
    },
    /// Logins for analysts and BI tools, each bound to one tenant's rows in schema `reporting`.
    Analyst {
        #[command(subcommand)]
        command: AnalystCmd,
    },
    /// Demo data for development and demonstrations.
    Demo {
        #[command(subcommand)]
        command: DemoCmd,
    },
    /// Events out: where every webhook endpoint and publisher stands.
    Outbound {
        #[command(subcommand)]
        command: OutboundCmd,
    },
    /// Inspect and rebuild the asynchronous projections.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCmd,
    },
    /// Run a GraphQL subscription and print each result as one JSON line.
    Subscribe(SubscribeArgs),
    /// The configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Break Keel on purpose and check it kept its promises: a private PostgreSQL, Keel as a
    /// child process, a mixed command load from several clients while Keel is killed and sent
    /// SIGTERM and the database is stopped and its backends terminated; then every answer is
    /// checked against the log (docs/reliability.md). Exit 1 on any violation.
    Chaos(ChaosArgs),
    /// The control plane: provision tenants, list and show them, change their plan, suspend,
    /// reactivate and erase them, through the same commands as the REST platform routes.
    Tenant {
        #[command(subcommand)]
        command: TenantCmd,
    },
    /// Dedicated databases a tenant can be placed in or moved to (docs/tenancy.md).
    Databases {
        #[command(subcommand)]
        command: DatabasesCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatabasesCmd {
    /// Migrate the database at URL and register it as NAME (its URL sealed with the master key).
    Add {
        /// 1 to 40 of a-z, 0-9, _ and -, starting with a letter; not `pool`.
        name: String,
        /// A PostgreSQL URL whose login owns the database (as DATABASE_URL's does).
        url: String,
    },
    /// Every registered database and how many tenants live in it.
    List,
}

/// The waits of `KEEL_WEBHOOKS_RETRY_SCHEDULE` (one value, so clap does not read a list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<std::time::Duration>);

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.001..=10.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a scale between 0.001 and 10")),
    }
}

fn parse_retry_schedule(s: &str) -> Result<RetrySchedule, String> {
    keel_outbound::webhooks::parse_schedule(s).map(RetrySchedule)
}

#[derive(Debug, Subcommand)]
pub enum OutboundCmd {
    /// Every publisher (checkpoint, lag in events and seconds, state, last error) and every
    /// webhook endpoint of every tenant (state, events waiting, age of the oldest, failures in a
    /// row, next attempt, last delivered position, lease holder, last error).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check FILE (every key a setting, every value valid) and print the effective settings
    /// (file, environment and flags), secrets redacted; exit 1 naming the key and line at fault.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Provision a tenant with its owner (as `POST /api/v1/tenants`); prints its id.
    Create {
        /// The tenant's name.
        #[arg(long)]
        name: String,
        /// `^[a-z0-9][a-z0-9-]{1,62}$`, unique on the platform.
        #[arg(long)]
        slug: String,
        /// free, team or enterprise.
        #[arg(long, default_value = "free")]
        plan: String,
        /// The owner's user id (the `sub` of their tokens).
        #[arg(long)]
        owner_user: String,
        /// The owner's email.
        #[arg(long)]
        owner_email: String,
        /// The owner's name (default: the owner's user id).
        #[arg(long)]
        owner_name: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every tenant, from the platform view (`rm_tenants`, which follows a write by a moment).
    List {
        /// Only tenants on this plan.
        #[arg(long)]
        plan: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One tenant as the control plane has it now (its id, or its slug).
    Show {
        /// The tenant: its id, or its slug.
        #[arg(value_name = "ID|SLUG")]
        tenant: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's plan (as `PUT /api/v1/tenants/{id}/plan`); a downgrade must fit.
    Plan {
        /// The tenant: its id, or its slug.
        #[arg(value_name = "ID|SLUG")]
        tenant: String,
        /// free, team or enterprise.
        plan: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Suspend a tenant: reads work, writes answer 423.
    Suspend {
        /// The tenant: its id, or its slug.
        #[arg(value_name = "ID|SLUG")]
        tenant: String,
        /// Why, up to 500 characters.
        #[arg(long)]
        reason: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reactivate a suspended tenant.
    Reactivate {
        /// The tenant: its id, or its slug.
        #[arg(value_name = "ID|SLUG")]
        tenant: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write everything a tenant is (events with their hashes, data keys, idempotency keys,
    /// inline tables) to one archive file (docs/tenancy.md).
    Export {
        /// The tenant's id.
        tenant: uuid::Uuid,
        /// The archive file to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Load an archive made by `keel tenant export` into the pool or a registered database,
    /// checking every hash chain; a broken or tampered archive is refused and nothing is written.
    Import {
        /// The archive file.
        archive: PathBuf,
        /// Where the tenant will live: `pool` (default) or a registered database.
        #[arg(long, default_value = "pool")]
        database: String,
    },
    /// Move a tenant to another database while it keeps serving (docs/tenancy.md, "Moving a
    /// tenant"); run it again to resume a move that stopped.
    Move {
        /// The tenant's id.
        tenant: uuid::Uuid,
        /// `pool` or a registered database.
        #[arg(long)]
        to: String,
        /// The longest the tenant's writes may wait at the switch.
        #[arg(long, default_value = "800ms", value_parser = humantime::parse_duration)]
        fence: std::time::Duration,
        /// Delete the tenant's rows from the database it left at once, instead of keeping them
        /// for the retention period.
        #[arg(long)]
        purge: bool,
        /// How long the database the tenant left keeps its rows (without --purge), e.g. 7d.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        retention: std::time::Duration,
        /// How long to wait for the new database's read models to catch up with the tenant.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        catch_up: std::time::Duration,
        /// Testing: stop the process abruptly once this step is done (batch, target-final,
        /// departed, switched, serving, retired), as a crash there would.
        #[arg(long, hide = true)]
        crash_after: Option<String>,
    },
    /// Delete the rows of tenants that moved away from each database once their retention has
    /// passed (or at once with --now).
    Retire {
        /// Retire every departed tenant now, whatever its retention.
        #[arg(long)]
        now: bool,
    },
    /// Erase a tenant's personal data and close it (irreversible).
    Erase {
        /// The tenant: its id, or its slug.
        #[arg(value_name = "ID|SLUG")]
        tenant: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The subscription document, e.g. 'subscription { dashboardChanged { openTasks } }'.
    pub query: String,
    /// Keel's base URL (or its /graphql/ws WebSocket URL).
    #[arg(long, env = "KEEL_URL", default_value = "http://localhost:8080")]
    pub url: String,
    /// The bearer token (a tenant member's, from `keel token`).
    #[arg(long, env = "KEEL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The document's variables, as a JSON object.
    #[arg(long)]
    pub variables: Option<String>,
    /// Stop after this many results (default: run until the server ends it or Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Fail when the results asked for have not arrived within this long, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCmd {
    /// Per projection: checkpoint, lag in events and seconds, state, lease holder, dead letters
    /// (active, and acknowledged).
    Status,
    /// Replay NAME from the start into new tables while the old ones serve, then swap them in.
    Rebuild {
        /// projects, tasks, members, throughput, usage or tenants.
        name: String,
    },
    /// Events a projection parked after its retries (all tenants': a platform tool): list them,
    /// `retry` one after a fix, or `skip` one; each action is recorded (`history`).
    DeadLetters(DeadLettersArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    pub command: Option<DeadLettersCmd>,
    /// Only this projection's (projects, tasks, members, throughput, usage or tenants).
    pub name: Option<String>,
    /// Acknowledged (skipped) ones too.
    #[arg(long)]
    pub acknowledged: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCmd {
    /// Re-apply dead letter ID (or with --all NAME every active one of projection NAME, in log
    /// order) through its projection, each in one transaction with its removal from the list;
    /// one that fails again stays parked with the new error (exit 1).
    Retry {
        /// The dead letter's id, as the list shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every active dead letter of this projection.
        #[arg(long, value_name = "NAME")]
        all: Option<String>,
    },
    /// Acknowledge dead letter ID without applying it: it leaves the active list and the gauge,
    /// and is kept (`--acknowledged` lists it).
    Skip {
        /// The dead letter's id, as the list shows it.
        id: i64,
    },
    /// Every recorded retry and skip, oldest first: who, when, what, outcome.
    History {
        /// Only this projection's.
        name: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DemoCmd {
    /// Create the demo tenant (slug `demo`, team plan: members of every role, projects, tasks
    /// over the last eight weeks, usage) in DATABASE_URL or the embedded cluster, through the
    /// command path; a tenant seeded before is left as it is. Prints a token per role.
    Seed {
        /// Lifetime of the printed tokens, e.g. 30m, 12h, 7d.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// The base URL the printed curl line uses (default: from KEEL_LISTEN).
        #[arg(long)]
        base_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AnalystCmd {
    /// Make a login (member of keel_analyst, generated password) that reads only this tenant;
    /// prints its connection string.
    Create {
        /// The tenant's id, or its slug.
        #[arg(long, value_name = "ID|SLUG")]
        tenant: String,
        /// The login's name (default: keel_analyst_ and 12 random letters and digits).
        #[arg(long)]
        login: Option<String>,
    },
    /// Every analyst login of this database with its tenant.
    List,
    /// Drop an analyst login: its tenant mapping, its sessions and the role.
    Revoke {
        /// The login to drop (as `keel analyst list` shows it).
        login: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Write a tenant's events to stdout as NDJSON, one event a line, in log order; personal data
    /// of erased members reads "[erased]".
    Export {
        /// The tenant whose events to export: its id, or its slug.
        #[arg(long, value_name = "ID|SLUG")]
        tenant: String,
        /// Only events recorded at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events recorded before this time (RFC 3339).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Recompute every hash chain (of one tenant, or all); exit 1 at the first broken link.
    Verify {
        /// Only this tenant's streams (its id, or its slug); unset, every tenant's.
        #[arg(long, value_name = "ID|SLUG")]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Re-seal every member's data key under a new master key; events are not touched.
    Rotate {
        /// The new key: read from this file, or generated into it when the file does not exist.
        /// Unset with the development key: a new development key replaces it.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// REST, GraphQL and the projection workers.
    All,
    /// REST commands only.
    Command,
    /// GraphQL only.
    Query,
    /// The projection workers only (HTTP serves health, readiness and metrics).
    Projector,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("kind").required(true).args(["platform", "tenant"]))]
pub struct TokenArgs {
    /// A platform operator token (scope platform:admin, no tenant).
    #[arg(long)]
    pub platform: bool,
    /// The tenant the token acts in: its id, or its slug (a slug is looked up in the database).
    #[arg(long, requires = "user", value_name = "ID|SLUG")]
    pub tenant: Option<String>,
    /// The user id (`sub`); for --platform it defaults to `operator`.
    #[arg(long)]
    pub user: Option<String>,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Sign with this private key (PEM; RSA: RS256, EC P-256: ES256) instead of the HS256
    /// secret, for a server whose KEEL_JWT_PUBLIC_KEY_FILE or JWKS holds its public half (development).
    #[arg(long, value_name = "PEM")]
    pub key_file: Option<PathBuf>,
    /// The `kid` of tokens signed with --key-file (the key's id in the server's JWKS).
    #[arg(long, requires = "key_file", value_name = "ID")]
    pub kid: Option<String>,
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// How long the load and the faults run, e.g. 90s or 10m; the checks follow.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Concurrent clients sending commands.
    #[arg(long, default_value_t = 6)]
    pub clients: usize,
    /// Seed of the load's and the faults' choices (unset: from the clock; the report prints it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Mean time between two faults (each 0.5 to 1.5 times this after the last one recovered;
    /// every kind once per cycle of five).
    #[arg(long, alias = "kill-every", default_value = "8s", value_parser = humantime::parse_duration)]
    pub fault_every: std::time::Duration,
    /// The Keel binary to run, kill and restart (default: this one).
    #[arg(long, value_name = "PATH")]
    pub keel_bin: Option<PathBuf>,
    /// Write the figures and every violation as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Keep the run's directory (the cluster, PostgreSQL's and Keel's logs, the journal of every
    /// request and answer) for inspection; it is kept anyway when the run fails.
    #[arg(long)]
    pub keep: bool,
    /// Where the run's directory is made (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent clients for the write cases.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds per round (each case runs alternating baseline and Keel rounds).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Rounds of each side per case.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Events written for the catch-up case.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A smoke run of under a minute (4 clients, short rounds, 3,000 events).
    #[arg(long)]
    pub quick: bool,
    /// synchronous_commit = off for the benchmark database: a CPU-bound ratio the disk does not move.
    #[arg(long)]
    pub async_commit: bool,
    /// The size of the scale cases: 1.0 (the default) is a tenant of 1,000,000 tasks; `--quick`
    /// uses 0.02 unless this is given.
    #[arg(long, value_parser = parse_scale)]
    pub scale: Option<f64>,
    /// Only the cases whose names start with one of these, comma-separated (e.g. `big_,append`).
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
}

/// A setting that is on or off: `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("{other:?} is neither true nor false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppConfig, EdgeLimits, Services};
    use keel_gateway::JwtConfig;
    use keel_gateway::auth::Secret;
    use secrecy::ExposeSecret;

    const JWT_SECRET: &str = "jwt-secret-never-printed-0123456789abcdef";
    const MASTER_KEY: &str = "5f0e3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060";
    const DB_PASSWORD: &str = "db-password-never-printed";

    fn database_url() -> String {
        format!("postgres://keel:{DB_PASSWORD}@db.internal:5432/keel?sslmode=require")
    }

    fn assert_no_secret(what: &str, shown: &str) {
        for secret in [JWT_SECRET, MASTER_KEY, DB_PASSWORD] {
            assert!(!shown.contains(secret), "{what} prints a secret: {shown}");
        }
    }

    /// Every option, argument and subcommand says what it is for.
    #[test]
    fn every_argument_and_subcommand_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
                // A flag's true/false are not values anyone types.
                let values = if arg.get_action().takes_values() { arg.get_possible_values() } else { Vec::new() };
                for value in values {
                    if !value.is_hide_set() && value.get_help().is_none() {
                        missing.push(format!("{path} {}={}", arg.get_id(), value.get_name()));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "keel", &mut missing);
        assert!(missing.is_empty(), "without a description: {missing:#?}");
    }

    #[test]
    fn debug_of_the_settings_and_the_app_config_shows_no_secret() {
        let url = database_url();
        let cli = Cli::try_parse_from([
            "keel",
            "--database-url",
            &url,
            "--jwt-secret",
            JWT_SECRET,
            "--master-key",
            MASTER_KEY,
            "serve",
        ])
        .unwrap();
        let s = &cli.settings;
        // The values are all there for the code that uses them...
        assert_eq!(s.database_url.as_ref().unwrap().expose_secret(), url);
        assert_eq!(s.jwt_secret.as_ref().unwrap().expose_secret(), JWT_SECRET);
        assert_eq!(s.master_key.as_ref().unwrap().expose_secret(), MASTER_KEY);
        // ...and none of them prints.
        let shown = format!("{cli:?}");
        assert_no_secret("Cli", &shown);
        assert_no_secret("Cli (pretty)", &format!("{cli:#?}"));
        assert!(shown.contains("db.internal:5432/keel"), "the database's place still shows: {shown}");

        let config = AppConfig {
            database_url: s.database_url.clone().unwrap(),
            read_database_url: None,
            direct_database_url: None,
            listen: s.listen.clone(),
            jwt: JwtConfig::hs256(Secret::new(s.jwt_secret.as_ref().unwrap().expose_secret().as_bytes().to_vec())),
            consistency_wait: std::time::Duration::from_millis(s.consistency_wait_ms),
            body_limit: s.body_limit,
            services: Services::ALL,
            runner: keel_projections::RunnerConfig::default(),
            outbound: keel_outbound::OutboundConfig::default(),
            webhooks: keel_command::WebhookSettings::default(),
            pools: keel_store::PoolSizes::default(),
            master_key: keel_store::MasterKey::parse(s.master_key.as_ref().unwrap().expose_secret()).unwrap(),
            limits: EdgeLimits::default(),
            console: keel_console::ConsoleConfig {
                dev_token: Some(JWT_SECRET.to_owned()),
                database: Some("PostgreSQL".to_owned()),
            },
        };
        assert_no_secret("AppConfig", &format!("{config:?}"));
        assert_no_secret("AppConfig (pretty)", &format!("{config:#?}"));
    }
}

/// `KEEL_RATE_LIMIT`'s value: a rate, or `None` for `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSetting(pub Option<keel_gateway::limits::Rate>);

impl Settings {
    /// The rate limit and shedding settings.
    pub fn traffic(&self) -> keel_gateway::limits::TrafficConfig {
        use keel_gateway::limits::{RateConfig, RedisConfig, ShedConfig, TrafficConfig};
        use secrecy::ExposeSecret;
        TrafficConfig {
            rate: RateConfig {
                tenant: self.rate_limit.0,
                writes: self.rate_limit_writes.0,
                redis: self.redis_url.as_ref().map(|url| RedisConfig {
                    url: url.expose_secret().to_owned(),
                    prefix: self.redis_key_prefix.clone(),
                    timeout: std::time::Duration::from_millis(self.redis_timeout_ms),
                }),
            },
            shed: ShedConfig {
                commands: self.max_inflight_commands as usize,
                queries: self.max_inflight_queries as usize,
                subscriptions: self.max_subscriptions as usize,
                tenant_commands: self.tenant_max_inflight as usize,
                tenant_queue: self.tenant_queue as usize,
                tenant_wait: std::time::Duration::from_millis(self.tenant_wait_ms),
            },
        }
    }
}
