//! Wire protocol 1.0 types: inbound messages, outbound event payloads, session create bodies.
//!
//! Field order in every outbound struct is the order the original server emits, so the compact
//! JSON we produce is byte-identical for the same values. Pass-through objects (content blocks,
//! tool inputs) are `serde_json::Value`s with key order preserved.
//!
//! With the `openapi` feature every wire type derives its JSON Schema (`utoipa::ToSchema`,
//! doc comments as descriptions), from which `crate::openapi` builds the OpenAPI document.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::PROTOCOL_VERSION;

pub mod anchors;

// ---------------------------------------------------------------------------------------------
// Session create
// ---------------------------------------------------------------------------------------------

/// Body of `POST /sessions`. Every field is optional; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSessionRequest {
    /// Model name (for the replay agent: the scenario name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Initial permission mode (`default`, `acceptEdits`, `plan`, `bypassPermissions`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// Working directory of the agent; must resolve inside the server's allowed roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extension: stream tool-input deltas for this session (`true`/`false`; absent or `null`:
    /// the server's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_input_deltas: Option<bool>,
    /// Extension: the session id the caller chooses (see [`crate::session_id`]); absent or
    /// `null`: a UUID v4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Extension: the client's MCP servers, `{"<name>": <config>}` (see
    /// [`crate::mcp::config`]); allowed by the operator's MCP policy or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Map<String, Value>>,
    /// Extension: start from another session's conversation (see [`anchors::ForkRequest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<anchors::ForkRequest>,
    /// Extension: file checkpointing for `rewind` (absent: the server's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_checkpointing: Option<bool>,
}

impl CreateSessionRequest {
    /// Parses a create body: empty or `{}` is valid, unknown fields are ignored, a field of the
    /// wrong type or a body that is not an object is an [`InboundError`].
    pub fn from_json(body: &[u8]) -> Result<Self, InboundError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let value: Value = serde_json::from_slice(body).map_err(|_| InboundError::InvalidJson)?;
        let obj = match value {
            Value::Object(obj) => obj,
            Value::Null => return Ok(Self::default()),
            _ => return Err(InboundError::NotAnObject),
        };
        Ok(Self {
            model: opt_string(&obj, "model")?,
            permission_mode: opt_string(&obj, "permission_mode")?,
            cwd: opt_string(&obj, "cwd")?,
            tool_input_deltas: opt_bool(&obj, "tool_input_deltas")?,
            session_id: opt_string(&obj, "session_id")?,
            mcp_servers: opt_object(&obj, "mcp_servers")?,
            fork: match obj.get("fork") {
                None | Some(Value::Null) => None,
                Some(value) => Some(anchors::ForkRequest::from_value(value)?),
            },
            file_checkpointing: opt_bool(&obj, "file_checkpointing")?,
        })
    }
}

/// Response of `POST /sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSessionResponse {
    /// The new session's id (UUID v4, or the caller's `session_id`).
    pub session_id: String,
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: String,
    /// Extension: the source of a fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<anchors::ForkedFrom>,
}

// ---------------------------------------------------------------------------------------------
// Inbound messages
// ---------------------------------------------------------------------------------------------

/// User message content: a plain string or an array of content blocks (text, image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum UserContent {
    /// Plain text.
    Text(String),
    /// Content blocks, passed to the agent verbatim.
    Blocks(Vec<Value>),
}

impl UserContent {
    /// The content as a list of blocks (a string becomes one text block).
    pub fn to_blocks(&self) -> Vec<Value> {
        match self {
            UserContent::Text(text) => vec![serde_json::json!({"type": "text", "text": text})],
            UserContent::Blocks(blocks) => blocks.clone(),
        }
    }

    /// Roughly the bytes this content holds (its strings, keys and numbers): what a queued
    /// message costs, for the inbound byte budget. Deterministic for the same content.
    pub fn size_hint(&self) -> usize {
        fn value_size(value: &Value) -> usize {
            match value {
                Value::Null | Value::Bool(_) => 4,
                Value::Number(_) => 8,
                Value::String(s) => s.len() + 2,
                Value::Array(items) => items.iter().map(value_size).sum::<usize>() + 2,
                Value::Object(map) => {
                    map.iter()
                        .map(|(k, v)| k.len() + 3 + value_size(v))
                        .sum::<usize>()
                        + 2
                }
            }
        }
        match self {
            UserContent::Text(text) => text.len(),
            UserContent::Blocks(blocks) => blocks.iter().map(value_size).sum(),
        }
    }
}

