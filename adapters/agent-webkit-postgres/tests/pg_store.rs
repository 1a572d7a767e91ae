//! PostgreSQL-specific behaviour: concurrency, large entries, uuid idempotency across
//! overlapping retries, migrations (twice, concurrently), connection loss, timeouts, and a
//! throughput / load-latency measurement (printed, never asserted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_core::store::{fold_session_summary, SessionKey, SessionStore, StoreError};
use agent_webkit_postgres::{PgSessionStore, PoolOptions, SCHEMA_VERSION};
use serde_json::{json, Value};

/// The summary the store keeps must equal folding the stored transcript from scratch.
async fn assert_summary_consistent(store: &PgSessionStore, key: &SessionKey) {
    let entries = store.load(key).await.unwrap().unwrap();
    let expected = fold_session_summary(None, key, &entries).data;
    let summaries = store
        .list_session_summaries(&key.project_key)
        .await
        .unwrap();
    let summary = summaries
        .iter()
        .find(|s| s.session_id == key.session_id)
        .expect("summary present");
    assert_eq!(summary.data, expected, "incremental fold == full fold");
    let listed = store.list_sessions(&key.project_key).await.unwrap();
    let mtime = listed
        .iter()
        .find(|l| l.session_id == key.session_id)
        .unwrap()
        .mtime;
    assert!(summary.mtime >= mtime);
}

