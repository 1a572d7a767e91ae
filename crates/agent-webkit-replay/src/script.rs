//! Scenario scripts: one JSON object per line (see this crate's README for the format).
//!
//! Scripts are parsed and validated once, at load time; a malformed line is a [`ScriptError`]
//! naming the source and the 1-based line number.

use std::time::Duration;

use agent_webkit_core::agent::{AgentMessage, AssistantMessage, TurnResult};
use serde_json::{Map, Value};

/// A script that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {reason}")]
pub struct ScriptError {
    /// File path or scenario name.
    pub source_name: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// One step of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait for the next user message; the steps after it, up to the next `ExpectUserQuery`,
    /// form that message's turn.
    ExpectUserQuery,
    /// Emit a message. A [`AgentMessage::Result`] whose `session_id` is empty (not scripted)
    /// gets the server's session id when played.
    Outbound(AgentMessage),
    /// Ask the permission callback ([`PermissionHandle::can_use_tool`]) and wait for the
    /// client's decision. The decision does not change the script: it always continues.
    ///
    /// [`PermissionHandle::can_use_tool`]: agent_webkit_core::permission::PermissionHandle::can_use_tool
    Callback {
        /// Tool name (`AskUserQuestion` becomes an `ask_user_question` prompt).
        tool_name: String,
        /// Tool input.
        input: Value,
        /// Context, forwarded verbatim in the prompt.
        context: Value,
        /// The prompt's correlation id (`context.tool_use_id`).
        correlation_id: String,
    },
    /// Sleep (interruptible).
    Delay(Duration),
}

/// A parsed, validated scenario script.
///
/// Steps before the first [`Step::ExpectUserQuery`] (a *preamble*) are played as soon as the
/// agent starts. Every turn must send at least one `ResultMessage`, otherwise the session would
/// wait for its end forever.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Script {
    steps: Vec<Step>,
}

impl Script {
    /// Parses a JSONL script; `source_name` (a file path or scenario name) is used in errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Self, ScriptError> {
        let mut steps = Vec::new();
        // Line of the current turn's `expect_user_query`, and whether it has sent a result.
        let mut open_turn: Option<(usize, bool)> = None;
        let unfinished = |line: usize| ScriptError {
            source_name: source_name.to_owned(),
            line,
            reason: "this turn never sends a ResultMessage, so the session would wait for its \
                     end forever"
                .into(),
        };
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let step = parse_line(line).map_err(|reason| ScriptError {
                source_name: source_name.to_owned(),
                line: line_no,
                reason,
            })?;
            match &step {
                None => {
                    tracing::debug!(
                        source = source_name,
                        line = line_no,
                        "ignoring a SystemMessage the replay agent does not emit"
                    );
                    continue;
                }
                Some(Step::ExpectUserQuery) => {
                    if let Some((start, false)) = open_turn {
                        return Err(unfinished(start));
                    }
                    open_turn = Some((line_no, false));
                }
                Some(Step::Outbound(AgentMessage::Result(_))) => {
                    if let Some((_, done)) = &mut open_turn {
                        *done = true;
                    }
                }
                Some(_) => {}
            }
            steps.extend(step);
        }
        if let Some((start, false)) = open_turn {
            return Err(unfinished(start));
        }
        Ok(Self { steps })
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Number of turns (`expect_user_query` steps).
    pub fn turns(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::ExpectUserQuery))
            .count()
    }
}

