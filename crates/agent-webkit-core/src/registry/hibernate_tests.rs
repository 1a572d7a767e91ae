//! Tests of hibernation and the live-agent bound, driven by the scripted agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{CreateError, RegistryConfig, SessionRegistry};
use crate::agent::{AgentClientFactory, AgentConnection, AgentContext, AgentError, SessionConfig};
use crate::event_log::LoggedEvent;
use crate::models::{EventKind, UserContent};
use crate::scripted::{
    delta, kinds, registry, result, start, until, Scripted, ScriptedFactory, WAIT,
};
use crate::session::{AgentState, Session, SessionSubscriber};

/// No idle hibernation: the tests hibernate on purpose (or by capacity).
fn manual() -> RegistryConfig {
    RegistryConfig {
        hibernate_after: None,
        ..RegistryConfig::default()
    }
}

fn text(s: &str) -> UserContent {
    UserContent::Text(s.to_owned())
}

/// A oneshot that fires when `agent` is disconnected.
fn disconnected(agent: &Scripted) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    agent.on_disconnect(Box::new(move || {
        let _ = tx.send(());
    }));
    rx
}

/// One complete turn: the user message reaches `agent`, which streams a delta and ends.
async fn turn(session: &Session, agent: &mut Scripted, message: &str) {
    session.submit_user_message(text(message)).unwrap();
    assert_eq!(agent.next_query().await, text(message));
    agent.send(delta("m", 1));
    agent.send(result());
}

/// Every event the subscriber can read now, until the log has `last_seq`.
async fn read_to(sub: &mut SessionSubscriber, last_seq: u64) -> Vec<LoggedEvent> {
    let mut seen: Vec<LoggedEvent> = Vec::new();
    while seen.last().map_or(0, LoggedEvent::seq) < last_seq {
        let batch = tokio::time::timeout(WAIT, sub.next_batch(64))
            .await
            .expect("no event within the wait")
            .expect("lagged")
            .expect("the log closed");
        seen.extend(batch);
    }
    seen
}

#[tokio::test]
async fn hibernate_then_wake_continues_the_same_log_with_a_resumed_agent() {
    let (reg, _factory, mut agents) = registry(manual());
    let (session, mut agent) = start(&reg, &mut agents).await;
    let mut sub = session.subscribe(None).unwrap();
    turn(&session, &mut agent, "one").await;
    until(&mut sub, EventKind::Result).await;
    let gone = disconnected(&agent);
    let before = session.event_log().last_seq();

    assert!(session.hibernate().await);
    gone.await.unwrap();
    assert_eq!(session.agent_state(), AgentState::Hibernated);
    assert_eq!(reg.live_agents(), 0);
    assert_eq!(
        session.event_log().last_seq(),
        before,
        "hibernation appends nothing"
    );
    assert!(reg.get(session.id()).is_some(), "the session stays");

    session.submit_user_message(text("two")).unwrap();
    let mut woken = tokio::time::timeout(WAIT, agents.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.session_id, session.id());
    assert_eq!(
        woken.resume.as_deref(),
        Some(session.id()),
        "resumed, not new"
    );
    assert_eq!(woken.next_query().await, text("two"));
    woken.send(delta("m2", 1));
    woken.send(result());
    let events = until(&mut sub, EventKind::Result).await;
    assert_eq!(kinds(&events), ["message_delta", "result"]);
    assert_eq!(events[0].seq(), before + 1, "seqs continue");
    assert_eq!(session.agent_state(), AgentState::Live);

    // A subscriber from the start sees every event exactly once.
    let mut replay = session.subscribe(None).unwrap();
    let all = read_to(&mut replay, session.event_log().last_seq()).await;
    let seqs: Vec<u64> = all.iter().map(LoggedEvent::seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        kinds(&all),
        [
            "session_ready",
            "message_delta",
            "result",
            "message_delta",
            "result"
        ]
    );
}

#[tokio::test]
async fn a_running_turn_a_queued_message_or_a_pending_prompt_prevent_hibernation() {
    let (reg, _factory, mut agents) = registry(manual());
    let (session, mut agent) = start(&reg, &mut agents).await;
    let mut sub = session.subscribe(None).unwrap();
    session.submit_user_message(text("one")).unwrap();
    agent.next_query().await;
    assert!(!session.hibernate().await, "a turn is running");
    // A second message waits in the queue behind the turn.
    session.submit_user_message(text("two")).unwrap();
    agent.send(result());
    assert_eq!(agent.next_query().await, text("two"));
    assert!(!session.hibernate().await, "the queued message's turn runs");
    // A prompt is pending.
    let permissions = agent.permissions.clone();
    let ask = tokio::spawn(async move {
        permissions
            .can_use_tool(
                "Read",
                serde_json::json!({}),
                crate::scripted::context("t1"),
            )
            .await
    });
    until(&mut sub, EventKind::PermissionRequest).await;
    agent.send(result());
    until(&mut sub, EventKind::Result).await;
    assert!(!session.hibernate().await, "a prompt is pending");
    assert_eq!(session.agent_state(), AgentState::Live);
    assert!(!agent.disconnected());
    ask.abort();
}

