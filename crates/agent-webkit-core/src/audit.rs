//! Audit: who created, deleted, approved, denied, answered, interrupted, or changed the model
//! or permission mode of which session.
//!
//! `Api` builds one [`AuditEvent`] per such request once it has succeeded and hands it to every
//! configured [`AuditSink`] (`AppConfig::audit_sinks`). The default sink, [`TracingAuditSink`],
//! emits it as a structured `tracing` event under the target [`AUDIT_TARGET`]; a database sink
//! (the PostgreSQL one in `agent-webkit-postgres`) queues it in a bounded buffer and writes in
//! the background. [`AuditSink::record`] must never block or fail the request: a sink that
//! cannot keep up drops events and says so in the log.

use serde::Serialize;
use serde_json::{json, Value};

use crate::models::{Behavior, InboundMessage};

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "agent_webkit::audit";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// `POST /sessions` succeeded.
    Create,
    /// `DELETE /sessions/{id}`.
    Delete,
    /// A `permission_response` with `behavior: allow`.
    Approve,
    /// A `permission_response` with `behavior: deny`.
    Deny,
    /// A `question_response`.
    Answer,
    /// A `hook_decision_response`.
    HookDecision,
    /// An `interrupt`.
    Interrupt,
    /// A `set_model`.
    SetModel,
    /// A `set_permission_mode`.
    SetPermissionMode,
    /// An `mcp_toggle`, `mcp_reconnect` or `mcp_set_servers` (detail: the type and server
    /// names, never a config).
    Mcp,
    /// A `rewind` that was carried out (not a dry run; detail: the message and what was
    /// rewound).
    Rewind,
}

impl AuditAction {
    /// The stored / logged name (`create`, `approve`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Delete => "delete",
            AuditAction::Approve => "approve",
            AuditAction::Deny => "deny",
            AuditAction::Answer => "answer",
            AuditAction::HookDecision => "hook_decision",
            AuditAction::Interrupt => "interrupt",
            AuditAction::SetModel => "set_model",
            AuditAction::SetPermissionMode => "set_permission_mode",
            AuditAction::Mcp => "mcp",
            AuditAction::Rewind => "rewind",
        }
    }
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// When, epoch ms.
    pub at_ms: i64,
    /// Who: the principal (JWT `sub`), `"token"` under the shared token, `None` with auth
    /// disabled.
    pub actor: Option<String>,
    /// The session acted on.
    pub session_id: String,
    /// What was done.
    pub action: AuditAction,
    /// The prompt answered, for `approve` / `deny` / `answer` / `hook_decision`.
    pub correlation_id: Option<String>,
    /// Small action-specific facts (the new model or mode; a create's settings; whether a
    /// deny interrupts). Never a tool input or an answer's content.
    pub detail: Option<Value>,
}

impl AuditEvent {
    /// An event stamped now.
    pub fn new(actor: Option<&str>, session_id: &str, action: AuditAction) -> Self {
        Self {
            at_ms: crate::persist::now_ms(),
            actor: actor.map(str::to_owned),
            session_id: session_id.to_owned(),
            action,
            correlation_id: None,
            detail: None,
        }
    }

    /// The event for an input message, if that kind of message is audited (user messages
    /// and `stop_task` are not).
    pub fn for_input(
        actor: Option<&str>,
        session_id: &str,
        message: &InboundMessage,
    ) -> Option<Self> {
        let (action, correlation_id, detail) = match message {
            InboundMessage::PermissionResponse(resp) => {
                let action = match resp.behavior {
                    Behavior::Allow => AuditAction::Approve,
                    Behavior::Deny => AuditAction::Deny,
                };
                let detail = json!({
                    "updated_input": resp.updated_input.is_some(),
                    "updated_permissions": resp.updated_permissions.as_ref().map_or(0, Vec::len),
                    "interrupt": resp.interrupt.unwrap_or(false),
                });
                (action, Some(resp.correlation_id.clone()), Some(detail))
            }
            InboundMessage::QuestionResponse { correlation_id, .. } => {
                (AuditAction::Answer, Some(correlation_id.clone()), None)
            }
            InboundMessage::HookDecisionResponse { correlation_id, .. } => (
                AuditAction::HookDecision,
                Some(correlation_id.clone()),
                None,
            ),
            InboundMessage::Interrupt => (AuditAction::Interrupt, None, None),
            InboundMessage::SetModel { model } => {
                (AuditAction::SetModel, None, Some(json!({ "model": model })))
            }
            InboundMessage::SetPermissionMode { mode } => (
                AuditAction::SetPermissionMode,
                None,
                Some(json!({ "permission_mode": mode })),
            ),
            InboundMessage::UserMessage { .. }
            | InboundMessage::StopTask { .. }
            | InboundMessage::Rewind(_) => return None,
            // Audited by the MCP handler (`http::mcp`), which knows the outcome.
            InboundMessage::McpToggle { .. }
            | InboundMessage::McpReconnect { .. }
            | InboundMessage::McpSetServers { .. } => return None,
        };
        let mut event = Self::new(actor, session_id, action);
        event.correlation_id = correlation_id;
        event.detail = detail;
        Some(event)
    }
}

/// Where audit events go. Called on the request path after the action succeeded: must not
/// block (queue and write in the background) and cannot fail the request.
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one event.
    fn record(&self, event: &AuditEvent);
}

/// Emits each event as a `tracing` event at INFO under [`AUDIT_TARGET`], with the fields
/// `actor`, `session_id`, `action`, `correlation_id` and `detail` (JSON).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAuditSink;

impl AuditSink for TracingAuditSink {
    fn record(&self, event: &AuditEvent) {
        let detail = event.detail.as_ref().map(Value::to_string);
        tracing::info!(
            target: AUDIT_TARGET,
            actor = event.actor.as_deref(),
            session_id = %event.session_id,
            action = event.action.as_str(),
            correlation_id = event.correlation_id.as_deref(),
            detail = detail.as_deref(),
            at_ms = event.at_ms,
            "audit"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn inputs_map_to_actions() {
        let msg = |json: &str| InboundMessage::from_json(json.as_bytes()).unwrap();
        let allow = msg(
            r#"{"type":"permission_response","correlation_id":"c1","behavior":"allow","updated_input":{"a":1}}"#,
        );
        let event = AuditEvent::for_input(Some("token"), "s", &allow).unwrap();
        assert_eq!(event.action, AuditAction::Approve);
        assert_eq!(event.correlation_id.as_deref(), Some("c1"));
        assert_eq!(event.detail.unwrap()["updated_input"], true);
        let deny = msg(r#"{"type":"permission_response","correlation_id":"c2","behavior":"deny"}"#);
        assert_eq!(
            AuditEvent::for_input(None, "s", &deny).unwrap().action,
            AuditAction::Deny
        );
        let mode = msg(r#"{"type":"set_permission_mode","mode":"plan"}"#);
        let event = AuditEvent::for_input(None, "s", &mode).unwrap();
        assert_eq!(event.detail.unwrap()["permission_mode"], "plan");
        let user = msg(r#"{"type":"user_message","content":"hi"}"#);
        assert!(AuditEvent::for_input(None, "s", &user).is_none());
    }
}
