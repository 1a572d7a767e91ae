//! Every built-in fixture scenario, end to end through the real core session machinery, plus
//! the script semantics (interrupts, exhaustion, preambles, scenario directories).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agent_webkit_core::models::UserContent;
use agent_webkit_core::models::{EventKind, OutboundEvent};
use agent_webkit_core::permission::PermissionDecision;
use agent_webkit_core::session::SessionError;
use agent_webkit_replay::{ReplayAgentFactory, ReplayError, Script};
use common::*;
use serde_json::json;

/// Runs `model` with one user message that needs no answer; returns the turn's events.
async fn one_turn(model: &str, content: UserContent) -> Vec<OutboundEvent> {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, model).await;
    let mut r = Reader::new(&s);
    s.submit_user_message(content).unwrap();
    let events = r.until(EventKind::Result).await;
    remove_and_expect_done(&reg, &s, &mut r).await;
    no_live_agents(&factory).await;
    events
}

#[tokio::test]
async fn plain_qa() {
    let events = one_turn("plain_qa", "hi".into()).await;
    assert_eq!(
        kinds(&events),
        ["session_ready", "message_complete", "result"]
    );
    let mc = as_message(&events[1]);
    assert_eq!(mc.message_id, "m_1");
    assert_eq!(
        mc.message.content,
        [json!({"type": "text", "text": "hello world"})]
    );
    assert_eq!(mc.message.model.as_deref(), Some("claude-opus-4-7"));
    assert_eq!(mc.message.stop_reason.as_deref(), Some("end_turn"));
    let result = as_result(&events[2]);
    assert_eq!(result.session_id, "fake-1");
    assert_eq!(result.subtype, "success");
    assert_eq!(json!(result.extra), json!({"total_cost_usd": 0.001}));
}

#[tokio::test]
async fn fixture_prefix_selects_the_same_scenario() {
    let events = one_turn("fixture:plain_qa", "hi".into()).await;
    assert_eq!(
        kinds(&events),
        ["session_ready", "message_complete", "result"]
    );
    assert_eq!(as_result(&events[2]).session_id, "fake-1");
}

#[tokio::test]
async fn read_allow() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, "read_allow").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("read the README".into()).unwrap();
    let first = r.until(EventKind::PermissionRequest).await;
    assert_eq!(
        kinds(&first),
        [
            "session_ready",
            "message_complete",
            "tool_use",
            "permission_request"
        ]
    );
    let OutboundEvent::ToolUse(tool_use) = &first[2] else {
        panic!()
    };
    assert_eq!(tool_use.tool_use_id, "tu_1");
    assert_eq!(tool_use.message_id, "m_1");
    let OutboundEvent::PermissionRequest(req) = &first[3] else {
        panic!()
    };
    assert_eq!(req.correlation_id, "tu_1");
    assert_eq!(req.tool_name, "Read");
    assert_eq!(req.input, json!({"path": "./README.md"}));
    assert_eq!(req.context, json!({"tool_use_id": "tu_1"}));

    s.resolve_permission("tu_1", allow()).unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["tool_result", "message_complete", "result"]);
    let OutboundEvent::ToolResult(tr) = &rest[0] else {
        panic!()
    };
    assert_eq!(
        (tr.tool_use_id.as_str(), &tr.output, tr.is_error),
        ("tu_1", &json!("first line"), false)
    );
    assert_eq!(as_message(&rest[1]).message_id, "m_2");
    let result = as_result(&rest[2]);
    assert_eq!(
        (result.session_id.as_str(), result.subtype.as_str()),
        ("fake-2", "success")
    );
    assert_eq!(result.extra["total_cost_usd"], 0.002);
    // A second answer is a conflict.
    assert!(matches!(
        s.resolve_permission("tu_1", allow()),
        Err(SessionError::Conflict(_))
    ));
    remove_and_expect_done(&reg, &s, &mut r).await;
    assert!(reg.is_empty());
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn read_allow_denied_without_interrupt_continues_the_script() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "read_allow").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("go".into()).unwrap();
    r.until(EventKind::PermissionRequest).await;
    s.resolve_permission(
        "tu_1",
        PermissionDecision::Deny {
            message: "no".into(),
            interrupt: false,
        },
    )
    .unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["tool_result", "message_complete", "result"]);
    assert_eq!(as_result(&rest[2]).subtype, "success");
}

