//! The synthetic scenarios (`echo`, `controls`, `crash`, `stream:…`), scenario selection errors,
//! and the agent's lifecycle (disconnect, dropped stream or client, no leaked tasks) — through
//! the core session machinery and directly through the factory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use agent_webkit_core::agent::AgentConnection;
use agent_webkit_core::agent::{
    AgentClientFactory, AgentContext, AgentError, AgentMessage, SessionConfig,
};
use agent_webkit_core::event_log::EventLog;
use agent_webkit_core::models::UserContent;
use agent_webkit_core::models::{EventKind, OutboundEvent};
use agent_webkit_core::permission::{PermissionHandle, PermissionRouter};
use agent_webkit_core::registry::CreateError;
use agent_webkit_core::session::SessionError;
use agent_webkit_replay::{ReplayAgentFactory, Script};
use common::*;
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test]
async fn echo_reflects_content_and_the_current_model() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, "echo").await;
    let mut r = Reader::new(&s);

    s.submit_user_message("hello".into()).unwrap();
    let events = r.until(EventKind::Result).await;
    assert_eq!(
        kinds(&events),
        ["session_ready", "message_complete", "result"]
    );
    let mc = as_message(&events[1]);
    assert_eq!(mc.message_id, "msg_echo_1");
    assert_eq!(
        mc.message.content,
        [json!({"type": "text", "text": "hello"})]
    );
    assert_eq!(mc.message.model.as_deref(), Some("echo"));
    assert_eq!(mc.message.stop_reason.as_deref(), Some("end_turn"));
    let result = as_result(&events[2]);
    assert_eq!(
        (result.session_id.as_str(), result.subtype.as_str()),
        (s.id(), "success")
    );

    let blocks = vec![
        json!({"type": "text", "text": "x"}),
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}),
    ];
    s.set_model(Some("other")).await.unwrap();
    s.submit_user_message(UserContent::Blocks(blocks.clone()))
        .unwrap();
    let events = r.until(EventKind::Result).await;
    let mc = as_message(&events[0]);
    assert_eq!(mc.message_id, "msg_echo_2");
    assert_eq!(mc.message.content, blocks);
    assert_eq!(mc.message.model.as_deref(), Some("other"));

    s.set_model(None).await.unwrap();
    s.submit_user_message("again".into()).unwrap();
    let events = r.until(EventKind::Result).await;
    assert_eq!(as_message(&events[0]).message.model, None);
    remove_and_expect_done(&reg, &s, &mut r).await;
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn absent_model_is_echo() {
    let reg = registry(ReplayAgentFactory::new());
    let s = reg.create(SessionConfig::default()).await.unwrap();
    let mut r = Reader::new(&s);
    s.submit_user_message("hello".into()).unwrap();
    let events = r.until(EventKind::Result).await;
    assert_eq!(
        kinds(&events),
        ["session_ready", "message_complete", "result"]
    );
    let mc = as_message(&events[1]);
    assert_eq!(mc.message_id, "msg_echo_1");
    assert_eq!(mc.message.model, None, "the session asked for no model");
}

#[tokio::test]
async fn controls_lists_the_calls_since_the_last_reply() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "controls").await;
    let mut r = Reader::new(&s);
    s.set_model(Some("m")).await.unwrap();
    s.set_model(None).await.unwrap();
    s.stop_task("t1").await.unwrap();
    s.interrupt().await.unwrap(); // no running turn: recorded, not an error
    s.set_permission_mode("plan").await.unwrap();
    s.submit_user_message("report".into()).unwrap();
    let events = r.until(EventKind::Result).await;
    assert_eq!(
        kinds(&events),
        ["session_ready", "message_complete", "result"]
    );
    let mc = as_message(&events[1]);
    assert_eq!(
        mc.message.content,
        [json!({
            "type": "text",
            "text": r#"[["set_model","m"],["set_model",null],["stop_task","t1"],["interrupt"],["set_permission_mode","plan"]]"#
        })]
    );
    assert_eq!(as_result(&events[2]).subtype, "success");
    // The list resets after each reply.
    s.submit_user_message("again".into()).unwrap();
    let events = r.until(EventKind::Result).await;
    assert_eq!(as_message(&events[0]).message.content[0]["text"], "[]");
    s.stop_task("t2").await.unwrap();
    s.submit_user_message("once more".into()).unwrap();
    let events = r.until(EventKind::Result).await;
    assert_eq!(
        as_message(&events[0]).message.content[0]["text"],
        r#"[["stop_task","t2"]]"#
    );
}

