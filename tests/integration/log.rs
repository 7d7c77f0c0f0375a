//! The event log itself: optimistic concurrency, the hash chain, and gap-safe reading.

use crate::helpers::{TestDb, meta};
use chrono::Utc;
use keel_domain::event::{ProjectCreated, ProjectUpdated};
use keel_domain::values::ProjectName;
use keel_domain::{Event, ProjectId};
use keel_store::{LogPosition, RecordedEvent, StoreError, log};
use std::time::{Duration, Instant};

pub(crate) fn created(p: ProjectId, name: &str) -> Event {
    Event::ProjectCreated(ProjectCreated {
        project_id: p,
        name: ProjectName::parse("name", name).unwrap(),
        description: None,
        at: Utc::now(),
    })
}

pub(crate) fn renamed(p: ProjectId, name: &str) -> Event {
    Event::ProjectUpdated(ProjectUpdated {
        project_id: p,
        name: Some(ProjectName::parse("name", name).unwrap()),
        description: None,
        at: Utc::now(),
    })
}

#[tokio::test]
async fn a_lost_race_is_a_conflict_never_a_duplicate_or_an_overwrite() {
    let db = TestDb::new().await;
    let tenant = db.provision("race", "ada").await;
    let p = ProjectId::new_v7();
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[], &[created(p, "Apollo")], &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();

    // Eight writers all read version 1 and append version 2 at once.
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = db.store.clone();
        handles.push(tokio::spawn(async move {
            let mut tx = store.begin_write(tenant).await.unwrap();
            let r = log::append(&mut tx, &[(p.0, 1)], &[renamed(p, &format!("Name {i}"))], &meta(), Utc::now()).await;
            match r {
                Ok(_) => tx.commit().await.map(|_| true),
                Err(e) => Err(e),
            }
        }));
    }
    let mut won = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { stream_id, expected, .. }) => assert_eq!((stream_id, expected), (p.0, 1)),
            Err(other) => panic!("expected a conflict, got {other}"),
        }
    }
    assert_eq!(won, 1, "exactly one writer wins the race");

    // A stale expected version is refused before anything is written.
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    let err = log::append(&mut tx, &[(p.0, 1)], &[renamed(p, "Late")], &meta(), Utc::now()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 1, actual: 2, .. }), "{err}");
    tx.rollback().await.unwrap();

    let mut tx = db.store.begin_read(tenant).await.unwrap();
    let stream = log::read_stream(&mut tx, p.0).await.unwrap();
    let versions: Vec<i64> = stream.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2], "no duplicate, no gap, nothing overwritten");
}

#[tokio::test]
async fn events_of_a_stream_are_hash_chained() {
    let db = TestDb::new().await;
    let tenant = db.provision("chain", "ada").await;
    let p = ProjectId::new_v7();
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[], &[created(p, "A"), renamed(p, "B")], &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[(p.0, 2)], &[renamed(p, "C")], &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = db.store.begin_read(tenant).await.unwrap();
    let stream = log::read_stream(&mut tx, p.0).await.unwrap();
    assert_eq!(stream.len(), 3);
    assert_eq!(stream[0].prev_hash, None);
    for w in stream.windows(2) {
        assert_eq!(w[1].prev_hash.as_deref(), Some(w[0].hash.as_slice()), "each event names its predecessor's hash");
    }
    for e in &stream {
        assert_eq!(e.recompute_hash().as_slice(), e.hash.as_slice(), "hash recomputes from the stored row");
    }
    // Tampering with the stored payload (as read) breaks the recomputation.
    let mut forged = stream[1].clone();
    forged.payload["name"] = serde_json::json!("Mallory");
    assert_ne!(forged.recompute_hash().as_slice(), forged.hash.as_slice());
}

/// Reads everything after `from` the way a projection does, through the projector role.
async fn poll(db: &TestDb, from: LogPosition) -> Vec<RecordedEvent> {
    let mut conn = db.store.projector().raw().acquire().await.unwrap();
    log::read_all_after(&mut conn, from, 1000).await.unwrap()
}

