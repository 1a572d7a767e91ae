//! Tests of the session loop, driven by the scripted agent ([`crate::scripted`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::FutureExt;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::SessionError;
use crate::models::EventKind;
use crate::permission::{PermissionDecision, PermissionError};
use crate::registry::RegistryConfig;
use crate::scripted::{assistant, context, delta, kinds, registry, result, start, until};

fn allow() -> PermissionDecision {
    PermissionDecision::Allow {
        updated_input: None,
        updated_permissions: None,
    }
}

#[tokio::test]
async fn one_turn_at_a_time() {
    let (reg, _factory, mut agents) = registry(RegistryConfig::default());
    let (session, mut agent) = start(&reg, &mut agents).await;
    let mut sub = session.subscribe(None).unwrap();
    session.submit_user_message("first".into()).unwrap();
    session.submit_user_message("second".into()).unwrap();
    assert_eq!(agent.next_query().await, "first".into());
    agent.send(delta("m1", 1));
    until(&mut sub, EventKind::MessageDelta).await;
    // The loop has handled the delta: had it sent the second message, it would be here.
    assert_eq!(
        agent.try_query(),
        None,
        "a second turn started before the first ended"
    );
    agent.send(result());
    until(&mut sub, EventKind::Result).await;
    assert_eq!(agent.next_query().await, "second".into());
    reg.shutdown().await;
}

#[tokio::test]
async fn a_full_inbound_queue_is_backpressure() {
    let config = RegistryConfig {
        inbound_capacity: 1,
        ..RegistryConfig::default()
    };
    let (reg, _factory, mut agents) = registry(config);
    let (session, mut agent) = start(&reg, &mut agents).await;
    session.submit_user_message("a".into()).unwrap();
    assert_eq!(agent.next_query().await, "a".into());
    // The turn is open: one message waits in the queue, the next does not fit.
    session.submit_user_message("b".into()).unwrap();
    assert_eq!(
        session.submit_user_message("c".into()),
        Err(SessionError::Backpressure(1))
    );
    agent.send(result());
    assert_eq!(agent.next_query().await, "b".into());
    session.submit_user_message("c".into()).unwrap();
    reg.shutdown().await;
    assert_eq!(
        session.submit_user_message("d".into()),
        Err(SessionError::Closed)
    );
}

#[tokio::test]
async fn a_prompt_is_answered_once_and_refused_after_close() {
    let (reg, _factory, mut agents) = registry(RegistryConfig::default());
    let (session, agent) = start(&reg, &mut agents).await;
    let mut sub = session.subscribe(None).unwrap();
    agent.send(assistant("m1", &["tu_1"]));
    let handle = agent.permissions.clone();
    let asked = tokio::spawn(async move {
        handle
            .can_use_tool("Read", json!({}), context("tu_1"))
            .await
    });
    let events = until(&mut sub, EventKind::PermissionRequest).await;
    assert_eq!(
        kinds(&events),
        [
            "session_ready",
            "message_complete",
            "tool_use",
            "permission_request"
        ]
    );
    session.resolve_permission("tu_1", allow()).unwrap();
    assert_eq!(asked.await.unwrap(), Ok(allow()));
    assert!(matches!(
        session.resolve_permission("tu_1", allow()),
        Err(SessionError::Conflict(_))
    ));
    session.close().await;
    assert_eq!(
        agent
            .permissions
            .can_use_tool("Read", json!({}), context("tu_2"))
            .await,
        Err(PermissionError::SessionClosed)
    );
    assert!(agent.disconnected());
}

#[tokio::test]
async fn a_withdrawal_precedes_what_the_agent_streams_after_it() {
    let (reg, _factory, mut agents) = registry(RegistryConfig::default());
    let (session, agent) = start(&reg, &mut agents).await;
    let mut sub = session.subscribe(None).unwrap();
    let handle = agent.permissions.clone();
    let asked = tokio::spawn(async move {
        handle
            .can_use_tool("Bash", json!({}), context("tu_w"))
            .await
    });
    until(&mut sub, EventKind::PermissionRequest).await;
    // Withdraw, then end the turn, without yielding in between (as an agent's reader does).
    assert!(agent.permissions.cancel("tu_w", "interrupted"));
    agent.send(result());
    let events = until(&mut sub, EventKind::Result).await;
    assert_eq!(kinds(&events), ["error", "result"]);
    assert_eq!(
        events[0].data_json(),
        r#"{"code":"permission_cancelled","message":"interrupted","correlation_id":"tu_w"}"#
    );
    assert_eq!(
        asked.await.unwrap(),
        Err(PermissionError::Cancelled("tu_w".into()))
    );
    reg.shutdown().await;
}