#[tokio::test]
async fn crash_reports_agent_exited_then_done_and_the_session_is_kept_ended() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, "crash").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("boom".into()).unwrap();
    let events = r.read_to_end().await;
    assert_eq!(kinds(&events), ["session_ready", "error", "done"]);
    let err = as_error(&events[1]);
    assert_eq!(err.code, "agent_exited");
    assert_eq!(
        err.message,
        "agent exited: replay scenario \"crash\": the agent crashed after the first user message"
    );
    // Marked ended before `done` was appended: still registered (kept readable), no input.
    let kept = reg.get(s.id()).expect("the ended session is kept readable");
    assert!(kept.has_ended());
    assert!(matches!(s.interrupt().await, Err(SessionError::Closed)));
    assert!(reg.remove(s.id()).await);
    assert!(reg.is_empty());
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn stream_emits_n_messages_per_turn() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "stream:5").await;
    let mut r = Reader::new(&s);
    for turn in 1..=2 {
        s.submit_user_message("go".into()).unwrap();
        let mut events = r.until(EventKind::Result).await;
        if turn == 1 {
            assert_eq!(events.remove(0).kind(), EventKind::SessionReady);
        }
        assert_eq!(events.len(), 6, "5 message_complete + result");
        for (i, ev) in events[..5].iter().enumerate() {
            let mc = as_message(ev);
            assert_eq!(mc.message_id, format!("msg_stream_{turn}_{}", i + 1));
            assert_eq!(
                mc.message.content,
                [json!({"type": "text", "text": format!("chunk {}", i + 1)})]
            );
            let last = i == 4;
            assert_eq!(
                mc.message.stop_reason.as_deref(),
                last.then_some("end_turn")
            );
            assert_eq!(mc.message.model.as_deref(), Some("stream:5"));
        }
        let result = as_result(&events[5]);
        assert_eq!(
            (result.session_id.as_str(), result.subtype.as_str()),
            (s.id(), "success")
        );
    }
}

#[tokio::test]
async fn stream_with_pause_and_size() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "stream:3:10:100").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("go".into()).unwrap();
    let events = r.until(EventKind::Result).await;
    assert_eq!(
        kinds(&events),
        [
            "session_ready",
            "message_complete",
            "message_complete",
            "message_complete",
            "result"
        ]
    );
    for ev in &events[1..4] {
        let text = as_message(ev).message.content[0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(text.len(), 100, "{text:?}");
    }
}

#[tokio::test]
async fn interrupt_ends_a_long_stream_at_once() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, "stream:1000:5").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("go".into()).unwrap();
    r.until(EventKind::MessageComplete).await;
    s.interrupt().await.unwrap();
    let rest = r.until(EventKind::Result).await;
    let result = as_result(rest.last().unwrap());
    assert_eq!(
        (result.session_id.as_str(), result.subtype.as_str()),
        (s.id(), "interrupted")
    );
    assert!(
        rest.len() < 900,
        "the turn ended early ({} events)",
        rest.len()
    );
    assert!(rest[..rest.len() - 1]
        .iter()
        .all(|e| e.kind() == EventKind::MessageComplete));
    // Exactly one result, and the session still works: the next turn starts from 1.
    s.submit_user_message("again".into()).unwrap();
    let next = r.until(EventKind::MessageComplete).await;
    assert_eq!(kinds(&next), ["message_complete"]);
    assert_eq!(as_message(&next[0]).message_id, "msg_stream_2_1");
    remove_and_expect_done(&reg, &s, &mut r).await;
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn unknown_and_invalid_scenarios_are_invalid_config() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let create_err = |model: &'static str| {
        let reg = reg.clone();
        async move {
            match reg
                .create(SessionConfig {
                    model: Some(model.into()),
                    ..SessionConfig::default()
                })
                .await
            {
                Err(CreateError::Agent(AgentError::InvalidConfig(msg))) => msg,
                other => panic!("{model}: {other:?}"),
            }
        }
    };
    let msg = create_err("nope").await;
    let names = factory.scenario_names();
    assert_eq!(
        msg,
        format!(
            "unknown replay scenario \"nope\"; known scenarios: {}",
            names.join(", ")
        )
    );
    for name in [
        "echo",
        "controls",
        "crash",
        "stream:N[:ms[:bytes]]",
        "read_allow",
        "genui_render",
    ] {
        assert!(names.contains(&name.to_owned()), "{name}");
    }
    assert!(create_err("fixture:nope")
        .await
        .starts_with("unknown replay scenario \"nope\""));
    for bad in [
        "stream:",
        "stream:x",
        "stream:1:2:3:4",
        "stream:1:x",
        "stream:-1",
    ] {
        let msg = create_err(bad).await;
        assert!(
            msg.contains("expected stream:N[:ms[:bytes]]"),
            "{bad}: {msg}"
        );
    }
    assert!(reg.is_empty(), "failed creates leave nothing behind");
    assert_eq!(factory.live_agents(), 0, "and start no agent");
}