impl From<&str> for UserContent {
    fn from(text: &str) -> Self {
        UserContent::Text(text.to_owned())
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Behavior {
    /// Let the tool run.
    Allow,
    /// Refuse the tool call.
    Deny,
}

/// `permission_response`: the client's decision on a `permission_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PermissionResponse {
    /// The `correlation_id` of the `permission_request` being answered.
    pub correlation_id: String,
    /// `allow` or `deny`.
    pub behavior: Behavior,
    /// allow: replacement tool input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_input: Option<Map<String, Value>>,
    /// allow: permission rule updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_permissions: Option<Vec<Value>>,
    /// deny: message shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// deny: also abort the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt: Option<bool>,
}

/// One message posted to `POST /sessions/{id}/input`, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboundMessage {
    /// A user turn.
    UserMessage {
        /// The message content.
        content: UserContent,
    },
    /// Interrupt the running turn (queued messages stay queued).
    Interrupt,
    /// Answer to a `permission_request`.
    PermissionResponse(PermissionResponse),
    /// Answer to an `ask_user_question`.
    QuestionResponse {
        /// The `correlation_id` of the `ask_user_question` being answered.
        correlation_id: String,
        /// Answers, in the AskUserQuestion tool's shape.
        answers: Value,
    },
    /// Change the permission mode.
    SetPermissionMode {
        /// The new mode.
        mode: String,
    },
    /// Change the model (`null` = the default model).
    SetModel {
        /// The new model.
        #[serde(default)]
        model: Option<String>,
    },
    /// Stop a background task.
    StopTask {
        /// The task to stop.
        task_id: String,
    },
    /// Answer to a `hook_decision_request` (ours, an extension to protocol 1.0).
    HookDecisionResponse {
        /// The `correlation_id` of the `hook_decision_request` being answered.
        correlation_id: String,
        /// The hook's output object (`{}` = no opinion), e.g.
        /// `{"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"deny"}}`.
        decision: Map<String, Value>,
    },
    /// Enable or disable one MCP server (ours, an extension).
    McpToggle {
        /// The server's name.
        server_name: String,
        /// `true`: enable; `false`: disable.
        enabled: bool,
    },
    /// Reconnect one MCP server (ours, an extension).
    McpReconnect {
        /// The server's name.
        server_name: String,
    },
    /// Replace the client's MCP servers (ours, an extension): `{"<name>": <config>}`.
    McpSetServers {
        /// The new set (an empty object removes them all).
        servers: Map<String, Value>,
    },
    /// Rewind files and/or the conversation to just before a user message (ours).
    Rewind(anchors::RewindRequest),
}

