//! Starting a session as a fork of another one (docs/claude-cli-protocol.md §1):
//! `--resume=<source> --fork-session --session-id=<new>` over the source's transcript
//! (materialized from the `SessionStore` as for a resume, else the CLI's own file), plus
//! `--resume-session-at=<uuid>` to keep the conversation up to a message. That flag takes the
//! last transcript entry to keep and must name an assistant entry (CLI 2.1.330 does not start
//! when given a user message's uuid), so a fork at user message U names the last assistant
//! entry of the turn U started.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::rewind::ForkFrom;
use agent_webkit_core::agent::AgentError;
use agent_webkit_core::store::SessionStore;
use serde_json::Value;

use crate::project_key::project_key;
use crate::resume::{self, ResumeDir};

/// How to launch a fork.
#[derive(Debug)]
pub struct ForkPlan {
    /// The source's CLI session id (`--resume=`).
    pub source: String,
    /// `--resume-session-at=` (`None`: the whole conversation).
    pub resume_at: Option<String>,
    /// The materialized config directory, when the source came from the store.
    pub dir: Option<ResumeDir>,
}

impl ForkPlan {
    /// The arguments added to a resume of [`source`](Self::source).
    pub fn extra_args(&self, session_id: &str) -> Vec<String> {
        let mut args = vec![
            "--fork-session".to_owned(),
            format!("--session-id={session_id}"),
        ];
        if let Some(at) = &self.resume_at {
            args.push(format!("--resume-session-at={at}"));
        }
        args
    }
}

/// Prepares the fork of `from` (see the module docs). An unknown source transcript or message
/// is [`AgentError::InvalidConfig`].
pub async fn plan(
    from: &ForkFrom,
    store: Option<&Arc<dyn SessionStore>>,
    cwd: &Path,
    config_dir: &Path,
    load_timeout: Duration,
) -> Result<ForkPlan, AgentError> {
    let source = from.agent_session_id.clone();
    let dir = match store {
        Some(store) => resume::materialize(store.as_ref(), cwd, &source, config_dir, load_timeout)
            .await
            .map_err(|e| AgentError::StartFailed(format!("cannot fork {source}: {e}")))?,
        None => None,
    };
    let real = cwd
        .canonicalize()
        .map_err(|e| AgentError::InvalidConfig(format!("cannot resolve the cwd: {e}")))?;
    let base: PathBuf = dir
        .as_ref()
        .map_or_else(|| config_dir.to_path_buf(), |d| d.path().to_path_buf());
    let file = base
        .join("projects")
        .join(project_key(&real))
        .join(format!("{source}.jsonl"));
    let text = tokio::fs::read_to_string(&file).await.map_err(|_| {
        AgentError::InvalidConfig("the source session has no transcript yet".into())
    })?;
    let entries: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let resume_at = match &from.message_uuid {
        None => None,
        Some(uuid) => Some(turn_end(&entries, uuid).ok_or_else(|| {
            AgentError::InvalidConfig(format!("no answered user message {uuid} in the source"))
        })?),
    };
    Ok(ForkPlan {
        source,
        resume_at,
        dir,
    })
}

/// The uuid of the last assistant entry of the turn user message `uuid` started: entries after
/// it up to the next prompt (a user entry that is not a tool result, meta or sidechain entry).
pub fn turn_end(entries: &[Value], uuid: &str) -> Option<String> {
    let start = entries
        .iter()
        .position(|e| e["type"] == "user" && e["uuid"] == uuid)?;
    let mut last = None;
    for entry in &entries[start + 1..] {
        if entry["isSidechain"] == true {
            continue;
        }
        match entry["type"].as_str() {
            Some("assistant") => last = entry["uuid"].as_str().map(str::to_owned),
            Some("user") if is_prompt(entry) => break,
            _ => {}
        }
    }
    last
}

fn is_prompt(entry: &Value) -> bool {
    if entry["isMeta"] == true {
        return false;
    }
    match &entry["message"]["content"] {
        Value::Array(blocks) => !blocks.iter().any(|b| b["type"] == "tool_result"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::turn_end;

    #[test]
    fn a_turn_ends_at_its_last_assistant_entry_before_the_next_prompt() {
        let entries = vec![
            json!({"type": "user", "uuid": "u1", "message": {"content": "one"}}),
            json!({"type": "assistant", "uuid": "a1"}),
            json!({"type": "user", "uuid": "u2", "message": {"content": "two"}}),
            json!({"type": "assistant", "uuid": "a2"}),
            json!({"type": "user", "uuid": "t2", "message": {"content": [{"type": "tool_result"}]}}),
            json!({"type": "assistant", "uuid": "a3"}),
            json!({"type": "file-history-snapshot"}),
            json!({"type": "user", "uuid": "u3", "message": {"content": "three"}}),
            json!({"type": "assistant", "uuid": "a4"}),
        ];
        assert_eq!(turn_end(&entries, "u1").as_deref(), Some("a1"));
        assert_eq!(turn_end(&entries, "u2").as_deref(), Some("a3"));
        assert_eq!(turn_end(&entries, "u3").as_deref(), Some("a4"));
        assert_eq!(turn_end(&entries, "a1"), None);
        assert_eq!(turn_end(&entries, "zz"), None);
    }
}
