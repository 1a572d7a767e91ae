//! Tests of the registry, driven by the scripted agent ([`crate::scripted`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{CreateError, RegistryConfig};
use crate::agent::{AgentClientFactory, AgentError, SessionConfig};
use crate::auth::AuthConfig;
use crate::config::AppConfig;
use crate::http::Api;
use crate::models::EventKind;
use crate::scripted::{kinds, registry, start, until, ScriptedFactory};

#[tokio::test]
async fn without_retention_an_agent_exit_is_error_then_done_and_leaves_the_registry() {
    let (reg, _factory, mut agents) = registry(RegistryConfig {
        ended_retention: Duration::ZERO,
        ..RegistryConfig::default()
    });
    let (session, mut agent) = start(&reg, &mut agents).await;
    let id = session.id().to_owned();
    let mut sub = session.subscribe(None).unwrap();
    // The session disconnects its agent just before it appends `done`: by then it must have
    // left the registry, or a client reading `done` could still find it.
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
    let (registry, session_id) = (reg.clone(), id.clone());
    agent.on_disconnect(Box::new(move || {
        let _ = gone_tx.send(registry.get(&session_id).is_none());
    }));
    agent.exit();
    let events = until(&mut sub, EventKind::Done).await;
    assert_eq!(kinds(&events), ["session_ready", "error", "done"]);
    assert_eq!(
        events[1].data()["code"],
        AgentError::Exited(String::new()).code()
    );
    assert!(
        gone_rx.await.unwrap(),
        "still registered when `done` was appended"
    );
    assert!(reg.get(&id).is_none());
    assert!(reg.is_empty());
    assert!(agent.disconnected());
    assert_eq!(sub.next_batch(8).await, Ok(None), "the log is closed");
}

#[tokio::test]
async fn the_session_cap_is_held_by_live_sessions_only() {
    let config = RegistryConfig {
        max_sessions: Some(1),
        ..RegistryConfig::default()
    };
    let (reg, factory, mut agents) = registry(config);
    let (first, _agent) = start(&reg, &mut agents).await;
    assert_eq!(
        reg.create(SessionConfig::default()).await.unwrap_err(),
        CreateError::AtCapacity(1)
    );
    assert!(reg.remove(first.id()).await);
    // A failed start gives its place back.
    factory.refuse_next(AgentError::Unavailable("busy".into()));
    assert_eq!(
        reg.create(SessionConfig::default()).await.unwrap_err(),
        CreateError::Agent(AgentError::Unavailable("busy".into()))
    );
    let (second, _agent) = start(&reg, &mut agents).await;
    assert_eq!(reg.ids(), [second.id().to_owned()]);
    reg.shutdown().await;
    assert!(reg.is_empty());
    assert!(second.is_closed());
    assert_eq!(
        reg.create(SessionConfig::default()).await.unwrap_err(),
        CreateError::ShuttingDown
    );
}

#[tokio::test]
async fn idle_sessions_without_subscribers_are_reaped() {
    let config = RegistryConfig {
        idle_timeout: Duration::ZERO,
        ..RegistryConfig::default()
    };
    let (reg, _factory, mut agents) = registry(config);
    let (watched, _a) = start(&reg, &mut agents).await;
    let (idle, _b) = start(&reg, &mut agents).await;
    let watcher = watched.subscribe(None).unwrap();
    let mut probe = watcher.probe();
    let log = Arc::clone(idle.event_log());
    assert_eq!(reg.reap_idle().await, 1);
    assert_eq!(reg.ids(), [watched.id().to_owned()]);
    // The evicted session ended for its clients (a plain log reader is not a subscriber).
    let mut tail = log.subscribe_from_start();
    let mut seen = Vec::new();
    while let Some(ev) = tail.next().await.unwrap() {
        seen.push(ev.kind().as_str());
    }
    assert_eq!(seen, ["session_ready", "done"]);
    // The watched one is idle too, but watched: its stream is asked for a keepalive instead.
    tokio::time::timeout(Duration::from_secs(10), probe.probed())
        .await
        .unwrap();
    drop(watcher);
    assert_eq!(reg.reap_idle().await, 1);
    assert!(reg.is_empty());
}

pub(super) fn api(factory: Arc<ScriptedFactory>, config: RegistryConfig) -> Api {
    let app = AppConfig::new(factory as Arc<dyn AgentClientFactory>)
        .with_auth(AuthConfig::disabled())
        .with_registry(config);
    Api::new(app).unwrap()
}

#[tokio::test]
async fn a_full_inbound_queue_is_503_with_retry_after() {
    let (factory, mut agents) = ScriptedFactory::new();
    let api = api(
        factory,
        RegistryConfig {
            inbound_capacity: 1,
            ..RegistryConfig::default()
        },
    );
    let json: &[(&str, &str)] = &[("content-type", "application/json")];
    let created = api
        .handle("POST", "/sessions", json, Bytes::from_static(b"{}"))
        .await;
    assert_eq!(created.status, 200);
    let mut agent = agents.recv().await.unwrap();
    let input = format!("/sessions/{}/input", agent.session_id);
    let say = |text: &'static str| {
        Bytes::from(format!(r#"{{"type":"user_message","content":"{text}"}}"#))
    };
    assert_eq!(api.handle("POST", &input, json, say("a")).await.status, 204);
    assert_eq!(agent.next_query().await, "a".into());
    assert_eq!(api.handle("POST", &input, json, say("b")).await.status, 204);
    let refused = api.handle("POST", &input, json, say("c")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    api.shutdown().await;
}
