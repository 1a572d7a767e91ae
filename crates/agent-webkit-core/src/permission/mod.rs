//! Permission prompts: the router of pending decisions and the handle agents ask through.
//!
//! An agent that wants to run a tool calls [`PermissionHandle::can_use_tool`]. The handle sends
//! the prompt to its session's loop, which translates every message the agent sent before it,
//! then registers the tool call's `correlation_id` with the session's [`PermissionRouter`] and
//! only then appends the `permission_request` (or `ask_user_question`) event: a prompt never
//! overtakes the messages that announce its tool call, and a client can never answer a prompt
//! the router does not know yet. The client's `permission_response` /
//! `question_response` resolves it; the first reply wins and every later one is a
//! [`ConflictError`] (HTTP 409).

//!
//! Split by concern: the router of pending decisions (`router`), the handle agents ask through
//! (`handle`), and what the handle asks of the session loop (`prompt`).

mod handle;
mod prompt;
mod router;

use serde_json::{Map, Value};

use crate::models::{Behavior, PermissionResponse};

pub use handle::PermissionHandle;
pub(crate) use prompt::ToSession;
pub use router::PermissionRouter;

/// The tool name that is routed as a question instead of a permission prompt.
pub(crate) const ASK_USER_QUESTION_TOOL: &str = "AskUserQuestion";

/// The client's decision on a tool call, as the agent receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum PermissionDecision {
    /// Run the tool.
    Allow {
        /// Replacement input (for AskUserQuestion: the input plus `answers`).
        updated_input: Option<Map<String, Value>>,
        /// Permission rule updates.
        updated_permissions: Option<Vec<Value>>,
    },
    /// Refuse the tool call.
    Deny {
        /// Message for the model (empty when the client gave none).
        message: String,
        /// Also abort the turn.
        interrupt: bool,
    },
}

impl From<PermissionResponse> for PermissionDecision {
    fn from(resp: PermissionResponse) -> Self {
        match resp.behavior {
            Behavior::Allow => PermissionDecision::Allow {
                updated_input: resp.updated_input,
                updated_permissions: resp.updated_permissions,
            },
            Behavior::Deny => PermissionDecision::Deny {
                message: resp.message.unwrap_or_default(),
                interrupt: resp.interrupt.unwrap_or(false),
            },
        }
    }
}

/// What kind of prompt a correlation id is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PromptKind {
    /// A `permission_request`, answered by `permission_response`.
    Permission,
    /// An `ask_user_question`, answered by `question_response`.
    Question,
    /// A `hook_decision_request`, answered by `hook_decision_response`.
    Hook,
}

impl PromptKind {
    fn noun(self) -> &'static str {
        match self {
            PromptKind::Permission => "permission",
            PromptKind::Question => "question",
            PromptKind::Hook => "hook decision",
        }
    }
}

/// A client's reply to a pending prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptReply {
    /// Reply to a permission prompt.
    Permission(PermissionDecision),
    /// Answers to a question.
    Question(Value),
    /// A hook's output object.
    Hook(Map<String, Value>),
}

impl PromptReply {
    fn kind(&self) -> PromptKind {
        match self {
            PromptReply::Permission(_) => PromptKind::Permission,
            PromptReply::Question(_) => PromptKind::Question,
            PromptReply::Hook(_) => PromptKind::Hook,
        }
    }
}

/// A reply for a correlation id that is not pending (already answered, never asked, or a
/// different kind of prompt). HTTP 409.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("No pending {kind} for correlation_id {correlation_id} (already answered, withdrawn, or never asked)")]
pub struct ConflictError {
    /// `permission` or `question`.
    pub kind: &'static str,
    /// The correlation id replied to.
    pub correlation_id: String,
}

/// Why a prompt ended without a client decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    /// The prompt was withdrawn (agent cancel, interrupt) or the session is closing.
    #[error("permission prompt {0} was cancelled")]
    Cancelled(String),
    /// The same correlation id is already waiting for a decision.
    #[error("correlation_id {0} is already pending")]
    Duplicate(String),
    /// The session's event log is closed: nobody can answer any more.
    #[error("session is closed")]
    SessionClosed,
}