#[tokio::test]
async fn removing_sessions_stops_every_agent() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    // Agents in every waiting state: idle, waiting for permission, sleeping, streaming.
    let idle = create(&reg, "echo").await;
    let asking = create(&reg, "read_allow").await;
    let sleeping = create(&reg, "interrupt_mid_stream").await;
    let streaming = create(&reg, "stream:100000:1000").await;
    let flooding = create(&reg, "stream:1000000").await;
    assert_eq!(factory.live_agents(), 5);
    let mut asking_r = Reader::new(&asking);
    asking.submit_user_message("go".into()).unwrap();
    asking_r.until(EventKind::PermissionRequest).await;
    let mut streaming_r = Reader::new(&streaming);
    streaming.submit_user_message("go".into()).unwrap();
    streaming_r.until(EventKind::MessageComplete).await;
    sleeping.submit_user_message("go".into()).unwrap();
    let mut flooding_r = Reader::new(&flooding);
    flooding.submit_user_message("go".into()).unwrap();
    flooding_r.until(EventKind::MessageComplete).await;

    assert!(reg.remove(idle.id()).await);
    assert!(reg.remove(asking.id()).await);
    let rest = asking_r.read_to_end().await;
    assert_eq!(rest.last().unwrap().kind(), EventKind::Done);
    reg.shutdown().await;
    assert!(reg.is_empty());
    let rest = flooding_r.read_to_end().await;
    assert_eq!(rest.last().unwrap().kind(), EventKind::Done);
    no_live_agents(&factory).await;
    for s in [&idle, &asking, &sleeping, &streaming, &flooding] {
        assert!(s.is_closed());
    }
}

// ---- Directly through the factory, without a session. ----

fn context(model: &str) -> AgentContext {
    AgentContext {
        session_id: "sess-1".into(),
        config: SessionConfig {
            model: Some(model.into()),
            ..SessionConfig::default()
        },
        permissions: PermissionHandle::detached(
            Arc::new(EventLog::new(100)),
            Arc::new(PermissionRouter::new()),
        ),
        store: None,
        resume: None,
    }
}

async fn connect(factory: &ReplayAgentFactory, model: &str) -> AgentConnection {
    factory.create(context(model)).await.unwrap()
}

async fn next_message(conn: &mut AgentConnection) -> Option<Result<AgentMessage, AgentError>> {
    tokio::time::timeout(T, conn.messages.next())
        .await
        .expect("timed out waiting for an agent message")
}

