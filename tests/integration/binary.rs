//! The `keel` binary as a new user runs it: `up` on a private cluster, `token`, `--help`.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn keel(dir: &Path) -> Command {
    let mut c = Command::new(KEEL);
    c.env_remove("DATABASE_URL")
        .env_remove("KEEL_JWT_SECRET")
        .env_remove("KEEL_MASTER_KEY")
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env("KEEL_DATA_DIR", dir)
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .env("KEEL_LOG_FORMAT", "json")
        .env("KEEL_LOG", "info")
        .kill_on_drop(true);
    c
}

struct Up {
    child: Child,
    rest: String,
    token: String,
}

/// Starts `keel up` and reads its banner.
async fn up(dir: &Path, log: &Path) -> Up {
    let mut child = keel(dir)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut rest, mut token) = (String::new(), String::new());
    let mut next_is_token = false;
    let banner = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let t = line.trim();
            if next_is_token {
                token = t.to_owned();
                next_is_token = false;
            }
            if let Some(url) = t.strip_prefix("REST") {
                rest = url.trim().to_owned();
            }
            if t.starts_with("Platform token") {
                next_is_token = true;
            }
            if t.starts_with("Press Ctrl-C") {
                return;
            }
        }
    })
    .await;
    assert!(banner.is_ok(), "keel up printed its banner; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    assert!(rest.starts_with("http://127.0.0.1:") && !token.is_empty(), "rest={rest} token={token}");
    Up { child, rest, token }
}

