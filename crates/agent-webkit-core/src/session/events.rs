//! From agent messages to wire events: what each [`AgentMessage`] appends to a session's log.

use std::collections::HashSet;

use serde_json::Value;

use super::Session;
use crate::agent::AgentMessage;
use crate::models::{
    AssistantMessageBody, ErrorData, EventKind, McpStatusChangeData, MessageCompleteData,
    MessageDeltaData, ResultData, ToolResultData, ToolUseData,
};

/// Turns agent messages into events; remembers which tool_use blocks were announced.
#[derive(Default)]
pub(super) struct EventTranslator {
    message_id: String,
    announced: HashSet<String>,
}

impl EventTranslator {
    /// Appends the events for one message; returns whether it ended the turn.
    pub(super) fn translate(&mut self, session: &Session, message: AgentMessage) -> bool {
        match message {
            AgentMessage::Assistant(msg) => {
                if msg.id != self.message_id {
                    self.message_id.clone_from(&msg.id);
                    self.announced.clear();
                }
                let tool_uses: Vec<ToolUseData> = msg
                    .content
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                    .filter_map(|b| {
                        let id = b.get("id").and_then(Value::as_str)?;
                        if !self.announced.insert(id.to_owned()) {
                            return None;
                        }
                        Some(ToolUseData {
                            message_id: msg.id.clone(),
                            tool_use_id: id.to_owned(),
                            tool_name: b
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            input: b
                                .get("input")
                                .cloned()
                                .unwrap_or_else(|| Value::Object(Default::default())),
                        })
                    })
                    .collect();
                session.append(
                    EventKind::MessageComplete,
                    &MessageCompleteData {
                        message_id: msg.id.clone(),
                        message: AssistantMessageBody {
                            id: msg.id,
                            role: "assistant".to_owned(),
                            content: msg.content,
                            model: msg.model,
                            stop_reason: msg.stop_reason,
                        },
                    },
                );
                for tool_use in &tool_uses {
                    session.append(EventKind::ToolUse, tool_use);
                }
                false
            }
            AgentMessage::Delta { message_id, delta } => {
                session.append(
                    EventKind::MessageDelta,
                    &MessageDeltaData { message_id, delta },
                );
                false
            }
            AgentMessage::User { content } => {
                for block in content {
                    if block.get("type").and_then(Value::as_str) != Some("tool_result") {
                        continue;
                    }
                    session.append(
                        EventKind::ToolResult,
                        &ToolResultData {
                            tool_use_id: block
                                .get("tool_use_id")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            output: block.get("content").cloned().unwrap_or(Value::Null),
                            is_error: block
                                .get("is_error")
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                        },
                    );
                }
                false
            }
            AgentMessage::Result(result) => {
                let cost = session.activity.result(&result.extra);
                let turn = result.extra.get("usage").cloned().unwrap_or(Value::Null);
                // The `usage` event is for agents reporting usage per model (the Claude CLI's
                // `modelUsage`); others (the replay agent, byte-compatible with the original)
                // keep their event sequences, and their totals still reach the detail.
                let per_model = result.extra.get("modelUsage").is_some_and(Value::is_object);
                if result.ends_turn {
                    // Before the event: a client that has seen the `result` and then asks for
                    // the session's state (listing, detail) sees the turn over.
                    session
                        .turn_running
                        .store(false, std::sync::atomic::Ordering::Release);
                }
                session.append(
                    EventKind::Result,
                    &ResultData {
                        session_id: result.session_id,
                        subtype: result.subtype,
                        extra: result.extra,
                    },
                );
                if let Some(cost) = cost.filter(|_| per_model) {
                    session.append(EventKind::Usage, &crate::models::UsageData { cost, turn });
                }
                result.ends_turn
            }
            AgentMessage::McpStatus {
                server_name,
                status,
            } => {
                session.append(
                    EventKind::McpStatusChange,
                    &McpStatusChangeData {
                        server_name,
                        status,
                    },
                );
                false
            }
            AgentMessage::Error { code, message } => {
                session.append(EventKind::Error, &ErrorData::new(code, message));
                false
            }
            AgentMessage::ApiRetry(retry) => {
                session.append(EventKind::ApiRetry, &retry);
                false
            }
        }
    }
}
