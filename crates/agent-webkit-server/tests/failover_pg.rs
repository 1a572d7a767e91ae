//! Failover across processes: two server binaries (one axum, one actix) share a real
//! PostgreSQL (`--database-url`); the fake `claude` runs behind both. Host A is SIGKILLed; the
//! client reconnects to B with its `Last-Event-ID` and sees exactly the events it missed, then
//! the conversation continues on B. Needs `AGENT_WEBKIT_PG_DSN` (exported by `cargo xtask
//! test`); skips loudly otherwise, and fails in CI when xtask did not report why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{ServerProcess, SseStream};
use common::{dsn_or_skip, fresh_database, seqs};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(20);

async fn host(framework: &str, db: &str, dir: &TempDir, name: &str) -> ServerProcess {
    host_with(framework, db, dir, name, &[]).await
}

async fn host_with(
    framework: &str,
    db: &str,
    dir: &TempDir,
    name: &str,
    extra: &[&str],
) -> ServerProcess {
    let fake = fake_claude_path();
    let config = format!("CLAUDE_CONFIG_DIR={}", dir.path().join(name).display());
    let work = dir.path().join("work").display().to_string();
    let args: Vec<&str> = [
        "--no-auth",
        "--framework",
        framework,
        "--agent",
        "claude",
        "--claude-path",
        fake.to_str().unwrap(),
        "--claude-env",
        &config,
        "--allowed-root",
        &work,
        "--database-url",
        db,
        "--host-id",
        name,
        "--lease",
        "1",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect::<Vec<_>>();
    ServerProcess::spawn(BIN, &args).await.unwrap()
}

#[tokio::test]
async fn an_axum_host_killed_fails_over_to_an_actix_host() {
    killed_host_fails_over("axum", "actix").await;
}

#[tokio::test]
async fn an_actix_host_killed_fails_over_to_an_axum_host() {
    killed_host_fails_over("actix", "axum").await;
}

async fn killed_host_fails_over(first: &str, second: &str) {
    let Some(admin) = dsn_or_skip("failover_pg") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let dir = TempDir::new("failover").unwrap();
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    let a = host(first, &db, &dir, "host-a").await;
    let b = host(second, &db, &dir, "host-b").await;
    let (ca, cb) = (a.client(None), b.client(None));
    let work = dir.path().join("work").display().to_string();

    let id = ca.create(&json!({"cwd": work})).await.unwrap();
    let mut stream = ca.stream(&id, None).await.unwrap();
    let say = |c: &agent_webkit_testkit::Client, text: &str| {
        let (c, text, id) = (c.clone(), text.to_owned(), id.clone());
        async move {
            let r = c
                .input(&id, &json!({"type": "user_message", "content": text}))
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
    };
    say(&ca, "remember the word kiwi").await;
    let seen = stream.until("result", T).await.unwrap();
    let last = *seqs(&seen).last().unwrap();
    drop(stream);
    // A turn this client never saw, then A dies (SIGKILL: no hand-off, no lease release).
    say(&ca, "what was the word?").await;
    let mut watcher = ca.stream(&id, Some(&last.to_string())).await.unwrap();
    let unseen = watcher.until("result", T).await.unwrap();
    agent_webkit_testkit::kill_and_wait(a.pid().unwrap(), T)
        .await
        .unwrap();

    // The client reconnects to B with its cursor; B answers 503 + Retry-After until A's lease
    // expires, then takes the session over.
    let reconnect = Instant::now();
    let mut resumed = loop {
        let r = cb.stream_raw(&id, Some(&last.to_string())).await.unwrap();
        match r.status().as_u16() {
            200 => break SseStream::new(r),
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                assert!(reconnect.elapsed() < T, "B never took over");
                // Bounded poll: lease expiry is not an event we can await.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    };
    let first = resumed.next_event_within(T).await.unwrap().unwrap();
    let failover = reconnect.elapsed();
    let mut replay = vec![first];
    while replay.len() < unseen.len() {
        replay.push(resumed.next_event_within(T).await.unwrap().unwrap());
    }
    eprintln!("FAILOVER (two processes, lease 1 s): reconnect → first replayed event {failover:?}");
    assert_eq!(
        replay
            .iter()
            .map(|f| (f.id, f.event.clone(), f.data.clone()))
            .collect::<Vec<_>>(),
        unseen
            .iter()
            .map(|f| (f.id, f.event.clone(), f.data.clone()))
            .collect::<Vec<_>>(),
        "exactly the missed events, no duplicates"
    );

    // The conversation continues on B: its CLI was resumed from the mirrored transcript.
    say(&cb, "and now?").await;
    let after = resumed.until("result", T).await.unwrap();
    assert_eq!(after[0].id, Some(unseen.last().unwrap().id.unwrap() + 1));
    let reply: String = after
        .iter()
        .filter(|f| f.event == "message_complete")
        .map(|f| f.json()["message"]["content"][0]["text"].to_string())
        .collect();
    assert!(reply.contains("and now?"), "{reply}");
    assert!(
        reply.contains("resumed"),
        "B's CLI resumed the conversation: {reply}"
    );

    // DELETE on B: gone everywhere.
    assert_eq!(cb.delete(&id).await.unwrap(), 204);
    let end = resumed.collect_to_end(T).await.unwrap();
    assert_eq!(end.last().unwrap().event, "done");
    let r = cb.stream_raw(&id, None).await.unwrap();
    assert_eq!(r.status(), 404);
}

/// A hibernated session keeps its owner (another host answers 503 while the owner lives), and
/// after the owner dies it is taken over and resumed like a live one.
#[tokio::test]
async fn a_hibernated_session_keeps_its_owner_and_is_taken_over_after_a_crash() {
    let Some(admin) = dsn_or_skip("failover_pg") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let dir = TempDir::new("failover-hibernated").unwrap();
    for sub in ["work", "records"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let records = format!(
        "FAKE_CLAUDE_RECORD_DIR={}",
        dir.path().join("records").display()
    );
    let extra = ["--hibernate-after", "0.2", "--claude-env", records.as_str()];
    let a = host_with("axum", &db, &dir, "host-a", &extra).await;
    let b = host_with("actix", &db, &dir, "host-b", &extra).await;
    let (ca, cb) = (a.client(None), b.client(None));
    let work = dir.path().join("work").display().to_string();
    let id = ca.create(&json!({"cwd": work})).await.unwrap();
    let mut stream = ca.stream(&id, None).await.unwrap();
    let r = ca
        .input(
            &id,
            &json!({"type": "user_message", "content": "remember the word fig"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let seen = stream.until("result", T).await.unwrap();
    let last = *seqs(&seen).last().unwrap();

    // A's CLI is stopped: the session hibernates on A.
    let cli_pids = || -> Vec<u64> {
        std::fs::read_dir(dir.path().join("records"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                v["pid"].as_u64()
            })
            .collect()
    };
    let started = Instant::now();
    while cli_pids()
        .iter()
        .any(|p| agent_webkit_testkit::process_alive(*p))
    {
        assert!(started.elapsed() < T, "A's CLI was never stopped");
        // Bounded poll: a process exiting (not our child) is no event we can await.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Hibernated, it is still A's: B refuses to take it over while A renews the lease.
    let held = cb.stream_raw(&id, Some(&last.to_string())).await.unwrap();
    assert_eq!(
        held.status(),
        503,
        "B took over a session its live owner hibernated"
    );
    drop(stream);

    agent_webkit_testkit::kill_and_wait(a.pid().unwrap(), T)
        .await
        .unwrap();
    let reconnect = Instant::now();
    let mut resumed = loop {
        let r = cb.stream_raw(&id, Some(&last.to_string())).await.unwrap();
        match r.status().as_u16() {
            200 => break SseStream::new(r),
            503 => {
                assert!(reconnect.elapsed() < T, "B never took over");
                // Bounded poll: lease expiry is not an event we can await.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    };
    let r = cb
        .input(
            &id,
            &json!({"type": "user_message", "content": "what was the word?"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let after = resumed.until("result", T).await.unwrap();
    let reply: String = after
        .iter()
        .filter(|f| f.event == "message_complete")
        .map(|f| f.json()["message"]["content"][0]["text"].to_string())
        .collect();
    assert!(
        reply.contains("resumed"),
        "B resumed the conversation: {reply}"
    );
    let ids = seqs(&after);
    assert!(ids.first().is_some_and(|first| *first > last), "{ids:?}");
    assert_eq!(cb.delete(&id).await.unwrap(), 204);
}
