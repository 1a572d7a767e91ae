//! PostgreSQL restarted in the middle of a turn: one server with `--database-url` and the fake
//! `claude` runs a slow turn (`[[slow: 60]]`, 50 ms per delta) and, while it streams, the
//! throwaway PostgreSQL is restarted (`pg_ctl restart -m fast`, which kills every connection).
//! The event writer must ride it out within its retry budget (30 s): the turn ends with
//! `result`, seqs are dense (no gap, no duplicate), no `persistence_failed` error, and the
//! event log in Postgres holds every event afterwards. Needs `AGENT_WEBKIT_PG_DSN` and
//! `AGENT_WEBKIT_PG_RESTART` (both exported by `cargo xtask test` / `with-postgres`); skips
//! loudly otherwise, and fails in CI when xtask did not report why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use agent_webkit_core::persist::SessionPersistence as _;
use agent_webkit_postgres::{PgSessionPersistence, PoolOptions};
use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{ServerProcess, SseFrame};
use common::{dsn_or_skip, fresh_database, seqs, skip_loudly, SKIP_ENV};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(40);
const RESTART_ENV: &str = "AGENT_WEBKIT_PG_RESTART";

/// The restart command line, or `None` after a loud skip (a failure in CI unless xtask
/// reported why PostgreSQL is unavailable).
fn restart_or_skip(test: &str) -> Option<String> {
    if let Some(cmd) = std::env::var(RESTART_ENV).ok().filter(|v| !v.is_empty()) {
        return Some(cmd);
    }
    let reported = std::env::var_os(SKIP_ENV).is_some_and(|v| !v.is_empty());
    if std::env::var_os("CI").is_some() && !reported {
        panic!("{RESTART_ENV} is not set in CI (run the tests through `cargo xtask test`)");
    }
    skip_loudly(
        test,
        "postgres restart",
        &format!(
            "{RESTART_ENV} is not set (only xtask's throwaway PostgreSQL can be restarted; \
             run through `cargo xtask with-postgres`)"
        ),
    );
    None
}

fn wire(frames: &[SseFrame]) -> Vec<(u64, String, String)> {
    frames
        .iter()
        .map(|f| (f.id.unwrap(), f.event.clone(), f.data.clone()))
        .collect()
}

#[tokio::test]
async fn a_postgres_restart_mid_turn_loses_no_event() {
    let Some(admin) = dsn_or_skip("postgres_outage") else {
        return;
    };
    let Some(restart) = restart_or_skip("postgres_outage") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let dir = TempDir::new("pg-outage").unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let fake = fake_claude_path();
    let config = format!("CLAUDE_CONFIG_DIR={}", dir.path().join("config").display());
    let server = ServerProcess::spawn(
        BIN,
        &[
            "--no-auth",
            "--agent",
            "claude",
            "--claude-path",
            fake.to_str().unwrap(),
            "--claude-env",
            &config,
            "--allowed-root",
            work.to_str().unwrap(),
            "--database-url",
            &db,
            "--host-id",
            "solo",
        ],
    )
    .await
    .unwrap();
    let client = server.client(None);
    let id = client
        .create(&json!({"cwd": work.to_str().unwrap()}))
        .await
        .unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let r = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "[[slow: 60]]"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // Let the turn get going, then restart PostgreSQL while it streams.
    let turn_started = Instant::now();
    let mut frames = Vec::new();
    while frames
        .iter()
        .filter(|f: &&SseFrame| f.event == "message_delta")
        .count()
        < 5
    {
        let frame = stream.next_event_within(T).await.unwrap().unwrap();
        assert_ne!(frame.event, "result", "the turn ended before the restart");
        frames.push(frame);
    }
    let restart_at = turn_started.elapsed();
    let restarting = tokio::spawn(async move {
        let started = Instant::now();
        let out = tokio::process::Command::new("sh")
            .args(["-c", &restart])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        (started.elapsed(), out)
    });

    // Keep reading to `result`, timing every event (delivery waits for the durable write).
    let mut arrivals = vec![turn_started.elapsed(); frames.len()];
    loop {
        let frame = stream
            .next_event_within(T)
            .await
            .unwrap()
            .expect("the stream ended before result");
        arrivals.push(turn_started.elapsed());
        let end = frame.event == "result";
        frames.push(frame);
        if end {
            break;
        }
    }
    let turn_took = turn_started.elapsed();
    let (restart_took, out) = restarting.await.unwrap();
    assert!(
        out.status.success(),
        "restart failed ({}): {} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        restart_at + restart_took < turn_took,
        "the restart ({restart_at:?} + {restart_took:?}) ended before the turn ({turn_took:?})"
    );
    let max_gap = arrivals
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or_default();
    eprintln!(
        "PG-OUTAGE: restart at {restart_at:?} took {restart_took:?}; turn → result {turn_took:?}; \
         longest pause between events {max_gap:?}; {} events",
        frames.len()
    );

    let names: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    let errors: Vec<&str> = frames
        .iter()
        .filter(|f| f.event == "error")
        .map(|f| f.raw.as_str())
        .collect();
    assert!(errors.is_empty(), "no error event: {errors:?}");
    assert_eq!(frames[0].event, "session_ready", "{names:?}");
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    let deltas = frames.iter().filter(|f| f.event == "message_delta").count();
    assert!(deltas >= 60, "every delta arrived ({deltas}): {names:?}");
    let s = seqs(&frames);
    assert_eq!(s.len(), frames.len(), "every event has an id");
    assert_eq!(
        s,
        (1..=s.len() as u64).collect::<Vec<_>>(),
        "dense seqs from 1, no gap or duplicate"
    );

    // The session still works after the outage.
    let r = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "after the outage"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Up to the turn's last event: the `usage` that follows its `result` (the fake CLI
    // reports usage per model).
    let mut next = stream.until("result", T).await.unwrap();
    next.extend(stream.until("usage", T).await.unwrap());
    assert!(
        next.iter().all(|f| f.event != "error"),
        "{:?}",
        next.iter().map(|f| &f.raw).collect::<Vec<_>>()
    );
    assert_eq!(next[0].id, Some(s.len() as u64 + 1));
    frames.extend(next);

    // Everything the client saw is in Postgres, byte for byte (delivery waits for the durable
    // write, so no polling is needed).
    let persistence = PgSessionPersistence::connect(&db, PoolOptions::default())
        .await
        .unwrap();
    let (record, stored) = persistence.load(&id, 100_000).await.unwrap().unwrap();
    assert_eq!(record.session_id, id);
    let stored: Vec<(u64, String, String)> = stored
        .into_iter()
        .map(|e| (e.seq, e.event, e.data))
        .collect();
    assert_eq!(stored, wire(&frames), "the stored log equals the stream");

    assert_eq!(client.delete(&id).await.unwrap(), 204);
}
