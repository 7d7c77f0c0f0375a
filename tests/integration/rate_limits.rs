//! Per-tenant rate limits (`keel_gateway::limits::rate`): a flooding tenant is refused with 429
//! and the draft RateLimit fields while its neighbour is served; platform operators are limited
//! each on their own; GraphQL's refusal shape; two Keel processes share a tenant's budget through
//! a real Redis; an unreachable Redis falls back to the local limiter; hostile settings stop
//! start-up naming the variable. Latency figures are printed, never asserted.

use crate::helpers::{Options, SECRET, TestApp, master_key, spawn_app_with};
use keel::{App, AppConfig, EdgeLimits, Services};
use keel_gateway::JwtConfig;
use keel_gateway::auth::Secret;
use keel_gateway::limits::{Rate, RateConfig, RedisConfig, TrafficConfig};
use keel_projections::RunnerConfig;
use keel_store::PoolSizes;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The Redis of the shared-limit tests (`.ci/run` starts one there).
fn redis_url() -> String {
    std::env::var("KEEL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn limited(rate: &str, redis: Option<RedisConfig>) -> Options {
    let tenant = Rate::parse(rate).unwrap();
    Options {
        limits: EdgeLimits {
            traffic: TrafficConfig { rate: RateConfig { tenant, redis, writes: None }, ..TrafficConfig::default() },
            ..EdgeLimits::default()
        },
        ..Options::default()
    }
}

fn redis_at(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.into(),
        prefix: format!("keel-test:{}", uuid::Uuid::new_v4()),
        timeout: Duration::from_millis(200),
    }
}

async fn graphql_at(app: &TestApp, base: &str, token: &str, query: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = app
        .client
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} in {h:?}"))
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Tenant A floods (REST and GraphQL) and is refused with 429 and the RateLimit fields; tenant B,
/// on the same process at the same time, has every request served.
#[tokio::test]
async fn a_flooding_tenant_is_limited_and_its_neighbour_is_not() {
    let app = spawn_app_with(limited("20/s,burst=20", None)).await;
    let (_, a) = app.provision("flooder").await;
    let (_, b) = app.provision("neighbour").await;
    let query = "{ tenant { name plan } }";

    // B's latency alone (10 requests, paced well within its budget).
    let mut alone = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (status, _, body) = graphql_at(&app, &app.base, &b, query).await;
        alone.push(t.elapsed());
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    // A floods: 300 requests, 30 at a time, half GraphQL, half REST (an invalid project: 422
    // when admitted, so the flood does not fill A's plan).
    let flood = {
        let app_client = app.client.clone();
        let base = app.base.clone();
        let a = a.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut refusals = Vec::new();
            for round in 0..10 {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..30 {
                    let (c, base, a) = (app_client.clone(), base.clone(), a.clone());
                    set.spawn(async move {
                        let r = if (round + i) % 2 == 0 {
                            c.post(format!("{base}/graphql"))
                                .bearer_auth(&a)
                                .json(&json!({"query": "{ tenant { name } }"}))
                        } else {
                            c.post(format!("{base}/api/v1/projects")).bearer_auth(&a).json(&json!({"name": ""}))
                        };
                        let r = r.send().await.unwrap();
                        let status = r.status().as_u16();
                        let headers = r.headers().clone();
                        let ct = headers.get("content-type").map(|v| v.to_str().unwrap().to_owned());
                        (status, headers, ct, r.json::<Value>().await.unwrap_or(Value::Null))
                    });
                }
                while let Some(r) = set.join_next().await {
                    let (status, headers, ct, body) = r.unwrap();
                    statuses.push(status);
                    if status == 429 {
                        refusals.push((headers, ct, body));
                    }
                }
            }
            (statuses, refusals)
        })
    };

    // B at the same time: every request served.
    let mut during = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (status, headers, body) = graphql_at(&app, &app.base, &b, query).await;
        during.push(t.elapsed());
        assert_eq!(status, 200, "the neighbour is served during the flood: {body}");
        assert_eq!(header(&headers, "ratelimit-limit"), "20");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let (statuses, refusals) = flood.await.unwrap();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 200, "most of A's 300 requests are refused, got {refused}: {statuses:?}");
    assert!(statuses.iter().all(|s| [200, 422, 429].contains(s)), "{statuses:?}");
    let mut rest_seen = false;
    let mut graphql_seen = false;
    for (headers, ct, body) in &refusals {
        let retry: u64 = header(headers, "retry-after").parse().unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        assert_eq!(header(headers, "ratelimit-limit"), "20");
        assert_eq!(header(headers, "ratelimit-remaining"), "0");
        let reset: u64 = header(headers, "ratelimit-reset").parse().unwrap();
        assert!((1..=2).contains(&reset), "RateLimit-Reset {reset}");
        assert_eq!(header(headers, "ratelimit-policy"), "20;w=1");
        if ct.as_deref() == Some("application/problem+json") {
            rest_seen = true;
            assert_eq!(body["code"], "rate-limited", "{body}");
            assert_eq!(body["status"], 429, "{body}");
            assert_eq!(body["type"], "urn:keel:problem:rate-limited", "{body}");
        } else {
            graphql_seen = true;
            assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
        }
    }
    assert!(rest_seen && graphql_seen, "both surfaces refused A");
    println!(
        "neighbour latency alone: p50 {:?} max {:?}; during the flood: p50 {:?} max {:?} (A: {refused} of 300 refused)",
        percentile(alone.clone(), 0.5),
        percentile(alone, 1.0),
        percentile(during.clone(), 0.5),
        percentile(during, 1.0)
    );
}

