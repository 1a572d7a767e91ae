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

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::event_log::{AppendError, EventLog};
use crate::models::{
    AskUserQuestionData, Behavior, ErrorData, EventKind, HookDecisionRequestData,
    PermissionRequestData, PermissionResponse,
};

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
    pub(crate) fn register(
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
    pub(crate) fn pending_ids(&self) -> Vec<String> {
        self.pending.lock().keys().cloned().collect()
    }

    /// Withdraws one prompt; its waiter gets [`PermissionError::Cancelled`]. Returns whether it
    /// was pending.
    pub(crate) fn cancel(&self, correlation_id: &str) -> bool {
        self.pending.lock().remove(correlation_id).is_some()
    }

    /// Withdraws every prompt and refuses new ones (session close).
    pub(crate) fn cancel_all(&self) {
        *self.closed.lock() = true;
        self.pending.lock().clear();
    }
}

/// A prompt's event data; its variant decides the event and the kind of reply awaited.
#[derive(Debug)]
pub(crate) enum Prompt {
    /// `permission_request`.
    Permission(PermissionRequestData),
    /// `ask_user_question`.
    Question(AskUserQuestionData),
    /// `hook_decision_request`.
    Hook(HookDecisionRequestData),
}

impl Prompt {
    fn correlation_id(&self) -> &str {
        match self {
            Prompt::Permission(d) => &d.correlation_id,
            Prompt::Question(d) => &d.correlation_id,
            Prompt::Hook(d) => &d.correlation_id,
        }
    }

    fn kind(&self) -> PromptKind {
        match self {
            Prompt::Permission(_) => PromptKind::Permission,
            Prompt::Question(_) => PromptKind::Question,
            Prompt::Hook(_) => PromptKind::Hook,
        }
    }

    fn append_to(&self, log: &EventLog) -> Result<(), AppendError> {
        match self {
            Prompt::Permission(d) => log.append(EventKind::PermissionRequest, d),
            Prompt::Question(d) => log.append(EventKind::AskUserQuestion, d),
            Prompt::Hook(d) => log.append(EventKind::HookDecisionRequest, d),
        }
        .map(drop)
    }
}

/// Where a prompt's reply will arrive, once the prompt is registered and announced.
type Opened = Result<oneshot::Receiver<PromptReply>, PermissionError>;

/// What a [`PermissionHandle`] asks of its session's loop, which owns every write of prompts
/// into the log (see [`crate::session`]).
#[derive(Debug)]
pub(crate) enum ToSession {
    /// Register the prompt, append its event, and send back where its reply will arrive.
    Open {
        /// The prompt.
        prompt: Prompt,
        /// Gets the receiver of the reply (or why the prompt could not be opened).
        opened: oneshot::Sender<Opened>,
    },
    /// A prompt was withdrawn: append `error {code: "permission_cancelled"}` for it.
    Withdrawn {
        /// The prompt's correlation id.
        correlation_id: String,
        /// Message of the `error` event.
        reason: String,
    },
}

impl ToSession {
    /// Carries out the request against the session's log and router. Called by the session
    /// loop only (and by detached test handles), so prompts enter the log in one place.
    pub(crate) fn apply(self, log: &EventLog, router: &PermissionRouter) {
        match self {
            ToSession::Open { prompt, opened } => {
                if opened.is_closed() {
                    // The agent stopped waiting before the prompt was announced.
                    return;
                }
                let correlation_id = prompt.correlation_id().to_owned();
                let result = open(log, router, &prompt);
                if opened.send(result).is_err() {
                    // It stopped waiting meanwhile: withdraw what was just announced.
                    if router.cancel(&correlation_id) {
                        announce_withdrawal(log, &correlation_id, "the agent stopped waiting");
                    }
                }
            }
            ToSession::Withdrawn {
                correlation_id,
                reason,
            } => announce_withdrawal(log, &correlation_id, &reason),
        }
    }
}

/// Registers `prompt` with the router, then appends its event (in that order, so a client can
/// never answer a prompt the router does not know yet).
fn open(log: &EventLog, router: &PermissionRouter, prompt: &Prompt) -> Opened {
    let correlation_id = prompt.correlation_id();
    let rx = router.register(correlation_id, prompt.kind())?;
    if let Err(err) = prompt.append_to(log) {
        router.cancel(correlation_id);
        tracing::warn!(correlation_id, error = %err, "could not emit prompt");
        return Err(PermissionError::SessionClosed);
    }
    Ok(rx)
}

