//! Reads from a streaming replica, still read-your-writes (docs/scaling.md, "Read replicas"): a
//! private primary (initdb), a hot standby made from it with `pg_basebackup` on another port
//! whose replay runs three seconds behind on purpose, and `keel serve` with
//! `KEEL_READ_DATABASE_URL` pointing at the standby. A query carrying a command's position waits
//! for the replica (or answers stale past its wait), and a subscription's push comes no earlier
//! than the replica has the change.

use crate::helpers::{keel_serve, signed_token};
use crate::subscriptions::{next_json, subscribe_at};
use keel::embedded::{EmbeddedPg, StopMode, find_bindir};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How far behind the standby replays, on purpose.
const DELAY: Duration = Duration::from_secs(3);

/// A primary and its standby, stopped (immediately) when dropped.
pub(crate) struct Pair {
    pub(crate) primary: Arc<EmbeddedPg>,
    pub(crate) standby: Arc<EmbeddedPg>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.standby.stop_with(StopMode::Immediate);
        let _ = self.primary.stop_with(StopMode::Immediate);
    }
}

/// A private primary (migrated) and a hot standby streaming from it, replaying `delay` behind.
pub(crate) async fn pair(dir: &Path, delay: Option<Duration>) -> Pair {
    let bindir = find_bindir(None).expect("PostgreSQL's server binaries");
    let (d, b) = (dir.join("primary"), bindir.clone());
    let primary = Arc::new(tokio::task::spawn_blocking(move || EmbeddedPg::start(&d, &b)).await.unwrap().unwrap());
    primary.ensure_database().await.unwrap();
    keel_store::migrate(&primary.database_url()).await.expect("migrations apply");
    let (p, d) = (primary.clone(), dir.join("standby"));
    let standby = Arc::new(tokio::task::spawn_blocking(move || p.start_standby(&d, delay)).await.unwrap().unwrap());
    Pair { primary, standby }
}

/// The same database on the standby's port.
pub(crate) fn standby_url(pair: &Pair) -> String {
    let url = pair.primary.database_url();
    url.replace(&format!(":{}/", pair.primary.port()), &format!(":{}/", pair.standby.port()))
}

