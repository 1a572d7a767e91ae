//! What an agent answers to a rewind, and what a fork asks of a new agent (see
//! docs/protocol-extensions.md, "Anchors, fork and rewind").

use crate::models::anchors::{ConversationRewind, FilesRewind};

use super::AgentError;

/// Start a new agent from another agent session's conversation ([`super::SessionConfig::fork`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkFrom {
    /// The source's agent session id (for the Claude CLI: its session id; the source's server
    /// session id unless its caller chose that).
    pub agent_session_id: String,
    /// Keep the conversation up to and including the turn this user message started (`None`:
    /// all of it).
    pub message_uuid: Option<String>,
    /// The source's user messages the fork keeps (its anchors up to `message_uuid`): the fork
    /// can be rewound or forked again at them.
    pub anchors: Vec<String>,
}

/// What an agent did for a rewind (each part `None` when not asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewindOutcome {
    /// Files.
    pub files: Option<FilesRewind>,
    /// Conversation.
    pub conversation: Option<ConversationRewind>,
}

/// Why an agent refused a rewind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewindError {
    /// Files were asked but file checkpointing is off for this session (409
    /// `checkpointing_disabled`).
    #[error("file checkpointing is off for this session")]
    CheckpointingDisabled,
    /// The agent does not know the message (400 `unknown_message`).
    #[error("unknown message: {0}")]
    UnknownMessage(String),
    /// Anything else.
    #[error(transparent)]
    Agent(#[from] AgentError),
}
