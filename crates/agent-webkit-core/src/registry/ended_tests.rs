//! Tests of ended sessions (the agent exited on its own): kept readable for the retention,
//! refusing input, outside the session cap, the idle reaper and hibernation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;

use super::tests::api;
use super::RegistryConfig;
use crate::agent::{AgentError, SessionConfig};
use crate::models::EventKind;
use crate::scripted::{kinds, registry, start, until, ScriptedFactory};

#[tokio::test]
async fn an_ended_session_stays_readable_and_leaves_only_on_delete() {
    let (reg, _factory, mut agents) = registry(RegistryConfig {
        max_sessions: Some(1),
        idle_timeout: Duration::ZERO,
        hibernate_after: Some(Duration::ZERO),
        ..RegistryConfig::default()
    });
    let (session, mut agent) = start(&reg, &mut agents).await;
    let id = session.id().to_owned();
    let mut live = session.subscribe(None).unwrap();
    // When `done` is appended (just after the agent's disconnect) the registry already knows
    // the session ended: a client reading `done` and asking again never finds it live.
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let (registry, session_id) = (reg.clone(), id.clone());
    agent.on_disconnect(Box::new(move || {
        let _ = seen_tx.send(registry.get(&session_id).map(|s| s.has_ended()));
    }));
    agent.exit();
    let events = until(&mut live, EventKind::Done).await;
    assert_eq!(kinds(&events), ["session_ready", "error", "done"]);
    assert_eq!(seen_rx.await.unwrap(), Some(true), "registered and ended");
    let ended = reg.get(&id).expect("kept readable");
    assert!(ended.has_ended());
    // A late subscriber learns why: the whole log, `error` then `done`, then the end.
    let mut late = ended.subscribe(None).unwrap();
    let replay = until(&mut late, EventKind::Done).await;
    assert_eq!(kinds(&replay), ["session_ready", "error", "done"]);
    assert_eq!(
        replay[1].data()["code"],
        AgentError::Exited(String::new()).code()
    );
    assert_eq!(late.next_batch(8).await, Ok(None), "the log is closed");
    // No agent: neither reaped as idle nor hibernated, and not counted toward the cap.
    drop((live, late));
    assert_eq!(reg.reap_idle().await, 0);
    assert_eq!(reg.hibernate_quiet().await, 0);
    assert_eq!(reg.live_agents(), 0);
    let (other, _agent) = start(&reg, &mut agents).await;
    assert!(
        reg.get(&id).is_some(),
        "still readable next to a live session"
    );
    // DELETE keeps its meaning: gone at once.
    assert!(reg.remove(&id).await);
    assert!(reg.get(&id).is_none());
    assert_eq!(reg.ids(), [other.id().to_owned()]);
    // The cap counted `other` only: removing the ended session gave nothing back twice.
    assert_eq!(
        reg.create(SessionConfig::default()).await.unwrap_err(),
        super::CreateError::AtCapacity(1)
    );
}

#[tokio::test(start_paused = true)]
async fn an_ended_session_leaves_after_its_retention() {
    let (reg, _factory, mut agents) = registry(RegistryConfig {
        ended_retention: Duration::from_secs(5),
        ..RegistryConfig::default()
    });
    let (session, mut agent) = start(&reg, &mut agents).await;
    let id = session.id().to_owned();
    let mut sub = session.subscribe(None).unwrap();
    agent.exit();
    until(&mut sub, EventKind::Done).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(reg.get(&id).is_some(), "readable within the retention");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(reg.get(&id).is_none(), "gone after the retention");
    assert!(reg.is_empty());
}

#[tokio::test]
async fn input_to_an_ended_session_is_409_session_ended() {
    let (factory, mut agents) = ScriptedFactory::new();
    let api = api(factory, RegistryConfig::default());
    let json: &[(&str, &str)] = &[("content-type", "application/json")];
    let created = api
        .handle("POST", "/sessions", json, Bytes::from_static(b"{}"))
        .await;
    assert_eq!(created.status, 200);
    let mut agent = agents.recv().await.unwrap();
    let id = agent.session_id.clone();
    let session = api.registry().get(&id).unwrap();
    let mut sub = session.subscribe(None).unwrap();
    agent.exit();
    until(&mut sub, EventKind::Done).await;
    let input = format!("/sessions/{id}/input");
    for body in [
        r#"{"type":"user_message","content":"again"}"#,
        r#"{"type":"interrupt"}"#,
    ] {
        let refused = api
            .handle("POST", &input, json, Bytes::from(body.to_owned()))
            .await;
        assert_eq!(refused.status, 409, "{body}");
        let error: serde_json::Value = serde_json::from_slice(refused.body_bytes()).unwrap();
        assert_eq!(error["code"], "session_ended", "{body}");
    }
    assert_eq!(
        api.handle("DELETE", &format!("/sessions/{id}"), &[], Bytes::new())
            .await
            .status,
        204
    );
    let gone = api
        .handle(
            "POST",
            &input,
            json,
            Bytes::from_static(br#"{"type":"interrupt"}"#),
        )
        .await;
    assert_eq!(gone.status, 404);
    api.shutdown().await;
}