fn str_field(object: &Value, field: &str) -> Option<String> {
    object.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn required_str(object: &Value, field: &str, what: &str) -> Result<String, String> {
    str_field(object, field).ok_or_else(|| format!("{what} without a string \"{field}\""))
}

/// Parses one non-empty line; `Ok(None)` for lines that produce no step (ignored system
/// messages).
fn parse_line(line: &str) -> Result<Option<Step>, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    if !value.is_object() {
        return Err("expected a JSON object".into());
    }
    let kind = required_str(&value, "kind", "line")?;
    Ok(Some(match kind.as_str() {
        "expect_user_query" => Step::ExpectUserQuery,
        "outbound" => {
            let message = value.get("message").ok_or("outbound without \"message\"")?;
            match parse_message(message)? {
                Some(message) => Step::Outbound(message),
                None => return Ok(None),
            }
        }
        "callback_expect" => {
            let tool_name = required_str(&value, "tool_name", "callback_expect")?;
            let input = value
                .get("tool_input")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new()));
            let context = value
                .get("context")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new()));
            // The core uses `tool_use_id` (or `correlation_id`) as the prompt's id; without one
            // it would invent an id we could not withdraw on interrupt.
            let correlation_id = str_field(&context, "tool_use_id")
                .or_else(|| str_field(&context, "correlation_id"))
                .ok_or("callback_expect without a string \"context.tool_use_id\"")?;
            Step::Callback {
                tool_name,
                input,
                context,
                correlation_id,
            }
        }
        "delay" => {
            let seconds = value
                .get("seconds")
                .and_then(Value::as_f64)
                .ok_or("delay without a numeric \"seconds\"")?;
            let delay = Duration::try_from_secs_f64(seconds).map_err(|_| {
                format!("delay seconds must be a non-negative duration, got {seconds}")
            })?;
            Step::Delay(delay)
        }
        other => {
            return Err(format!(
                "unknown kind {other:?} (expected expect_user_query, outbound, callback_expect or \
                 delay)"
            ))
        }
    }))
}

