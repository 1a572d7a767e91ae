//! `GET /sessions/{id}/context`: the context-window usage the session's agent estimates now
//! ([`ContextResponse`]). A hibernated session is not woken for it (409 `session_hibernated`).

use serde_json::json;

use super::{Api, ApiResponse};
use crate::agent::AgentError;
use crate::auth::principal::Principal;
use crate::context_usage::ContextResponse;
use crate::session::{AgentState, SessionError};

impl Api {
    /// Answers `GET /sessions/{id}/context`: 200 [`ContextResponse`]; 404 unknown (or another
    /// principal's); 409 `session_ended`; 501 `unsupported` when the agent cannot tell.
    pub(super) async fn context(&self, id: &str, principal: &Principal) -> ApiResponse {
        let session = match self.session(id, principal).await {
            Ok(session) => session,
            Err(response) => return response,
        };
        if session.has_ended() {
            return ApiResponse::error(409, "The session has ended", Some("session_ended"));
        }
        if session.agent_state() != AgentState::Live {
            return ApiResponse::error(
                409,
                "The session's agent is hibernated; send a message to wake it",
                Some("session_hibernated"),
            );
        }
        match session.context_usage().await {
            Ok(usage) => ApiResponse::json(
                200,
                &json!(ContextResponse {
                    session_id: session.id().to_owned(),
                    usage,
                    estimated: true,
                }),
            ),
            Err(SessionError::Agent(err)) => {
                let status = match err {
                    AgentError::Unsupported(_) => 501,
                    AgentError::Timeout(_) => 504,
                    AgentError::Exited(_) | AgentError::Disconnected => 409,
                    _ => 502,
                };
                if status != 501 {
                    tracing::warn!(session_id = id, error = %err, "context usage failed");
                }
                ApiResponse::error(status, &err, Some(err.code()))
            }
            Err(SessionError::Closed) => ApiResponse::error(404, "Session not found", None),
            Err(err) => ApiResponse::error(409, err, Some("conflict")),
        }
    }
}