#[tokio::test]
async fn deny_with_interrupt() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, "deny_with_interrupt").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("clean up".into()).unwrap();
    let first = r.until(EventKind::PermissionRequest).await;
    assert_eq!(
        kinds(&first),
        [
            "session_ready",
            "message_complete",
            "tool_use",
            "permission_request"
        ]
    );
    let OutboundEvent::PermissionRequest(req) = &first[3] else {
        panic!()
    };
    assert_eq!(
        (req.tool_name.as_str(), &req.input),
        ("Bash", &json!({"command": "rm -rf /"}))
    );
    s.resolve_permission(
        "tu_1",
        PermissionDecision::Deny {
            message: "absolutely not".into(),
            interrupt: true,
        },
    )
    .unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["result"]);
    let result = as_result(&rest[0]);
    assert_eq!(
        (result.session_id.as_str(), result.subtype.as_str()),
        ("fake-deny", "interrupted")
    );
    // Exactly one result: the next message meets the exhausted script, nothing stray before.
    s.submit_user_message("again".into()).unwrap();
    assert_eq!(
        kinds(&r.until(EventKind::Result).await),
        ["error", "result"]
    );
    remove_and_expect_done(&reg, &s, &mut r).await;
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn ask_user_question_answered() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, "ask_user_question").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("ask me".into()).unwrap();
    let first = r.until(EventKind::AskUserQuestion).await;
    assert_eq!(
        kinds(&first),
        [
            "session_ready",
            "message_complete",
            "tool_use",
            "ask_user_question"
        ]
    );
    let OutboundEvent::AskUserQuestion(q) = &first[3] else {
        panic!()
    };
    assert_eq!(q.correlation_id, "tu_q");
    assert_eq!(
        q.questions,
        json!({"questions": [{"question": "Pick a color", "options": [{"label": "red"}, {"label": "blue"}]}]})
    );
    // A question is not answered with a permission response.
    assert!(matches!(
        s.resolve_permission("tu_q", allow()),
        Err(SessionError::Conflict(_))
    ));
    s.resolve_question("tu_q", json!({"Pick a color": "red"}))
        .unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["message_complete", "result"]);
    assert_eq!(
        as_message(&rest[0]).message.content,
        [json!({"type": "text", "text": "You picked a color."})]
    );
    assert_eq!(as_result(&rest[1]).session_id, "fake-3");
    assert!(
        s.resolve_question("tu_q", json!({})).is_err(),
        "answered once"
    );
    remove_and_expect_done(&reg, &s, &mut r).await;
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn multi_tool_asks_twice_in_order() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "multi_tool").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("read both".into()).unwrap();
    let first = r.until(EventKind::PermissionRequest).await;
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
    let OutboundEvent::PermissionRequest(req) = &first[4] else {
        panic!()
    };
    assert_eq!(req.correlation_id, "tu_1");
    s.resolve_permission("tu_1", allow()).unwrap();
    let second = r.until(EventKind::PermissionRequest).await;
    let OutboundEvent::PermissionRequest(req) = &second[0] else {
        panic!()
    };
    assert_eq!(
        (req.correlation_id.as_str(), &req.input),
        ("tu_2", &json!({"path": "b.txt"}))
    );
    s.resolve_permission("tu_2", allow()).unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(
        kinds(&rest),
        ["tool_result", "tool_result", "message_complete", "result"]
    );
    assert_eq!(as_result(&rest[3]).session_id, "fake-multi");
    remove_and_expect_done(&reg, &s, &mut r).await;
}

#[tokio::test]
async fn multi_turn_one_turn_at_a_time() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "multi_turn").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("hi".into()).unwrap();
    let first = r.until(EventKind::Result).await;
    assert_eq!(
        kinds(&first),
        ["session_ready", "message_complete", "result"]
    );
    assert_eq!(as_message(&first[1]).message_id, "m_1");
    s.submit_user_message("I'm Ada".into()).unwrap();
    let second = r.until(EventKind::Result).await;
    assert_eq!(kinds(&second), ["message_complete", "result"]);
    assert_eq!(as_message(&second[0]).message_id, "m_2");
    assert_eq!(as_result(&second[1]).session_id, "fake-mt");
    remove_and_expect_done(&reg, &s, &mut r).await;
}

