//! Scenario scripts: one JSON object per line (see `crates/agent-webkit-replay/README.md`).

use std::time::Duration;

use agent_webkit_core::agent::{AgentMessage, AssistantMessage, TurnResult};
use serde_json::{Map, Value};

/// A script line that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {reason}")]
pub struct ScriptError {
    /// File or scenario name.
    pub source_name: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// One step of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait for the next user message (starts a turn).
    ExpectUserQuery,
    /// Emit a message.
    Outbound(AgentMessage),
    /// Ask the permission callback and wait for the client's decision.
    Callback {
        /// Tool name.
        tool_name: String,
        /// Tool input.
        input: Value,
        /// Context (holds `tool_use_id`).
        context: Value,
    },
    /// Sleep (interruptible).
    Delay(Duration),
}

/// A parsed scenario script.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Script {
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Script {
    /// Parses a JSONL script; `source_name` is used in errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Self, ScriptError> {
        let mut steps = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let err = |reason: String| ScriptError {
                source_name: source_name.to_owned(),
                line: line_no,
                reason,
            };
            if line.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(line).map_err(|e| err(format!("invalid JSON: {e}")))?;
            let kind = value
                .get("kind")
                .and_then(Value::as_str)
                .ok_or_else(|| err("missing \"kind\"".into()))?;
            match kind {
                "expect_user_query" => steps.push(Step::ExpectUserQuery),
                "outbound" => {
                    let message = value
                        .get("message")
                        .ok_or_else(|| err("outbound without \"message\"".into()))?;
                    if let Some(message) = parse_message(message).map_err(err)? {
                        steps.push(Step::Outbound(message));
                    }
                }
                "callback_expect" => steps.push(Step::Callback {
                    tool_name: value
                        .get("tool_name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| err("callback_expect without \"tool_name\"".into()))?
                        .to_owned(),
                    input: value
                        .get("tool_input")
                        .cloned()
                        .unwrap_or(Value::Object(Map::new())),
                    context: value
                        .get("context")
                        .cloned()
                        .unwrap_or(Value::Object(Map::new())),
                }),
                "delay" => {
                    let seconds = value
                        .get("seconds")
                        .and_then(Value::as_f64)
                        .ok_or_else(|| err("delay without numeric \"seconds\"".into()))?;
                    let delay = Duration::try_from_secs_f64(seconds)
                        .map_err(|_| err("delay seconds must be non-negative".into()))?;
                    steps.push(Step::Delay(delay));
                }
                other => return Err(err(format!("unknown kind {other:?}"))),
            }
        }
        Ok(Self { steps })
    }
}

fn str_field(message: &Value, field: &str) -> Option<String> {
    message
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Maps a scripted message to an agent message (`None` for system messages we ignore).
fn parse_message(message: &Value) -> Result<Option<AgentMessage>, String> {
    let ty = message
        .get("type")
        .and_then(Value::as_str)
        .ok_or("message without \"type\"")?;
    let content = || match message.get("content") {
        Some(Value::Array(blocks)) => Ok(blocks.clone()),
        _ => Err(format!("{ty} without a \"content\" array")),
    };
    Ok(Some(match ty {
        "AssistantMessage" => AgentMessage::Assistant(AssistantMessage {
            id: str_field(message, "id").ok_or("AssistantMessage without \"id\"")?,
            content: content()?,
            model: str_field(message, "model"),
            stop_reason: str_field(message, "stop_reason"),
        }),
        "UserMessage" => AgentMessage::User {
            content: content()?,
        },
        "ResultMessage" => {
            let mut extra = message.as_object().cloned().unwrap_or_default();
            extra.remove("type");
            let session_id = extra.remove("session_id");
            let subtype = extra.remove("subtype");
            AgentMessage::Result(TurnResult {
                session_id: session_id
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                subtype: subtype
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or("success")
                    .to_owned(),
                extra,
                ends_turn: true,
            })
        }
        "SystemMessage" => match message.get("subtype").and_then(Value::as_str) {
            Some("mcp_status") => AgentMessage::McpStatus {
                server_name: str_field(message, "server_name").unwrap_or_default(),
                status: str_field(message, "status").unwrap_or_default(),
            },
            _ => return Ok(None),
        },
        other => return Err(format!("unknown message type {other:?}")),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_every_kind_and_reports_lines() {
        let script = Script::parse(
            "t",
            r#"{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"ResultMessage","session_id":"s","subtype":"success","total_cost_usd":0.5}}

{"kind":"delay","seconds":0.05}
{"kind":"callback_expect","tool_name":"Read","tool_input":{"p":1},"context":{"tool_use_id":"tu"}}
{"kind":"outbound","message":{"type":"SystemMessage","subtype":"other"}}"#,
        )
        .unwrap();
        assert_eq!(script.steps.len(), 4);
        let Step::Outbound(AgentMessage::Result(r)) = &script.steps[1] else {
            panic!("expected result")
        };
        assert_eq!(r.extra["total_cost_usd"], 0.5);
        let err = Script::parse(
            "f.jsonl",
            "{\"kind\":\"expect_user_query\"}\n{\"kind\":\"nope\"}",
        )
        .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().starts_with("f.jsonl:2:"));
        assert!(Script::parse("f", "not json").is_err());
    }
}