/// Why an inbound body was rejected (every variant is a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// The body is not JSON.
    #[error("Invalid JSON")]
    InvalidJson,
    /// The body is JSON but not an object.
    #[error("Body must be a JSON object")]
    NotAnObject,
    /// `type` is missing or not a string.
    #[error("Missing field: type")]
    MissingType,
    /// `type` names no inbound message.
    #[error("Unknown message type: {0}")]
    UnknownType(String),
    /// A required field is absent.
    #[error("Missing field: {0}")]
    MissingField(&'static str),
    /// A field has the wrong type or value.
    #[error("Invalid field {field}: expected {expected}")]
    InvalidField {
        /// The field name.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// `interrupt: true` was sent with `behavior: "allow"`.
    #[error("interrupt is only valid with behavior \"deny\"")]
    InterruptWithAllow,
}

impl InboundMessage {
    /// Whether this is one of the MCP messages (`mcp_toggle`, `mcp_reconnect`,
    /// `mcp_set_servers`).
    pub fn is_mcp(&self) -> bool {
        matches!(
            self,
            InboundMessage::McpToggle { .. }
                | InboundMessage::McpReconnect { .. }
                | InboundMessage::McpSetServers { .. }
        )
    }

    /// Parses and validates one inbound body, with a precise error for every way it can be wrong.
    pub fn from_json(body: &[u8]) -> Result<Self, InboundError> {
        let value: Value = serde_json::from_slice(body).map_err(|_| InboundError::InvalidJson)?;
        let Value::Object(obj) = value else {
            return Err(InboundError::NotAnObject);
        };
        let ty = match obj.get("type") {
            Some(Value::String(ty)) => ty.as_str(),
            _ => return Err(InboundError::MissingType),
        };
        match ty {
            "user_message" => {
                let content = match obj.get("content") {
                    None | Some(Value::Null) => return Err(InboundError::MissingField("content")),
                    Some(Value::String(text)) => UserContent::Text(text.clone()),
                    Some(Value::Array(blocks)) => {
                        if !blocks.iter().all(is_content_block) {
                            return Err(InboundError::InvalidField {
                                field: "content",
                                expected: "content blocks (objects with a string \"type\")",
                            });
                        }
                        UserContent::Blocks(blocks.clone())
                    }
                    Some(_) => {
                        return Err(InboundError::InvalidField {
                            field: "content",
                            expected: "a string or an array of content blocks",
                        })
                    }
                };
                Ok(InboundMessage::UserMessage { content })
            }
            "interrupt" => Ok(InboundMessage::Interrupt),
            "permission_response" => {
                let correlation_id = req_string(&obj, "correlation_id")?;
                let behavior = match obj.get("behavior") {
                    None | Some(Value::Null) => return Err(InboundError::MissingField("behavior")),
                    Some(Value::String(b)) if b == "allow" => Behavior::Allow,
                    Some(Value::String(b)) if b == "deny" => Behavior::Deny,
                    Some(_) => {
                        return Err(InboundError::InvalidField {
                            field: "behavior",
                            expected: "\"allow\" or \"deny\"",
                        })
                    }
                };
                let updated_input = match obj.get("updated_input") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(map)) => Some(map.clone()),
                    Some(_) => {
                        return Err(InboundError::InvalidField {
                            field: "updated_input",
                            expected: "an object",
                        })
                    }
                };
                let updated_permissions = match obj.get("updated_permissions") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(list)) => Some(list.clone()),
                    Some(_) => {
                        return Err(InboundError::InvalidField {
                            field: "updated_permissions",
                            expected: "an array",
                        })
                    }
                };
                let message = opt_string(&obj, "message")?;
                let interrupt = match obj.get("interrupt") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => {
                        return Err(InboundError::InvalidField {
                            field: "interrupt",
                            expected: "a boolean",
                        })
                    }
                };
                if behavior == Behavior::Allow && interrupt == Some(true) {
                    return Err(InboundError::InterruptWithAllow);
                }
                Ok(InboundMessage::PermissionResponse(PermissionResponse {
                    correlation_id,
                    behavior,
                    updated_input,
                    updated_permissions,
                    message,
                    interrupt,
                }))
            }
            "question_response" => {
                let correlation_id = req_string(&obj, "correlation_id")?;
                let answers = match obj.get("answers") {
                    None => return Err(InboundError::MissingField("answers")),
                    Some(v) => v.clone(),
                };
                Ok(InboundMessage::QuestionResponse {
                    correlation_id,
                    answers,
                })
            }
            "set_permission_mode" => Ok(InboundMessage::SetPermissionMode {
                mode: req_string(&obj, "mode")?,
            }),
            "set_model" => Ok(InboundMessage::SetModel {
                model: opt_string(&obj, "model")?,
            }),
            "rewind" => Ok(InboundMessage::Rewind(anchors::RewindRequest::from_object(
                &obj,
            )?)),
            "stop_task" => Ok(InboundMessage::StopTask {
                task_id: req_string(&obj, "task_id")?,
            }),
            "hook_decision_response" => {
                let correlation_id = req_string(&obj, "correlation_id")?;
                let decision = match obj.get("decision") {
                    None | Some(Value::Null) => return Err(InboundError::MissingField("decision")),
                    Some(Value::Object(map)) => map.clone(),
                    Some(_) => {
                        return Err(InboundError::InvalidField {
                            field: "decision",
                            expected: "an object",
                        })
                    }
                };
                Ok(InboundMessage::HookDecisionResponse {
                    correlation_id,
                    decision,
                })
            }
            "mcp_toggle" => Ok(InboundMessage::McpToggle {
                server_name: req_string(&obj, "server_name")?,
                enabled: opt_bool(&obj, "enabled")?.ok_or(InboundError::MissingField("enabled"))?,
            }),
            "mcp_reconnect" => Ok(InboundMessage::McpReconnect {
                server_name: req_string(&obj, "server_name")?,
            }),
            "mcp_set_servers" => Ok(InboundMessage::McpSetServers {
                servers: opt_object(&obj, "servers")?
                    .ok_or(InboundError::MissingField("servers"))?,
            }),
            other => Err(InboundError::UnknownType(other.to_owned())),
        }
    }
}