async fn graphql(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
    at: Option<&str>,
) -> (Value, Duration) {
    let mut req = client.post(format!("{base}/graphql")).bearer_auth(token).json(&json!({ "query": query }));
    if let Some(p) = at {
        req = req.header("Keel-Consistency", p);
    }
    let began = Instant::now();
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    (r.json().await.unwrap(), began.elapsed())
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let r = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// What the standby itself holds now (as its superuser, below Keel).
async fn on_standby(url: &str, project: &str) -> Option<String> {
    let mut c = PgConnection::connect(url).await.unwrap();
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM rm_projects WHERE project_id = $1::uuid")
        .bind(project)
        .fetch_optional(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_a_lagging_replica_wait_for_a_commands_position_and_pushes_wait_for_the_replica() {
    let dir = std::env::temp_dir().join(format!("keel-replica-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pg = pair(&dir, Some(DELAY)).await;
    let (primary, replica) = (pg.primary.database_url(), standby_url(&pg));
    // One instance waits up to 30 s for a position, the other only 500 ms.
    let (_patient, patient) = keel_serve(
        &primary,
        &dir.join("patient.log"),
        &[("KEEL_READ_DATABASE_URL", replica.as_str()), ("KEEL_CONSISTENCY_WAIT_MS", "30000")],
    )
    .await;
    let (_hasty, hasty) = keel_serve(
        &primary,
        &dir.join("hasty.log"),
        &[("KEEL_READ_DATABASE_URL", replica.as_str()), ("KEEL_CONSISTENCY_WAIT_MS", "500")],
    )
    .await;
    let (patient, hasty) = (format!("http://{patient}"), format!("http://{hasty}"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();

    // A tenant provisioned this instant: with the position, its owner's first query is served
    // (the membership is on the replica by then), never refused.
    let platform = signed_token(None, "replica-operator", true);
    let t = post(
        &client,
        format!("{patient}/api/v1/tenants"),
        &platform,
        json!({"name": "Replica", "slug": "replica", "plan": "team",
               "owner": {"user_id": "rita", "email": "rita@replica.test", "name": "Rita"}}),
    )
    .await;
    let tenant: Uuid = t["id"].as_str().unwrap().parse().unwrap();
    let owner = signed_token(Some(tenant), "rita", false);
    let (me, took) = graphql(&client, &patient, &owner, "{ me { userId } }", t["position"].as_str()).await;
    assert_eq!(me["data"]["me"]["userId"], "rita", "{me}");
    assert!(took >= DELAY / 2, "the first read waited for the replica ({took:?}): {me}");

    // A command, then at once: the standby does not have it yet, a plain read does not see it,
    // the hasty instance answers stale, and the patient one waits and sees it.
    let created = post(&client, format!("{patient}/api/v1/projects"), &owner, json!({"name": "Mirror"})).await;
    let (id, at) = (created["id"].as_str().unwrap().to_owned(), created["position"].as_str().unwrap().to_owned());
    assert_eq!(on_standby(&replica, &id).await, None, "the standby lags on purpose");
    let q = format!("{{ project(id: \"{id}\") {{ name }} }}");
    let (plain, _) = graphql(&client, &patient, &owner, &q, None).await;
    assert_eq!(plain["data"]["project"], Value::Null, "a read without a position reads the replica: {plain}");
    let (stale, took) = graphql(&client, &hasty, &owner, &q, Some(&at)).await;
    assert_eq!(stale["extensions"]["consistency"], "stale", "{stale}");
    assert!(took >= Duration::from_millis(500), "it waited its 500 ms: {took:?}");
    let (fresh, took) = graphql(&client, &patient, &owner, &q, Some(&at)).await;
    assert_eq!(fresh["data"]["project"]["name"], "Mirror", "{fresh}");
    assert!(fresh.get("extensions").is_none_or(|e| e.get("consistency").is_none()), "{fresh}");
    println!("a read with the position waited {took:?} for a replica {DELAY:?} behind");

    // A subscriber on the replica-reading instance hears of a rename only once the replica has it.
    let sub = format!("subscription {{ projectChanged(id: \"{id}\") {{ name }} }}");
    let mut socket = subscribe_at(&patient, &owner, &sub).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client
        .patch(format!("{patient}/api/v1/projects/{id}"))
        .bearer_auth(&owner)
        .json(&json!({"name": "Mirror II"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let renamed = Instant::now();
    let deadline = renamed + Duration::from_secs(30);
    loop {
        let msg = next_json(&mut socket, deadline.saturating_duration_since(Instant::now())).await.expect("a push");
        assert_eq!(msg["type"], "next", "{msg}");
        if msg["payload"]["data"]["projectChanged"]["name"] == "Mirror II" {
            break;
        }
    }
    let heard = renamed.elapsed();
    assert_eq!(on_standby(&replica, &id).await.as_deref(), Some("Mirror II"), "pushed before the replica had it");
    assert!(heard >= DELAY / 2, "the push waited for the replica: {heard:?}");
    println!("the push came {heard:?} after the rename");

    // Audit reads come from the replica too: right after another rename its history has two
    // steps there; with the rename's position it waits and has three.
    let r = client
        .patch(format!("{patient}/api/v1/projects/{id}"))
        .bearer_auth(&owner)
        .json(&json!({"name": "Mirror III"}))
        .send()
        .await
        .unwrap();
    let third: Value = r.json().await.unwrap();
    let history = format!("{{ aggregateHistory(streamId: \"{id}\") {{ eventType }} }}");
    let steps = |v: &Value| v["data"]["aggregateHistory"].as_array().map_or(0, Vec::len);
    let (plain, _) = graphql(&client, &patient, &owner, &history, None).await;
    assert_eq!(steps(&plain), 2, "the replica's history, behind: {plain}");
    let (waited, _) = graphql(&client, &patient, &owner, &history, third["position"].as_str()).await;
    assert_eq!(steps(&waited), 3, "the history with the position: {waited}");
    let _ = std::fs::remove_dir_all(&dir);
}
