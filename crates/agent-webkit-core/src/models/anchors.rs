//! Wire types of the anchors / fork / rewind extension (docs/protocol-extensions.md, "Anchors,
//! fork and rewind"): the `user_message` and `rewound` events, the create option `fork`, the
//! inbound `rewind` message and its answer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{InboundError, UserContent};

/// What the `rewind` answer says cannot be restored.
pub const NOT_RESTORED: &str = "Only files changed through the Write, Edit and NotebookEdit tools \
while file checkpointing was on are restored. Changes made through Bash or any other tool \
(including MCP tools), changes made outside the agent, and files outside checkpointing are not \
restored; file checkpoints of user messages sent before the agent was last restarted \
(hibernation wake-up, server restart, take-over) are not available.";

/// `user_message` data (ours): a user message handed to the agent, at the start of its turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserMessageData {
    /// The message's id in the agent's transcript: the anchor `fork` and `rewind` name.
    pub uuid: String,
    /// The content as the client posted it.
    pub content: UserContent,
}

/// The create option `fork`: start from another session's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForkRequest {
    /// The source session.
    pub session_id: String,
    /// Keep the conversation up to and including the turn this user message started; absent:
    /// all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_uuid: Option<String>,
}

impl ForkRequest {
    pub(crate) fn from_value(value: &Value) -> Result<Self, InboundError> {
        let Value::Object(obj) = value else {
            return Err(InboundError::InvalidField {
                field: "fork",
                expected: "an object with a string session_id",
            });
        };
        let session_id = match obj.get("session_id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            None | Some(Value::Null) => return Err(InboundError::MissingField("fork.session_id")),
            Some(_) => {
                return Err(InboundError::InvalidField {
                    field: "fork.session_id",
                    expected: "a non-empty string",
                })
            }
        };
        let message_uuid = match obj.get("message_uuid") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            Some(_) => {
                return Err(InboundError::InvalidField {
                    field: "fork.message_uuid",
                    expected: "a non-empty string",
                })
            }
        };
        Ok(Self {
            session_id,
            message_uuid,
        })
    }
}

/// `forked_from` in the create response of a fork.
pub type ForkedFrom = ForkRequest;

/// Inbound `rewind`: restore files and/or the conversation to just before a user message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RewindRequest {
    /// The user message (`user_message.uuid`).
    pub message_uuid: String,
    /// Restore the files (default true).
    pub files: bool,
    /// Rewind the conversation (default true).
    pub conversation: bool,
    /// Only report what would change (default false).
    pub dry_run: bool,
}

impl RewindRequest {
    pub(crate) fn from_object(obj: &Map<String, Value>) -> Result<Self, InboundError> {
        let message_uuid = match obj.get("message_uuid") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            None | Some(Value::Null) => return Err(InboundError::MissingField("message_uuid")),
            Some(_) => {
                return Err(InboundError::InvalidField {
                    field: "message_uuid",
                    expected: "a non-empty string",
                })
            }
        };
        let flag = |field: &'static str, default: bool| match obj.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(InboundError::InvalidField {
                field,
                expected: "a boolean",
            }),
        };
        let request = Self {
            message_uuid,
            files: flag("files", true)?,
            conversation: flag("conversation", true)?,
            dry_run: flag("dry_run", false)?,
        };
        if !request.files && !request.conversation {
            return Err(InboundError::InvalidField {
                field: "files",
                expected: "files or conversation (or both) true",
            });
        }
        Ok(request)
    }
}

/// The files part of a rewind answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilesRewind {
    /// Whether the files were (dry run: can be) restored.
    pub rewound: bool,
    /// The files that change (known for a dry run; empty otherwise).
    pub files_changed: Vec<String>,
    /// Lines inserted by the restore.
    pub insertions: u64,
    /// Lines deleted by the restore.
    pub deletions: u64,
    /// Why not, when `rewound` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The conversation part of a rewind answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationRewind {
    /// Whether the conversation was (dry run: can be) rewound.
    pub rewound: bool,
    /// Why not, when `rewound` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The 200 answer to `rewind`, and the `rewound` event's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RewoundData {
    /// The user message rewound to (it and everything after it are gone).
    pub message_uuid: String,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Files (`null` when not asked).
    pub files: Option<FilesRewind>,
    /// Conversation (`null` when not asked).
    pub conversation: Option<ConversationRewind>,
    /// What a rewind never restores.
    pub not_restored: String,
}