fn announce_withdrawal(log: &EventLog, correlation_id: &str, reason: &str) {
    let mut data = ErrorData::new("permission_cancelled", reason);
    data.correlation_id = Some(correlation_id.to_owned());
    if let Err(err) = log.append(EventKind::Error, &data) {
        tracing::debug!(correlation_id, error = %err, "prompt withdrawn after close");
    }
}

/// Where a handle's prompts go.
enum Target {
    /// To its session's loop.
    Session(mpsc::UnboundedSender<ToSession>),
    /// Straight into a log, with no session (tests of agents).
    #[cfg(any(test, feature = "testing"))]
    Detached(Arc<EventLog>),
}

struct HandleInner {
    router: Arc<PermissionRouter>,
    target: Target,
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
    /// A session's handle, and the receiving end its loop serves.
    pub(crate) fn for_session(
        router: Arc<PermissionRouter>,
    ) -> (Self, mpsc::UnboundedReceiver<ToSession>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Self {
            inner: Arc::new(HandleInner {
                router,
                target: Target::Session(tx),
            }),
        };
        (handle, rx)
    }

    /// A handle with no session behind it, for tests of agents: prompts go straight into `log`
    /// and wait on `router` (answer them with [`PermissionRouter::resolve`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn detached(log: Arc<EventLog>, router: Arc<PermissionRouter>) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                router,
                target: Target::Detached(log),
            }),
        }
    }

    fn send(&self, request: ToSession) {
        match &self.inner.target {
            // An error means the session has ended: an `Open` then reports `SessionClosed`
            // (its `opened` sender is dropped), a withdrawal has nobody left to tell.
            Target::Session(tx) => drop(tx.send(request)),
            #[cfg(any(test, feature = "testing"))]
            Target::Detached(log) => request.apply(log, &self.inner.router),
        }
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
                .prompt(Prompt::Question(AskUserQuestionData {
                    correlation_id: correlation_id.clone(),
                    questions: input.clone(),
                }))
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
            .prompt(Prompt::Permission(PermissionRequestData {
                correlation_id: correlation_id.clone(),
                tool_name: tool_name.to_owned(),
                input,
                context,
            }))
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
            .prompt(Prompt::Hook(HookDecisionRequestData {
                correlation_id: correlation_id.to_owned(),
                hook_event: hook_event.to_owned(),
                hook_input,
            }))
            .await?;
        match reply {
            PromptReply::Hook(decision) => Ok(decision),
            // Unreachable: the router only delivers replies of the registered kind.
            PromptReply::Permission(_) | PromptReply::Question(_) => {
                Err(PermissionError::Cancelled(correlation_id.to_owned()))
            }
        }
    }

    async fn prompt(&self, prompt: Prompt) -> Result<PromptReply, PermissionError> {
        let correlation_id = prompt.correlation_id().to_owned();
        let event = prompt.kind().noun();
        let (opened, rx) = oneshot::channel();
        self.send(ToSession::Open { prompt, opened });
        let rx = rx.await.map_err(|_| PermissionError::SessionClosed)??;
        let mut registration = Registration {
            router: &self.inner.router,
            correlation_id: &correlation_id,
            armed: true,
        };
        tracing::debug!(
            correlation_id = %correlation_id,
            prompt = event,
            "waiting for client decision"
        );
        let reply = rx.await;
        registration.armed = false;
        reply.map_err(|_| PermissionError::Cancelled(correlation_id.clone()))
    }

    /// Withdraws a pending prompt (the agent no longer needs the answer, e.g. the CLI sent
    /// `control_cancel_request`). Emits `error {code: "permission_cancelled", correlation_id}`
    /// so clients stop showing it. Returns whether the prompt was pending.
    pub fn cancel(&self, correlation_id: &str, reason: &str) -> bool {
        if !self.inner.router.cancel(correlation_id) {
            return false;
        }
        self.send(ToSession::Withdrawn {
            correlation_id: correlation_id.to_owned(),
            reason: reason.to_owned(),
        });
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
            PermissionHandle::detached(Arc::clone(&log), Arc::clone(&router)),
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