/// A GraphQL refusal: 429, `{"errors": [{"extensions": {"code": "RATE_LIMITED"}}]}` and the
/// same fields as REST.
#[tokio::test]
async fn graphql_refusal_has_the_graphql_shape_and_the_fields() {
    let app = spawn_app_with(limited("1/m", None)).await;
    let (_, a) = app.provision("slow").await;
    let (status, headers, body) = graphql_at(&app, &app.base, &a, "{ me { userId } }").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "ratelimit-limit"), "1");
    assert_eq!(header(&headers, "ratelimit-remaining"), "0");
    let (status, headers, body) = graphql_at(&app, &app.base, &a, "{ me { userId } }").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("retry after"), "{body}");
    assert!(body.get("data").is_none() || body["data"].is_null(), "{body}");
    let retry: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!((50..=60).contains(&retry), "one a minute: retry in about a minute, got {retry}");
    assert_eq!(header(&headers, "ratelimit-remaining"), "0");
    assert_eq!(header(&headers, "ratelimit-policy"), "1;w=60");
    // Health, readiness and metrics are never limited.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = app.client.get(format!("{}{path}", app.base)).bearer_auth(&a).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

/// A plan's factor scales the budget: team is four times free.
#[tokio::test]
async fn the_plan_scales_the_budget() {
    let app = spawn_app_with(limited("2/s,burst=3", None)).await;
    let (_, free) = app.provision_on("freeplan", "free").await;
    let (_, team) = app.provision_on("teamplan", "team").await;
    let (_, h, _) = graphql_at(&app, &app.base, &free, "{ me { userId } }").await;
    assert_eq!(header(&h, "ratelimit-limit"), "3");
    let (_, h, _) = graphql_at(&app, &app.base, &team, "{ me { userId } }").await;
    assert_eq!(header(&h, "ratelimit-limit"), "12");
    assert_eq!(header(&h, "ratelimit-remaining"), "11");
}

/// Platform calls are limited per operator (`sub`): one operator's flood leaves another's
/// budget whole.
#[tokio::test]
async fn platform_calls_are_limited_per_operator() {
    // Operators get the enterprise factor: 1/s,burst=2 → burst 32.
    let app = spawn_app_with(limited("1/s,burst=2", None)).await;
    let one = app.auth.issue("operator-one", None, true, Duration::from_secs(600));
    let two = app.auth.issue("operator-two", None, true, Duration::from_secs(600));
    let mut statuses = Vec::new();
    for i in 0..50 {
        let r = app.post("/api/v1/tenants", &one, json!({"name": "x", "slug": format!("bad slug {i}")})).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.body["code"], "rate-limited", "{}", r.body);
            assert_eq!(r.header("ratelimit-limit"), Some("32"));
            assert!(r.header("retry-after").is_some());
        }
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!((10..=20).contains(&refused), "about 50 - 32 refused, got {refused}: {statuses:?}");
    let r = app.post("/api/v1/tenants", &two, json!({"name": "x", "slug": "bad slug"})).await;
    assert_eq!(r.status, 422, "the other operator is not limited: {}", r.body);
    assert_eq!(r.header("ratelimit-remaining"), Some("31"));
}

