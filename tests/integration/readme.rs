//! `README.md`'s walkthrough, run as written: every shell block of its "A walkthrough" section,
//! in order, in one `bash`, against the real `keel up` binary, with the `keel` of this build on
//! `PATH`. A command in the README that stops working fails this test.

use crate::helpers::{drop_database, fresh_database};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// The shell blocks of the README section headed `heading`, joined in order.
fn shell_blocks(readme: &str, heading: &str) -> String {
    let start = readme.find(heading).unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut script = String::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("\n```").expect("a closed code block");
        script.push_str(&body[..close]);
        script.push('\n');
        rest = &body[close + 4..];
    }
    script
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let script = shell_blocks(&readme, "## A walkthrough");
    assert!(script.lines().count() > 30, "the walkthrough has its commands:\n{script}");

    let (db, url) = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("keel-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = format!("http://127.0.0.1:{}", free_port());
    // As the README says: `keel up` in a directory, the CLI in the same directory.
    let clean = |c: &mut Command| {
        c.current_dir(&dir)
            .env("DATABASE_URL", &url)
            .env_remove("KEEL_DATA_DIR")
            .env_remove("KEEL_JWT_SECRET")
            .env_remove("KEEL_MASTER_KEY")
            .env_remove("KEEL_MASTER_KEY_FILE")
            .env_remove("KEEL_URL")
            .env_remove("KEEL_TOKEN")
            .env("KEEL_LOG", "warn");
    };
    let mut up = Command::new(KEEL);
    clean(&mut up);
    let log = dir.join("keel.log");
    let mut up = up
        .arg("up")
        .env("KEEL_LISTEN", base.trim_start_matches("http://"))
        // The suite runs beside this on two cores: a read-your-writes query may wait longer than
        // the default 2 s before the read models catch up (it would answer "stale" then).
        .env("KEEL_CONSISTENCY_WAIT_MS", "30000")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "keel up is ready; log:\n{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let bin = Path::new(KEEL).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut bash = Command::new("bash");
    clean(&mut bash);
    let run = bash
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("PATH", path)
        .env("KEEL", &base)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run).await.expect("the walkthrough ends").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the walkthrough failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );

    // What the README shows is what a reader sees.
    assert!(
        stdout.contains(r#"{"activeProjects":1,"memberCount":5,"overdueTasks":0,"tasksByStatus":{"done":1,"inProgress":0,"todo":2},"usage":{"quota":1000000,"units":1230}}"#),
        "the dashboard as the README shows it:\n{stdout}"
    );
    assert!(
        stdout.contains(r#"{"data":{"dashboardChanged":{"tasksByStatus":{"done":2,"inProgress":0,"todo":1}}}}"#),
        "the pushed dashboard as the README shows it:\n{stdout}"
    );
    assert!(stdout.contains("[0,0,0,0,0,0,1]"), "completions per day as the README shows them:\n{stdout}");
    assert!(stdout.contains(r#""eventType":"TenantProvisioned""#), "the audit events:\n{stdout}");
    assert!(stdout.contains("every hash chain holds"), "the audit verify:\n{stdout}");
    let exported: usize = stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("the export's line count is printed:\n{stdout}"));
    // Provisioning, 4 invitations, a project, 3 tasks, an assignment, 3 status changes, usage.
    assert!(exported >= 14, "{exported} events exported:\n{stdout}");

    let _ = up.start_kill();
    let _ = up.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    drop_database(&db);
}

#[test]
fn shell_blocks_are_read_from_one_section_in_order() {
    let md = "# T\n## A\n```sh\none\n```\ntext\n```sh\ntwo\n```\n## B\n```sh\nthree\n```\n";
    assert_eq!(shell_blocks(md, "## A"), "one\ntwo\n");
}
