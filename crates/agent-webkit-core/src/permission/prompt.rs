//! What a [`PermissionHandle`](super::PermissionHandle) asks of its session's loop: open a prompt
//! (register it, then append its event) or announce a withdrawal. The loop is the only place
//! prompts enter a session's log.

use tokio::sync::oneshot;

use super::{PermissionError, PermissionRouter, PromptKind, PromptReply};
use crate::event_log::{AppendError, EventLog, LoggedEvent};
use crate::models::{
    AskUserQuestionData, ErrorData, EventKind, HookDecisionRequestData, PermissionRequestData,
};

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
    pub(super) fn correlation_id(&self) -> &str {
        match self {
            Prompt::Permission(d) => &d.correlation_id,
            Prompt::Question(d) => &d.correlation_id,
            Prompt::Hook(d) => &d.correlation_id,
        }
    }

    pub(super) fn kind(&self) -> PromptKind {
        match self {
            Prompt::Permission(_) => PromptKind::Permission,
            Prompt::Question(_) => PromptKind::Question,
            Prompt::Hook(_) => PromptKind::Hook,
        }
    }

    fn append_to(&self, log: &EventLog) -> Result<LoggedEvent, AppendError> {
        match self {
            Prompt::Permission(d) => log.append(EventKind::PermissionRequest, d),
            Prompt::Question(d) => log.append(EventKind::AskUserQuestion, d),
            Prompt::Hook(d) => log.append(EventKind::HookDecisionRequest, d),
        }
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
    match prompt.append_to(log) {
        Ok(event) => router.announced(correlation_id, event.to_stored()),
        Err(err) => {
            router.cancel(correlation_id);
            tracing::warn!(correlation_id, error = %err, "could not emit prompt");
            return Err(PermissionError::SessionClosed);
        }
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