#[tokio::test]
async fn queued_messages_run_in_order_then_the_script_is_exhausted() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "fixture:multi_turn").await;
    let mut r = Reader::new(&s);
    for _ in 0..4 {
        s.submit_user_message("hi".into()).unwrap();
    }
    let mut events = Vec::new();
    for _ in 0..4 {
        events.extend(r.until(EventKind::Result).await);
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
            "result",
            "error",
            "result"
        ]
    );
    for i in [5, 7] {
        let err = as_error(&events[i]);
        assert_eq!(err.code, "scenario_exhausted");
        assert!(err.message.contains("2 scripted turn"), "{}", err.message);
        let result = as_result(&events[i + 1]);
        assert_eq!(result.subtype, "error_during_execution");
        assert_eq!(result.session_id, s.id(), "the agent's own session id");
        assert_eq!(json!(result.extra), json!({"is_error": true}));
    }
}

#[tokio::test]
async fn interrupt_mid_stream() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, "interrupt_mid_stream").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("think".into()).unwrap();
    let first = r.until(EventKind::MessageComplete).await;
    let mc = as_message(&first[1]);
    assert_eq!(mc.message.stop_reason, None);
    s.interrupt().await.unwrap();
    // Whether the interrupt lands during the delay or after it, the turn ends with one
    // `interrupted` result carrying the scripted session id.
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["result"]);
    let result = as_result(&rest[0]);
    assert_eq!(
        (result.session_id.as_str(), result.subtype.as_str()),
        ("fake-interrupt", "interrupted")
    );
    s.submit_user_message("again".into()).unwrap();
    assert_eq!(
        kinds(&r.until(EventKind::Result).await),
        ["error", "result"]
    );
    remove_and_expect_done(&reg, &s, &mut r).await;
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn tool_error() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "tool_error").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("read /missing".into()).unwrap();
    let first = r.until(EventKind::PermissionRequest).await;
    assert_eq!(
        kinds(&first),
        [
            "session_ready",
            "message_complete",
            "tool_use",
            "permission_request"
        ]
    );
    s.resolve_permission("tu_1", allow()).unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["tool_result", "message_complete", "result"]);
    let OutboundEvent::ToolResult(tr) = &rest[0] else {
        panic!()
    };
    assert!(tr.is_error);
    assert_eq!(tr.output, json!("ENOENT: no such file"));
    assert_eq!(as_result(&rest[2]).session_id, "fake-toolerr");
    remove_and_expect_done(&reg, &s, &mut r).await;
}

#[tokio::test]
async fn image_attachment() {
    let content = UserContent::Blocks(vec![
        json!({"type": "text", "text": "what is this?"}),
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}),
    ]);
    let events = one_turn("image_attachment", content).await;
    assert_eq!(
        kinds(&events),
        ["session_ready", "message_complete", "result"]
    );
    assert_eq!(
        as_message(&events[1]).message.content,
        [json!({"type": "text", "text": "I see a red square."})]
    );
    assert_eq!(as_result(&events[2]).session_id, "fake-image");
}

#[tokio::test]
async fn mcp_status_change() {
    let events = one_turn("mcp_status_change", "status?".into()).await;
    assert_eq!(
        kinds(&events),
        [
            "session_ready",
            "mcp_status_change",
            "message_complete",
            "result"
        ]
    );
    let OutboundEvent::McpStatusChange(status) = &events[1] else {
        panic!()
    };
    assert_eq!(
        (status.server_name.as_str(), status.status.as_str()),
        ("notion", "connected")
    );
    assert_eq!(as_result(&events[3]).session_id, "fake-mcp");
}

