//! The SQLite file itself: private permissions, WAL mode, what survives reopening, the data
//! directory's lock and host id, racing acquirers, appends racing a delete, pruning, and
//! concurrent appends committed in groups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::SessionConfig;
use agent_webkit_core::event_log::StoredEvent;
use agent_webkit_core::persist::{Lease, SessionPersistence, SessionRecord};
use agent_webkit_core::store::{fold_session_summary, SessionKey, SessionStore};
use agent_webkit_sqlite::{DataDir, DataDirError, OpenOptions, SqliteSessionStore};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn record(id: &str) -> SessionRecord {
    SessionRecord::new(id, &format!("agent-{id}"), &SessionConfig::default())
}

fn ev(seq: u64) -> StoredEvent {
    StoredEvent {
        seq,
        event: "message_delta".into(),
        data: format!(r#"{{"seq":{seq},"text":"h\u00e9llo \"q\" \\u0000 ☃"}}"#),
    }
}

fn seqs(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_private_and_in_wal_mode() {
    let tmp = common::TempDir::new("perms");
    let dir = tmp.path().join("a/b");
    let data = DataDir::open(&dir, OpenOptions::default()).unwrap();
    let p = data.store().persistence();
    p.create(&record("s"), "h", LEASE).await.unwrap();
    p.append_events("s", &[ev(1)]).await.unwrap();
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(mode(&tmp.path().join("a")), 0o700, "created parent");
    for file in [
        "sessions.db",
        "sessions.db-wal",
        "sessions.db-shm",
        "host-id",
        "agent-webkit.lock",
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    // WAL: the -wal file exists and holds the commit before any checkpoint.
    assert!(
        std::fs::metadata(dir.join("sessions.db-wal"))
            .unwrap()
            .len()
            > 0
    );
}

#[tokio::test]
async fn everything_survives_reopening() {
    let tmp = common::TempDir::new("reopen");
    let path = tmp.path().join("sessions.db");
    let key = SessionKey::main("proj", "sess");
    let entries = vec![
        json!({"type": "user", "uuid": "u1", "timestamp": "2024-01-01T00:00:00.000Z", "text": "a\u{0}b"}),
        json!({"type": "assistant", "uuid": "u2", "big": "é".repeat(5 << 20)}),
    ];
    let rec = record("s");
    {
        let store = SqliteSessionStore::open(&path).unwrap();
        store.append(&key, entries.clone()).await.unwrap();
        let p = store.persistence();
        p.create(&rec, "h", LEASE).await.unwrap();
        p.append_events("s", &(1..=20).map(ev).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    let store = SqliteSessionStore::open(&path).unwrap();
    assert_eq!(store.load(&key).await.unwrap(), Some(entries.clone()));
    let summaries = store.list_session_summaries("proj").await.unwrap();
    assert_eq!(
        summaries[0].data,
        fold_session_summary(None, &key, &entries).data
    );
    let (loaded, events) = store.persistence().load("s", 5).await.unwrap().unwrap();
    assert_eq!(loaded, rec);
    assert_eq!(events, (16..=20).map(ev).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_data_dir_is_locked_and_keeps_its_host_id() {
    let tmp = common::TempDir::new("lock");
    let dir = tmp.path().join("data");
    let first = DataDir::open(&dir, OpenOptions::default()).unwrap();
    let id = first.host_id().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    match DataDir::open(&dir, OpenOptions::default()) {
        Err(err @ DataDirError::InUse { .. }) => {
            let text = err.to_string();
            assert!(text.contains(&dir.display().to_string()), "{text}");
            assert!(
                text.contains(&format!("pid {}", std::process::id())),
                "{text}"
            );
        }
        other => panic!("a second open must fail: {other:?}"),
    }
    drop(first);
    let again = DataDir::open(&dir, OpenOptions::default()).unwrap();
    assert_eq!(again.host_id(), id, "the host id outlives the process");
}

#[tokio::test]
async fn an_unusable_directory_names_the_path() {
    let tmp = common::TempDir::new("unusable");
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = DataDir::open(file.join("data"), OpenOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&file.join("data").display().to_string()),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_acquirers_exactly_one_wins() {
    let tmp = common::TempDir::new("acquire");
    let store = SqliteSessionStore::open(tmp.path().join("s.db")).unwrap();
    let p = Arc::new(store.persistence());
    for round in 0..10 {
        let id = format!("r{round}");
        p.create(&record(&id), "creator", Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await; // the creator's lease expires
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let (p, id) = (Arc::clone(&p), id.clone());
                tokio::spawn(async move { (n, p.acquire(&id, &format!("h{n}"), LEASE).await) })
            })
            .collect();
        let mut winners = Vec::new();
        let mut held_by = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (n, Ok(Lease::Acquired)) => winners.push(format!("h{n}")),
                (_, Ok(Lease::HeldBy { owner, .. })) => held_by.push(owner),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert!(held_by.iter().all(|o| *o == winners[0]), "{held_by:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_racing_a_delete_never_resurrect() {
    let tmp = common::TempDir::new("race");
    let store = SqliteSessionStore::open(tmp.path().join("s.db")).unwrap();
    let p = Arc::new(store.persistence());
    p.create(&record("x"), "h", LEASE).await.unwrap();
    let writers: Vec<_> = (0..3_u64)
        .map(|w| {
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                for i in 0..50 {
                    p.append_events("x", &[ev(w * 1000 + i + 1)]).await.unwrap();
                }
            })
        })
        .collect();
    tokio::task::yield_now().await;
    p.delete("x").await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert!(p.load("x", 10).await.unwrap().is_none());
    // No orphan events: recreating the id starts empty.
    p.create(&record("x"), "h", LEASE).await.unwrap();
    assert!(p.load("x", 10_000).await.unwrap().unwrap().1.is_empty());
}

#[tokio::test]
async fn the_log_keeps_the_newest_events() {
    let tmp = common::TempDir::new("prune");
    let store = SqliteSessionStore::open(tmp.path().join("s.db")).unwrap();
    let p = store.persistence().with_max_events(10);
    p.create(&record("p"), "h", LEASE).await.unwrap();
    p.append_events("p", &(1..=25).map(ev).collect::<Vec<_>>())
        .await
        .unwrap();
    let (_, events) = p.load("p", 100).await.unwrap().unwrap();
    assert_eq!(
        seqs(&events),
        (16..=25).collect::<Vec<_>>(),
        "oversized batch"
    );
    p.append_events("p", &(3..=8).map(ev).collect::<Vec<_>>())
        .await
        .unwrap();
    let (_, events) = p.load("p", 100).await.unwrap().unwrap();
    assert_eq!(
        seqs(&events),
        (16..=25).collect::<Vec<_>>(),
        "late old batch"
    );
    p.append_events("p", &[ev(26), ev(27)]).await.unwrap();
    let (_, events) = p.load("p", 100).await.unwrap().unwrap();
    assert_eq!(seqs(&events), (18..=27).collect::<Vec<_>>());
}

/// 32 sessions' writers and 8 transcript writers at once: the writer thread commits them in
/// groups; nothing is lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_committed_in_groups_without_loss() {
    let tmp = common::TempDir::new("groups");
    let store = SqliteSessionStore::open(tmp.path().join("s.db")).unwrap();
    let p = Arc::new(store.persistence());
    let mut tasks = Vec::new();
    for s in 0..32 {
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            let id = format!("s{s}");
            p.create(&record(&id), "h", LEASE).await.unwrap();
            for batch in 0..20_u64 {
                let events: Vec<_> = (batch * 5 + 1..=batch * 5 + 5).map(ev).collect();
                p.append_events(&id, &events).await.unwrap();
            }
        }));
    }
    let key = SessionKey::main("proj", "t");
    for t in 0..8 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                store
                    .append(
                        &key,
                        vec![json!({"t": t, "i": i, "uuid": format!("{t}-{i}")})],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for s in 0..32 {
        let (_, events) = p.load(&format!("s{s}"), 1000).await.unwrap().unwrap();
        assert_eq!(seqs(&events), (1..=100).collect::<Vec<_>>());
    }
    let all = store.load(&key).await.unwrap().unwrap();
    assert_eq!(all.len(), 200);
    for t in 0..8 {
        let mine: Vec<i64> = all
            .iter()
            .filter(|v| v["t"] == t)
            .filter_map(|v| v["i"].as_i64())
            .collect();
        assert_eq!(mine, (0..25).collect::<Vec<_>>());
    }
}
