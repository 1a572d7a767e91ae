//! Permission prompts: the router of pending decisions and the handle agents ask through.
//!
//! An agent that wants to run a tool calls [`PermissionHandle::can_use_tool`]. The handle
//! registers the tool call's `correlation_id` with the session's [`PermissionRouter`] *before*
//! it appends the `permission_request` (or `ask_user_question`) event, so a client can never
//! answer a prompt the router does not know yet. The client's `permission_response` /
//! `question_response` resolves it; the first reply wins and every later one is a
//! [`ConflictError`] (HTTP 409).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::event_log::EventLog;
use crate::models::{
    AskUserQuestionData, Behavior, ErrorData, EventKind, HookDecisionRequestData,
    PermissionRequestData, PermissionResponse,
};

/// The tool name that is routed as a question instead of a permission prompt.
pub const ASK_USER_QUESTION_TOOL: &str = "AskUserQuestion";

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
pub enum PromptKind {
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

struct Pending {
    kind: PromptKind,
    reply: oneshot::Sender<PromptReply>,
}

/// Pending decisions by correlation id. First reply wins.
#[derive(Default)]
pub struct PermissionRouter {
    pending: Mutex<HashMap<String, Pending>>,
    closed: Mutex<bool>,
}

impl std::fmt::Debug for PermissionRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermissionRouter")
            .field("pending", &self.pending.lock().len())
            .finish()
    }
}

impl PermissionRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a prompt; the receiver resolves with the client's reply, or errors when the
    /// prompt is cancelled.
    pub fn register(
        &self,
        correlation_id: &str,
        kind: PromptKind,
    ) -> Result<oneshot::Receiver<PromptReply>, PermissionError> {
        if *self.closed.lock() {
            return Err(PermissionError::SessionClosed);
        }
        let mut pending = self.pending.lock();
        if pending.contains_key(correlation_id) {
            return Err(PermissionError::Duplicate(correlation_id.to_owned()));
        }
        let (tx, rx) = oneshot::channel();
        pending.insert(correlation_id.to_owned(), Pending { kind, reply: tx });
        Ok(rx)
    }

    /// Delivers a reply. Fails with [`ConflictError`] unless a prompt of the reply's kind is
    /// pending under `correlation_id`.
    pub fn resolve(&self, correlation_id: &str, reply: PromptReply) -> Result<(), ConflictError> {
        let kind = reply.kind();
        let conflict = || ConflictError {
            kind: kind.noun(),
            correlation_id: correlation_id.to_owned(),
        };
        let entry = {
            let mut pending = self.pending.lock();
            match pending.get(correlation_id) {
                Some(p) if p.kind == kind => pending.remove(correlation_id),
                _ => None,
            }
        };
        let entry = entry.ok_or_else(conflict)?;
        entry.reply.send(reply).map_err(|_| conflict())
    }

    /// Whether `correlation_id` is waiting for a reply.
    pub fn has_pending(&self, correlation_id: &str) -> bool {
        self.pending.lock().contains_key(correlation_id)
    }

    /// The correlation ids waiting for a reply.
    pub fn pending_ids(&self) -> Vec<String> {
        self.pending.lock().keys().cloned().collect()
    }

    /// Withdraws one prompt; its waiter gets [`PermissionError::Cancelled`]. Returns whether it
    /// was pending.
    pub fn cancel(&self, correlation_id: &str) -> bool {
        self.pending.lock().remove(correlation_id).is_some()
    }

    /// Withdraws every prompt and refuses new ones (session close).
    pub fn cancel_all(&self) {
        *self.closed.lock() = true;
        self.pending.lock().clear();
    }
}

/// A request to the session to translate every agent message already sent, then acknowledge.
pub type FlushRequest = oneshot::Sender<()>;

struct HandleInner {
    log: Arc<EventLog>,
    router: Arc<PermissionRouter>,
    flush: Option<mpsc::UnboundedSender<FlushRequest>>,
}

/// The channel through which an agent asks the client for decisions. Cheap to clone.
#[derive(Clone)]
pub struct PermissionHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for PermissionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermissionHandle").finish_non_exhaustive()
    }
}

/// Removes a registration if the waiting future is dropped before a reply arrives.
struct Registration<'a> {
    router: &'a PermissionRouter,
    correlation_id: &'a str,
    armed: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.router.cancel(self.correlation_id);
        }
    }
}