#[tokio::test]
async fn streaming_long() {
    let events = one_turn("streaming_long", "go".into()).await;
    assert_eq!(
        kinds(&events),
        ["session_ready", "message_complete", "result"]
    );
    let texts: Vec<_> = as_message(&events[1])
        .message
        .content
        .iter()
        .map(|b| b["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["part one. ", "part two. ", "part three."]);
    let result = as_result(&events[2]);
    assert_eq!(result.session_id, "fake-long");
    assert_eq!(result.extra["total_cost_usd"], 0.01);
}

#[tokio::test]
async fn genui_render() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "genui_render").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("weather in Boston".into()).unwrap();
    let first = r.until(EventKind::PermissionRequest).await;
    assert_eq!(
        kinds(&first),
        [
            "session_ready",
            "message_complete",
            "tool_use",
            "permission_request"
        ]
    );
    let OutboundEvent::ToolUse(tool_use) = &first[2] else {
        panic!()
    };
    assert_eq!(tool_use.tool_name, "mcp__genui__render_weather_card");
    assert_eq!(
        tool_use.input,
        json!({"location": "Boston, MA", "temperature_f": 72, "condition": "sunny"})
    );
    s.resolve_permission("tu_1", allow()).unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["tool_result", "message_complete", "result"]);
    let OutboundEvent::ToolResult(tr) = &rest[0] else {
        panic!()
    };
    assert_eq!(tr.output, json!("rendered:weather_card"));
    assert_eq!(as_result(&rest[2]).session_id, "fake-genui");
    remove_and_expect_done(&reg, &s, &mut r).await;
}

#[tokio::test]
async fn interrupt_while_waiting_for_permission_withdraws_the_prompt() {
    let factory = ReplayAgentFactory::new();
    let reg = registry(factory.clone());
    let s = create(&reg, "read_allow").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("go".into()).unwrap();
    r.until(EventKind::PermissionRequest).await;
    s.interrupt().await.unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["error", "result"]);
    let err = as_error(&rest[0]);
    assert_eq!(err.code, "permission_cancelled");
    assert_eq!(err.message, "interrupted");
    assert_eq!(err.correlation_id.as_deref(), Some("tu_1"));
    let result = as_result(&rest[1]);
    assert_eq!(
        (result.session_id.as_str(), result.subtype.as_str()),
        ("fake-2", "interrupted")
    );
    assert!(
        result.extra.is_empty(),
        "not the scripted success result's fields"
    );
    assert!(matches!(
        s.resolve_permission("tu_1", allow()),
        Err(SessionError::Conflict(_))
    ));
    // The rest of the turn was skipped: the script has nothing left.
    s.submit_user_message("again".into()).unwrap();
    assert_eq!(
        kinds(&r.until(EventKind::Result).await),
        ["error", "result"]
    );
    remove_and_expect_done(&reg, &s, &mut r).await;
    no_live_agents(&factory).await;
}

const LONG_DELAY_SCRIPT: &str = r#"{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"AssistantMessage","id":"m_1","content":[{"type":"text","text":"working"}]}}
{"kind":"delay","seconds":3600}
{"kind":"outbound","message":{"type":"AssistantMessage","id":"m_skipped","content":[{"type":"text","text":"never"}]}}
{"kind":"outbound","message":{"type":"ResultMessage","session_id":"scripted","subtype":"success"}}
{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"AssistantMessage","id":"m_2","content":[{"type":"text","text":"next"}]}}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success"}}"#;

#[tokio::test]
async fn interrupt_during_a_delay_ends_the_turn_at_once() {
    let factory = ReplayAgentFactory::new()
        .with_script("long", Script::parse("long", LONG_DELAY_SCRIPT).unwrap());
    let reg = registry(factory.clone());
    let s = create(&reg, "long").await;
    let mut r = Reader::new(&s);
    s.submit_user_message("go".into()).unwrap();
    r.until(EventKind::MessageComplete).await;
    s.interrupt().await.unwrap();
    let rest = r.until(EventKind::Result).await;
    assert_eq!(kinds(&rest), ["result"]);
    let result = as_result(&rest[0]);
    assert_eq!(
        (result.session_id.as_str(), result.subtype.as_str()),
        ("scripted", "interrupted")
    );
    // The next turn plays normally; its unscripted session id is the server's.
    s.submit_user_message("next".into()).unwrap();
    let next = r.until(EventKind::Result).await;
    assert_eq!(kinds(&next), ["message_complete", "result"]);
    assert_eq!(as_message(&next[0]).message_id, "m_2");
    assert_eq!(as_result(&next[1]).session_id, s.id());
    assert_eq!(as_result(&next[1]).subtype, "success");
    remove_and_expect_done(&reg, &s, &mut r).await;
    no_live_agents(&factory).await;
}

