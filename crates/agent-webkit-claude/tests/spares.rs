//! Warm spares against the fake `claude`: a session takes an `initialize`d CLI, gets its model
//! applied, is mirrored and resumed under its own id; spares are never shared, dead ones are
//! never handed out, and they are live processes until released or shut down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_claude::{AgentClientFactory, ClaudeAgentFactory, ClaudeOptions};
use agent_webkit_core::agent::{AgentContext, AgentMessage, SessionConfig};
use agent_webkit_core::models::UserContent;
use agent_webkit_core::registry::{RegistryConfig, SessionRegistry};
use agent_webkit_core::session::{Session, SessionSubscriber};
use agent_webkit_core::store::{InMemorySessionStore, SessionKey, SessionStore};
use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::process_alive as alive;
use agent_webkit_testkit::real_cli::TempDir;
use futures_util::StreamExt;
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

struct Harness {
    registry: SessionRegistry,
    factory: ClaudeAgentFactory,
    store: Arc<InMemorySessionStore>,
    dir: TempDir,
}

impl Harness {
    fn new(spares: usize) -> Self {
        let dir = TempDir::new("spares").unwrap();
        for sub in ["records", "config", "work", "other"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let options = ClaudeOptions {
            cli_path: Some(fake_claude_path()),
            cwd: Some(dir.path().join("work")),
            env: vec![
                (
                    "FAKE_CLAUDE_RECORD_DIR".into(),
                    dir.path().join("records").display().to_string(),
                ),
                (
                    "CLAUDE_CONFIG_DIR".into(),
                    dir.path().join("config").display().to_string(),
                ),
            ],
            ..ClaudeOptions::default()
        };
        let factory = ClaudeAgentFactory::new(options).with_warm_spares(spares);
        let store = Arc::new(InMemorySessionStore::new());
        let registry = SessionRegistry::with_config(
            Arc::new(factory.clone()),
            Some(store.clone() as Arc<dyn SessionStore>),
            RegistryConfig::default(),
        );
        Self {
            registry,
            factory,
            store,
            dir,
        }
    }

    async fn ready(&self, n: usize) {
        tokio::time::timeout(T, self.factory.warm_spares_ready(n))
            .await
            .expect("spares not ready in time");
    }

    async fn session(&self, config: SessionConfig) -> Arc<Session> {
        self.registry.create(config).await.unwrap()
    }

    /// The fake's record (`argv`, `env`, `pid`) of every process started so far.
    fn records(&self) -> Vec<Value> {
        std::fs::read_dir(self.dir.path().join("records"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect()
    }

    /// Whether a CLI was started for this session itself (`--session-id=<its id>`).
    fn started_cold(&self, session_id: &str) -> bool {
        let flag = format!("--session-id={session_id}");
        self.records()
            .iter()
            .any(|r| r["argv"].as_array().unwrap().iter().any(|a| *a == *flag))
    }

    fn key(&self, session_id: &str) -> SessionKey {
        let work = self.dir.path().join("work");
        SessionKey::main(
            agent_webkit_claude::project_key::project_key_for_directory(&work).unwrap(),
            session_id,
        )
    }
}

fn text(s: &str) -> UserContent {
    UserContent::Text(s.into())
}

/// A subscriber reading one session's events in order.
struct Reader {
    sub: SessionSubscriber,
}

impl Reader {
    fn new(session: &Arc<Session>) -> Self {
        Self {
            sub: session.subscribe(None).unwrap(),
        }
    }

    /// Events up to and including the next `result`.
    async fn turn(&mut self, session: &Arc<Session>, prompt: &str) -> Vec<(String, Value)> {
        session.submit_user_message(text(prompt)).unwrap();
        let mut out = Vec::new();
        loop {
            let batch = tokio::time::timeout(T, self.sub.next_batch(1))
                .await
                .expect("timed out waiting for an event")
                .unwrap()
                .expect("log ended");
            let ev = &batch[0];
            let name = ev.kind().as_str().to_owned();
            let done = name == "result";
            out.push((name, ev.data()));
            if done {
                return out;
            }
        }
    }
}

fn reply(events: &[(String, Value)]) -> String {
    let (_, result) = events.last().unwrap();
    assert_eq!(result["subtype"], "success", "{result}");
    result["result"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_session_takes_a_spare_and_gets_its_model_applied() {
    let h = Harness::new(1);
    h.ready(1).await;
    assert_eq!(h.factory.live_processes(), 1, "a spare is a live process");
    let spare_pid = h.factory.warm_spare_pids()[0];

    let started = Instant::now();
    let session = h
        .session(SessionConfig {
            model: Some("claude-from-create".into()),
            ..SessionConfig::default()
        })
        .await;
    let warm = started.elapsed();
    assert!(!h.started_cold(session.id()), "the session took the spare");
    assert!(!h.factory.warm_spare_pids().contains(&spare_pid));

    let mut r = Reader::new(&session);
    let events = r.turn(&session, "hello").await;
    assert_eq!(reply(&events), "echo: hello");
    let (_, result) = events.last().unwrap();
    assert_eq!(result["session_id"], session.id(), "as if started for it");
    let complete = events
        .iter()
        .find(|(n, _)| n == "message_complete")
        .expect("message_complete");
    assert_eq!(
        complete.1["message"]["model"], "claude-from-create",
        "{}",
        complete.1
    );

    // Replenished in the background, never beyond the target.
    h.ready(1).await;
    assert_eq!(h.factory.warm_spares(), 1);
    assert_eq!(h.factory.live_processes(), 2);

    // Without a spare (another working directory), the CLI starts for the session.
    let started = Instant::now();
    let cold = h
        .session(SessionConfig {
            cwd: Some(h.dir.path().join("other").canonicalize().unwrap()),
            ..SessionConfig::default()
        })
        .await;
    let cold_ms = started.elapsed();
    assert!(h.started_cold(cold.id()));
    assert_eq!(h.factory.warm_spares(), 1, "the spare was left alone");
    eprintln!("fake CLI: create with a spare {warm:?}, without {cold_ms:?}");

    session.close().await;
    cold.close().await;
    h.factory.shutdown_spares().await;
    assert_eq!(h.factory.live_processes(), 0);
}

#[tokio::test]
async fn a_spare_session_is_mirrored_under_its_own_id_and_resumes() {
    let h = Harness::new(1);
    h.ready(1).await;
    let session = h.session(SessionConfig::default()).await;
    assert!(!h.started_cold(session.id()));
    let mut r = Reader::new(&session);
    r.turn(&session, "one").await;
    r.turn(&session, "two").await;
    let id = session.id().to_owned();
    session.close().await;

    let stored = h.store.load(&h.key(&id)).await.unwrap().expect("mirrored");
    assert!(stored
        .iter()
        .filter(|e| e.get("sessionId").is_some())
        .all(|e| e["sessionId"] == id.as_str()));
    let users = stored.iter().filter(|e| e["type"] == "user").count();
    assert_eq!(users, 2, "{stored:?}");

    // Resume as failover does: the agent session id recorded for a session is its own id.
    let ctx = AgentContext {
        session_id: id.clone(),
        config: SessionConfig::default(),
        permissions: agent_webkit_core::permission::PermissionHandle::detached(
            Arc::new(agent_webkit_core::event_log::EventLog::new(1000)),
            Arc::new(agent_webkit_core::permission::PermissionRouter::new()),
        ),
        store: Some(h.store.clone() as Arc<dyn SessionStore>),
        resume: Some(id.clone()),
    };
    let mut conn = h.factory.create(ctx).await.expect("resumed");
    conn.client.query(text("three")).await.unwrap();
    let result = loop {
        let msg = tokio::time::timeout(T, conn.messages.next())
            .await
            .expect("timed out")
            .expect("stream ended")
            .unwrap();
        if let AgentMessage::Result(result) = msg {
            break result;
        }
    };
    assert_eq!(
        result.extra["result"],
        "echo: three (resumed: 4 earlier messages)"
    );
    conn.client.disconnect().await.unwrap();
    h.factory.shutdown_spares().await;
    assert_eq!(h.factory.live_processes(), 0);
}

#[tokio::test]
async fn concurrent_creates_never_share_a_spare() {
    let h = Arc::new(Harness::new(2));
    h.ready(2).await;
    let spare_pids = h.factory.warm_spare_pids();
    let creates = (0..6).map(|_| {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.session(SessionConfig::default()).await })
    });
    let sessions: Vec<Arc<Session>> = futures_util::future::join_all(creates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let warm = sessions.iter().filter(|s| !h.started_cold(s.id())).count();
    assert!(
        (1..=4).contains(&warm),
        "{warm} sessions served warm from 2 spares (+ at most 2 replenished)"
    );
    for (n, session) in sessions.iter().enumerate() {
        let mut r = Reader::new(session);
        let prompt = format!("prompt {n}");
        assert_eq!(
            reply(&r.turn(session, &prompt).await),
            format!("echo: {prompt}")
        );
    }
    for (n, session) in sessions.iter().enumerate() {
        session.close().await;
        let stored = h.store.load(&h.key(session.id())).await.unwrap().unwrap();
        let users: Vec<String> = stored
            .iter()
            .filter(|e| e["type"] == "user")
            .map(|e| e["message"]["content"].to_string())
            .collect();
        assert_eq!(
            users,
            vec![format!("\"prompt {n}\"")],
            "one CLI per session"
        );
    }
    for pid in spare_pids {
        assert!(
            !alive(pid.into()),
            "the spares went to sessions that are closed"
        );
    }
    h.factory.shutdown_spares().await;
    assert_eq!(h.factory.live_processes(), 0);
}

#[tokio::test]
async fn a_spare_that_died_while_waiting_is_never_handed_out() {
    let h = Harness::new(1);
    h.ready(1).await;
    let pid = h.factory.warm_spare_pids()[0];
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Once it has exited (a zombie at least: the kernel has ended it, whether or not the pool
    // reaped it yet), before or after the pool noticed: the session must get a working CLI.
    // Not "at once": between kill(2) returning and the process exiting, a spare still looks
    // alive to anyone, and one dying after the hand-off is an agent crash like any other.
    let started = Instant::now();
    while alive(pid.into()) {
        assert!(started.elapsed() < T, "spare {pid} survived SIGKILL");
        // Bounded poll: the death of a process we only signalled is no awaitable event.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let session = h.session(SessionConfig::default()).await;
    let mut r = Reader::new(&session);
    assert_eq!(
        reply(&r.turn(&session, "still here").await),
        "echo: still here"
    );
    session.close().await;
    h.ready(1).await;
    assert!(!h.factory.warm_spare_pids().contains(&pid));
    h.factory.shutdown_spares().await;
    assert_eq!(h.factory.live_processes(), 0);
}

#[tokio::test]
async fn released_and_shut_down_spares_are_killed_and_not_replaced() {
    let h = Harness::new(2);
    h.ready(2).await;
    assert_eq!(h.factory.live_processes(), 2);
    let pids = h.factory.warm_spare_pids();
    assert_eq!(h.factory.spare_count(), 2);
    assert!(h.factory.release_spare().await);
    assert_eq!(h.factory.live_processes(), 1);
    assert_eq!(h.factory.warm_spares(), 1);
    assert!(!alive(pids[0].into()));
    h.factory.shutdown_spares().await;
    assert_eq!(h.factory.live_processes(), 0);
    assert!(!alive(pids[1].into()));
    assert!(!h.factory.release_spare().await);
    // Sessions still start (cold) after the pool is shut down.
    let session = h.session(SessionConfig::default()).await;
    assert!(h.started_cold(session.id()));
    session.close().await;
    assert_eq!(h.factory.live_processes(), 0);
}

/// A CLI that cannot start is retried with a growing pause, and not at all once shut down.
/// (Counting attempts over a window: a rate has no event to await.)
#[tokio::test]
async fn failing_spares_back_off_and_stop_with_the_pool() {
    let dir = TempDir::new("spares-fail").unwrap();
    let attempts = dir.path().join("attempts");
    let script = dir.path().join("claude");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho x >> '{}'\nexit 1\n", attempts.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let count = || {
        std::fs::read_to_string(&attempts)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let factory = ClaudeAgentFactory::new(ClaudeOptions {
        cli_path: Some(script.clone()),
        cwd: Some(dir.path().to_path_buf()),
        ..ClaudeOptions::default()
    })
    .with_warm_spares(1);
    // Used on its own, the pool starts at the first wait for a spare (which never comes).
    let never = tokio::time::timeout(Duration::from_millis(1200), factory.warm_spares_ready(1));
    assert!(never.await.is_err());
    let tried = count();
    // 0 s, 0.5 s, then 1.5 s: two or three starts, not hundreds.
    assert!((1..=3).contains(&tried), "{tried} attempts in 1.2 s");
    assert_eq!(factory.warm_spares(), 0);
    assert_eq!(factory.live_processes(), 0);
    factory.shutdown_spares().await;
    let after_shutdown = count();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(count(), after_shutdown, "no start once shut down");
}

/// Dropping the factory (every clone) closes the pool: its spares are killed.
#[tokio::test]
async fn dropping_the_factory_kills_its_spares() {
    let h = Harness::new(2);
    h.ready(2).await;
    let pids = h.factory.warm_spare_pids();
    drop(h);
    // Killed in a background task (no event to await from here): bounded wait.
    let deadline = Instant::now() + T;
    while pids.iter().any(|p| alive((*p).into())) {
        assert!(Instant::now() < deadline, "spares outlived their factory");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
