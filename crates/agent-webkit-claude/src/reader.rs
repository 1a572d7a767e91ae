//! The stdout reader: parses each line, routes it by frame type (docs/claude-cli-protocol.md
//! §2.2) and reports how the process ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::{AgentError, AgentMessage};
use serde_json::Value;
use tokio::process::ChildStdout;
use tokio::sync::mpsc;

use crate::control::Shared;
use crate::mirror::{MirrorBatcher, MirrorError};
use crate::process::LineReader;
use crate::translate::Translator;

/// The reader's output: the session's message stream.
pub(crate) type MessageSender = mpsc::Sender<Result<AgentMessage, AgentError>>;

pub(crate) async fn reader_loop(
    shared: Arc<Shared>,
    mut lines: LineReader<ChildStdout>,
    tx: MessageSender,
    batcher: Option<Arc<MirrorBatcher>>,
    mut translator: Translator,
) {
    let failure: Option<String> = loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                if line.first() != Some(&b'{') {
                    let line = shared.process.redact(&String::from_utf8_lossy(line));
                    tracing::debug!(session_id = %shared.session_id, line, "non-JSON stdout line skipped");
                    continue;
                }
                let frame: Value = match serde_json::from_slice(line) {
                    Ok(frame) => frame,
                    Err(err) => {
                        tracing::warn!(session_id = %shared.session_id, error = %err, "invalid JSON on the CLI's stdout");
                        break Some(
                            "the Claude CLI printed a line that is not valid JSON".to_owned(),
                        );
                    }
                };
                dispatch(&shared, frame, &tx, batcher.as_ref(), &mut translator).await;
            }
            Ok(None) => break None,
            Err(err) => break Some(format!("unreadable output from the Claude CLI: {err}")),
        }
    };
    // A message the CLI was still writing when its output ended.
    if let Some(message) = translator.flush() {
        let _ = tx.send(Ok(message)).await;
    }
    if failure.is_some() {
        shared.process.kill().await;
    }
    if let Some(batcher) = &batcher {
        report_mirror_errors(&shared, &tx, batcher.drain().await).await;
    }
    let closing = shared.closing.load(Ordering::Acquire);
    let status = if closing {
        None
    } else {
        shared.process.wait_for(Duration::from_secs(2)).await
    };
    // Clients get what happened, never what the CLI printed (it may print anything, secrets
    // included): its stderr goes to the log only, redacted.
    let mut reason = match (&failure, status) {
        (Some(failure), _) => failure.clone(),
        (None, Some(status)) if status.success() => {
            format!("the Claude CLI exited unexpectedly ({status})")
        }
        (None, Some(status)) => format!("the Claude CLI crashed ({status})"),
        (None, None) => "the Claude CLI closed its output".to_owned(),
    };
    reason.push_str("; its output is in the server log");
    shared.mark_dead(reason.clone());
    if !closing {
        tracing::warn!(
            session_id = %shared.session_id,
            reason = %reason,
            stderr = %shared.process.stderr_tail(),
            "Claude CLI ended unexpectedly"
        );
        let _ = tx.send(Err(AgentError::Exited(reason))).await;
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    frame: Value,
    tx: &MessageSender,
    batcher: Option<&Arc<MirrorBatcher>>,
    translator: &mut Translator,
) {
    let kind = frame
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind == "system" {
        shared.background.lock().observe(&frame);
    }
    match kind {
        "control_response" => shared.resolve_response(&frame),
        "control_request" => {
            // The message announcing a tool goes out before the tool's permission prompt.
            if let Some(message) = translator.flush() {
                let _ = tx.send(Ok(message)).await;
            }
            shared.spawn_cli_request(&frame);
        }
        "control_cancel_request" => {
            if let Some(id) = frame.get("request_id").and_then(Value::as_str) {
                shared.cancel_cli_request(id);
            }
        }
        "transcript_mirror" => {
            let Some(batcher) = batcher else { return };
            let path = frame.get("filePath").and_then(Value::as_str);
            let entries = frame.get("entries").and_then(Value::as_array);
            let (Some(path), Some(entries)) = (path, entries) else {
                tracing::warn!(session_id = %shared.session_id, "malformed transcript_mirror frame ignored");
                return;
            };
            if batcher.enqueue(path.to_owned(), entries.clone()) {
                let (batcher, tx, shared) = (Arc::clone(batcher), tx.clone(), Arc::clone(shared));
                tokio::spawn(async move {
                    let errors = batcher.drain().await;
                    report_mirror_errors(&shared, &tx, errors).await;
                });
            }
        }
        "keep_alive" => {}
        "system"
            if frame.get("subtype").and_then(Value::as_str) == Some("session_state_changed") =>
        {
            tracing::trace!(session_id = %shared.session_id, state = ?frame.get("state"), "CLI state");
        }
        _ => {
            let is_result = kind == "result";
            if is_result {
                // The store has the turn before any client sees its end (SDK semantics).
                if let Some(batcher) = batcher {
                    report_mirror_errors(shared, tx, batcher.drain().await).await;
                }
            }
            for mut message in translator.translate(&frame, &shared.session_id) {
                if let AgentMessage::Result(result) = &mut message {
                    result.ends_turn = shared.ends_turn(&frame);
                    tracing::debug!(session_id = %shared.session_id, subtype = %result.subtype, ends_turn = result.ends_turn, "turn result");
                }
                let _ = tx.send(Ok(message)).await;
            }
            if translator.take_interrupt() {
                interrupt_unfixable_turn(shared);
            }
        }
    }
}

/// Interrupts the running turn: the CLI would retry an authentication failure for minutes
/// (10 retries, exponential backoff) although no retry can succeed. The turn then ends with its
/// `result` as any interrupted turn does.
fn interrupt_unfixable_turn(shared: &Arc<Shared>) {
    tracing::info!(session_id = %shared.session_id, "authentication failed: interrupting the turn");
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let request = serde_json::json!({"subtype": "interrupt"});
        if let Err(err) = shared.request(request, Duration::from_secs(5)).await {
            tracing::warn!(session_id = %shared.session_id, error = ?err, "interrupt after an authentication failure failed");
        }
    });
}

async fn report_mirror_errors(shared: &Shared, tx: &MessageSender, errors: Vec<MirrorError>) {
    for error in errors {
        let key = error
            .key
            .map(|k| match k.subpath {
                Some(sub) => format!("{}/{}/{sub}", k.project_key, k.session_id),
                None => format!("{}/{}", k.project_key, k.session_id),
            })
            .unwrap_or_else(|| "?".into());
        tracing::warn!(session_id = %shared.session_id, key, error = %error.error, "transcript mirror failed");
        let _ = tx
            .send(Ok(AgentMessage::Error {
                code: "mirror_error".into(),
                message: format!(
                    "Could not mirror the transcript to the session store ({key}): {}",
                    error.error
                ),
            }))
            .await;
    }
}
