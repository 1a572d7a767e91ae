//! Golden tests: the exact wire JSON of every outbound event and inbound message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agent_webkit_core::event_log::EventLog;
use agent_webkit_core::models::*;
use serde_json::{json, Map, Value};

fn frame<T: serde::Serialize>(kind: EventKind, data: &T) -> String {
    let log = Arc::new(EventLog::new(4));
    let ev = log.append(kind, data).unwrap();
    String::from_utf8(ev.frame().to_vec()).unwrap()
}

#[test]
fn outbound_events_match_the_contract_byte_for_byte() {
    let cases: Vec<(String, &str)> = vec![
        (
            frame(EventKind::SessionReady, &SessionReadyData::new("abc")),
            r#"id: 1
event: session_ready
data: {"session_id":"abc","protocol_version":"1.0"}"#,
        ),
        (
            frame(
                EventKind::MessageDelta,
                &MessageDeltaData {
                    message_id: "m1".into(),
                    delta: json!({"type": "text", "text": "Hel"}),
                },
            ),
            r#"id: 1
event: message_delta
data: {"message_id":"m1","delta":{"type":"text","text":"Hel"}}"#,
        ),
        (
            frame(
                EventKind::MessageComplete,
                &MessageCompleteData {
                    message_id: "m1".into(),
                    message: AssistantMessageBody {
                        id: "m1".into(),
                        role: "assistant".into(),
                        content: vec![
                            json!({"type": "text", "text": "hi"}),
                            json!({"type": "tool_use", "id": "tu", "name": "Read", "input": {"path": "x"}}),
                        ],
                        model: Some("claude-opus-4-7".into()),
                        stop_reason: None,
                    },
                },
            ),
            r#"id: 1
event: message_complete
data: {"message_id":"m1","message":{"id":"m1","role":"assistant","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"tu","name":"Read","input":{"path":"x"}}],"model":"claude-opus-4-7","stop_reason":null}}"#,
        ),
        (
            frame(
                EventKind::ToolUse,
                &ToolUseData {
                    message_id: "m1".into(),
                    tool_use_id: "tu".into(),
                    tool_name: "Read".into(),
                    input: json!({"path": "x"}),
                },
            ),
            r#"id: 1
event: tool_use
data: {"message_id":"m1","tool_use_id":"tu","tool_name":"Read","input":{"path":"x"}}"#,
        ),
        (
            frame(
                EventKind::ToolResult,
                &ToolResultData {
                    tool_use_id: "tu".into(),
                    output: json!("AAA"),
                    is_error: false,
                },
            ),
            r#"id: 1
event: tool_result
data: {"tool_use_id":"tu","output":"AAA","is_error":false}"#,
        ),
        (
            frame(
                EventKind::PermissionRequest,
                &PermissionRequestData {
                    correlation_id: "tu".into(),
                    tool_name: "Bash".into(),
                    input: json!({"command": "ls"}),
                    context: json!({"tool_use_id": "tu"}),
                },
            ),
            r#"id: 1
event: permission_request
data: {"correlation_id":"tu","tool_name":"Bash","input":{"command":"ls"},"context":{"tool_use_id":"tu"}}"#,
        ),
        (
            frame(
                EventKind::AskUserQuestion,
                &AskUserQuestionData {
                    correlation_id: "q".into(),
                    questions: json!({"questions": []}),
                },
            ),
            r#"id: 1
event: ask_user_question
data: {"correlation_id":"q","questions":{"questions":[]}}"#,
        ),
        (
            frame(EventKind::Result, &{
                let mut extra = Map::new();
                extra.insert("total_cost_usd".into(), json!(0.001));
                extra.insert("num_turns".into(), json!(1));
                ResultData {
                    session_id: "s".into(),
                    subtype: "success".into(),
                    extra,
                }
            }),
            r#"id: 1
event: result
data: {"session_id":"s","subtype":"success","total_cost_usd":0.001,"num_turns":1}"#,
        ),
        (
            frame(EventKind::Error, &ErrorData::new("agent_exited", "bye")),
            r#"id: 1
event: error
data: {"code":"agent_exited","message":"bye"}"#,
        ),
        (
            frame(
                EventKind::McpStatusChange,
                &McpStatusChangeData {
                    server_name: "notion".into(),
                    status: "connected".into(),
                },
            ),
            r#"id: 1
event: mcp_status_change
data: {"server_name":"notion","status":"connected"}"#,
        ),
        (
            frame(EventKind::Done, &DoneData {}),
            "id: 1\nevent: done\ndata: {}",
        ),
    ];
    for (actual, expected) in cases {
        assert_eq!(actual, format!("{expected}\n\n"));
        // Every frame parses back into the typed event.
        let mut lines = actual.lines();
        lines.next();
        let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
        let parsed = OutboundEvent::parse(event, data).unwrap();
        assert_eq!(parsed.kind().as_str(), event);
    }
}

#[test]
fn inbound_messages_parse_and_round_trip() {
    let cases = [
        json!({"type": "user_message", "content": "hi"}),
        json!({"type": "user_message", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}),
        json!({"type": "interrupt"}),
        json!({"type": "permission_response", "correlation_id": "c", "behavior": "allow", "updated_input": {"a": 1}, "updated_permissions": []}),
        json!({"type": "permission_response", "correlation_id": "c", "behavior": "deny", "message": "no", "interrupt": true}),
        json!({"type": "question_response", "correlation_id": "c", "answers": {"Pick": "red"}}),
        json!({"type": "set_permission_mode", "mode": "plan"}),
        json!({"type": "set_model", "model": "m"}),
        json!({"type": "set_model", "model": null}),
        json!({"type": "stop_task", "task_id": "t1"}),
    ];
    for case in cases {
        let parsed = InboundMessage::from_json(case.to_string().as_bytes()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), case);
    }
    // set_model without the field means "default model".
    assert_eq!(
        InboundMessage::from_json(br#"{"type":"set_model"}"#).unwrap(),
        InboundMessage::SetModel { model: None }
    );
}

#[test]
fn inbound_errors_are_precise() {
    let err = |body: &str| {
        InboundMessage::from_json(body.as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err("{nope"), "Invalid JSON");
    assert_eq!(err("[1]"), "Body must be a JSON object");
    assert_eq!(err("{}"), "Missing field: type");
    assert_eq!(err(r#"{"type":"bogus"}"#), "Unknown message type: bogus");
    assert_eq!(err(r#"{"type":"user_message"}"#), "Missing field: content");
    assert_eq!(
        err(r#"{"type":"user_message","content":5}"#),
        "Invalid field content: expected a string or an array of content blocks"
    );
    assert_eq!(
        err(r#"{"type":"permission_response","behavior":"allow"}"#),
        "Missing field: correlation_id"
    );
    assert_eq!(
        err(r#"{"type":"permission_response","correlation_id":"c"}"#),
        "Missing field: behavior"
    );
    assert_eq!(
        err(r#"{"type":"permission_response","correlation_id":"c","behavior":"maybe"}"#),
        "Invalid field behavior: expected \"allow\" or \"deny\""
    );
    assert_eq!(
        err(
            r#"{"type":"permission_response","correlation_id":"c","behavior":"allow","interrupt":true}"#
        ),
        "interrupt is only valid with behavior \"deny\""
    );
    assert_eq!(
        err(r#"{"type":"question_response","correlation_id":"c"}"#),
        "Missing field: answers"
    );
    assert_eq!(
        err(r#"{"type":"set_permission_mode"}"#),
        "Missing field: mode"
    );
    assert_eq!(err(r#"{"type":"stop_task"}"#), "Missing field: task_id");
    assert_eq!(
        err(r#"{"type":"set_model","model":3}"#),
        "Invalid field model: expected a string"
    );
}

#[test]
fn create_request_is_lenient_but_typed() {
    assert_eq!(
        CreateSessionRequest::from_json(b"").unwrap(),
        CreateSessionRequest::default()
    );
    assert_eq!(
        CreateSessionRequest::from_json(b"{}").unwrap(),
        CreateSessionRequest::default()
    );
    let req = CreateSessionRequest::from_json(br#"{"model":"echo","extra":1}"#).unwrap();
    assert_eq!(req.model.as_deref(), Some("echo"));
    assert!(CreateSessionRequest::from_json(br#"{"model":1}"#).is_err());
    assert!(CreateSessionRequest::from_json(b"[]").is_err());
    assert!(CreateSessionRequest::from_json(b"{").is_err());
    let resp = serde_json::to_string(&CreateSessionResponse {
        session_id: "s".into(),
        protocol_version: "1.0".into(),
        forked_from: None,
    })
    .unwrap();
    assert_eq!(resp, r#"{"session_id":"s","protocol_version":"1.0"}"#);
    let _: Value = serde_json::from_str(&resp).unwrap();
}