/// A second Keel process on the first one's database, with `limits`.
async fn second_process(first: &TestApp, limits: EdgeLimits) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = AppConfig {
        database_url: first.db.url.clone().into(),
        read_database_url: None,
        direct_database_url: None,
        listen: "127.0.0.1:0".into(),
        jwt: JwtConfig::hs256(Secret::new(SECRET.to_vec())),
        consistency_wait: Duration::from_secs(2),
        body_limit: 1024 * 1024,
        services: Services { command: true, query: true, projector: false },
        runner: RunnerConfig::default(),
        outbound: keel_outbound::OutboundConfig::default(),
        webhooks: keel_command::WebhookSettings::default(),
        pools: PoolSizes { writer: 4, reader: 4, projector: 2 },
        master_key: master_key(),
        limits,
        console: keel_console::ConsoleConfig::default(),
    };
    let app = App::build(config).await.expect("the second process builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// Two Keel processes on one Redis share one tenant's budget: alternating between them, the
/// tenant gets its burst once, not once per process.
#[tokio::test]
async fn two_processes_share_a_tenants_budget_through_redis() {
    let redis = redis_at(&redis_url());
    let options = limited("10/m,burst=10", Some(redis.clone()));
    let limits = options.limits.clone();
    let app = spawn_app_with(options).await;
    let (base2, _stop) = second_process(&app, limits).await;
    let (_, a) = app.provision("shared").await;
    let (_, b) = app.provision("other").await;
    let mut ok = [0, 0];
    let mut refused = [0, 0];
    for i in 0..30 {
        let base = if i % 2 == 0 { &app.base } else { &base2 };
        let (status, headers, body) = graphql_at(&app, base, &a, "{ me { userId } }").await;
        match status {
            200 => ok[i % 2] += 1,
            429 => {
                refused[i % 2] += 1;
                assert_eq!(header(&headers, "ratelimit-limit"), "10");
            }
            s => panic!("{s}: {body}"),
        }
    }
    // 10 at once, and one more a minute (a slow run could see one or two refilled).
    let served = ok[0] + ok[1];
    assert!((10..=12).contains(&served), "one budget for both processes: served {ok:?}, refused {refused:?}");
    assert!(refused[0] > 0 && refused[1] > 0, "both processes refuse: {refused:?}");
    // The budget is the tenant's: B, through either process, is served.
    for base in [&app.base, &base2] {
        let (status, _, body) = graphql_at(&app, base, &b, "{ me { userId } }").await;
        assert_eq!(status, 200, "{body}");
    }
    println!("two processes on one Redis: served {ok:?}, refused {refused:?}");
}

async fn fallback_count(app: &TestApp) -> f64 {
    let m = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    m.lines()
        .find(|l| l.starts_with("keel_rate_limit_fallback_total"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// With Redis unreachable (a closed port), every request is still answered, by the local
/// limiter: the limit still holds per process and the fallback counter moves.
#[tokio::test]
async fn an_unreachable_redis_falls_back_to_the_local_limiter() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = spawn_app_with(limited("5/m,burst=5", Some(redis_at(&format!("redis://127.0.0.1:{port}"))))).await;
    let (_, a) = app.provision("fallback").await;
    let before = fallback_count(&app).await;
    let mut statuses = Vec::new();
    let mut times = Vec::new();
    for _ in 0..8 {
        let t = Instant::now();
        let (status, _, body) = graphql_at(&app, &app.base, &a, "{ me { userId } }").await;
        times.push(t.elapsed());
        assert!(status == 200 || status == 429, "{status}: {body}");
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "the local limiter holds: {statuses:?}");
    let after = fallback_count(&app).await;
    assert!(after - before >= 8.0, "the fallback counter moved by {} (before {before})", after - before);
    println!("Redis unreachable: p50 {:?} max {:?}", percentile(times.clone(), 0.5), percentile(times, 1.0));
}

/// Bad rate and shedding settings stop `keel serve` before it starts, naming the setting.
#[tokio::test]
async fn hostile_rate_settings_stop_start_up_naming_the_variable() {
    for bad in
        ["fast", "0/s", "10/d", "10/s,burst=0", "10/s,burst=-1", "10/s,bursts=3", "99999999999/s", "10/s,burst=1e3"]
    {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("serve")
            .env("KEEL_RATE_LIMIT", bad)
            .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
            .env("KEEL_JWT_SECRET", "x".repeat(32))
            .env("KEEL_MASTER_KEY", crate::helpers::MASTER_KEY)
            .env("KEEL_LISTEN", "127.0.0.1:0")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{bad} is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("KEEL_RATE_LIMIT:"), "{bad}: {err}");
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("serve")
        .env("KEEL_RATE_LIMIT_WRITES", "5/fortnight")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEEL_RATE_LIMIT_WRITES:"));
    for (name, value) in [
        ("KEEL_REDIS_TIMEOUT_MS", "0"),
        ("KEEL_MAX_INFLIGHT_COMMANDS", "0"),
        ("KEEL_MAX_INFLIGHT_QUERIES", "-5"),
        ("KEEL_TENANT_MAX_INFLIGHT", "many"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("serve")
            .env(name, value)
            .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{name}={value} is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&name.to_lowercase().replace('_', "-")[5..]), "{name}: {err}");
    }
}

/// A Redis URL that is not one stops start-up naming KEEL_REDIS_URL (and never printing it).
#[tokio::test]
async fn a_bad_redis_url_stops_start_up() {
    let db = crate::helpers::TestDb::new().await;
    let mut limits = EdgeLimits::default();
    limits.traffic.rate = RateConfig {
        tenant: Rate::parse("10/s").unwrap(),
        writes: None,
        redis: Some(RedisConfig { url: "http://user:hunter2@x".into(), ..redis_at(&redis_url()) }),
    };
    let config = AppConfig {
        database_url: db.url.clone().into(),
        read_database_url: None,
        direct_database_url: None,
        listen: "127.0.0.1:0".into(),
        jwt: JwtConfig::hs256(Secret::new(SECRET.to_vec())),
        consistency_wait: Duration::from_secs(2),
        body_limit: 1024,
        services: Services::ALL,
        runner: RunnerConfig::default(),
        outbound: keel_outbound::OutboundConfig::default(),
        webhooks: keel_command::WebhookSettings::default(),
        pools: PoolSizes { writer: 2, reader: 2, projector: 2 },
        master_key: master_key(),
        limits,
        console: keel_console::ConsoleConfig::default(),
    };
    assert!(!format!("{config:?}").contains("hunter2"));
    let e = App::build(config).await.err().expect("refused").to_string();
    assert!(e.contains("KEEL_REDIS_URL"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

/// A private Redis on `port`, ended when dropped.
fn start_redis(port: u16) -> tokio::process::Child {
    tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server runs")
}

async fn until_redis(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "Redis on {port} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn redis_keys(port: u16) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--scan"])
        .output()
        .await
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Redis stopping mid-run fails no request (the local limiter decides), and once it is back the
/// process uses it again (its key reappears in the new, empty Redis).
#[tokio::test]
async fn redis_stopping_and_coming_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = start_redis(port);
    until_redis(port).await;
    // A slow refill, so the budget's key lives (a GCRA key expires when the budget is full again).
    let app = spawn_app_with(limited("10/m,burst=12", Some(redis_at(&format!("redis://127.0.0.1:{port}"))))).await;
    let (tenant, a) = app.provision("flaky").await;
    let key = format!("tenant:{}", tenant.0);
    let (status, _, body) = graphql_at(&app, &app.base, &a, "{ me { userId } }").await;
    assert_eq!(status, 200, "{body}");
    assert!(redis_keys(port).await.contains(&key), "the shared limit is in Redis");

    redis.kill().await.unwrap();
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (status, _, body) = graphql_at(&app, &app.base, &a, "{ me { userId } }").await;
        times.push(t.elapsed());
        assert_eq!(status, 200, "no request fails while Redis is down: {body}");
    }

    let _redis = start_redis(port);
    until_redis(port).await;
    assert!(!redis_keys(port).await.contains(&key), "a new, empty Redis");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = graphql_at(&app, &app.base, &a, "{ me { userId } }").await;
        assert!(status == 200 || status == 429, "{status}: {body}");
        if redis_keys(port).await.contains(&key) {
            break;
        }
        assert!(Instant::now() < deadline, "the process went back to Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("while Redis was down: p50 {:?} max {:?}", percentile(times.clone(), 0.5), percentile(times, 1.0));
}

/// With `KEEL_RATE_LIMIT_WRITES`, commands (REST) and reads (GraphQL) have separate budgets: a
/// tenant that spent its reads can still write, and the other way round.
#[tokio::test]
async fn writes_can_have_a_budget_of_their_own() {
    let mut options = limited("1/m,burst=2", None);
    options.limits.traffic.rate.writes = Rate::parse("1/m,burst=3").unwrap();
    let app = spawn_app_with(options).await;
    let (_, a) = app.provision("split").await;
    for expected in [200, 200, 429] {
        let (status, _, body) = graphql_at(&app, &app.base, &a, "{ me { userId } }").await;
        assert_eq!(status, expected, "{body}");
    }
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = app.post("/api/v1/projects", &a, json!({"name": format!("w{i}")})).await;
        if r.status != 429 {
            assert_eq!(r.header("ratelimit-limit"), Some("3"), "the writes' budget");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [201, 201, 201, 429], "reads spent, writes still served up to their own budget");
}