#[tokio::test]
async fn the_reader_never_skips_an_event_that_commits_late() {
    let db = TestDb::new().await;
    let a = db.provision("gap-a", "ada").await;
    let b = db.provision("gap-b", "bob").await;

    // Read past the set-up's events first.
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut checkpoint = LogPosition::START;
    let setup_end = max_position(&db).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while checkpoint.position < setup_end {
        assert!(Instant::now() < deadline, "the reader reaches the set-up's events");
        if let Some(last) = poll(&db, checkpoint).await.last() {
            checkpoint = last.log_position();
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // T1 appends first (lower position) and stays open; T2 appends later and commits.
    let p1 = ProjectId::new_v7();
    let p2 = ProjectId::new_v7();
    let mut t1 = db.store.begin_write(a).await.unwrap();
    let first = log::append(&mut t1, &[], &[created(p1, "Late")], &meta(), Utc::now()).await.unwrap();
    let mut t2 = db.store.begin_write(b).await.unwrap();
    let second = log::append(&mut t2, &[], &[created(p2, "Early")], &meta(), Utc::now()).await.unwrap();
    t2.commit().await.unwrap();
    assert!(first.last.position < second.last.position);

    // The hazard is real: a plain `position > n` reader would see T2's event now and move past T1's.
    let mut su = db.superuser().await;
    let naive: Vec<i64> = sqlx::query_scalar("SELECT position FROM events WHERE position >= $1 ORDER BY position")
        .bind(first.last.position)
        .fetch_all(&mut su)
        .await
        .unwrap();
    assert_eq!(naive, vec![second.last.position], "T1 is invisible, T2 visible, to a plain reader");

    // The gap-safe reader, polling while T1 is open, sees neither.
    for _ in 0..3 {
        let batch = poll(&db, checkpoint).await;
        assert!(
            batch.iter().all(|e| e.stream_id != p1.0 && e.stream_id != p2.0),
            "nothing past the oldest open transaction is read"
        );
        seen.extend(batch.iter().cloned());
        if let Some(last) = batch.last() {
            checkpoint = last.log_position();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    t1.commit().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let batch = poll(&db, checkpoint).await;
        if let Some(last) = batch.last() {
            checkpoint = last.log_position();
        }
        seen.extend(batch);
        let ours: Vec<_> = seen.iter().filter(|e| e.stream_id == p1.0 || e.stream_id == p2.0).collect();
        if ours.len() >= 2 || Instant::now() > deadline {
            let ids: Vec<_> = ours.iter().map(|e| e.stream_id).collect();
            assert_eq!(ids, vec![p1.0, p2.0], "both, in commit-safe order, exactly once");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And nothing more turns up later.
    tokio::time::sleep(Duration::from_millis(100)).await;
    seen.extend(poll(&db, checkpoint).await);
    assert_eq!(seen.iter().filter(|e| e.stream_id == p1.0 || e.stream_id == p2.0).count(), 2);
}

async fn max_position(db: &TestDb) -> i64 {
    let mut su = db.superuser().await;
    sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events").fetch_one(&mut su).await.unwrap()
}

/// A consumer's batch is bounded by payload bytes as well as by count: a log of large
/// events (usage batches of 200 records, 20 KB each) is read in several batches, each saying that more
/// follows, and together they hold every event once, in order. Small events fill the count.
#[tokio::test]
async fn a_consumers_batch_is_bounded_by_bytes_as_well_as_by_count() {
    use keel_domain::event::{UsageRecord, UsageRecorded};
    use keel_domain::values::{Metric, RecordId};
    let db = TestDb::new().await;
    let tenant = db.provision("batch-bytes", "ada").await;
    let large = |_: usize| {
        let records = (0..200)
            .map(|_| UsageRecord {
                id: RecordId::parse("id", &uuid::Uuid::new_v4().to_string()).unwrap(),
                metric: Metric::parse("metric", "api.calls").unwrap(),
                quantity: 1,
                occurred_at: Utc::now(),
            })
            .collect();
        Event::UsageRecorded(UsageRecorded { batch_id: keel_domain::UsageBatchId::new_v7(), records, at: Utc::now() })
    };
    for chunk in 0..10 {
        let events: Vec<Event> = (0..10).map(|i| large(chunk * 10 + i)).collect();
        let mut tx = db.store.begin_write(tenant).await.unwrap();
        log::append(&mut tx, &[], &events, &meta(), Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut conn = db.store.projector().raw().acquire().await.unwrap();
    let (mut from, mut seen, mut batches) = (LogPosition::START, Vec::new(), 0);
    loop {
        let batch = log::read_batch_after(&mut conn, from, 500).await.unwrap();
        let Some(last) = batch.events.last() else { break };
        batches += 1;
        from = last.log_position();
        seen.extend(batch.events.iter().map(|e| e.position));
        assert!(batch.events.len() < 100, "one batch of {} large events", batch.events.len());
        if !batch.more {
            break;
        }
    }
    assert!(batches > 1, "{batches} batch");
    let all: Vec<i64> =
        log::read_all_after(&mut conn, LogPosition::START, 1000).await.unwrap().iter().map(|e| e.position).collect();
    // The tenant's own two events (provisioned, owner invited) and the hundred batches.
    assert_eq!((seen.len(), &seen), (102, &all), "every event once, in order");

    // Small events: the count bounds the batch.
    let events: Vec<Event> = (0..20).map(|i| created(ProjectId::new_v7(), &format!("P{i}"))).collect();
    let mut tx = db.store.begin_write(tenant).await.unwrap();
    log::append(&mut tx, &[], &events, &meta(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    let ten = log::read_batch_after(&mut conn, from, 10).await.unwrap();
    assert_eq!((ten.events.len(), ten.more), (10, true));
    let rest = log::read_batch_after(&mut conn, ten.events[9].log_position(), 500).await.unwrap();
    assert_eq!((rest.events.len(), rest.more), (10, false));
}