/// One step of an agent in the ordering property.
#[derive(Debug, Clone)]
enum Step {
    /// Stream an assistant message announcing a new tool call, then ask for it at once.
    Tool,
    /// Stream a delta.
    Delta,
    /// Let the session loop run.
    Yield,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![Just(Step::Tool), Just(Step::Delta), Just(Step::Yield)]
}

/// Runs `steps` as an agent and returns the wire log up to the turn's `result`.
async fn run_script(steps: Vec<Step>) -> Vec<(String, Value)> {
    let (reg, _factory, mut agents) = registry(RegistryConfig::default());
    let (session, agent) = start(&reg, &mut agents).await;
    let mut sub = session.subscribe(None).unwrap();
    let mut asked = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Tool => {
                let id = format!("tu_{i}");
                agent.send(assistant(&format!("m{i}"), &[&id]));
                let mut ask = Box::pin(agent.permissions.clone().can_use_tool_owned(id));
                // First poll: the prompt is on its way to the loop, behind the message.
                assert!((&mut ask).now_or_never().is_none());
                asked.push(tokio::spawn(ask));
            }
            Step::Delta => agent.send(delta("d", i)),
            Step::Yield => tokio::task::yield_now().await,
        }
    }
    let prompts = asked.len();
    let mut events = Vec::new();
    while events
        .iter()
        .filter(|(k, _): &&(String, Value)| k == "permission_request")
        .count()
        < prompts
    {
        let ev = until(&mut sub, EventKind::PermissionRequest).await;
        events.extend(ev.iter().map(|e| (e.kind().as_str().to_owned(), e.data())));
    }
    for (kind, data) in &events {
        if kind == "permission_request" {
            let id = data["correlation_id"].as_str().unwrap();
            session.resolve_permission(id, allow()).unwrap();
        }
    }
    for ask in asked {
        assert_eq!(ask.await.unwrap(), Ok(allow()));
    }
    agent.send(result());
    let ev = until(&mut sub, EventKind::Result).await;
    events.extend(ev.iter().map(|e| (e.kind().as_str().to_owned(), e.data())));
    reg.shutdown().await;
    events
}

impl crate::permission::PermissionHandle {
    /// `can_use_tool` for `tool_use_id`, as a `'static` future.
    async fn can_use_tool_owned(
        self,
        tool_use_id: String,
    ) -> Result<PermissionDecision, PermissionError> {
        self.can_use_tool("Read", json!({}), context(&tool_use_id))
            .await
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Whatever the agent streams and asks, in whatever interleaving with the loop: every
    /// prompt follows the `tool_use` that announced it, and messages keep the agent's order.
    #[test]
    fn a_prompt_never_precedes_its_tool_use(steps in proptest::collection::vec(step(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let events = runtime.block_on(run_script(steps.clone()));
        let mut announced = std::collections::HashSet::new();
        let mut streamed = Vec::new();
        for (kind, data) in &events {
            match kind.as_str() {
                "tool_use" => {
                    announced.insert(data["tool_use_id"].as_str().unwrap().to_owned());
                    streamed.push(data["tool_use_id"].as_str().unwrap().to_owned());
                }
                "permission_request" => {
                    let id = data["correlation_id"].as_str().unwrap();
                    prop_assert!(announced.contains(id), "{id} asked before announced: {events:?}");
                }
                "message_delta" => streamed.push(format!("d{}", data["delta"]["n"])),
                _ => {}
            }
        }
        let expected: Vec<String> = steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Step::Tool => Some(format!("tu_{i}")),
                Step::Delta => Some(format!("d{i}")),
                Step::Yield => None,
            })
            .collect();
        prop_assert_eq!(streamed, expected);
    }
}
