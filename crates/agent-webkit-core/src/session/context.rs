//! Asking a session's agent for its context-window usage (`GET /sessions/{id}/context`); a
//! hibernated agent is woken for it (through the session loop, like a user message would).

use super::{Session, SessionError};
use crate::agent::AgentError;
use crate::context_usage::ContextUsage;

impl Session {
    /// The context-window usage as the agent estimates it now; a hibernated agent is woken
    /// first (if that fails: [`AgentError::StartFailed`]).
    pub async fn context_usage(&self) -> Result<ContextUsage, SessionError> {
        if self.cancel.is_cancelled() {
            return Err(SessionError::Closed);
        }
        // A client's request: the agent is not quiet (no hibernation right after waking).
        self.touch();
        if self.client().is_none() && !self.wake_for_request().await {
            if self.cancel.is_cancelled() {
                return Err(SessionError::Closed);
            }
            return Err(SessionError::Agent(AgentError::StartFailed(
                "the session's agent could not be woken".into(),
            )));
        }
        self.touch();
        match self.client() {
            Some(client) => Ok(client.context_usage().await?),
            // Hibernated again meanwhile (the loop decides): ask the caller to retry.
            None => Err(SessionError::Agent(AgentError::Disconnected)),
        }
    }
}
