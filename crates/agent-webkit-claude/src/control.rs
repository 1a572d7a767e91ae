//! The state one session's client, stdout reader and CLI-request tasks share, and host → CLI
//! control requests matched to their responses by id (docs/claude-cli-protocol.md §3).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::AgentError;
use agent_webkit_core::permission::PermissionHandle;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::options::HookSpec;
use crate::process::CliProcess;
use crate::translate::{is_self_started, result_user_uuids};

/// A host → CLI control request that did not succeed.
#[derive(Debug)]
pub(crate) enum ControlError {
    /// The CLI answered with an error response.
    Rejected { error: String, code: Option<String> },
    /// No answer (process gone, timeout, stdin closed).
    Agent(AgentError),
}

impl ControlError {
    pub(crate) fn into_agent_error(self, invalid_codes: &[&str]) -> AgentError {
        match self {
            ControlError::Rejected { error, code } => match code.as_deref() {
                Some(code) if invalid_codes.contains(&code) => AgentError::InvalidConfig(error),
                Some("unsupported_request") => AgentError::Unsupported("this control request"),
                _ => AgentError::Rejected(error),
            },
            ControlError::Agent(err) => err,
        }
    }
}

pub(crate) struct CliRequest {
    pub(crate) token: CancellationToken,
    pub(crate) correlation_id: Option<String>,
}

/// State shared by the client, the stdout reader and the CLI-request tasks.
pub(crate) struct Shared {
    pub(crate) session_id: String,
    pub(crate) process: Arc<CliProcess>,
    pub(crate) permissions: PermissionHandle,
    pub(crate) hooks: Vec<HookSpec>,
    pub(crate) control_timeout: Duration,
    pub(crate) counter: AtomicU64,
    /// Host → CLI requests waiting for their response.
    pub(crate) pending: Mutex<HashMap<String, oneshot::Sender<Result<Value, ControlError>>>>,
    /// CLI → host requests being handled.
    pub(crate) cli_requests: Mutex<HashMap<String, CliRequest>>,
    /// Uuids of user messages whose `result` the session waits for.
    pub(crate) awaiting: Mutex<VecDeque<String>>,
    /// The session asked us to stop.
    pub(crate) closing: AtomicBool,
    /// Why the process is gone (set once stdout ended).
    pub(crate) dead: Mutex<Option<String>>,
    /// Background tasks the CLI still runs (the session must not hibernate meanwhile).
    pub(crate) background: Mutex<crate::background::BackgroundWork>,
    /// MCP status reports after runtime changes.
    pub(crate) mcp: crate::mcp::McpReport,
}

impl Shared {
    pub(crate) fn next_request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("req_{n}_{}", &random[..8])
    }

    pub(crate) fn dead_error(&self) -> Option<AgentError> {
        self.dead.lock().clone().map(AgentError::Exited)
    }

    pub(crate) async fn write(&self, frame: &Value) -> Result<(), AgentError> {
        if let Some(err) = self.dead_error() {
            return Err(err);
        }
        self.process
            .send(frame.to_string())
            .await
            .map_err(|()| self.dead_error().unwrap_or(AgentError::Disconnected))
    }

    /// Sends a control request and waits for its response payload.
    pub(crate) async fn request(
        &self,
        request: Value,
        timeout: Duration,
    ) -> Result<Value, ControlError> {
        let id = self.next_request_id();
        let subtype = request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id.clone(), tx);
        let frame = json!({"type": "control_request", "request_id": id, "request": request});
        if let Err(err) = self.write(&frame).await {
            self.pending.lock().remove(&id);
            return Err(ControlError::Agent(err));
        }
        tracing::debug!(session_id = %self.session_id, request_id = %id, subtype, "control request sent");
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ControlError::Agent(
                self.dead_error().unwrap_or(AgentError::Disconnected),
            )),
            Err(_) => {
                self.pending.lock().remove(&id);
                tracing::warn!(session_id = %self.session_id, request_id = %id, subtype, "control request timed out");
                let cancel = json!({"type": "control_cancel_request", "request_id": id});
                let _ = self.write(&cancel).await;
                Err(ControlError::Agent(AgentError::Timeout(timeout)))
            }
        }
    }

    pub(crate) fn resolve_response(&self, frame: &Value) {
        let Some(response) = frame.get("response") else {
            return;
        };
        let Some(id) = response.get("request_id").and_then(Value::as_str) else {
            return;
        };
        let Some(waiter) = self.pending.lock().remove(id) else {
            tracing::debug!(session_id = %self.session_id, request_id = id, "response for a request nobody waits on");
            return;
        };
        let outcome = if response.get("subtype").and_then(Value::as_str) == Some("error") {
            Err(ControlError::Rejected {
                error: response
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned(),
                code: response
                    .get("error_code")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        } else {
            Ok(response
                .get("response")
                .cloned()
                .unwrap_or_else(|| json!({})))
        };
        let _ = waiter.send(outcome);
    }

    /// Decides whether a `result` frame ends the turn the session waits on.
    pub(crate) fn ends_turn(&self, frame: &Value) -> bool {
        let mut awaiting = self.awaiting.lock();
        let uuids = result_user_uuids(frame);
        if let Some(pos) = awaiting.iter().position(|u| uuids.contains(u)) {
            awaiting.remove(pos);
            return true;
        }
        if is_self_started(frame) {
            return false;
        }
        awaiting.pop_front().is_some()
    }

    /// Marks the process gone: fails waiting host requests and stops CLI-request tasks.
    pub(crate) fn mark_dead(&self, reason: String) {
        *self.dead.lock() = Some(reason.clone());
        let waiters: Vec<_> = self.pending.lock().drain().collect();
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(ControlError::Agent(AgentError::Exited(reason.clone()))));
        }
        let requests: Vec<_> = self.cli_requests.lock().drain().collect();
        for (_, request) in requests {
            request.token.cancel();
        }
    }

    /// Synchronous last resort when the client is dropped without `disconnect`.
    pub(crate) fn abandon(&self) {
        self.closing.store(true, Ordering::Release);
        let process = Arc::clone(&self.process);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                process.kill().await;
            });
        }
    }
}