#[tokio::test]
async fn disconnect_ends_the_stream_and_the_task() {
    let factory = ReplayAgentFactory::new();
    let mut conn = connect(&factory, "stream:1000000").await;
    conn.client.query("go".into()).await.unwrap();
    assert!(matches!(
        next_message(&mut conn).await,
        Some(Ok(AgentMessage::Assistant(_)))
    ));
    conn.client.disconnect().await.unwrap();
    assert!(
        next_message(&mut conn).await.is_none(),
        "ends at once, buffer or not"
    );
    assert!(next_message(&mut conn).await.is_none());
    conn.client.disconnect().await.unwrap(); // idempotent
    assert_eq!(
        conn.client.query("x".into()).await,
        Err(AgentError::Disconnected)
    );
    assert_eq!(conn.client.interrupt().await, Err(AgentError::Disconnected));
    assert_eq!(
        conn.client.set_model(Some("m")).await,
        Err(AgentError::Disconnected)
    );
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn dropping_the_stream_stops_the_task() {
    let factory = ReplayAgentFactory::new();
    // Waiting in a 3600 s delay when the stream goes away.
    let script = r#"{"kind":"expect_user_query"}
{"kind":"delay","seconds":3600}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success"}}"#;
    let factory = factory.with_script("slow", Script::parse("slow", script).unwrap());
    let conn = connect(&factory, "slow").await;
    conn.client.query("go".into()).await.unwrap();
    assert_eq!(factory.live_agents(), 1);
    let AgentConnection { client, messages } = conn;
    drop(messages);
    no_live_agents(&factory).await;
    assert_eq!(
        client.query("x".into()).await,
        Err(AgentError::Disconnected)
    );
}

#[tokio::test]
async fn dropping_the_client_stops_the_task_and_ends_the_stream() {
    let factory = ReplayAgentFactory::new();
    let AgentConnection {
        client,
        mut messages,
    } = connect(&factory, "echo").await;
    drop(client);
    assert!(tokio::time::timeout(T, messages.next())
        .await
        .unwrap()
        .is_none());
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn an_interrupt_right_after_a_query_is_never_lost() {
    let factory = ReplayAgentFactory::new();
    let mut conn = connect(&factory, "stream:1000000").await;
    conn.client.query("go".into()).await.unwrap();
    conn.client.interrupt().await.unwrap();
    let mut assistants = 0;
    let result = loop {
        match next_message(&mut conn).await.unwrap().unwrap() {
            AgentMessage::Assistant(_) => assistants += 1,
            AgentMessage::Result(result) => break result,
            other => panic!("{other:?}"),
        }
    };
    assert!(assistants < 1000, "{assistants}");
    assert_eq!(
        (result.session_id.as_str(), result.subtype.as_str()),
        ("sess-1", "interrupted")
    );
    assert!(result.ends_turn);
    conn.client.disconnect().await.unwrap();
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn direct_echo_and_results_end_turns() {
    let factory = ReplayAgentFactory::new();
    let mut conn = connect(&factory, "fixture:echo").await;
    conn.client.query("hi".into()).await.unwrap();
    let Some(Ok(AgentMessage::Assistant(msg))) = next_message(&mut conn).await else {
        panic!()
    };
    assert_eq!(msg.id, "msg_echo_1");
    assert_eq!(
        msg.model.as_deref(),
        Some("fixture:echo"),
        "the model as passed"
    );
    let Some(Ok(AgentMessage::Result(result))) = next_message(&mut conn).await else {
        panic!()
    };
    assert!(result.ends_turn);
    assert_eq!(result.session_id, "sess-1");
}

/// A turn that goes on after its result; the next turn is queued behind it.
const AFTER_RESULT_SCRIPT: &str = r#"{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"ResultMessage","session_id":"s1","subtype":"success"}}
{"kind":"delay","seconds":3600}
{"kind":"outbound","message":{"type":"ResultMessage","session_id":"s1","subtype":"success"}}
{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"AssistantMessage","id":"m_2","content":[]}}
{"kind":"outbound","message":{"type":"ResultMessage","session_id":"s2","subtype":"success"}}"#;

#[tokio::test]
async fn an_interrupt_of_a_queued_turn_ends_it_at_once() {
    let factory = ReplayAgentFactory::new().with_script(
        "after",
        Script::parse("after", AFTER_RESULT_SCRIPT).unwrap(),
    );
    let mut conn = connect(&factory, "after").await;
    conn.client.query("one".into()).await.unwrap();
    let Some(Ok(AgentMessage::Result(first))) = next_message(&mut conn).await else {
        panic!()
    };
    assert!(first.ends_turn);
    // Turn one is still sleeping after its result; turn two is queued, then interrupted.
    conn.client.query("two".into()).await.unwrap();
    conn.client.interrupt().await.unwrap();
    let Some(Ok(AgentMessage::Result(second))) = next_message(&mut conn).await else {
        panic!()
    };
    assert_eq!(
        (second.session_id.as_str(), second.subtype.as_str()),
        ("s2", "interrupted")
    );
    assert!(second.ends_turn);
    // Both turns were consumed.
    conn.client.query("three".into()).await.unwrap();
    let Some(Ok(AgentMessage::Error { code, .. })) = next_message(&mut conn).await else {
        panic!()
    };
    assert_eq!(code, "scenario_exhausted");
}

#[tokio::test]
async fn extra_results_do_not_end_turns() {
    let script = r#"{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success"}}
{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success"}}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success","late":true}}"#;
    let factory =
        ReplayAgentFactory::new().with_script("extra", Script::parse("extra", script).unwrap());
    let mut conn = connect(&factory, "extra").await;
    let Some(Ok(AgentMessage::Result(preamble))) = next_message(&mut conn).await else {
        panic!()
    };
    assert!(
        !preamble.ends_turn,
        "no turn is running before the first query"
    );
    conn.client.query("go".into()).await.unwrap();
    let Some(Ok(AgentMessage::Result(first))) = next_message(&mut conn).await else {
        panic!()
    };
    assert!(first.ends_turn);
    assert_eq!(first.session_id, "sess-1");
    let Some(Ok(AgentMessage::Result(late))) = next_message(&mut conn).await else {
        panic!()
    };
    assert!(!late.ends_turn);
    assert_eq!(late.extra["late"], true);
}

#[tokio::test]
async fn crash_stream_yields_the_error_then_ends() {
    let factory = ReplayAgentFactory::new();
    let mut conn = connect(&factory, "crash").await;
    conn.client.query("boom".into()).await.unwrap();
    let Some(Err(err)) = next_message(&mut conn).await else {
        panic!()
    };
    assert_eq!(err.code(), "agent_exited");
    assert!(matches!(err, AgentError::Exited(_)));
    assert!(next_message(&mut conn).await.is_none());
    no_live_agents(&factory).await;
    assert_eq!(
        conn.client.query("again".into()).await,
        Err(AgentError::Disconnected)
    );
}

#[tokio::test]
async fn ask_user_question_answers_reach_the_agent_as_an_allow() {
    // Through the factory with our own router, to observe the prompt and answer it.
    let log = Arc::new(EventLog::new(100));
    let router = Arc::new(PermissionRouter::new());
    let mut ctx = context("ask_user_question");
    ctx.permissions = PermissionHandle::detached(Arc::clone(&log), Arc::clone(&router));
    let factory = ReplayAgentFactory::new();
    let mut conn = factory.create(ctx).await.unwrap();
    let mut sub = log.subscribe_from_start();
    conn.client.query("ask".into()).await.unwrap();
    assert!(matches!(
        next_message(&mut conn).await,
        Some(Ok(AgentMessage::Assistant(_)))
    ));
    let ev = tokio::time::timeout(T, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let OutboundEvent::AskUserQuestion(q) =
        OutboundEvent::parse(ev.kind().as_str(), ev.data_json()).unwrap()
    else {
        panic!()
    };
    router
        .resolve(
            &q.correlation_id,
            agent_webkit_core::permission::PromptReply::Question(json!({"Pick a color": "blue"})),
        )
        .unwrap();
    let Some(Ok(AgentMessage::Assistant(reply))) = next_message(&mut conn).await else {
        panic!()
    };
    assert_eq!(reply.id, "m_2");
    let Some(Ok(AgentMessage::Result(result))) = next_message(&mut conn).await else {
        panic!()
    };
    assert_eq!(result.session_id, "fake-3");
}

#[tokio::test]
async fn a_quiet_sessions_ring_is_compressed_and_replays_byte_for_byte() {
    let config = agent_webkit_core::registry::RegistryConfig {
        compact_after: Some(std::time::Duration::ZERO),
        ..Default::default()
    };
    let reg = agent_webkit_core::registry::SessionRegistry::with_config(
        Arc::new(ReplayAgentFactory::new()),
        None,
        config,
    );
    let s = create(&reg, "stream:300:0:200").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("go".into()).unwrap();
    r.until(EventKind::Result).await;
    let before = s.event_log().snapshot();
    assert_eq!(before.len(), 302);
    let hot = s.event_log().memory();
    assert_eq!(hot.hot_events, 302);

    assert_eq!(reg.compact_quiet_logs().await, 302);
    let cold = s.event_log().memory();
    assert_eq!((cold.events, cold.hot_events), (302, 0));
    assert!(cold.cold_bytes * 3 < hot.hot_bytes, "{cold:?} vs {hot:?}");

    // Any cursor replays the very same frames from the compressed blocks.
    for cursor in [0u64, 1, 150, 301] {
        let mut sub = s.subscribe(Some(cursor)).unwrap();
        let mut got = Vec::new();
        while got.len() < (302 - cursor) as usize {
            let batch = tokio::time::timeout(T, sub.next_batch(64))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.extend(batch);
        }
        for (ev, want) in got.iter().zip(&before[cursor as usize..]) {
            assert_eq!(ev.frame(), want.frame());
        }
    }
    // The session goes on: the next turn's events are appended (hot) after the cold ones.
    s.submit_user_message("again".into()).unwrap();
    let second = r.until(EventKind::Result).await;
    assert_eq!(second.len(), 301);
    assert_eq!(s.event_log().memory().hot_events, 301);
    reg.remove(s.id()).await;
}