fn is_content_block(block: &Value) -> bool {
    matches!(block.get("type"), Some(Value::String(_)))
}

fn req_string(obj: &Map<String, Value>, field: &'static str) -> Result<String, InboundError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(InboundError::MissingField(field)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(InboundError::InvalidField {
            field,
            expected: "a string",
        }),
    }
}

fn opt_string(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, InboundError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(InboundError::InvalidField {
            field,
            expected: "a string",
        }),
    }
}

fn opt_object(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Map<String, Value>>, InboundError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(_) => Err(InboundError::InvalidField {
            field,
            expected: "an object",
        }),
    }
}

fn opt_bool(obj: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, InboundError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(InboundError::InvalidField {
            field,
            expected: "a boolean",
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound events
// ---------------------------------------------------------------------------------------------

/// The name of an outbound SSE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `session_ready` — always seq 1.
    SessionReady,
    /// `message_delta` — incremental content.
    MessageDelta,
    /// `message_complete` — a whole assistant message.
    MessageComplete,
    /// `tool_use` — one per tool_use block.
    ToolUse,
    /// `tool_result`.
    ToolResult,
    /// `permission_request` — waits for `permission_response`.
    PermissionRequest,
    /// `ask_user_question` — waits for `question_response`.
    AskUserQuestion,
    /// `hook_decision_request`.
    HookDecisionRequest,
    /// `result` — end of a turn.
    Result,
    /// `error`.
    Error,
    /// `mcp_status_change`.
    McpStatusChange,
    /// `done` — last event of the session.
    Done,
    /// ours: `api_retry` — the agent retries a failed model call.
    ApiRetry,
    /// ours: `usage` — the session's cumulative usage and cost, after a `result`.
    Usage,
    /// ours: `user_message` — a user message handed to the agent, with its anchor uuid.
    UserMessage,
    /// ours: `rewound` — files and/or the conversation were rewound.
    Rewound,
}

impl EventKind {
    /// Every event kind, in the contract's order.
    pub const ALL: [EventKind; 16] = [
        EventKind::SessionReady,
        EventKind::MessageDelta,
        EventKind::MessageComplete,
        EventKind::ToolUse,
        EventKind::ToolResult,
        EventKind::PermissionRequest,
        EventKind::AskUserQuestion,
        EventKind::HookDecisionRequest,
        EventKind::Result,
        EventKind::Error,
        EventKind::McpStatusChange,
        EventKind::Done,
        EventKind::ApiRetry,
        EventKind::Usage,
        EventKind::UserMessage,
        EventKind::Rewound,
    ];

    /// The event's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionReady => "session_ready",
            EventKind::MessageDelta => "message_delta",
            EventKind::MessageComplete => "message_complete",
            EventKind::ToolUse => "tool_use",
            EventKind::ToolResult => "tool_result",
            EventKind::PermissionRequest => "permission_request",
            EventKind::AskUserQuestion => "ask_user_question",
            EventKind::HookDecisionRequest => "hook_decision_request",
            EventKind::Result => "result",
            EventKind::Error => "error",
            EventKind::McpStatusChange => "mcp_status_change",
            EventKind::Done => "done",
            EventKind::ApiRetry => "api_retry",
            EventKind::Usage => "usage",
            EventKind::UserMessage => "user_message",
            EventKind::Rewound => "rewound",
        }
    }

    /// Looks an event kind up by its wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `session_ready` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionReadyData {
    /// The session id.
    pub session_id: String,
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: String,
}

impl SessionReadyData {
    /// `session_ready` for a session.
    pub fn new(session_id: &str) -> Self {
        Self {
            session_id: session_id.to_owned(),
            protocol_version: PROTOCOL_VERSION.to_owned(),
        }
    }
}

/// `message_delta` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageDeltaData {
    /// The assistant message this delta belongs to.
    pub message_id: String,
    /// The delta, e.g. `{"type":"text","text":"chunk"}`.
    pub delta: Value,
}

