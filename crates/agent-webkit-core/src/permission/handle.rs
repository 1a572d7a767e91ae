//! [`PermissionHandle`]: what agents call to ask the client for decisions.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::prompt::{Prompt, ToSession};
use super::{
    PermissionDecision, PermissionError, PermissionRouter, PromptReply, ASK_USER_QUESTION_TOOL,
};
#[cfg(any(test, feature = "testing"))]
use crate::event_log::EventLog;
use crate::models::{AskUserQuestionData, HookDecisionRequestData, PermissionRequestData};

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
    use crate::models::EventKind;
    use crate::permission::PromptKind;
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
