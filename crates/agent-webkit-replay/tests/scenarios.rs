//! The replay agent driven through the real core session machinery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::{AgentError, SessionConfig};
use agent_webkit_core::models::{EventKind, OutboundEvent};
use agent_webkit_core::permission::PermissionDecision;
use agent_webkit_core::registry::{CreateError, RegistryConfig, SessionRegistry};
use agent_webkit_core::session::{Session, SessionSubscriber};
use agent_webkit_core::UserContent;
use agent_webkit_replay::ReplayAgentFactory;
use serde_json::json;

fn registry(factory: ReplayAgentFactory) -> SessionRegistry {
    SessionRegistry::with_config(Arc::new(factory), None, RegistryConfig::default())
}

async fn create(reg: &SessionRegistry, model: &str) -> Arc<Session> {
    reg.create(SessionConfig {
        model: Some(model.into()),
        ..SessionConfig::default()
    })
    .await
    .unwrap()
}

/// Reads events until (and including) `until`.
async fn read_until(sub: &mut SessionSubscriber, until: EventKind) -> Vec<OutboundEvent> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let batch = sub.next_batch(1).await.unwrap().expect("log ended early");
            for ev in batch {
                let kind = ev.kind();
                out.push(OutboundEvent::parse(kind.as_str(), ev.data_json()).unwrap());
                if kind == until {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; got {:?}", kinds(&out)));
    out
}

fn kinds(events: &[OutboundEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind().as_str()).collect()
}

fn allow() -> PermissionDecision {
    PermissionDecision::Allow {
        updated_input: None,
        updated_permissions: None,
    }
}

#[tokio::test]
async fn multi_tool_asks_twice_in_order() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "multi_tool").await;
    let mut sub = s.subscribe(None).unwrap();
    s.submit_user_message("read both".into()).unwrap();
    let first = read_until(&mut sub, EventKind::PermissionRequest).await;
    assert_eq!(
        kinds(&first),
        [
            "session_ready",
            "message_complete",
            "tool_use",
            "tool_use",
            "permission_request"
        ]
    );
    s.resolve_permission("tu_1", allow()).unwrap();
    read_until(&mut sub, EventKind::PermissionRequest).await;
    s.resolve_permission("tu_2", allow()).unwrap();
    let rest = read_until(&mut sub, EventKind::Result).await;
    assert_eq!(
        kinds(&rest),
        ["tool_result", "tool_result", "message_complete", "result"]
    );
}

#[tokio::test]
async fn multi_turn_and_exhaustion() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "fixture:multi_turn").await;
    let mut sub = s.subscribe(None).unwrap();
    for _ in 0..3 {
        s.submit_user_message("hi".into()).unwrap();
    }
    let mut events = Vec::new();
    for _ in 0..3 {
        events.extend(read_until(&mut sub, EventKind::Result).await);
    }
    assert_eq!(
        kinds(&events),
        [
            "session_ready",
            "message_complete",
            "result",
            "message_complete",
            "result",
            "error",
            "result"
        ]
    );
    let OutboundEvent::Error(err) = &events[5] else {
        panic!()
    };
    assert_eq!(err.code, "scenario_exhausted");
    let OutboundEvent::Result(result) = &events[6] else {
        panic!()
    };
    assert_eq!(result.subtype, "error_during_execution");
    assert_eq!(result.extra["is_error"], true);
}

#[tokio::test]
async fn echo_reflects_content_and_current_model() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "echo").await;
    let mut sub = s.subscribe(None).unwrap();
    s.set_model(Some("other")).await.unwrap();
    s.submit_user_message(UserContent::Blocks(vec![
        json!({"type": "text", "text": "x"}),
    ]))
    .unwrap();
    let events = read_until(&mut sub, EventKind::Result).await;
    let OutboundEvent::MessageComplete(mc) = &events[1] else {
        panic!()
    };
    assert_eq!(
        mc.message.content,
        vec![json!({"type": "text", "text": "x"})]
    );
    assert_eq!(mc.message.model.as_deref(), Some("other"));
    let OutboundEvent::Result(r) = &events[2] else {
        panic!()
    };
    assert_eq!(r.session_id, s.id());
}

#[tokio::test]
async fn stream_scenario_sizes_and_bad_forms() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "stream:3:1:100").await;
    let mut sub = s.subscribe(None).unwrap();
    s.submit_user_message("go".into()).unwrap();
    let events = read_until(&mut sub, EventKind::Result).await;
    assert_eq!(events.len(), 5);
    let OutboundEvent::MessageComplete(mc) = &events[1] else {
        panic!()
    };
    let text = mc.message.content[0]["text"].as_str().unwrap();
    assert!(
        text.len() >= 100,
        "padded to about 100 bytes: {}",
        text.len()
    );
    for bad in ["stream:", "stream:x", "stream:1:2:3:4", "nope"] {
        let err = reg
            .create(SessionConfig {
                model: Some(bad.into()),
                ..SessionConfig::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, CreateError::Agent(AgentError::InvalidConfig(_))),
            "{bad}"
        );
    }
    assert_eq!(reg.len(), 1, "failed creates leave nothing behind");
}

#[tokio::test]
async fn absent_model_is_echo() {
    let reg = registry(ReplayAgentFactory::new());
    let s = reg.create(SessionConfig::default()).await.unwrap();
    let mut sub = s.subscribe(None).unwrap();
    s.submit_user_message("hello".into()).unwrap();
    let events = read_until(&mut sub, EventKind::Result).await;
    assert_eq!(
        kinds(&events),
        ["session_ready", "message_complete", "result"]
    );
}

#[tokio::test]
async fn scenario_dir_loading() {
    let dir = std::env::temp_dir().join(format!("replay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("custom.jsonl"),
        "{\"kind\":\"expect_user_query\"}\n{\"kind\":\"outbound\",\"message\":{\"type\":\"ResultMessage\",\"session_id\":\"c\",\"subtype\":\"success\"}}\n",
    )
    .unwrap();
    let factory = ReplayAgentFactory::with_dir(&dir).unwrap();
    assert!(factory.scenario_names().contains(&"custom".to_owned()));
    let reg = registry(factory);
    let s = create(&reg, "custom").await;
    let mut sub = s.subscribe(None).unwrap();
    s.submit_user_message("x".into()).unwrap();
    assert_eq!(
        kinds(&read_until(&mut sub, EventKind::Result).await),
        ["session_ready", "result"]
    );
    std::fs::write(
        dir.join("broken.jsonl"),
        "{\"kind\":\"expect_user_query\"}\n{oops\n",
    )
    .unwrap();
    let err = ReplayAgentFactory::with_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("broken.jsonl:2"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        ReplayAgentFactory::with_dir(&dir).is_err(),
        "missing dir is an error"
    );
}

#[tokio::test]
async fn remove_stops_the_agent_and_ends_the_log() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "stream:100000:1").await;
    let mut sub = s.subscribe(None).unwrap();
    s.submit_user_message("go".into()).unwrap();
    read_until(&mut sub, EventKind::MessageComplete).await;
    assert!(reg.remove(s.id()).await);
    let rest = read_until(&mut sub, EventKind::Done).await;
    assert_eq!(rest.last().unwrap().kind(), EventKind::Done);
    assert!(s.is_closed());
    assert!(matches!(
        s.interrupt().await,
        Err(agent_webkit_core::session::SessionError::Closed)
    ));
}