#[tokio::test]
async fn runtime_settings_are_recorded_while_hibernated_and_applied_at_wake_up() {
    let (reg, _factory, mut agents) = registry(manual());
    let (session, mut agent) = start(&reg, &mut agents).await;
    session.set_model(Some("live-model")).await.unwrap();
    assert!(session.hibernate().await);
    session.set_permission_mode("plan").await.unwrap();
    session.interrupt().await.unwrap();
    session.stop_task("t").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), agents.recv())
            .await
            .is_err(),
        "controls must not start the agent"
    );
    assert_eq!(session.agent_state(), AgentState::Hibernated);
    session.submit_user_message(text("go")).unwrap();
    let mut woken = tokio::time::timeout(WAIT, agents.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.config.model.as_deref(), Some("live-model"));
    assert_eq!(woken.config.permission_mode.as_deref(), Some("plan"));
    assert_eq!(woken.next_query().await, text("go"));
    drop(agent.try_query());
}

#[tokio::test]
async fn the_reaper_hibernates_quiet_agents() {
    let config = RegistryConfig {
        hibernate_after: Some(Duration::from_millis(30)),
        compact_after: None,
        ..RegistryConfig::default()
    };
    let (reg, _factory, mut agents) = registry(config);
    let (session, agent) = start(&reg, &mut agents).await;
    let _sub = session.subscribe(None).unwrap();
    let gone = disconnected(&agent);
    reg.start_reaper();
    tokio::time::timeout(WAIT, gone).await.unwrap().unwrap();
    assert_eq!(session.agent_state(), AgentState::Hibernated);
    assert!(!session.is_closed(), "the session and its stream stay");
    reg.shutdown().await;
}

/// A scripted factory whose agents cannot resume.
struct NoResume(Arc<ScriptedFactory>);

#[async_trait]
impl AgentClientFactory for NoResume {
    async fn create(&self, ctx: AgentContext) -> Result<AgentConnection, AgentError> {
        self.0.create(ctx).await
    }
}

#[tokio::test]
async fn sessions_of_an_agent_that_cannot_resume_never_hibernate() {
    let (factory, mut agents) = ScriptedFactory::new();
    let config = RegistryConfig {
        hibernate_after: Some(Duration::from_millis(1)),
        max_live_agents: Some(1),
        ..RegistryConfig::default()
    };
    let reg = SessionRegistry::with_config(Arc::new(NoResume(factory)), None, config);
    let (session, agent) = start(&reg, &mut agents).await;
    assert!(!session.hibernate().await);
    assert_eq!(reg.hibernate_quiet().await, 0);
    assert_eq!(
        reg.create(SessionConfig::default()).await.unwrap_err(),
        CreateError::AgentsAtCapacity(1)
    );
    assert!(!agent.disconnected());
}

#[tokio::test]
async fn capacity_hibernates_the_least_recently_active_session_first() {
    let config = RegistryConfig {
        max_live_agents: Some(2),
        ..manual()
    };
    let (reg, _factory, mut agents) = registry(config);
    let (a, mut agent_a) = start(&reg, &mut agents).await;
    let (b, agent_b) = start(&reg, &mut agents).await;
    // `a` was created first but is the most recently active now.
    turn(&a, &mut agent_a, "recent").await;
    let mut sub_a = a.subscribe(None).unwrap();
    until(&mut sub_a, EventKind::Result).await;
    let (_c, _agent_c) = start(&reg, &mut agents).await;
    assert!(
        agent_b.disconnected(),
        "the least recently active goes first"
    );
    assert!(!agent_a.disconnected());
    assert_eq!(b.agent_state(), AgentState::Hibernated);
    assert_eq!(reg.live_agents(), 2);
}

#[tokio::test]
async fn warm_spares_count_against_the_bound_and_go_before_any_session() {
    let config = RegistryConfig {
        max_live_agents: Some(3),
        ..manual()
    };
    let (reg, factory, mut agents) = registry(config);
    assert!(factory.start_spare() && factory.start_spare());
    // 2 spares hold 2 of the 3 slots: the third is free, nothing to release.
    let (_a, agent_a) = start(&reg, &mut agents).await;
    assert_eq!(factory.spares(), 2);
    // No slot free: one spare goes, no session hibernates.
    let (_b, agent_b) = start(&reg, &mut agents).await;
    assert_eq!(factory.spares(), 1);
    let (_c, _agent_c) = start(&reg, &mut agents).await;
    assert_eq!(factory.spares(), 0);
    assert!(!agent_a.disconnected() && !agent_b.disconnected());
    assert_eq!(reg.live_agents(), 3);
    // No spare left: now the least recently active session makes room.
    let (_d, _agent_d) = start(&reg, &mut agents).await;
    assert!(
        agent_a.disconnected(),
        "the least recently active goes next"
    );
    assert_eq!(reg.live_agents(), 3);
}

