//! The operator's command-line tools against a `DATABASE_URL`, as the real `keel` binary: they
//! fail fast with a message naming what to set, leave no half-made rebuild behind, and use the
//! development master key `keel up` wrote under KEEL_DATA_DIR (never a new one).

use crate::helpers::{MASTER_KEY, SECRET, TestDb, spawn_app};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::Command;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
/// A valid key that is not the one the test databases' data keys are sealed under.
const OTHER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn keel(db: &TestDb, data_dir: &Path, key: Option<&str>) -> Command {
    let mut c = Command::new(KEEL);
    c.env_remove("KEEL_JWT_SECRET")
        .env_remove("KEEL_MASTER_KEY")
        .env_remove("KEEL_MASTER_KEY_FILE")
        .env("DATABASE_URL", &db.url)
        .env("KEEL_DATA_DIR", data_dir)
        .env("KEEL_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(k) = key {
        c.env("KEEL_MASTER_KEY", k);
    }
    c
}

/// Runs the command to its end; a tool that does not end within a minute fails the test.
async fn run(mut c: Command, args: &[&str]) -> (Output, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), c.args(args).output())
        .await
        .unwrap_or_else(|_| panic!("keel {args:?} ends within a minute"))
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out, stdout, stderr)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until every event of the log is below the gap-safe horizon (transactions of other
/// tests on the same server hold it back for a moment), so a rebuild reads them all.
async fn settled(db: &TestDb) {
    let mut su = db.superuser().await;
    for _ in 0..600 {
        let held_back: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(&mut su)
        .await
        .unwrap();
        if held_back == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the log settles");
}

/// Rebuild checkpoints and rebuild tables, as the database holds them.
async fn leftovers(db: &TestDb) -> (Vec<String>, Vec<String>) {
    let mut su = db.superuser().await;
    let checkpoints = sqlx::query_scalar("SELECT name FROM projection_checkpoints WHERE name LIKE '%@rebuild'")
        .fetch_all(&mut su)
        .await
        .unwrap();
    let tables = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'keel_rebuild'")
        .fetch_all(&mut su)
        .await
        .unwrap();
    (checkpoints, tables)
}

async fn status_shows_no_rebuild(db: &TestDb, dir: &Path) {
    let (out, stdout, stderr) = run(keel(db, dir, None), &["projections", "status"]).await;
    assert!(out.status.success(), "status runs without a key: {stderr}");
    assert!(stdout.contains("tasks") && !stdout.contains("@rebuild"), "{stdout}");
    assert_eq!(leftovers(db).await, (vec![], vec![]));
}

#[tokio::test]
async fn without_a_master_key_the_tools_stop_at_once_and_name_the_variables() {
    let db = TestDb::new().await;
    let tenant = db.provision("ops-nokey", "ada").await;
    settled(&db).await;
    let dir = scratch_dir("nokey");
    for args in [
        vec!["projections", "rebuild", "tasks"],
        vec!["audit", "export", "--tenant", &tenant.0.to_string()],
        vec!["keys", "rotate"],
    ] {
        let (out, _, stderr) = run(keel(&db, &dir, None), &args).await;
        assert!(!out.status.success(), "{args:?} fails");
        assert!(stderr.contains("KEEL_MASTER_KEY ") && stderr.contains("KEEL_MASTER_KEY_FILE"), "{args:?}: {stderr}");
    }
    assert!(!dir.join("master-key").exists(), "no key was invented");
    status_shows_no_rebuild(&db, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_rebuild_that_cannot_succeed_stops_at_once_and_a_stale_one_is_replaced() {
    let db = TestDb::new().await;
    db.provision("ops-wrongkey", "ada").await;
    settled(&db).await;
    let dir = scratch_dir("wrongkey");

    // A key that opens no data key fails the same way on every try: no retrying, no leftover.
    let (out, _, stderr) = run(keel(&db, &dir, Some(OTHER_KEY)), &["projections", "rebuild", "members"]).await;
    assert!(!out.status.success());
    assert!(stderr.contains("does not open with master key"), "{stderr}");
    status_shows_no_rebuild(&db, &dir).await;

    // What a killed rebuild leaves: its tables and its checkpoint. `status` says what it is and
    // how to clear it; the next rebuild starts over and removes it.
    let mut su = db.superuser().await;
    sqlx::query("SELECT keel_prepare_rebuild('rm_tasks')").execute(&mut su).await.unwrap();
    keel_store::checkpoint::set_state(db.store.projector(), "tasks@rebuild", "rebuilding", None).await.unwrap();
    let (_, stdout, _) = run(keel(&db, &dir, None), &["projections", "status"]).await;
    assert!(
        stdout.contains("tasks@rebuild") && stdout.contains("`keel projections rebuild tasks` starts it over"),
        "{stdout}"
    );
    let (out, stdout, stderr) = run(keel(&db, &dir, Some(MASTER_KEY)), &["projections", "rebuild", "tasks"]).await;
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("tasks: rebuilt from"), "{stdout}");
    status_shows_no_rebuild(&db, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_interrupted_rebuild_removes_what_it_made() {
    let db = TestDb::new().await;
    db.provision("ops-interrupt", "ada").await;
    let dir = scratch_dir("interrupt");
    // The rebuild blocks on the log once it has made its tables and checkpoint.
    let mut lock = db.superuser().await;
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE").execute(&mut lock).await.unwrap();
    let child = keel(&db, &dir, Some(MASTER_KEY))
        .args(["projections", "rebuild", "tasks"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while leftovers(&db).await.0.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(started.is_ok(), "the rebuild made its checkpoint");
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out =
        tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("keel stops").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("interrupted: the partial rebuild of tasks was removed"), "{stderr}");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    status_shows_no_rebuild(&db, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_tools_use_the_development_key_keel_up_wrote() {
    let db = TestDb::new().await;
    let tenant = db.provision("ops-devkey", "ada").await.0.to_string();
    settled(&db).await;
    let dir = scratch_dir("devkey");
    std::fs::write(dir.join("master-key"), MASTER_KEY).unwrap();

    let (out, stdout, stderr) = run(keel(&db, &dir, None), &["projections", "rebuild", "members"]).await;
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("members: rebuilt from"), "{stdout}");
    let mut su = db.superuser().await;
    let email: String = sqlx::query_scalar("SELECT email FROM rm_members")
        .fetch_optional(&mut su)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(email, "ada@ops-devkey.test", "the rebuild opened personal data with the development key");

    let export = |dir: &Path| keel(&db, dir, None);
    let (out, stdout, stderr) = run(export(&dir), &["audit", "export", "--tenant", &tenant]).await;
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ada@ops-devkey.test"), "{stdout}");

    // Rotation replaces the development key and keeps the old one beside it.
    let (out, stdout, stderr) = run(keel(&db, &dir, None), &["keys", "rotate"]).await;
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("re-sealed 1 data keys"), "{stdout}");
    assert_eq!(std::fs::read_to_string(dir.join("master-key.retired")).unwrap(), MASTER_KEY);
    assert_ne!(std::fs::read_to_string(dir.join("master-key")).unwrap().trim(), MASTER_KEY);
    let (out, stdout, stderr) = run(export(&dir), &["audit", "export", "--tenant", &tenant]).await;
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ada@ops-devkey.test"), "the new development key opens it: {stdout}");
    assert!(!stderr.contains("generated"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every tool that names a tenant takes its id or its slug; a tenant that does not exist is an
/// error naming it (exit 1), never an empty export.
#[tokio::test]
async fn tenants_are_named_by_id_or_slug_and_a_missing_one_is_an_error() {
    let app = spawn_app().await;
    let (tenant, _) = app.provision("ops-slug").await;
    let db = &app.db;
    let mut su = db.superuser().await;
    for _ in 0..400 {
        let seen: Option<String> = sqlx::query_scalar("SELECT slug FROM rm_tenants WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_optional(&mut su)
            .await
            .unwrap();
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = scratch_dir("slug");

    let (out, by_slug, stderr) =
        run(keel(db, &dir, Some(MASTER_KEY)), &["audit", "export", "--tenant", "ops-slug"]).await;
    assert!(out.status.success(), "{stderr}");
    assert!(by_slug.lines().count() >= 2 && by_slug.contains(&tenant.0.to_string()), "{by_slug}");
    let (_, by_id, _) =
        run(keel(db, &dir, Some(MASTER_KEY)), &["audit", "export", "--tenant", &tenant.0.to_string()]).await;
    assert_eq!(by_slug, by_id, "the slug names the same tenant as the id");
    let (out, stdout, stderr) = run(keel(db, &dir, None), &["audit", "verify", "--tenant", "ops-slug"]).await;
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("of 1 tenants"), "{stdout}");

    // A token for a tenant named by its slug acts in that tenant.
    let mut token = keel(db, &dir, None);
    token.env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap());
    let (out, stdout, stderr) = run(token, &["token", "--tenant", "ops-slug", "--user", "owner-ops-slug"]).await;
    assert!(out.status.success(), "{stderr}");
    let me = app.graphql(stdout.trim(), "{ me { tenantId } }", None).await;
    assert_eq!(me.body["data"]["me"]["tenantId"], tenant.0.to_string(), "{}", me.body);

    let missing = uuid::Uuid::now_v7().to_string();
    for args in [
        vec!["audit", "export", "--tenant", "no-such-tenant"],
        vec!["audit", "export", "--tenant", &missing],
        vec!["audit", "verify", "--tenant", "no-such-tenant"],
        vec!["audit", "verify", "--tenant", &missing],
    ] {
        let (out, stdout, stderr) = run(keel(db, &dir, Some(MASTER_KEY)), &args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout} {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(args[3]) && stderr.contains("no tenant"), "{args:?} names the tenant: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pretty log lines written to a file or a pipe carry no colour codes.
#[tokio::test]
async fn pretty_logs_into_a_pipe_have_no_colour_codes() {
    let db = TestDb::new().await;
    db.provision("ops-pretty", "ada").await;
    let dir = scratch_dir("pretty");
    let mut c = keel(&db, &dir, None);
    c.env("KEEL_LOG_FORMAT", "pretty").env("KEEL_LOG", "debug");
    let (out, _, stderr) = run(c, &["audit", "verify"]).await;
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("DEBUG") || stderr.contains("INFO"), "something was logged: {stderr}");
    assert!(!stderr.contains('\x1b'), "no ANSI escape codes: {stderr:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
