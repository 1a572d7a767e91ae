//! Helpers shared by the integration tests: a registry over a replay factory, and a reader of a
//! session's events.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::SessionConfig;
use agent_webkit_core::models::{
    ErrorData, EventKind, MessageCompleteData, OutboundEvent, ResultData,
};
use agent_webkit_core::permission::PermissionDecision;
use agent_webkit_core::registry::{RegistryConfig, SessionRegistry};
use agent_webkit_core::session::{Session, SessionSubscriber};
use agent_webkit_replay::ReplayAgentFactory;

/// Upper bound for any wait; tests never sleep, they await events within this.
pub const T: Duration = Duration::from_secs(10);

pub fn registry(factory: ReplayAgentFactory) -> SessionRegistry {
    SessionRegistry::with_config(Arc::new(factory), None, RegistryConfig::default())
}

pub async fn create(reg: &SessionRegistry, model: &str) -> Arc<Session> {
    reg.create(SessionConfig {
        model: Some(model.into()),
        ..SessionConfig::default()
    })
    .await
    .unwrap()
}

/// Reads a session's events.
pub struct Reader {
    sub: SessionSubscriber,
}

impl Reader {
    pub fn new(session: &Arc<Session>) -> Self {
        Self {
            sub: session.subscribe(None).unwrap(),
        }
    }

    /// The next event; `None` when the log has ended.
    pub async fn next(&mut self) -> Option<OutboundEvent> {
        let batch = tokio::time::timeout(T, self.sub.next_batch(1))
            .await
            .expect("timed out waiting for an event")
            .unwrap()?;
        assert_eq!(batch.len(), 1);
        let ev = &batch[0];
        Some(OutboundEvent::parse(ev.kind().as_str(), ev.data_json()).unwrap())
    }

    /// Events up to and including the first `until`.
    pub async fn until(&mut self, until: EventKind) -> Vec<OutboundEvent> {
        let mut out = Vec::new();
        loop {
            let Some(ev) = self.next().await else {
                panic!("log ended before {until:?}; got {:?}", kinds(&out))
            };
            let done = ev.kind() == until;
            out.push(ev);
            if done {
                return out;
            }
        }
    }

    /// Every event until the log ends.
    pub async fn read_to_end(&mut self) -> Vec<OutboundEvent> {
        let mut out = Vec::new();
        while let Some(ev) = self.next().await {
            out.push(ev);
        }
        out
    }
}

pub fn kinds(events: &[OutboundEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind().as_str()).collect()
}

pub fn allow() -> PermissionDecision {
    PermissionDecision::Allow {
        updated_input: None,
        updated_permissions: None,
    }
}

pub fn as_result(ev: &OutboundEvent) -> &ResultData {
    match ev {
        OutboundEvent::Result(r) => r,
        other => panic!("expected a result, got {other:?}"),
    }
}

pub fn as_error(ev: &OutboundEvent) -> &ErrorData {
    match ev {
        OutboundEvent::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub fn as_message(ev: &OutboundEvent) -> &MessageCompleteData {
    match ev {
        OutboundEvent::MessageComplete(m) => m,
        other => panic!("expected a message_complete, got {other:?}"),
    }
}

/// Closes the session and checks its log ends with exactly `done` (after the `usage` event
/// that follows a last `result` reporting usage, if the reader stopped at that result).
pub async fn remove_and_expect_done(
    reg: &SessionRegistry,
    session: &Arc<Session>,
    reader: &mut Reader,
) {
    assert!(reg.remove(session.id()).await);
    let rest = reader.read_to_end().await;
    let mut rest = kinds(&rest);
    if rest.first() == Some(&"usage") {
        rest.remove(0);
    }
    assert_eq!(rest, ["done"]);
    assert!(reg.get(session.id()).is_none());
}

/// Waits until every agent task of `factory` has ended.
pub async fn no_live_agents(factory: &ReplayAgentFactory) {
    tokio::time::timeout(T, factory.wait_for_live_agents(0))
        .await
        .unwrap_or_else(|_| panic!("{} replay agents still running", factory.live_agents()));
}