async fn interrupt(mut up: Up) {
    let pid = up.child.id().unwrap();
    let status = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(60), up.child.wait()).await.expect("keel stops").unwrap();
    assert!(exit.success(), "keel up exits cleanly on Ctrl-C: {exit:?}");
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn up_runs_on_a_private_cluster_keeps_its_data_and_stops_cleanly() {
    let dir = scratch_dir("up");
    let data = dir.join("data");
    let client = reqwest::Client::new();

    let first = up(&data, &dir.join("first.log")).await;
    let r = client
        .post(format!("{}/tenants", first.rest))
        .bearer_auth(&first.token)
        .json(&json!({"name": "Up", "slug": "up-test", "plan": "team", "owner": {"user_id": "ada", "email": "ada@up.test", "name": "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let tenant = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // `keel token` signs with the same development secret.
    let out = keel(&data).args(["token", "--tenant", &tenant, "--user", "ada", "--ttl", "10m"]).output().await.unwrap();
    assert!(out.status.success());
    let owner = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let r = client
        .post(format!("{}/projects", first.rest))
        .bearer_auth(&owner)
        .json(&json!({"name": "Kept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // The console: the landing page, and GraphiQL and the explorer with the development token.
    let base = first.rest.trim_end_matches("/api/v1");
    let landing = client.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert!(landing.contains("href=\"/graphql\"") && landing.contains("embedded PostgreSQL"), "{landing}");
    for page in ["/graphql", "/api/v1/docs"] {
        let html = client
            .get(format!("{base}{page}"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains(&first.token), "{page} carries the development token of `keel up`");
    }
    interrupt(first).await;
    assert!(!data.join("pg/data/postmaster.pid").exists(), "the cluster was stopped with Keel");

    // Every log line of the request carries its request id and tenant id.
    let log = std::fs::read_to_string(dir.join("first.log")).unwrap();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "request finished" && v["span"]["route"] == "/api/v1/projects")
        .unwrap_or_else(|| panic!("a request line in:\n{log}"));
    assert_eq!(line["span"]["tenant_id"], tenant.as_str());
    assert!(line["span"]["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(line["span"]["actor"], "user:ada");
    // Its duration is in milliseconds to the microsecond, not a float's every digit.
    let ms = line["fields"]["ms"].to_string();
    assert!(ms.split('.').nth(1).is_none_or(|d| d.len() <= 3), "ms={ms}");
    assert!(
        log.contains(&format!("generated a development master key in {}", data.join("master-key").display())),
        "up says it generated a development master key:\n{log}"
    );
    let key = std::fs::read_to_string(data.join("master-key")).unwrap();
    assert_eq!(key.trim().len(), 64, "32 bytes, hex");

    // A second `up` reuses the data.
    let second = up(&data, &dir.join("second.log")).await;
    let graphql = second.rest.replace("/api/v1", "/graphql");
    let r = client
        .post(&graphql)
        .bearer_auth(&owner)
        .json(&json!({"query": "{ tenant { slug plan activeProjects } }"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["data"]["tenant"], json!({"slug": "up-test", "plan": "TEAM", "activeProjects": 1}), "{body}");
    // ... with the same master key: the owner's email still opens.
    let r = client
        .post(&graphql)
        .bearer_auth(&owner)
        .json(&json!({"query": "{ members { edges { node { email } } } }"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["data"]["members"]["edges"][0]["node"]["email"], "ada@up.test", "{body}");
    assert_eq!(std::fs::read_to_string(data.join("master-key")).unwrap(), key);
    assert!(!std::fs::read_to_string(dir.join("second.log")).unwrap().contains("generated a development master key"));
    interrupt(second).await;
    assert!(!data.join("pg/data/postmaster.pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn help_documents_every_subcommand_and_variable() {
    let out = Command::new(KEEL).arg("--help").output().await.unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "up",
        "serve",
        "migrate",
        "token",
        "DATABASE_URL",
        "KEEL_LISTEN",
        "KEEL_DATA_DIR",
        "KEEL_JWT_SECRET",
        "KEEL_JWT_ISSUER",
        "KEEL_JWT_AUDIENCE",
        "KEEL_MASTER_KEY",
        "KEEL_MASTER_KEY_FILE",
        "audit",
        "keys",
        "KEEL_CONSISTENCY_WAIT_MS",
        "KEEL_LOG",
        "KEEL_LOG_FORMAT",
        "KEEL_PG_BINDIR",
    ] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
    for sub in ["up", "serve", "migrate", "token"] {
        let out = Command::new(KEEL).args([sub, "--help"]).output().await.unwrap();
        assert!(out.status.success(), "keel {sub} --help");
    }
}

/// Outside a Keel data directory the tools make up no secret, key or database: they say where
/// they looked and what to do, and exit 1.
#[tokio::test]
async fn tools_outside_a_data_directory_refuse_to_invent_secrets() {
    let dir = scratch_dir("elsewhere");
    let run = |args: &'static [&'static str]| {
        let dir = dir.clone();
        async move {
            let out = Command::new(KEEL)
                .env_remove("DATABASE_URL")
                .env_remove("KEEL_JWT_SECRET")
                .env_remove("KEEL_MASTER_KEY")
                .env_remove("KEEL_MASTER_KEY_FILE")
                .env_remove("KEEL_DATA_DIR")
                .current_dir(&dir)
                .args(args)
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, stdout, stderr) = run(&["token", "--platform"]).await;
    assert_eq!(code, Some(1), "keel token outside a data directory fails: {stdout} {stderr}");
    assert!(stdout.is_empty(), "no token is printed: {stdout}");
    for words in ["jwt-secret", "not a Keel data directory", "keel up", "--data-dir", "KEEL_JWT_SECRET"] {
        assert!(stderr.contains(words), "the message says {words:?}: {stderr}");
    }
    assert!(stderr.contains(&dir.join(".keel").display().to_string()), "it names where it looked: {stderr}");
    let (code, _, stderr) = run(&["token", "--tenant", "acme", "--user", "ada"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a Keel data directory"), "{stderr}");
    let (code, _, stderr) = run(&["audit", "export", "--tenant", "acme"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("master key") && stderr.contains("--data-dir"), "{stderr}");
    let (code, _, stderr) = run(&["audit", "verify"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a Keel data directory") && stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!dir.join(".keel").exists(), "nothing was created in {}", dir.display());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A subcommand's help shows its own options first, then the settings every subcommand shares
/// under their own heading.
#[tokio::test]
async fn subcommand_help_puts_its_own_options_before_the_global_ones() {
    for (sub, own) in [
        (&["token"][..], "--tenant <ID|SLUG>"),
        (&["audit", "export"][..], "--tenant <ID|SLUG>"),
        (&["serve"][..], "--service"),
    ] {
        let out = Command::new(KEEL).args(sub).arg("--help").output().await.unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        let (mine, global) = (help.find(own), help.find("Global options:"));
        assert!(mine.is_some() && global.is_some(), "{sub:?}:\n{help}");
        assert!(mine < global, "{sub:?}: its own options come first:\n{help}");
        assert!(help[global.unwrap()..].contains("--database-url"), "{sub:?}:\n{help}");
        assert!(!help[..global.unwrap()].contains("--database-url"), "{sub:?}:\n{help}");
    }
}

#[tokio::test]
async fn serve_never_puts_a_token_in_a_page() {
    let db = crate::helpers::TestDb::new().await;
    let dir = scratch_dir("serve-console");
    let log = dir.join("serve.log");
    let mut child = keel(&dir)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("KEEL_JWT_SECRET", "serve-console-secret-0123456789abcdef")
        .env("KEEL_MASTER_KEY", crate::helpers::MASTER_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    // `serve` logs where it listens.
    let mut addr = None;
    for _ in 0..240 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        addr = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "serving")
            .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned));
        if addr.is_some() || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let addr =
        addr.unwrap_or_else(|| panic!("keel serve logs its address:\n{}", std::fs::read_to_string(&log).unwrap()));
    let client = reqwest::Client::new();
    for page in ["/", "/graphql", "/api/v1/docs"] {
        let r = client.get(format!("http://{addr}{page}")).header("accept", "text/html").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{page}");
        let html = r.text().await.unwrap();
        assert!(!html.contains("Bearer") && !html.contains("eyJ"), "{page} holds no token under keel serve");
        if page != "/" {
            assert!(html.contains("\"token\":null"), "{page}");
        }
    }
    let pid = child.id().unwrap();
    assert!(std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("keel stops").unwrap();
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
