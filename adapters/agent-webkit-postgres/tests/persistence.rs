//! `PgSessionPersistence`: the core's persistence contracts, racing acquirers, lease expiry on
//! the database clock, appends racing a delete, pruning, connection loss, and an append /
//! load measurement (printed, never asserted).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_core::agent::SessionConfig;
use agent_webkit_core::event_log::StoredEvent;
use agent_webkit_core::persist::{
    run_persistence_conformance, Lease, SessionPersistence, SessionRecord,
};
use agent_webkit_postgres::{PgSessionPersistence, PgSessionStore, PoolOptions};
use tokio::sync::Barrier;

async fn fresh(admin: &str, max_size: usize) -> (PgSessionPersistence, String) {
    let (_, dsn) = common::fresh_schema(admin).await;
    let persistence = PgSessionPersistence::connect(
        &dsn,
        PoolOptions {
            min_size: 1,
            max_size,
        },
    )
    .await
    .expect("connect persistence");
    (persistence, dsn)
}

fn record(id: &str) -> SessionRecord {
    SessionRecord::new(
        id,
        &format!("agent-{id}"),
        &SessionConfig {
            model: Some("claude-x".into()),
            permission_mode: None,
            cwd: Some("/work/ü ☃".into()),
            tool_input_deltas: None,
            owner: None,
            ..SessionConfig::default()
        },
    )
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

/// Epoch ms on the database's clock.
async fn db_now_ms(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn count_events(client: &tokio_postgres::Client, id: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM agent_webkit_session_events WHERE session_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_persistence_passes_every_contract() {
    let admin = require_pg!();
    let (persistence, _) = fresh(&admin, 4).await;
    assert_eq!(
        run_persistence_conformance(&persistence, "conf")
            .await
            .unwrap(),
        7
    );
    // Again, through a store's shared pool (same schema, ids made unique by the prefix).
    let (store, _) = common::fresh_store(&admin, 4).await;
    let shared = store.persistence();
    assert_eq!(
        run_persistence_conformance(&shared, "shared")
            .await
            .unwrap(),
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_events_round_trip_exactly() {
    let admin = require_pg!();
    let (p, _) = fresh(&admin, 2).await;
    let rec = record("rt");
    p.create(&rec, "h1", Duration::from_secs(30)).await.unwrap();
    let events: Vec<StoredEvent> = (1..=20).map(ev).collect();
    p.append_events("rt", &events).await.unwrap();
    let (loaded, tail) = p.load("rt", 1000).await.unwrap().unwrap();
    assert_eq!(loaded, rec);
    assert_eq!(tail, events);
    let (_, none) = p.load("rt", 0).await.unwrap().unwrap();
    assert!(none.is_empty());
    assert!(p.load("nope", 10).await.unwrap().is_none());
    assert!(p.load("nul\0id", 10).await.unwrap().is_none());
    assert_eq!(
        p.acquire("nope", "h1", Duration::from_secs(1))
            .await
            .unwrap(),
        Lease::Gone
    );
    // Renew reports unknown ids, keeps order and duplicates of the input.
    let lost = p
        .renew(
            "h1",
            &["nope".into(), "rt".into(), "nope".into()],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(lost, vec!["nope".to_owned(), "nope".to_owned()]);
    assert!(p
        .renew("h1", &[], Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_acquirers_exactly_one_wins() {
    let admin = require_pg!();
    let (p, dsn) = fresh(&admin, 8).await;
    let p = Arc::new(p);
    let admin_client = common::connect(&dsn).await;
    let lease = Duration::from_secs(30);
    for round in 0..25 {
        let id = format!("race-{round}");
        // Alternate the starting state: released, and expired (a dead host's lease).
        if round % 2 == 0 {
            p.create(&record(&id), "h0", lease).await.unwrap();
            p.release(&id, "h0").await.unwrap();
        } else {
            p.create(&record(&id), "h0", Duration::from_millis(1))
                .await
                .unwrap();
            admin_client
                .execute(
                    "UPDATE agent_webkit_sessions
                     SET lease_expires_at = clock_timestamp() - interval '1 second'
                     WHERE session_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
        }
        let barrier = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (1..=8)
            .map(|h| {
                let (p, barrier, id) = (Arc::clone(&p), Arc::clone(&barrier), id.clone());
                tokio::spawn(async move {
                    let owner = format!("h{h}");
                    barrier.wait().await;
                    (owner.clone(), p.acquire(&id, &owner, lease).await.unwrap())
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let winners: Vec<&String> = outcomes
            .iter()
            .filter(|(_, l)| *l == Lease::Acquired)
            .map(|(o, _)| o)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let winner = winners[0];
        for (owner, outcome) in &outcomes {
            if owner != winner {
                assert!(
                    matches!(outcome, Lease::HeldBy { owner: holder, .. } if holder == winner),
                    "round {round}: {owner} got {outcome:?}, winner {winner}"
                );
            }
        }
        let stored: Option<String> = admin_client
            .query_one(
                "SELECT owner FROM agent_webkit_sessions WHERE session_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored.as_ref(), Some(winner));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_follows_the_database_clock() {
    let admin = require_pg!();
    let (p, dsn) = fresh(&admin, 2).await;
    let client = common::connect(&dsn).await;
    let lease = Duration::from_millis(400);
    let before = db_now_ms(&client).await;
    p.create(&record("exp"), "h1", lease).await.unwrap();
    let after = db_now_ms(&client).await;
    let Lease::HeldBy {
        owner,
        expires_at_ms,
    } = p
        .acquire("exp", "h2", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("h1's fresh lease must be held");
    };
    assert_eq!(owner, "h1");
    // Stamped by the database: its clock at create time + the lease.
    assert!(
        expires_at_ms >= before + 400 && expires_at_ms <= after + 400,
        "expires {expires_at_ms} not within [{before}+400, {after}+400]"
    );
    // Bounded poll: h2 gets it once the database's clock passes the expiry, never before.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "lease never expired");
        let checked_before = db_now_ms(&client).await;
        match p
            .acquire("exp", "h2", Duration::from_secs(30))
            .await
            .unwrap()
        {
            Lease::Acquired => {
                let now = db_now_ms(&client).await;
                assert!(
                    now >= expires_at_ms,
                    "taken over at {now} < {expires_at_ms}"
                );
                break;
            }
            Lease::HeldBy {
                owner,
                expires_at_ms: e,
            } => {
                assert_eq!((owner.as_str(), e), ("h1", expires_at_ms));
                assert!(
                    checked_before < expires_at_ms,
                    "still held at db time {checked_before} >= expiry {expires_at_ms}"
                );
            }
            Lease::Gone => panic!("gone"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The old owner's renewal now reports the loss; the new owner's succeeds.
    let lost = p.renew("h1", &["exp".into()], lease).await.unwrap();
    assert_eq!(lost, vec!["exp".to_owned()]);
    assert!(p
        .renew("h2", &["exp".into()], lease)
        .await
        .unwrap()
        .is_empty());
    // Renewal pushes the expiry forward on the database clock.
    let renewed_at = db_now_ms(&client).await;
    p.renew("h2", &["exp".into()], Duration::from_secs(60))
        .await
        .unwrap();
    let Lease::HeldBy { expires_at_ms, .. } = p
        .acquire("exp", "h3", Duration::from_secs(1))
        .await
        .unwrap()
    else {
        panic!("h2 holds it");
    };
    assert!(expires_at_ms >= renewed_at + 60_000 && expires_at_ms < renewed_at + 70_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_racing_a_delete_never_resurrect() {
    let admin = require_pg!();
    let (p, dsn) = fresh(&admin, 6).await;
    let p = Arc::new(p);
    let client = common::connect(&dsn).await;
    for round in 0..20u64 {
        let id = format!("del-{round}");
        p.create(&record(&id), "h1", Duration::from_secs(30))
            .await
            .unwrap();
        let appenders: Vec<_> = (0..3)
            .map(|w| {
                let (p, id) = (Arc::clone(&p), id.clone());
                tokio::spawn(async move {
                    for b in 0..30u64 {
                        let base = (w * 1000 + b * 10) + 1;
                        let batch: Vec<StoredEvent> = (base..base + 10).map(ev).collect();
                        p.append_events(&id, &batch).await.unwrap();
                    }
                })
            })
            .collect();
        // Delete somewhere in the middle of the appends.
        tokio::time::sleep(Duration::from_millis((round % 5) * 3)).await;
        p.delete(&id).await.unwrap();
        for task in appenders {
            task.await.unwrap();
        }
        assert!(p.load(&id, 10).await.unwrap().is_none(), "round {round}");
        assert_eq!(count_events(&client, &id).await, 0, "round {round}");
        assert_eq!(
            p.acquire(&id, "h2", Duration::from_secs(1)).await.unwrap(),
            Lease::Gone
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_the_newest_events() {
    let admin = require_pg!();
    let (p, dsn) = fresh(&admin, 2).await;
    let p = p.with_max_events(100);
    let client = common::connect(&dsn).await;
    p.create(&record("prune"), "h1", Duration::from_secs(30))
        .await
        .unwrap();
    let all: Vec<StoredEvent> = (1..=250).map(ev).collect();
    for chunk in all.chunks(30) {
        p.append_events("prune", chunk).await.unwrap();
        assert!(count_events(&client, "prune").await <= 100);
    }
    let (_, tail) = p.load("prune", 1000).await.unwrap().unwrap();
    assert_eq!(seqs(&tail), (151..=250).collect::<Vec<_>>());
    assert_eq!(tail, all[150..]);
    // A late retry of an old batch does not bring pruned events back.
    p.append_events("prune", &all[..30]).await.unwrap();
    assert_eq!(count_events(&client, "prune").await, 100);
    // One batch larger than the bound keeps only its newest events.
    let big: Vec<StoredEvent> = (251..=600).map(ev).collect();
    p.append_events("prune", &big).await.unwrap();
    let (_, tail) = p.load("prune", 1000).await.unwrap().unwrap();
    assert_eq!(seqs(&tail), (501..=600).collect::<Vec<_>>());
    assert_eq!(count_events(&client, "prune").await, 100);
    let (_, last3) = p.load("prune", 3).await.unwrap().unwrap();
    assert_eq!(seqs(&last3), vec![598, 599, 600]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_terminated_connections() {
    let admin = require_pg!();
    let (_, dsn) = common::fresh_schema(&admin).await;
    let app = format!("aw_pkill_{}", std::process::id());
    let sep = if dsn.contains('?') { '&' } else { '?' };
    let own_dsn = if dsn.starts_with("postgres") {
        format!("{dsn}{sep}application_name={app}")
    } else {
        format!("{dsn} application_name={app}")
    };
    let store = PgSessionStore::connect(
        &own_dsn,
        PoolOptions {
            min_size: 3,
            max_size: 4,
        },
    )
    .await
    .unwrap();
    let p = store.persistence();
    let killer = common::connect(&dsn).await;
    let kill_all = || async {
        killer
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let lease = Duration::from_secs(30);
    for round in 0..5u64 {
        let id = format!("kill-{round}");
        kill_all().await;
        p.create(&record(&id), "h1", lease)
            .await
            .expect("create after termination");
        kill_all().await;
        p.append_events(&id, &[ev(1), ev(2)])
            .await
            .expect("append after termination");
        kill_all().await;
        assert!(matches!(
            p.acquire(&id, "h2", lease).await.expect("acquire"),
            Lease::HeldBy { .. }
        ));
        kill_all().await;
        assert!(p
            .renew("h1", std::slice::from_ref(&id), lease)
            .await
            .unwrap()
            .is_empty());
        kill_all().await;
        let (_, events) = p.load(&id, 10).await.expect("load").unwrap();
        assert_eq!(seqs(&events), vec![1, 2]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_load_timing() {
    let admin = require_pg!();
    let (p, _) = fresh(&admin, 2).await;
    // Realistic wire events: ~200 bytes of data each.
    let event = |seq: u64| StoredEvent {
        seq,
        event: "message_delta".into(),
        data: format!(
            r#"{{"type":"message_delta","message_id":"msg_01","delta":{{"type":"text_delta","text":"{}"}},"seq":{seq}}}"#,
            "x".repeat(120)
        ),
    };
    let mut runs = Vec::new();
    for run in 0..5 {
        let id = format!("bench-{run}");
        p.create(&record(&id), "h1", Duration::from_secs(60))
            .await
            .unwrap();
        let all: Vec<StoredEvent> = (1..=1000).map(event).collect();
        let started = Instant::now();
        for chunk in all.chunks(50) {
            p.append_events(&id, chunk).await.unwrap();
        }
        runs.push(started.elapsed());
    }
    runs.sort();
    common::report(&format!(
        "PG-BENCH persistence append 1000 events in batches of 50: median {:.1} ms ({:.2} ms/batch), min {:.1} ms, max {:.1} ms",
        runs[runs.len() / 2].as_secs_f64() * 1000.0,
        runs[runs.len() / 2].as_secs_f64() * 1000.0 / 20.0,
        runs[0].as_secs_f64() * 1000.0,
        runs[runs.len() - 1].as_secs_f64() * 1000.0
    ));
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let (_, events) = p.load("bench-0", 1000).await.unwrap().unwrap();
        times.push(started.elapsed());
        assert_eq!(events.len(), 1000);
    }
    times.sort();
    common::report(&format!(
        "PG-BENCH persistence load tail 1000 (~200 B each): median {:.2} ms, min {:.2} ms, max {:.2} ms",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    ));
}
