//! The configuration file (`--config`, `KEEL_CONFIG`, `keel config check`), through the real
//! binary: precedence file < environment < flag, errors naming the key and the line, no secret
//! printed, and a file's secret used by a running server.

use crate::helpers::{MASTER_KEY, TestDb};
use keel_gateway::auth::Secret;
use keel_gateway::{Authenticator, JwtConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
const FILE_SECRET: &str = "file-jwt-secret-never-printed-0123456789";
const DB_PASSWORD: &str = "db-pw-never-printed";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keel-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `keel` with none of the settings of the test's own environment.
fn keel(cwd: &Path) -> Command {
    let mut c = Command::new(KEEL);
    c.current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("KEEL_") || k == "DATABASE_URL" {
            c.env_remove(k);
        }
    }
    c.env("KEEL_DATA_DIR", cwd.join(".keel"));
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(c: &mut Command) -> Output {
    c.output().expect("keel runs")
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("{key} in {out}"))
}

#[test]
fn the_file_is_under_the_environment_which_is_under_the_flags() {
    let d = dir("precedence");
    let file = d.join("keel.toml");
    std::fs::write(
        &file,
        format!(
            "# every setting under its environment name in snake case\nlisten = \"127.0.0.1:1111\"\nbody_limit = 100\n\
             request_timeout_ms = 200\njwt_secret = \"{FILE_SECRET}\"\n\
             database_url = \"postgres://keel:{DB_PASSWORD}@db.internal:5432/keel\"\n"
        ),
    )
    .unwrap();
    let out = run(keel(&d)
        .args(["--request-timeout-ms", "300", "config", "check"])
        .arg(&file)
        .env("KEEL_BODY_LIMIT", "222")
        .env("KEEL_REQUEST_TIMEOUT_MS", "333"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert_eq!(line(&shown, "listen"), "listen = \"127.0.0.1:1111\"  # file");
    assert_eq!(line(&shown, "body_limit"), "body_limit = \"222\"  # environment KEEL_BODY_LIMIT");
    assert_eq!(line(&shown, "request_timeout_ms"), "request_timeout_ms = \"300\"  # flag");
    assert_eq!(line(&shown, "consistency_wait_ms"), "consistency_wait_ms = \"2000\"  # default");
    assert_eq!(line(&shown, "jwt_secret"), "jwt_secret = \"[redacted]\"  # file");
    assert_eq!(line(&shown, "database_url"), "database_url = \"postgres://keel:***@db.internal:5432/keel\"  # file");
    let all = format!("{shown}{}", text(&out.stderr));
    assert!(!all.contains(FILE_SECRET) && !all.contains(DB_PASSWORD), "no secret printed: {all}");

    // KEEL_CONFIG names the file as --config does, for any command.
    let out = run(keel(&d).args(["--config"]).arg(&file).args(["config", "check"]).arg(&file));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(keel(&d).env("KEEL_CONFIG", &file).args(["token", "--platform"]));
    assert!(out.status.success(), "token signs with the file's secret: {}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let auth = Authenticator::hs256(JwtConfig::hs256(Secret::new(FILE_SECRET.as_bytes().to_vec())));
    let verified = tokio::runtime::Runtime::new().unwrap().block_on(auth.verify(&token));
    assert!(verified.is_ok(), "the token is signed with the file's secret");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_bad_value_stops_start_up_naming_the_key_its_variable_and_the_line() {
    let d = dir("bad");
    let file = d.join("keel.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\n\n# the limit\nbody_limit = \"a lot\"\n").unwrap();
    for args in [vec!["config", "check", file.to_str().unwrap()], vec!["--config", file.to_str().unwrap(), "migrate"]] {
        let out = run(keel(&d).args(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("keel.toml line 4") && err.contains("body_limit") && err.contains("KEEL_BODY_LIMIT"),
            "{err}"
        );
        assert!(!err.contains("migrations applied"), "{err}");
    }
    // A bad value in the environment names its variable.
    let out = run(keel(&d).env("KEEL_BODY_LIMIT", "plenty").arg("migrate"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("KEEL_BODY_LIMIT") && err.contains("plenty"), "{err}");
    // An unknown key is an error naming it (a prefixed name is not a key).
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nkeel_body_limit = 5\n").unwrap();
    let out = run(keel(&d).args(["--config"]).arg(&file).arg("migrate"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown key keel_body_limit (line 2)"), "{err}");
    // A short secret from the file is refused by the check, without printing it.
    std::fs::write(&file, "jwt_secret = \"short-secret-xyz\"\n").unwrap();
    let out = run(keel(&d).args(["config", "check"]).arg(&file));
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("jwt_secret") && !all.contains("short-secret-xyz"), "{all}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A server configured by its file alone takes tokens signed with the file's secret.
#[tokio::test]
async fn a_server_runs_from_the_file_and_accepts_tokens_signed_with_its_secret() {
    let db = TestDb::new().await;
    let d = dir("serve");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = d.join("keel.toml");
    std::fs::write(
        &file,
        format!(
            "database_url = \"{}\"\nlisten = \"127.0.0.1:{port}\"\njwt_secret = \"{FILE_SECRET}\"\n\
             master_key = \"{MASTER_KEY}\"\nlog = \"warn\"\n",
            db.url
        ),
    )
    .unwrap();
    let mut child = keel(&d)
        .args(["--config"])
        .arg(&file)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("keel serve never became ready: {}", text(&out.stderr));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let auth = Authenticator::hs256(JwtConfig::hs256(Secret::new(FILE_SECRET.as_bytes().to_vec())));
    let body = json!({"name": "From file", "slug": "from-file", "plan": "free",
                      "owner": {"user_id": "o", "email": "o@f.test", "name": "O"}});
    let good = auth.issue("operator", None, true, Duration::from_secs(60));
    let r = client.post(format!("{base}/api/v1/tenants")).bearer_auth(&good).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "a token signed with the file's secret is accepted");
    let other = Authenticator::hs256(JwtConfig::hs256(Secret::new(b"some-other-secret-0123456789abcdef".to_vec())));
    let bad = other.issue("operator", None, true, Duration::from_secs(60));
    let r = client.post(format!("{base}/api/v1/tenants")).bearer_auth(&bad).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401, "another secret's token is not");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains(FILE_SECRET) && !err.contains(MASTER_KEY), "no secret in the log: {err}");
    let _ = std::fs::remove_dir_all(&d);
}
