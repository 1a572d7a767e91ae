//! Rewind through the CLI (docs/claude-cli-protocol.md §2): files with the `rewind_files`
//! control request (`CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING=1` at launch), the conversation
//! with `rewind_conversation` (`target_message_uuid`: the user message that is removed with
//! everything after it; `last_seen_user_message_uuid`: the latest user message, without which
//! the CLI refuses a target that has later turns as "stale target").
//!
//! File checkpoints are kept per CLI process and config directory: a user message sent to an
//! earlier process of the session (before hibernation, a restart or a take-over, whose resumed
//! CLI runs in a fresh materialized config directory) has none this process can use (verified
//! with CLI 2.1.330: such a restore would empty the file), so it is reported as not rewound.

use agent_webkit_core::agent::rewind::{RewindError, RewindOutcome};
use agent_webkit_core::models::anchors::{ConversationRewind, FilesRewind, RewindRequest};
use serde_json::{json, Value};

use crate::client::ClaudeClient;

/// Why files of a message sent to an earlier CLI process are not restored.
pub const CHECKPOINTS_LOST: &str =
    "this message was sent before the agent last restarted; its file checkpoints are not available";

/// Rewinds `client`'s CLI (see the module docs).
pub(crate) async fn rewind(
    client: &ClaudeClient,
    request: &RewindRequest,
    latest: Option<&str>,
) -> Result<RewindOutcome, RewindError> {
    let uuid = request.message_uuid.as_str();
    let mut outcome = RewindOutcome::default();
    if request.files {
        if !client.checkpointing {
            return Err(RewindError::CheckpointingDisabled);
        }
        outcome.files = Some(if client.sent_here(uuid) {
            rewind_files(client, uuid, request.dry_run).await?
        } else {
            FilesRewind {
                error: Some(CHECKPOINTS_LOST.into()),
                ..FilesRewind::default()
            }
        });
    }
    if request.conversation {
        outcome.conversation = Some(if request.dry_run {
            ConversationRewind {
                rewound: true,
                error: None,
            }
        } else {
            // Without the last message the client saw, the CLI refuses a target with later
            // turns ("stale target"): this process's last, else the session's (a CLI resumed
            // after hibernation or a restart has sent none yet).
            let mut ask = json!({"subtype": "rewind_conversation", "target_message_uuid": uuid});
            if let Some(last) = client.last_sent().or_else(|| latest.map(str::to_owned)) {
                ask["last_seen_user_message_uuid"] = Value::String(last);
            }
            let answer = client.control(ask, &[]).await?;
            let rewound = answer.get("rewound").and_then(Value::as_bool) == Some(true);
            ConversationRewind {
                rewound,
                error: (!rewound).then(|| {
                    answer
                        .get("error")
                        .or_else(|| answer.get("reason"))
                        .and_then(Value::as_str)
                        .unwrap_or("the agent did not rewind the conversation")
                        .to_owned()
                }),
            }
        });
    }
    Ok(outcome)
}

/// `rewind_files`: a dry run first (the CLI lists the changed files only then), then the real
/// one unless `dry_run`.
async fn rewind_files(
    client: &ClaudeClient,
    uuid: &str,
    dry_run: bool,
) -> Result<FilesRewind, RewindError> {
    let preview = client
        .control(
            json!({"subtype": "rewind_files", "user_message_id": uuid, "dry_run": true}),
            &[],
        )
        .await?;
    let mut files = files_of(&preview);
    if files.rewound && !dry_run {
        let done = client
            .control(
                json!({"subtype": "rewind_files", "user_message_id": uuid, "dry_run": false}),
                &[],
            )
            .await?;
        let applied = files_of(&done);
        files.rewound = applied.rewound;
        files.error = applied.error;
    }
    Ok(files)
}

/// The CLI's `{canRewind, error?, filesChanged?, insertions?, deletions?}`.
fn files_of(answer: &Value) -> FilesRewind {
    let rewound = answer.get("canRewind").and_then(Value::as_bool) == Some(true);
    FilesRewind {
        rewound,
        files_changed: answer
            .get("filesChanged")
            .and_then(Value::as_array)
            .map(|files| {
                files
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        insertions: answer
            .get("insertions")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        deletions: answer.get("deletions").and_then(Value::as_u64).unwrap_or(0),
        error: answer
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| (!rewound).then(|| "the agent cannot rewind the files".to_owned())),
    }
}
