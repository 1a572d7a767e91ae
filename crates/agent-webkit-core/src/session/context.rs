//! Asking a session's live agent for its context-window usage (`GET /sessions/{id}/context`).

use super::lifecycle::AgentState;
use super::{Session, SessionError};
use crate::agent::AgentError;
use crate::context_usage::ContextUsage;

impl Session {
    /// The context-window usage as the agent estimates it now. A hibernated (or waking)
    /// session's agent is not running: [`AgentError::Unsupported`] is not the answer there,
    /// `Disconnected` is (HTTP 409; send a message to wake it).
    pub async fn context_usage(&self) -> Result<ContextUsage, SessionError> {
        if self.cancel.is_cancelled() {
            return Err(SessionError::Closed);
        }
        match self.client() {
            Some(client) => Ok(client.context_usage().await?),
            None if self.agent_state() != AgentState::Live => {
                Err(SessionError::Agent(AgentError::Disconnected))
            }
            None => Err(SessionError::Closed),
        }
    }
}