/// Maps a scripted SDK message to an agent message (`None` for system messages we ignore).
fn parse_message(message: &Value) -> Result<Option<AgentMessage>, String> {
    let Some(object) = message.as_object() else {
        return Err("\"message\" must be a JSON object".into());
    };
    let ty = required_str(message, "type", "message")?;
    let content = || match message.get("content") {
        Some(Value::Array(blocks)) => Ok(blocks.clone()),
        Some(Value::String(text)) => Ok(vec![serde_json::json!({"type": "text", "text": text})]),
        _ => Err(format!("{ty} without a \"content\" array")),
    };
    let optional_str = |field: &str| match message.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{ty} \"{field}\" must be a string or null")),
    };
    Ok(Some(match ty.as_str() {
        "AssistantMessage" => AgentMessage::Assistant(AssistantMessage {
            id: required_str(message, "id", "AssistantMessage")?,
            content: content()?,
            model: optional_str("model")?,
            stop_reason: optional_str("stop_reason")?,
        }),
        "UserMessage" => AgentMessage::User {
            content: content()?,
        },
        "ResultMessage" => {
            // Filter rather than remove: `Map::remove` may reorder a preserve_order map.
            let extra = object
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "type" | "session_id" | "subtype"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            AgentMessage::Result(TurnResult {
                session_id: optional_str("session_id")?.unwrap_or_default(),
                subtype: required_str(message, "subtype", "ResultMessage")?,
                extra,
                ends_turn: true,
            })
        }
        "SystemMessage" => match message.get("subtype").and_then(Value::as_str) {
            Some("mcp_status") => AgentMessage::McpStatus {
                server_name: required_str(message, "server_name", "mcp_status SystemMessage")?,
                status: required_str(message, "status", "mcp_status SystemMessage")?,
            },
            _ => return Ok(None),
        },
        other => {
            return Err(format!(
                "unknown message type {other:?} (expected AssistantMessage, UserMessage, \
                 ResultMessage or SystemMessage)"
            ))
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_kind() {
        let script = Script::parse(
            "t",
            r#"{"kind":"outbound","message":{"type":"SystemMessage","subtype":"mcp_status","server_name":"n","status":"connected"}}
{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"AssistantMessage","id":"m","content":[{"type":"text","text":"x"}],"stop_reason":null}}
{"kind":"outbound","message":{"type":"UserMessage","content":"plain"}}

{"kind":"delay","seconds":0.05}
{"kind":"callback_expect","tool_name":"Read","tool_input":{"p":1},"context":{"tool_use_id":"tu"},"respond":{"behavior":"allow"}}
{"kind":"outbound","message":{"type":"SystemMessage","subtype":"init"}}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success","total_cost_usd":0.5,"session_id":"s","num_turns":1,"is_error":false}}"#,
        )
        .unwrap();
        assert_eq!(script.turns(), 1);
        let steps = script.steps();
        assert_eq!(steps.len(), 7, "the init SystemMessage is dropped");
        assert_eq!(
            steps[0],
            Step::Outbound(AgentMessage::McpStatus {
                server_name: "n".into(),
                status: "connected".into()
            })
        );
        assert_eq!(steps[1], Step::ExpectUserQuery);
        assert_eq!(
            steps[2],
            Step::Outbound(AgentMessage::Assistant(AssistantMessage {
                id: "m".into(),
                content: vec![json!({"type": "text", "text": "x"})],
                model: None,
                stop_reason: None,
            }))
        );
        assert_eq!(
            steps[3],
            Step::Outbound(AgentMessage::User {
                content: vec![json!({"type": "text", "text": "plain"})]
            })
        );
        assert_eq!(steps[4], Step::Delay(Duration::from_millis(50)));
        assert_eq!(
            steps[5],
            Step::Callback {
                tool_name: "Read".into(),
                input: json!({"p": 1}),
                context: json!({"tool_use_id": "tu"}),
                correlation_id: "tu".into(),
            }
        );
        let Step::Outbound(AgentMessage::Result(r)) = &steps[6] else {
            panic!("expected a result: {:?}", steps[6])
        };
        assert_eq!(r.session_id, "s");
        assert_eq!(r.subtype, "success");
        assert!(r.ends_turn);
        // Every other field, in the scripted order.
        assert_eq!(
            r.extra.keys().collect::<Vec<_>>(),
            ["total_cost_usd", "num_turns", "is_error"]
        );
        assert_eq!(r.extra["total_cost_usd"], 0.5);
    }

    #[test]
    fn result_without_session_id_is_filled_in_later() {
        let script = Script::parse(
            "t",
            r#"{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success"}}"#,
        )
        .unwrap();
        let Step::Outbound(AgentMessage::Result(r)) = &script.steps()[1] else {
            panic!()
        };
        assert_eq!(r.session_id, "");
    }

    #[test]
    fn empty_script_has_no_turns() {
        let script = Script::parse("t", "\n\n").unwrap();
        assert!(script.steps().is_empty());
        assert_eq!(script.turns(), 0);
    }

    fn error(text: &str) -> ScriptError {
        Script::parse("f.jsonl", text).unwrap_err()
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let euq = r#"{"kind":"expect_user_query"}"#;
        let result =
            r#"{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success"}}"#;
        let cases = [
            ("not json", "invalid JSON"),
            ("[1]", "expected a JSON object"),
            (r#"{"kind":"nope"}"#, "unknown kind \"nope\""),
            (r#"{"no_kind":1}"#, "without a string \"kind\""),
            (r#"{"kind":"outbound"}"#, "outbound without \"message\""),
            (
                r#"{"kind":"outbound","message":{"type":"Weird"}}"#,
                "unknown message type",
            ),
            (
                r#"{"kind":"outbound","message":{"type":"AssistantMessage","content":[]}}"#,
                "without a string \"id\"",
            ),
            (
                r#"{"kind":"outbound","message":{"type":"AssistantMessage","id":"m"}}"#,
                "without a \"content\" array",
            ),
            (
                r#"{"kind":"outbound","message":{"type":"AssistantMessage","id":"m","content":[],"model":3}}"#,
                "\"model\" must be a string",
            ),
            (
                r#"{"kind":"outbound","message":{"type":"ResultMessage","session_id":"s"}}"#,
                "without a string \"subtype\"",
            ),
            (
                r#"{"kind":"outbound","message":{"type":"SystemMessage","subtype":"mcp_status","status":"x"}}"#,
                "server_name",
            ),
            (r#"{"kind":"callback_expect","tool_input":{}}"#, "tool_name"),
            (
                r#"{"kind":"callback_expect","tool_name":"Read"}"#,
                "context.tool_use_id",
            ),
            (r#"{"kind":"delay"}"#, "numeric \"seconds\""),
            (r#"{"kind":"delay","seconds":-1}"#, "non-negative"),
        ];
        for (line, reason) in cases {
            let err = error(&format!("{euq}\n{line}\n{result}"));
            assert_eq!(err.line, 2, "{line}");
            assert!(err.reason.contains(reason), "{line}: {}", err.reason);
            assert!(err.to_string().starts_with("f.jsonl:2: "), "{err}");
        }
    }

    #[test]
    fn every_turn_must_send_a_result() {
        let err = error(
            r#"{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success"}}
{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"AssistantMessage","id":"m","content":[]}}
{"kind":"expect_user_query"}
{"kind":"outbound","message":{"type":"ResultMessage","subtype":"success"}}"#,
        );
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("never sends a ResultMessage"));
        let err = error(r#"{"kind":"expect_user_query"}"#);
        assert_eq!(err.line, 1);
    }
}
