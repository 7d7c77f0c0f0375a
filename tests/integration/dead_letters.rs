//! Dead letters worked by an operator with the real binary (`keel projections dead-letters`):
//! listed with event and error, retried after a fix (and parked again while not fixed), skipped,
//! every action recorded, and all of it in `status` and a server's `/metrics`. Tenant ids show
//! only to this platform tool, never through a tenant's API or roles.

use crate::helpers::{MASTER_KEY, SECRET, TestDb, meta};
use chrono::Utc;
use keel_domain::event::{ProjectCreated, ProjectUpdated};
use keel_domain::values::ProjectName;
use keel_domain::{Event, ProjectId, TenantId};
use keel_store::log;
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

async fn cli(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(KEEL)
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env("KEEL_LOG", "error")
        .env_remove("KEEL_CONFIG")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn list_json(db: &TestDb, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["projections", "dead-letters", "--json"];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(db, &args).await;
    assert!(ok, "{err}");
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A project created as `name`, and renamed to `renamed` in the same stream when given.
async fn project(db: &TestDb, tenant: TenantId, name: &str, renamed: Option<&str>) -> uuid::Uuid {
    let id = ProjectId::new_v7();
    let mut events = vec![Event::ProjectCreated(ProjectCreated {
        project_id: id,
        name: ProjectName::parse("name", name).unwrap(),
        description: None,
        at: Utc::now(),
    })];
    if let Some(new) = renamed {
        events.push(Event::ProjectUpdated(ProjectUpdated {
            project_id: id,
            name: Some(ProjectName::parse("name", new).unwrap()),
            description: None,
            at: Utc::now(),
        }));
    }
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[], &events, &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    id.0
}

/// The read table fails on projects named `poison...` with `message`, as a broken projection
/// or a bad migration would (a database error that no retry fixes).
async fn break_projects(db: &TestDb, message: &str) {
    let mut su = db.superuser().await;
    let f = format!(
        "CREATE OR REPLACE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.name LIKE 'poison%' THEN RAISE EXCEPTION '{message} %', NEW.name; END IF; RETURN NEW; END $$"
    );
    sqlx::query(sqlx::AssertSqlSafe(f)).execute(&mut su).await.unwrap();
    sqlx::query(
        "CREATE OR REPLACE TRIGGER test_poison BEFORE INSERT OR UPDATE ON rm_projects
         FOR EACH ROW EXECUTE FUNCTION test_poison()",
    )
    .execute(&mut su)
    .await
    .unwrap();
}

async fn projected(db: &TestDb, project: uuid::Uuid) -> bool {
    let mut su = db.superuser().await;
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rm_projects WHERE project_id = $1")
        .bind(project)
        .fetch_one(&mut su)
        .await
        .unwrap()
        == 1
}

/// The value of `series` with every one of `labels` on a server's `/metrics`.
async fn metric(base: &str, series: &str, labels: &[&str]) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{series}{{")) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn metric_becomes(base: &str, series: &str, labels: &[&str], value: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = metric(base, series, labels).await;
        if now == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{series}{labels:?} = {now:?}, expected {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_row(out: &str, name: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn dead_letters_are_listed_retried_after_a_fix_skipped_and_every_action_recorded() {
    let db = TestDb::new().await;
    let a = db.provision("dl-a", "ada").await;
    let b = db.provision("dl-b", "bob").await;
    break_projects(&db, "poisoned project name").await;

    // `keel serve` runs the projections (its own process: its own /metrics).
    let dir = std::env::temp_dir().join(format!("keel-dl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log_file = std::fs::File::create(dir.join("keel.log")).unwrap();
    let _server = tokio::process::Command::new(KEEL)
        .args(["serve"])
        .env("DATABASE_URL", &db.url)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("KEEL_MASTER_KEY", MASTER_KEY)
        .env("KEEL_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEEL_POLL_INTERVAL_MS", "100")
        .env("KEEL_LOG", "warn")
        .stdout(Stdio::from(log_file.try_clone().unwrap()))
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");

    let fine = project(&db, a, "Alpha", None).await;
    // Renamed after its creation: the rename is applied (to no row) while the creation is parked.
    let poison_a1 = project(&db, a, "poison-a1", Some("Renamed")).await;
    let poison_b = project(&db, b, "poison-b", None).await;
    let poison_a2 = project(&db, a, "poison-a2", None).await;

    // The worker retries each poisoned event, then parks it and goes on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let parked = loop {
        let parked = keel_store::dead_letter::list(db.store.projector(), None, false).await.unwrap();
        if parked.len() == 3 {
            break parked;
        }
        assert!(Instant::now() < deadline, "three events are parked: {parked:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(projected(&db, fine).await, "the projection went on past them");
    let id_of = |name: &str| {
        parked.iter().find(|d| d.error.contains(&format!("name {name}"))).unwrap_or_else(|| panic!("{parked:?}")).id
    };
    let (id_a1, id_b, id_a2) = (id_of("poison-a1"), id_of("poison-b"), id_of("poison-a2"));

    // The list: every tenant's, with the event and its error.
    let (ok, out, err) = cli(&db, &["projections", "dead-letters"]).await;
    assert!(ok, "{err}");
    let header = out.lines().next().unwrap();
    for col in ["id", "projection", "position", "event", "type", "tenant", "attempts", "parked at", "error"] {
        assert!(header.contains(col), "{header}");
    }
    for t in [a, b] {
        assert!(out.contains(&t.0.to_string()), "tenant {t:?} listed: {out}");
    }
    assert!(out.contains("poisoned project name poison-a1") && out.contains("ProjectCreated"), "{out}");
    let listed = list_json(&db, &[]).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let a1 = listed.iter().find(|d| d["id"] == id_a1).unwrap();
    assert_eq!((a1["projection"].as_str(), a1["attempts"].as_i64()), (Some("projects"), Some(3)), "{a1}");
    assert_eq!(a1["tenant_id"], a.0.to_string());
    assert!(a1["event_id"].is_string() && a1["position"].is_i64() && a1["parked_at"].is_string(), "{a1}");
    assert_eq!(list_json(&db, &["tasks"]).await.len(), 0, "only the named projection's");
    let (ok, _, err) = cli(&db, &["projections", "dead-letters", "nope"]).await;
    assert!(!ok && err.contains("no projection nope"), "{err}");

    let (ok, out, err) = cli(&db, &["projections", "status"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().contains("acked"), "{out}");
    let row = status_row(&out, "projects");
    assert_eq!((row[6].as_str(), row[7].as_str()), ("3", "0"), "dead, acked: {out}");
    metric_becomes(&base, "keel_projection_dead_letters", &["projection=\"projects\""], 3.0).await;

    // Retried before the fix: it fails again and stays parked, with the new error, one more attempt.
    break_projects(&db, "still broken").await;
    let (ok, out, _) = cli(&db, &["projections", "dead-letters", "retry", &id_a1.to_string()]).await;
    assert!(!ok, "a retry that fails exits 1: {out}");
    assert!(out.contains("failed again"), "{out}");
    let a1 = list_json(&db, &[]).await.into_iter().find(|d| d["id"] == id_a1).expect("still parked");
    assert_eq!(a1["attempts"], 4, "{a1}");
    assert!(a1["error"].as_str().unwrap().contains("still broken poison-a1"), "{a1}");
    assert!(!projected(&db, poison_a1).await);

    // The fix, then the retry: the read table has it and the list no longer does.
    let mut su = db.superuser().await;
    sqlx::query("DROP TRIGGER test_poison ON rm_projects").execute(&mut su).await.unwrap();
    let (ok, out, err) = cli(&db, &["projections", "dead-letters", "retry", &id_a1.to_string()]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("applied"), "{out}");
    assert!(projected(&db, poison_a1).await, "the retried event is in the read table");
    // Its rename came after it and was read while it was parked: the operator is told so.
    assert!(
        out.contains("1 later event(s) of its stream") && out.contains("keel projections rebuild projects"),
        "{out}"
    );
    let (ok, _, err) = cli(&db, &["projections", "dead-letters", "retry", &id_a1.to_string()]).await;
    assert!(!ok && err.contains(&format!("no dead letter {id_a1}")), "{err}");

    // Skip: acknowledged, out of the active list and the gauge, kept.
    let (ok, out, err) = cli(&db, &["projections", "dead-letters", "skip", &id_b.to_string()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("acknowledged by cli:"), "{out}");
    let (ok, _, err) = cli(&db, &["projections", "dead-letters", "skip", &id_b.to_string()]).await;
    assert!(!ok && err.contains("acknowledged before"), "{err}");
    let active: Vec<i64> = list_json(&db, &[]).await.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(active, vec![id_a2]);
    let all = list_json(&db, &["--acknowledged"]).await;
    let skipped = all.iter().find(|d| d["id"] == id_b).expect("kept");
    assert!(skipped["acknowledged_by"].as_str().unwrap().starts_with("cli:"), "{skipped}");
    assert!(!projected(&db, poison_b).await, "a skipped event is not applied");

    // Every active one of a projection, in log order; the acknowledged one stays as it is.
    let (ok, out, err) = cli(&db, &["projections", "dead-letters", "retry", "--all", "projects"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("projects: 1 of 1 dead letters applied"), "{out}");
    assert!(projected(&db, poison_a2).await && !projected(&db, poison_b).await);
    assert!(list_json(&db, &[]).await.is_empty());

    let (ok, out, err) = cli(&db, &["projections", "status"]).await;
    assert!(ok, "{err}");
    let row = status_row(&out, "projects");
    assert_eq!((row[6].as_str(), row[7].as_str()), ("0", "1"), "dead, acked: {out}");
    metric_becomes(&base, "keel_projection_dead_letters", &["projection=\"projects\""], 0.0).await;
    metric_becomes(&base, "keel_projection_dead_letters_acknowledged", &["projection=\"projects\""], 1.0).await;
    for (action, outcome, n) in [("retry", "failed", 1.0), ("retry", "applied", 2.0), ("skip", "acknowledged", 1.0)] {
        let labels =
            ["projection=\"projects\"".to_owned(), format!("action=\"{action}\""), format!("outcome=\"{outcome}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        metric_becomes(&base, "keel_projection_dead_letter_actions_total", &labels, n).await;
    }

    // The record: who, when, what, how it ended.
    let (ok, out, err) = cli(&db, &["projections", "dead-letters", "history", "--json"]).await;
    assert!(ok, "{err}");
    let history: Vec<Value> = serde_json::from_str(&out).unwrap();
    let seen: Vec<(i64, &str, &str)> = history
        .iter()
        .map(|h| (h["dead_letter_id"].as_i64().unwrap(), h["action"].as_str().unwrap(), h["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (id_a1, "retry", "failed"),
            (id_a1, "retry", "applied"),
            (id_b, "skip", "acknowledged"),
            (id_a2, "retry", "applied")
        ]
    );
    for h in &history {
        assert!(h["actor"].as_str().unwrap().starts_with("cli:") && h["at"].is_string(), "{h}");
        assert_eq!(h["projection"], "projects");
    }
    assert!(history[0]["error"].as_str().unwrap().contains("still broken"), "{}", history[0]);
    assert_eq!(history[2]["tenant_id"], b.0.to_string());
    let (ok, out, _) = cli(&db, &["projections", "dead-letters", "history"]).await;
    assert!(ok && out.lines().count() == 5 && out.contains("acknowledged"), "{out}");

    // A platform tool only: no tenant API names dead letters, and the tenant-facing roles read
    // neither table even inside their own tenant's transaction.
    for path in ["/api/v1/openapi.json", "/graphql/schema.graphql"] {
        let text = reqwest::get(format!("{base}{path}")).await.unwrap().text().await.unwrap();
        let text = text.to_lowercase();
        let named = ["dead letter", "dead-letter", "dead_letter", "deadletter"].iter().any(|n| text.contains(n));
        assert!(text.len() > 1000 && !named, "{path} names no dead letters");
    }
    for table in ["projection_dead_letters", "projection_dead_letter_actions"] {
        let mut w = db.store.begin_write(a).await.unwrap();
        let sql = format!("SELECT count(*) FROM {table}");
        let err = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(w.conn()).await.expect_err("writer");
        assert_eq!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("42501"), "writer: {err}");
        let mut r = db.store.begin_read(a).await.unwrap();
        let err = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(r.conn()).await.expect_err("reader");
        assert_eq!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("42501"), "reader: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