/// The assistant message inside `message_complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssistantMessageBody {
    /// Message id.
    pub id: String,
    /// Always `assistant`.
    pub role: String,
    /// Content blocks (each with `type`).
    pub content: Vec<Value>,
    /// Model that produced it.
    pub model: Option<String>,
    /// Why generation stopped (`null` while a message is still streaming).
    pub stop_reason: Option<String>,
}

/// `message_complete` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageCompleteData {
    /// Same as `message.id`.
    pub message_id: String,
    /// The whole message so far.
    pub message: AssistantMessageBody,
}

/// `tool_use` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolUseData {
    /// The assistant message holding the block.
    pub message_id: String,
    /// The tool_use block id.
    pub tool_use_id: String,
    /// Tool name.
    pub tool_name: String,
    /// Tool input.
    pub input: Value,
}

/// `tool_result` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolResultData {
    /// The tool_use this result answers.
    pub tool_use_id: String,
    /// Tool output (string or blocks).
    pub output: Value,
    /// Whether the tool failed.
    pub is_error: bool,
}

/// `permission_request` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PermissionRequestData {
    /// Id to answer with (the tool_use id).
    pub correlation_id: String,
    /// Tool name.
    pub tool_name: String,
    /// Tool input.
    pub input: Value,
    /// Context from the agent (`tool_use_id`, `suggestions`, ...).
    pub context: Value,
}

/// `ask_user_question` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AskUserQuestionData {
    /// Id to answer with.
    pub correlation_id: String,
    /// The AskUserQuestion tool input object.
    pub questions: Value,
}

/// `hook_decision_request` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HookDecisionRequestData {
    /// Id to answer with.
    pub correlation_id: String,
    /// Hook event name.
    pub hook_event: String,
    /// Hook input.
    pub hook_input: Value,
}

/// `result` data: `session_id`, `subtype`, then every other field the agent reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultData {
    /// The agent's session id.
    pub session_id: String,
    /// `success`, `interrupted`, `error_during_execution`, ...
    pub subtype: String,
    /// Everything else (`total_cost_usd`, `usage`, `is_error`, ...), in the agent's order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `error` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorData {
    /// Machine-readable code (`agent_exited`, `query_failed`, `permission_cancelled`, ...).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// ours: the prompt this error resolves (for `permission_cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl ErrorData {
    /// An error with a code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            correlation_id: None,
        }
    }
}

/// `mcp_status_change` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpStatusChangeData {
    /// MCP server name.
    pub server_name: String,
    /// New status.
    pub status: String,
}

/// ours: `api_retry` data — one failed model call the agent is about to retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiRetryData {
    /// This retry's number (1 for the first retry).
    pub attempt: u64,
    /// Retries the agent allows itself.
    pub max_retries: u64,
    /// Wait before this retry, in milliseconds.
    pub retry_delay_ms: u64,
    /// HTTP status of the failed call, when it got one.
    #[serde(default)]
    pub error_status: Option<u64>,
    /// The agent's error category (`authentication_failed`, `rate_limit`, `overloaded`...).
    #[serde(default)]
    pub error: Option<String>,
}

/// ours: `usage` data — sent after each `result` that reported usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageData {
    /// The session's usage and cost per model so far (the agent's estimates).
    pub cost: crate::persist::CostTotals,
    /// The `usage` of the `result` just sent (that turn's own tokens), `null` if it had none.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub turn: Value,
}

/// `done` data: always `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DoneData {}

/// A typed outbound event: what a client parses out of one SSE frame.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundEvent {
    /// `session_ready`.
    SessionReady(SessionReadyData),
    /// `message_delta`.
    MessageDelta(MessageDeltaData),
    /// `message_complete`.
    MessageComplete(MessageCompleteData),
    /// `tool_use`.
    ToolUse(ToolUseData),
    /// `tool_result`.
    ToolResult(ToolResultData),
    /// `permission_request`.
    PermissionRequest(PermissionRequestData),
    /// `ask_user_question`.
    AskUserQuestion(AskUserQuestionData),
    /// `hook_decision_request`.
    HookDecisionRequest(HookDecisionRequestData),
    /// `result`.
    Result(ResultData),
    /// `error`.
    Error(ErrorData),
    /// `mcp_status_change`.
    McpStatusChange(McpStatusChangeData),
    /// `done`.
    Done,
    /// ours: `api_retry`.
    ApiRetry(ApiRetryData),
    /// ours: `usage`.
    Usage(UsageData),
    /// ours: `user_message`.
    UserMessage(anchors::UserMessageData),
    /// ours: `rewound`.
    Rewound(anchors::RewoundData),
}

