//! Warm spares with the **real** Claude Code CLI against the mock Messages API: a session
//! created from a spare runs its first turn with the model asked for at create, and is resumed
//! in a new process from what was mirrored under its own id. Prints create latency with and
//! without a spare. Skips loudly (fails in CI) when the CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_claude::{AgentClientFactory, ClaudeAgentFactory, ClaudeOptions};
use agent_webkit_core::agent::{AgentContext, AgentMessage, SessionConfig};
use agent_webkit_core::event_log::EventLog;
use agent_webkit_core::models::UserContent;
use agent_webkit_core::permission::{PermissionHandle, PermissionRouter};
use agent_webkit_core::registry::{RegistryConfig, SessionRegistry};
use agent_webkit_core::session::SessionSubscriber;
use agent_webkit_core::store::{InMemorySessionStore, SessionKey, SessionStore};
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::require_real_cli;
use futures_util::StreamExt;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const MODEL: &str = "claude-haiku-4-5";

async fn until_result(sub: &mut SessionSubscriber) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    loop {
        let batch = tokio::time::timeout(T, sub.next_batch(1))
            .await
            .expect("timed out waiting for an event")
            .unwrap()
            .expect("log ended");
        let name = batch[0].kind().as_str().to_owned();
        out.push((name.clone(), batch[0].data()));
        if name == "result" {
            return out;
        }
    }
}

fn project_key(path: &std::path::Path) -> String {
    path.to_str()
        .unwrap()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn a_spare_serves_a_session_with_its_model_and_it_resumes() {
    let cli = require_real_cli!("a_spare_serves_a_session_with_its_model_and_it_resumes");
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("spares-real-home").unwrap();
    let work = TempDir::new("spares-real-work").unwrap();
    let options = ClaudeOptions {
        cli_path: Some(cli),
        cwd: Some(work.path().to_path_buf()),
        setting_sources: Some(vec![]),
        env: offline_env(&mock, home.path()),
        ..ClaudeOptions::default()
    };
    let factory = ClaudeAgentFactory::new(options).with_warm_spares(1);
    let store = Arc::new(InMemorySessionStore::new());
    let registry = SessionRegistry::with_config(
        Arc::new(factory.clone()),
        Some(store.clone() as Arc<dyn SessionStore>),
        RegistryConfig::default(),
    );
    let ready = |n| {
        let factory = factory.clone();
        async move {
            tokio::time::timeout(T, factory.warm_spares_ready(n))
                .await
                .expect("spare not ready in time");
        }
    };

    // Create latency with a spare (waiting for it to be replenished between creates).
    let mut warm = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..5 {
        ready(1).await;
        let started = Instant::now();
        sessions.push(
            registry
                .create(SessionConfig {
                    model: Some(MODEL.into()),
                    ..SessionConfig::default()
                })
                .await
                .unwrap(),
        );
        warm.push(started.elapsed());
    }
    // And without a model to apply (nothing but taking the spare).
    let mut warm_default = Vec::new();
    for _ in 0..3 {
        ready(1).await;
        let started = Instant::now();
        sessions.push(registry.create(SessionConfig::default()).await.unwrap());
        warm_default.push(started.elapsed());
    }
    let session = sessions.remove(0);
    for other in sessions {
        other.close().await;
    }

    // The first turn works and runs on the model asked for at create.
    let requests_before = mock.streaming_requests().len();
    let mut sub = session.subscribe(None).unwrap();
    let text_a = "Please remember the word PELICAN for later";
    session
        .submit_user_message(UserContent::Text(text_a.into()))
        .unwrap();
    let events = until_result(&mut sub).await;
    assert_eq!(events.last().unwrap().1["subtype"], "success", "{events:?}");
    assert_eq!(
        events.last().unwrap().1["session_id"],
        session.id(),
        "results name the session, not the spare"
    );
    let requests = mock.streaming_requests();
    let turn = requests[requests_before..]
        .iter()
        .find(|r| r["messages"].to_string().contains("PELICAN"))
        .expect("the turn's model request");
    assert_eq!(
        turn["body"]["model"], MODEL,
        "model applied right after taking the spare"
    );

    // Mirrored under the session's own id; a new process resumes it from the store.
    let id = session.id().to_owned();
    session.close().await;
    let key = SessionKey::main(project_key(work.path()), id.clone());
    let entries = store
        .load(&key)
        .await
        .unwrap()
        .expect("mirrored under the session id");
    assert!(entries.iter().any(|e| e.to_string().contains("PELICAN")));
    let ctx = AgentContext {
        session_id: id.clone(),
        config: SessionConfig::default(),
        permissions: PermissionHandle::detached(
            Arc::new(EventLog::new(1000)),
            Arc::new(PermissionRouter::new()),
        ),
        store: Some(store.clone() as Arc<dyn SessionStore>),
        resume: Some(id.clone()),
    };
    let before = mock.streaming_requests().len();
    let mut conn = factory.create(ctx).await.expect("resumed");
    conn.client
        .query(UserContent::Text("Which word was it?".into()))
        .await
        .unwrap();
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
    assert_eq!(result.subtype, "success", "{result:?}");
    assert_eq!(
        result.session_id, id,
        "the resumed CLI continues the session's id"
    );
    let requests = mock.streaming_requests();
    let b = requests[before..]
        .iter()
        .find(|r| r["messages"].to_string().contains("Which word was it?"))
        .expect("a model request for the resumed turn");
    assert!(
        b["messages"].to_string().contains("PELICAN"),
        "the resumed CLI carries the earlier turn"
    );
    conn.client.disconnect().await.unwrap();

    // Without a spare.
    factory.shutdown_spares().await;
    let mut cold = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let session = registry
            .create(SessionConfig {
                model: Some(MODEL.into()),
                ..SessionConfig::default()
            })
            .await
            .unwrap();
        cold.push(started.elapsed());
        session.close().await;
    }
    assert_eq!(factory.live_processes(), 0);
    eprintln!(
        "real CLI create (debug build): with a spare + set_model {warm:?} median {:?}; with a spare, default settings {warm_default:?} median {:?}; without a spare {cold:?} median {:?}",
        median(warm.clone()),
        median(warm_default.clone()),
        median(cold.clone())
    );
}
