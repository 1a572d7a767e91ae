//! The write-ahead log stays bounded: under a steady write load with concurrent readers it is
//! truncated by size, and an explicit checkpoint (a clean stop) leaves it empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::SessionConfig;
use agent_webkit_core::event_log::StoredEvent;
use agent_webkit_core::persist::{SessionPersistence, SessionRecord};
use agent_webkit_sqlite::{OpenOptions, SqliteSessionStore, WAL_HARD_FACTOR};

const LEASE: Duration = Duration::from_secs(30);
/// A small limit so the test writes many times it.
const LIMIT: u64 = 1 << 20;
const WRITERS: usize = 4;
/// Events per append call, each of `EVENT_BYTES`: 64 KiB a call.
const BATCH: u64 = 16;
const EVENT_BYTES: usize = 4096;

fn wal_len(db: &Path) -> u64 {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    std::fs::metadata(PathBuf::from(name)).map_or(0, |m| m.len())
}

fn batch(from: u64) -> Vec<StoredEvent> {
    (from..from + BATCH)
        .map(|seq| StoredEvent {
            seq,
            event: "message_delta".into(),
            data: format!(r#"{{"seq":{seq},"text":"{}"}}"#, "x".repeat(EVENT_BYTES)),
        })
        .collect()
}

/// 4 writers append 32 MiB in all (32 times the limit) while 2 readers load whole rings
/// without pause; the WAL file never grows past the hard limit plus a few groups' worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wal_stays_bounded_under_writes_and_reads() {
    let tmp = common::TempDir::new("wal-bound");
    let path = tmp.path().join("s.db");
    let store = SqliteSessionStore::open_with(
        &path,
        OpenOptions {
            wal_limit: LIMIT,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    // Rings of 64 events (256 KiB) so the data keeps being pruned and rewritten.
    let p = store.persistence().with_max_events(64);
    for w in 0..WRITERS {
        let id = format!("s{w}");
        let record = SessionRecord::new(&id, "agent", &SessionConfig::default());
        p.create(&record, "h", LEASE).await.unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (p, done) = (p.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut loads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let id = format!("s{}", loads % WRITERS as u64 + r);
                    p.load(&id, 1000).await.unwrap();
                    loads += 1;
                }
                loads
            })
        })
        .collect();
    let calls_each = (32 << 20) / (BATCH * EVENT_BYTES as u64) / WRITERS as u64;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (p, path) = (p.clone(), path.clone());
            tokio::spawn(async move {
                let id = format!("s{w}");
                let mut biggest = 0;
                for call in 0..calls_each {
                    p.append_events(&id, &batch(1 + call * BATCH))
                        .await
                        .unwrap();
                    biggest = biggest.max(wal_len(&path));
                }
                biggest
            })
        })
        .collect();
    let mut biggest = 0;
    for writer in writers {
        biggest = biggest.max(writer.await.unwrap());
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.await.unwrap() > 0, "the readers ran");
    }
    // Past the hard limit the writer truncates before its next group: at most one group of
    // WRITERS calls (and their index and pruning pages) more.
    let bound = LIMIT * WAL_HARD_FACTOR + 2 * (1 << 20);
    assert!(
        biggest <= bound,
        "the WAL grew to {biggest} bytes (bound {bound}) while 32 MiB were written"
    );
    let loaded = p.load("s0", 1000).await.unwrap().unwrap().1;
    assert_eq!(loaded.len(), 64, "the newest ring survived the truncations");
    assert_eq!(loaded.last().unwrap().seq, calls_each * BATCH);
}

/// A checkpoint at a clean stop leaves an empty WAL, after every write queued before it.
#[tokio::test]
async fn checkpoint_empties_the_wal() {
    let tmp = common::TempDir::new("wal-close");
    let path = tmp.path().join("s.db");
    let store = SqliteSessionStore::open(&path).unwrap();
    let p = store.persistence();
    let record = SessionRecord::new("s", "agent", &SessionConfig::default());
    p.create(&record, "h", LEASE).await.unwrap();
    let appends: Vec<_> = (0..8)
        .map(|n| {
            let p = p.clone();
            tokio::spawn(async move { p.append_events("s", &batch(1 + n * BATCH)).await })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    assert!(wal_len(&path) > 0, "the appends went to the WAL");
    store.checkpoint().await.unwrap();
    assert_eq!(wal_len(&path), 0, "a clean stop leaves an empty WAL");
    drop((store, p));
    let again = SqliteSessionStore::open(&path).unwrap();
    let (_, events) = again.persistence().load("s", 1000).await.unwrap().unwrap();
    assert_eq!(
        events.len(),
        8 * BATCH as usize,
        "everything is in the database file"
    );
}