/// A spare may start only while sessions' agents + spares leave a slot free — also when a
/// session has just taken a slot and its agent is not counted as live yet.
#[tokio::test]
async fn a_spare_starts_only_while_sessions_and_spares_leave_a_slot_free() {
    let config = RegistryConfig {
        max_live_agents: Some(2),
        ..manual()
    };
    let (reg, factory, mut agents) = registry(config);
    let (_a, _agent_a) = start(&reg, &mut agents).await;
    assert!(factory.start_spare(), "1 agent + 0 spares < 2");
    assert!(!factory.start_spare(), "1 agent + 1 spare fill the bound");
    // A create in flight holds its slot before its agent is live: no spare may take it.
    let create = tokio::spawn({
        let reg = reg.clone();
        async move { reg.create(SessionConfig::default()).await }
    });
    let _agent_b = agents.recv().await.unwrap();
    assert_eq!(factory.spares(), 0, "the spare made room for b");
    assert!(!factory.start_spare(), "b's slot is taken before b is live");
    create.await.unwrap().unwrap();
    assert_eq!(reg.live_agents(), 2);
    assert!(!factory.start_spare());
}

#[tokio::test]
async fn create_is_at_capacity_when_no_session_can_hibernate() {
    let config = RegistryConfig {
        max_live_agents: Some(1),
        ..manual()
    };
    let (reg, _factory, mut agents) = registry(config);
    let (a, mut agent_a) = start(&reg, &mut agents).await;
    a.submit_user_message(text("busy")).unwrap();
    agent_a.next_query().await;
    assert_eq!(
        reg.create(SessionConfig::default()).await.unwrap_err(),
        CreateError::AgentsAtCapacity(1)
    );
    assert!(!agent_a.disconnected());
    // Once the turn is over, the slot can be had.
    agent_a.send(result());
    let mut sub = a.subscribe(None).unwrap();
    until(&mut sub, EventKind::Result).await;
    let (_b, _agent_b) = start(&reg, &mut agents).await;
    assert!(agent_a.disconnected());
}

#[tokio::test]
async fn a_wake_up_waits_for_a_free_slot() {
    let config = RegistryConfig {
        max_live_agents: Some(1),
        capacity_wait: WAIT,
        ..manual()
    };
    let (reg, _factory, mut agents) = registry(config);
    let (a, _agent_a) = start(&reg, &mut agents).await;
    assert!(a.hibernate().await);
    let (b, mut agent_b) = start(&reg, &mut agents).await;
    b.submit_user_message(text("busy")).unwrap();
    agent_b.next_query().await;
    // `a` needs the slot `b` holds while its turn runs.
    a.submit_user_message(text("queued")).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(150), agents.recv())
            .await
            .is_err(),
        "started while the slot was taken"
    );
    assert_eq!(a.agent_state(), AgentState::Waking);
    agent_b.send(result());
    let mut woken = tokio::time::timeout(WAIT, agents.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.session_id, a.id());
    assert_eq!(woken.next_query().await, text("queued"));
    assert!(agent_b.disconnected(), "`b` was hibernated for it");
}

#[tokio::test]
async fn a_wake_up_that_finds_no_slot_in_time_says_the_message_was_not_sent() {
    let config = RegistryConfig {
        max_live_agents: Some(1),
        capacity_wait: Duration::from_millis(50),
        ..manual()
    };
    let (reg, _factory, mut agents) = registry(config);
    let (a, _agent_a) = start(&reg, &mut agents).await;
    let mut sub = a.subscribe(None).unwrap();
    assert!(a.hibernate().await);
    let (b, mut agent_b) = start(&reg, &mut agents).await;
    b.submit_user_message(text("busy")).unwrap();
    agent_b.next_query().await;
    a.submit_user_message(text("hello there")).unwrap();
    let events = until(&mut sub, EventKind::Error).await;
    let error = events.last().unwrap().data();
    assert_eq!(error["code"], "at_capacity");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("hello there") && message.contains("not sent"),
        "{message}"
    );
    assert_eq!(a.agent_state(), AgentState::Hibernated);
    assert!(agents.try_recv().is_err(), "no agent was started");
    // The session still works once a slot is free.
    agent_b.send(result());
    a.submit_user_message(text("again")).unwrap();
    let mut woken = tokio::time::timeout(WAIT, agents.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.next_query().await, text("again"));
}

#[tokio::test]
async fn a_closed_hibernated_session_ends_with_done_and_frees_nothing_twice() {
    let config = RegistryConfig {
        max_live_agents: Some(1),
        ..manual()
    };
    let (reg, _factory, mut agents) = registry(config);
    let (a, _agent_a) = start(&reg, &mut agents).await;
    let mut sub = a.subscribe(None).unwrap();
    assert!(a.hibernate().await);
    assert!(reg.remove(a.id()).await);
    until(&mut sub, EventKind::Done).await;
    // One slot, and it is free; `b` keeps it with a running turn.
    let (b, mut agent_b) = start(&reg, &mut agents).await;
    b.submit_user_message(text("busy")).unwrap();
    agent_b.next_query().await;
    assert_eq!(
        reg.create(SessionConfig::default()).await.unwrap_err(),
        CreateError::AgentsAtCapacity(1),
        "a closed session must not hand back a second permit"
    );
}