impl PermissionHandle {
    /// A handle emitting into `log` and waiting through `router`.
    pub fn new(log: Arc<EventLog>, router: Arc<PermissionRouter>) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                log,
                router,
                flush: None,
            }),
        }
    }

    /// A handle that, before announcing a prompt, asks the session (through `flush`) to
    /// translate every message the agent sent before it — so a `permission_request` never
    /// overtakes the `message_complete` / `tool_use` that announced the tool call.
    pub fn with_flush(
        log: Arc<EventLog>,
        router: Arc<PermissionRouter>,
        flush: mpsc::UnboundedSender<FlushRequest>,
    ) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                log,
                router,
                flush: Some(flush),
            }),
        }
    }

    async fn flush(&self) {
        if let Some(flush) = &self.inner.flush {
            let (tx, rx) = oneshot::channel();
            if flush.send(tx).is_ok() {
                // An error means the session ended; the append below then fails cleanly.
                let _ = rx.await;
            }
        }
    }

    /// The router behind this handle.
    pub fn router(&self) -> &Arc<PermissionRouter> {
        &self.inner.router
    }

    /// Asks whether the agent may run `tool_name` with `input`, and waits for the client.
    ///
    /// `context` is forwarded verbatim in the `permission_request`; its `tool_use_id` is the
    /// correlation id (a fresh one is generated when absent). `AskUserQuestion` becomes an
    /// `ask_user_question` event, and its answers come back as an allow whose `updated_input` is
    /// the original input plus `"answers"`.
    pub async fn can_use_tool(
        &self,
        tool_name: &str,
        input: Value,
        context: Value,
    ) -> Result<PermissionDecision, PermissionError> {
        let correlation_id = context
            .get("tool_use_id")
            .or_else(|| context.get("correlation_id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("corr_{}", uuid::Uuid::new_v4().simple()));

        if tool_name == ASK_USER_QUESTION_TOOL {
            let reply = self
                .prompt(
                    &correlation_id,
                    PromptKind::Question,
                    EventKind::AskUserQuestion,
                    &AskUserQuestionData {
                        correlation_id: correlation_id.clone(),
                        questions: input.clone(),
                    },
                )
                .await?;
            let answers = match reply {
                PromptReply::Question(answers) => answers,
                PromptReply::Permission(decision) => return Ok(decision),
                // Unreachable: the router only delivers replies of the registered kind.
                PromptReply::Hook(_) => return Err(PermissionError::Cancelled(correlation_id)),
            };
            let mut updated = match input {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            updated.insert("answers".to_owned(), answers);
            return Ok(PermissionDecision::Allow {
                updated_input: Some(updated),
                updated_permissions: None,
            });
        }

        let reply = self
            .prompt(
                &correlation_id,
                PromptKind::Permission,
                EventKind::PermissionRequest,
                &PermissionRequestData {
                    correlation_id: correlation_id.clone(),
                    tool_name: tool_name.to_owned(),
                    input,
                    context,
                },
            )
            .await?;
        match reply {
            PromptReply::Permission(decision) => Ok(decision),
            // Unreachable: the router only delivers replies of the registered kind.
            PromptReply::Question(_) | PromptReply::Hook(_) => {
                Err(PermissionError::Cancelled(correlation_id))
            }
        }
    }

    /// Forwards a hook event to the client as `hook_decision_request` and waits for its
    /// `hook_decision_response`; returns the hook output object (`{}` = no opinion).
    pub async fn hook_decision(
        &self,
        correlation_id: &str,
        hook_event: &str,
        hook_input: Value,
    ) -> Result<Map<String, Value>, PermissionError> {
        let reply = self
            .prompt(
                correlation_id,
                PromptKind::Hook,
                EventKind::HookDecisionRequest,
                &HookDecisionRequestData {
                    correlation_id: correlation_id.to_owned(),
                    hook_event: hook_event.to_owned(),
                    hook_input,
                },
            )
            .await?;
        match reply {
            PromptReply::Hook(decision) => Ok(decision),
            // Unreachable: the router only delivers replies of the registered kind.
            PromptReply::Permission(_) | PromptReply::Question(_) => {
                Err(PermissionError::Cancelled(correlation_id.to_owned()))
            }
        }
    }

    async fn prompt<T: serde::Serialize>(
        &self,
        correlation_id: &str,
        kind: PromptKind,
        event: EventKind,
        data: &T,
    ) -> Result<PromptReply, PermissionError> {
        self.flush().await;
        let rx = self.inner.router.register(correlation_id, kind)?;
        let mut registration = Registration {
            router: &self.inner.router,
            correlation_id,
            armed: true,
        };
        if let Err(err) = self.inner.log.append(event, data) {
            tracing::warn!(correlation_id, error = %err, "could not emit prompt");
            return Err(PermissionError::SessionClosed);
        }
        tracing::debug!(
            correlation_id,
            event = event.as_str(),
            "waiting for client decision"
        );
        let reply = rx.await;
        registration.armed = false;
        reply.map_err(|_| PermissionError::Cancelled(correlation_id.to_owned()))
    }

    /// Withdraws a pending prompt (the agent no longer needs the answer, e.g. the CLI sent
    /// `control_cancel_request`). Emits `error {code: "permission_cancelled", correlation_id}`
    /// so clients stop showing it. Returns whether the prompt was pending.
    pub fn cancel(&self, correlation_id: &str, reason: &str) -> bool {
        if !self.inner.router.cancel(correlation_id) {
            return false;
        }
        let mut data = ErrorData::new("permission_cancelled", reason);
        data.correlation_id = Some(correlation_id.to_owned());
        if let Err(err) = self.inner.log.append(EventKind::Error, &data) {
            tracing::debug!(correlation_id, error = %err, "prompt withdrawn after close");
        }
        true
    }

    /// Withdraws every pending prompt, emitting `permission_cancelled` for each.
    pub fn cancel_all_pending(&self, reason: &str) -> usize {
        self.inner
            .router
            .pending_ids()
            .iter()
            .filter(|id| self.cancel(id, reason))
            .count()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn handle() -> (PermissionHandle, Arc<EventLog>, Arc<PermissionRouter>) {
        let log = Arc::new(EventLog::new(100));
        let router = Arc::new(PermissionRouter::new());
        (
            PermissionHandle::new(Arc::clone(&log), Arc::clone(&router)),
            log,
            router,
        )
    }

    fn allow() -> PromptReply {
        PromptReply::Permission(PermissionDecision::Allow {
            updated_input: None,
            updated_permissions: None,
        })
    }

    #[tokio::test]
    async fn first_reply_wins() {
        let (h, log, router) = handle();
        let task = tokio::spawn(async move {
            h.can_use_tool("Read", json!({"path": "a"}), json!({"tool_use_id": "tu_1"}))
                .await
        });
        let mut sub = log.subscribe_from_start();
        let ev = sub.next().await.unwrap().unwrap();
        assert_eq!(ev.kind(), EventKind::PermissionRequest);
        assert_eq!(
            ev.data_json(),
            r#"{"correlation_id":"tu_1","tool_name":"Read","input":{"path":"a"},"context":{"tool_use_id":"tu_1"}}"#
        );
        // Wrong kind is a conflict and does not consume the prompt.
        assert!(router
            .resolve("tu_1", PromptReply::Question(json!({})))
            .is_err());
        router.resolve("tu_1", allow()).unwrap();
        let err = router.resolve("tu_1", allow()).unwrap_err();
        assert_eq!(err.kind, "permission");
        assert!(router.resolve("never", allow()).is_err());
        assert!(matches!(
            task.await.unwrap().unwrap(),
            PermissionDecision::Allow { .. }
        ));
    }

    #[tokio::test]
    async fn question_answers_are_merged_into_input() {
        let (h, log, router) = handle();
        let input = json!({"questions": [{"question": "Pick", "options": []}]});
        let task = tokio::spawn(async move {
            h.can_use_tool("AskUserQuestion", input, json!({"tool_use_id": "tu_q"}))
                .await
        });
        let mut sub = log.subscribe_from_start();
        let ev = sub.next().await.unwrap().unwrap();
        assert_eq!(ev.kind(), EventKind::AskUserQuestion);
        router
            .resolve("tu_q", PromptReply::Question(json!({"Pick": "red"})))
            .unwrap();
        let PermissionDecision::Allow { updated_input, .. } = task.await.unwrap().unwrap() else {
            panic!("expected allow")
        };
        assert_eq!(
            Value::Object(updated_input.unwrap()),
            json!({"questions": [{"question": "Pick", "options": []}], "answers": {"Pick": "red"}})
        );
    }

    #[tokio::test]
    async fn cancel_withdraws_and_announces() {
        let (h, log, router) = handle();
        let h2 = h.clone();
        let task = tokio::spawn(async move {
            h2.can_use_tool("Bash", json!({}), json!({"tool_use_id": "tu_9"}))
                .await
        });
        let mut sub = log.subscribe_from_start();
        sub.next().await.unwrap().unwrap();
        assert!(h.cancel("tu_9", "withdrawn by agent"));
        assert!(!h.cancel("tu_9", "again"));
        assert_eq!(
            task.await.unwrap().unwrap_err(),
            PermissionError::Cancelled("tu_9".into())
        );
        let ev = sub.next().await.unwrap().unwrap();
        assert_eq!(
            ev.data_json(),
            r#"{"code":"permission_cancelled","message":"withdrawn by agent","correlation_id":"tu_9"}"#
        );
        assert!(router.resolve("tu_9", allow()).is_err());
        router.cancel_all();
        assert_eq!(
            router.register("x", PromptKind::Permission).unwrap_err(),
            PermissionError::SessionClosed
        );
    }

    #[tokio::test]
    async fn dropped_waiter_unregisters() {
        let (h, log, router) = handle();
        let task = tokio::spawn(async move {
            h.can_use_tool("Read", json!({}), json!({"tool_use_id": "tu_d"}))
                .await
        });
        let mut sub = log.subscribe_from_start();
        sub.next().await.unwrap().unwrap();
        assert!(router.has_pending("tu_d"));
        task.abort();
        let _ = task.await;
        assert!(!router.has_pending("tu_d"));
    }
}