impl OutboundEvent {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            OutboundEvent::SessionReady(_) => EventKind::SessionReady,
            OutboundEvent::MessageDelta(_) => EventKind::MessageDelta,
            OutboundEvent::MessageComplete(_) => EventKind::MessageComplete,
            OutboundEvent::ToolUse(_) => EventKind::ToolUse,
            OutboundEvent::ToolResult(_) => EventKind::ToolResult,
            OutboundEvent::PermissionRequest(_) => EventKind::PermissionRequest,
            OutboundEvent::AskUserQuestion(_) => EventKind::AskUserQuestion,
            OutboundEvent::HookDecisionRequest(_) => EventKind::HookDecisionRequest,
            OutboundEvent::Result(_) => EventKind::Result,
            OutboundEvent::Error(_) => EventKind::Error,
            OutboundEvent::McpStatusChange(_) => EventKind::McpStatusChange,
            OutboundEvent::Done => EventKind::Done,
            OutboundEvent::ApiRetry(_) => EventKind::ApiRetry,
            OutboundEvent::Usage(_) => EventKind::Usage,
            OutboundEvent::UserMessage(_) => EventKind::UserMessage,
            OutboundEvent::Rewound(_) => EventKind::Rewound,
        }
    }

    /// Parses an event from its SSE `event:` name and `data:` JSON.
    pub fn parse(event: &str, data: &str) -> Result<Self, serde_json::Error> {
        use serde::de::Error as _;
        let kind = EventKind::from_name(event)
            .ok_or_else(|| serde_json::Error::custom(format!("unknown event {event}")))?;
        Ok(match kind {
            EventKind::SessionReady => OutboundEvent::SessionReady(serde_json::from_str(data)?),
            EventKind::MessageDelta => OutboundEvent::MessageDelta(serde_json::from_str(data)?),
            EventKind::MessageComplete => {
                OutboundEvent::MessageComplete(serde_json::from_str(data)?)
            }
            EventKind::ToolUse => OutboundEvent::ToolUse(serde_json::from_str(data)?),
            EventKind::ToolResult => OutboundEvent::ToolResult(serde_json::from_str(data)?),
            EventKind::PermissionRequest => {
                OutboundEvent::PermissionRequest(serde_json::from_str(data)?)
            }
            EventKind::AskUserQuestion => {
                OutboundEvent::AskUserQuestion(serde_json::from_str(data)?)
            }
            EventKind::HookDecisionRequest => {
                OutboundEvent::HookDecisionRequest(serde_json::from_str(data)?)
            }
            EventKind::Result => OutboundEvent::Result(serde_json::from_str(data)?),
            EventKind::Error => OutboundEvent::Error(serde_json::from_str(data)?),
            EventKind::McpStatusChange => {
                OutboundEvent::McpStatusChange(serde_json::from_str(data)?)
            }
            EventKind::Done => {
                let _: DoneData = serde_json::from_str(data)?;
                OutboundEvent::Done
            }
            EventKind::ApiRetry => OutboundEvent::ApiRetry(serde_json::from_str(data)?),
            EventKind::Usage => OutboundEvent::Usage(serde_json::from_str(data)?),
            EventKind::UserMessage => OutboundEvent::UserMessage(serde_json::from_str(data)?),
            EventKind::Rewound => OutboundEvent::Rewound(serde_json::from_str(data)?),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Other response bodies
// ---------------------------------------------------------------------------------------------

/// The body of every error response: `{"detail": ...}`, plus a machine-readable `code` for
/// most (`session_limit`, `invalid_cwd`, `backpressure`, ...; see docs/protocol-extensions.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Human-readable explanation.
    pub detail: String,
    /// Machine-readable code, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Response of `GET /healthz` (liveness; no auth needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: String,
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: String,
    /// Agent counts, only for a caller that passes auth (or with auth disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentCounts>,
}

/// The agent counts in [`HealthResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentCounts {
    /// Sessions' live agents (starting or waking included).
    pub live: usize,
    /// Idle warm spares.
    pub warm_spares: usize,
    /// Hibernated sessions.
    pub hibernated: usize,
    /// The bound on live agents + spares (`--max-live-agents`; `null`: unbounded).
    pub max_live: Option<usize>,
}