/// An entry that moves the summary: titles, prompts, tags depend on the fold order.
fn rich_entry(t: usize, i: usize) -> Value {
    json!({
        "type": if i % 7 == 3 { "tag" } else { "user" },
        "uuid": format!("u-{t}-{i}"),
        "t": t,
        "i": i,
        "tag": format!("tag-{t}-{i}"),
        "customTitle": format!("title-{t}-{i}"),
        "timestamp": "2024-05-01T10:00:00.000Z",
        "message": {"content": format!("prompt {t} {i}")},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_appenders_to_one_key() {
    let admin = require_pg!();
    let (store, _) = common::fresh_store(&admin, 16).await;
    let store = Arc::new(store);
    let key = SessionKey::main("proj", "hot");
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move {
                for i in (0..40).step_by(2) {
                    store
                        .append(&key, vec![rich_entry(t, i), rich_entry(t, i + 1)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.load(&key).await.unwrap().unwrap();
    assert_eq!(all.len(), 16 * 40, "no lost or duplicated entries");
    for t in 0..16 {
        let mine: Vec<usize> = all
            .iter()
            .filter(|v| v["t"] == t)
            .map(|v| v["i"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(mine, (0..40).collect::<Vec<_>>(), "task {t} in order");
    }
    // A batch is never interleaved with another.
    for pair in all.chunks(2) {
        assert_eq!(pair[0]["t"], pair[1]["t"]);
        assert_eq!(
            pair[0]["i"].as_u64().unwrap() + 1,
            pair[1]["i"].as_u64().unwrap()
        );
    }
    assert_summary_consistent(&store, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_appenders_to_different_keys() {
    let admin = require_pg!();
    let (store, _) = common::fresh_store(&admin, 16).await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let main = SessionKey::main("proj", format!("s{t}"));
                let sub = main.with_subpath("subagents/agent-1");
                for i in 0..30 {
                    store.append(&main, vec![rich_entry(t, i)]).await.unwrap();
                    store
                        .append(&sub, vec![json!({"type": "x", "i": i})])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let listed = store.list_sessions("proj").await.unwrap();
    assert_eq!(listed.len(), 16);
    assert_eq!(
        store.list_session_summaries("proj").await.unwrap().len(),
        16
    );
    for t in 0..16 {
        let main = SessionKey::main("proj", format!("s{t}"));
        let entries = store.load(&main).await.unwrap().unwrap();
        assert_eq!(
            entries,
            (0..30).map(|i| rich_entry(t, i)).collect::<Vec<_>>()
        );
        let sub = store
            .load(&main.with_subpath("subagents/agent-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sub.len(), 30);
        assert_eq!(
            store.list_subkeys(&main).await.unwrap(),
            vec!["subagents/agent-1".to_owned()]
        );
        assert_summary_consistent(&store, &main).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_awkward_entries_round_trip() {
    let admin = require_pg!();
    let (store, _) = common::fresh_store(&admin, 4).await;
    let key = SessionKey::main("proj", "big");
    // 5 MiB of text (2-byte chars), plus nesting and numbers.
    let big = json!({
        "type": "assistant",
        "uuid": "big-1",
        "text": "é".repeat(5 << 19),
        "nested": {"a": [1, 2.5, null, true, -0.125, 12345678901234i64], "b": {}},
    });
    let nul = json!({"type": "user", "uuid": "nul-1", "text": "a\u{0}b", "k\u{0}": 1});
    let small = json!({"type": "x", "n": 1, "emoji": "🦀", "quote": "\"\\"});
    store
        .append(&key, vec![small.clone(), big.clone(), nul.clone()])
        .await
        .unwrap();
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded[0], small);
    assert!(loaded[1] == big, "5 MiB entry deep-equal");
    assert_eq!(loaded[2], nul, "\\u0000 survives (json fallback column)");
    // Idempotent for the NUL entry too.
    store.append(&key, vec![nul.clone()]).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap().unwrap().len(), 3);
    assert_summary_consistent(&store, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_idempotency_across_overlapping_retried_batches() {
    let admin = require_pg!();
    let (store, _) = common::fresh_store(&admin, 8).await;
    let store = Arc::new(store);
    let key = SessionKey::main("proj", "retry");
    let u = |n: usize| json!({"type": "user", "uuid": format!("u{n}"), "message": {"content": format!("p{n}")}});
    // A batch, then a retry that overlaps its tail, with a uuid repeated inside the batch.
    store.append(&key, (0..10).map(u).collect()).await.unwrap();
    let mut retry: Vec<Value> = (5..15).map(u).collect();
    retry.push(u(12));
    retry.push(json!({"type": "mode"}));
    store.append(&key, retry).await.unwrap();
    let loaded = store.load(&key).await.unwrap().unwrap();
    let mut expected: Vec<Value> = (0..15).map(u).collect();
    expected.push(json!({"type": "mode"}));
    assert_eq!(loaded, expected);

    // Eight writers retry overlapping windows concurrently.
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move {
                for start in (0..100).step_by(10) {
                    let lo = 15 + start + w;
                    store
                        .append(&key, (lo..lo + 20).map(u).collect())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let loaded = store.load(&key).await.unwrap().unwrap();
    let mut uuids: Vec<&str> = loaded.iter().filter_map(|v| v["uuid"].as_str()).collect();
    let total = uuids.len();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), total, "no uuid stored twice");
    // Windows [15 + start + w, +20) cover u15..u131 without gaps; u0..u14 came first.
    assert_eq!(total, 132, "u0..u131 all present");
    assert_summary_consistent(&store, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_twice_and_concurrently() {
    let admin = require_pg!();
    let (_, dsn) = common::fresh_schema(&admin).await;
    let opts = PoolOptions {
        min_size: 1,
        max_size: 2,
    };
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let dsn = dsn.clone();
            tokio::spawn(async move { PgSessionStore::connect(&dsn, opts).await })
        })
        .collect();
    let mut stores = Vec::new();
    for c in connects {
        stores.push(c.await.unwrap().expect("concurrent connect + migrate"));
    }
    let key = SessionKey::main("proj", "m");
    stores[0]
        .append(&key, vec![json!({"type": "x"})])
        .await
        .unwrap();
    // Once more, sequentially: a no-op that keeps the data.
    let again = PgSessionStore::connect(&dsn, opts).await.unwrap();
    assert_eq!(again.load(&key).await.unwrap().unwrap().len(), 1);
    let client = common::connect(&dsn).await;
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_terminated_connections() {
    let admin = require_pg!();
    // Own application_name, so only this store's connections get terminated.
    let (_, dsn) = common::fresh_schema(&admin).await;
    let app = format!("aw_kill_{}", std::process::id());
    let sep = if dsn.contains('?') { '&' } else { '?' };
    let store_dsn = if dsn.starts_with("postgres") {
        format!("{dsn}{sep}application_name={app}")
    } else {
        format!("{dsn} application_name={app}")
    };
    let store = PgSessionStore::connect(
        &store_dsn,
        PoolOptions {
            min_size: 3,
            max_size: 4,
        },
    )
    .await
    .unwrap();
    let main = SessionKey::main("proj", "drop");
    let sub = main.with_subpath("subagents/agent-1");
    let killer = common::connect(&dsn).await;
    let kill_all = || async {
        let n: i64 = killer
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    for round in 0..5 {
        // Warm several pooled connections, then kill every one of them.
        let warm: Vec<_> = (0..3).map(|_| store.load(&main)).collect();
        for r in futures_util::future::join_all(warm).await {
            r.unwrap();
        }
        assert!(kill_all().await >= 1);
        // The very next calls work.
        store
            .append(&main, vec![json!({"type": "x", "round": round})])
            .await
            .expect("append after the connections were terminated");
        kill_all().await;
        store
            .append(&sub, vec![json!({"type": "x", "round": round})])
            .await
            .expect("subkey append after termination");
        kill_all().await;
        assert_eq!(
            store.load(&main).await.unwrap().unwrap().len(),
            round + 1,
            "load after termination"
        );
        kill_all().await;
        assert_eq!(store.list_sessions("proj").await.unwrap().len(), 1);
    }
    assert_eq!(store.load(&sub).await.unwrap().unwrap().len(), 5);
    assert_summary_consistent(&store, &main).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_transaction_rolls_back_and_does_not_poison_the_pool() {
    let admin = require_pg!();
    let (store, dsn) = common::fresh_store(&admin, 1).await;
    // Only the append that waits on the lock runs with the short timeout; the others share the
    // same one-connection pool with the default timeout, so a slow reconnect on a loaded machine
    // is not mistaken for a poisoned pool.
    let impatient = store.clone().with_op_timeout(Duration::from_millis(300));
    let key = SessionKey::main("proj", "locked");
    store
        .append(&key, vec![json!({"type": "x", "n": 0})])
        .await
        .unwrap();
    // Another session holds the transcript row's lock.
    let mut locker = common::connect(&dsn).await;
    let tx = locker.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM agent_webkit_transcripts WHERE session_id = 'locked' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let err = impatient
        .append(&key, vec![json!({"type": "x", "n": 1})])
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Timeout);
    tx.rollback().await.unwrap();
    // The single pooled connection was discarded mid-transaction; the next call gets a clean
    // one, and the timed-out batch never committed.
    store
        .append(&key, vec![json!({"type": "x", "n": 2})])
        .await
        .unwrap();
    let ns: Vec<i64> = store
        .load(&key)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![0, 2]);
    assert_summary_consistent(&store, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_keys_are_refused() {
    let admin = require_pg!();
    let (store, _) = common::fresh_store(&admin, 2).await;
    let empty_sub = SessionKey::main("p", "s").with_subpath("");
    assert!(matches!(
        store.append(&empty_sub, vec![]).await,
        Err(StoreError::InvalidKey(_))
    ));
    let nul = SessionKey::main("p\u{0}", "s");
    assert!(matches!(
        store.load(&nul).await,
        Err(StoreError::InvalidKey(_))
    ));
    // An empty append creates the key (as the reference store does).
    let k = SessionKey::main("p", "empty");
    store.append(&k, vec![]).await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), Some(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_and_load_latency_are_measured() {
    let admin = require_pg!();
    let (store, _) = common::fresh_store(&admin, 4).await;
    let entry = |i: usize| {
        json!({
            "type": "assistant",
            "uuid": format!("00000000-0000-4000-8000-{i:012}"),
            "timestamp": "2024-05-01T10:00:00.000Z",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "x".repeat(400)}]},
        })
    };
    for (batch, total) in [(1usize, 500usize), (10, 2000), (100, 5000)] {
        for (label, key) in [
            ("main", SessionKey::main("bench", format!("b{batch}"))),
            (
                "subkey",
                SessionKey::main("bench", format!("b{batch}")).with_subpath("subagents/agent-1"),
            ),
        ] {
            let started = Instant::now();
            for chunk in (0..total).collect::<Vec<_>>().chunks(batch) {
                store
                    .append(&key, chunk.iter().map(|i| entry(*i)).collect())
                    .await
                    .unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            common::report(&format!(
                "PG-BENCH append {label:6} batch={batch:3}: {total} entries in {:.3}s = {:.0} entries/s ({:.2} ms/call)",
                secs,
                total as f64 / secs,
                secs * 1000.0 / (total / batch) as f64
            ));
            assert_eq!(store.load(&key).await.unwrap().unwrap().len(), total);
        }
    }
    let key = SessionKey::main("bench", "load1000");
    for chunk in (0..1000).collect::<Vec<_>>().chunks(100) {
        store
            .append(&key, chunk.iter().map(|i| entry(*i)).collect())
            .await
            .unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let loaded = store.load(&key).await.unwrap().unwrap();
        times.push(started.elapsed());
        assert_eq!(loaded.len(), 1000);
    }
    times.sort();
    common::report(&format!(
        "PG-BENCH load 1000 entries (~0.5 KiB each): median {:.2} ms, min {:.2} ms, max {:.2} ms",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    ));
}