#[tokio::test]
async fn interrupt_after_the_turn_ended_is_a_no_op() {
    let reg = registry(ReplayAgentFactory::new());
    let s = create(&reg, "multi_turn").await;
    let mut r = Reader::new(&s);
    s.interrupt().await.unwrap(); // before any turn
    s.submit_user_message("hi".into()).unwrap();
    let first = r.until(EventKind::Result).await;
    assert_eq!(as_result(&first[2]).subtype, "success");
    s.interrupt().await.unwrap(); // after the turn
    s.submit_user_message("again".into()).unwrap();
    let second = r.until(EventKind::Result).await;
    assert_eq!(
        kinds(&second),
        ["message_complete", "result"],
        "no stray result"
    );
    assert_eq!(as_result(&second[1]).subtype, "success");
}

#[tokio::test]
async fn preamble_plays_before_the_first_message() {
    let script = Script::parse(
        "pre",
        r#"{"kind":"outbound","message":{"type":"SystemMessage","subtype":"mcp_status","server_name":"db","status":"connecting"}}
{"kind":"outbound","message":{"type":"SystemMessage","subtype":"init"}}
{"kind":"outbound","message":{"type":"SystemMessage","subtype":"mcp_status","server_name":"db","status":"connected"}}
{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success","num_turns":1}}"#,
    )
    .unwrap();
    let reg = registry(ReplayAgentFactory::new().with_script("pre", script));
    let s = create(&reg, "pre").await;
    let mut r = Reader::new(&s);
    let events = r.until(EventKind::McpStatusChange).await;
    assert_eq!(kinds(&events), ["session_ready", "mcp_status_change"]);
    let ev = r.next().await.unwrap();
    let OutboundEvent::McpStatusChange(status) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(status.status, "connected");
    s.submit_user_message("hi".into()).unwrap();
    let turn = r.until(EventKind::Result).await;
    assert_eq!(kinds(&turn), ["result"]);
    assert_eq!(json!(as_result(&turn[0]).extra), json!({"num_turns": 1}));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("agent-webkit-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn scenario_dir_adds_and_overrides_scenarios() {
    let dir = temp_dir("load");
    std::fs::write(
        dir.join("custom.jsonl"),
        "{\"kind\":\"expect_user_query\"}\n{\"kind\":\"outbound\",\"message\":{\"type\":\"ResultMessage\",\"session_id\":\"c\",\"subtype\":\"success\"}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("plain_qa.jsonl"),
        "{\"kind\":\"expect_user_query\"}\n{\"kind\":\"outbound\",\"message\":{\"type\":\"ResultMessage\",\"session_id\":\"overridden\",\"subtype\":\"success\"}}\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a scenario").unwrap();
    let factory = ReplayAgentFactory::with_dir(&dir).unwrap();
    let names = factory.scenario_names();
    assert!(names.contains(&"custom".to_owned()));
    assert!(!names.iter().any(|n| n.starts_with("notes")));
    assert_eq!(
        names.len(),
        ReplayAgentFactory::new().scenario_names().len() + 1
    );
    let reg = registry(factory);
    for (model, session_id) in [("custom", "c"), ("fixture:plain_qa", "overridden")] {
        let s = create(&reg, model).await;
        let mut r = Reader::new(&s);
        s.submit_user_message("x".into()).unwrap();
        let events = r.until(EventKind::Result).await;
        assert_eq!(kinds(&events), ["session_ready", "result"]);
        assert_eq!(as_result(&events[1]).session_id, session_id);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn scenario_dir_errors_are_typed() {
    let dir = temp_dir("broken");
    std::fs::write(
        dir.join("broken.jsonl"),
        "{\"kind\":\"expect_user_query\"}\n{oops\n",
    )
    .unwrap();
    let err = ReplayAgentFactory::with_dir(&dir).unwrap_err();
    let ReplayError::Script(script_err) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(script_err.line, 2);
    assert!(script_err.source_name.ends_with("broken.jsonl"));
    assert!(
        err.to_string().contains("broken.jsonl:2: invalid JSON"),
        "{err}"
    );

    std::fs::write(dir.join("broken.jsonl"), "{\"kind\":\"replay\"}\n").unwrap();
    let err = ReplayAgentFactory::with_dir(&dir).unwrap_err().to_string();
    assert!(
        err.contains("broken.jsonl:1: unknown kind \"replay\""),
        "{err}"
    );

    std::fs::remove_dir_all(&dir).unwrap();
    let err = ReplayAgentFactory::with_dir(&dir).unwrap_err();
    assert!(matches!(err, ReplayError::Io { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot read "), "{err}");
}
