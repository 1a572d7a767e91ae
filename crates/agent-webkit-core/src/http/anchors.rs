//! The HTTP side of fork (`POST /sessions` with `fork`) and rewind (inbound `rewind`): the
//! source session's checks and inherited settings, and the refusal codes
//! (docs/protocol-extensions.md, "Anchors, fork and rewind").

use std::sync::Arc;

use crate::agent::rewind::ForkFrom;
use crate::auth::principal::Principal;
use crate::models::anchors::{ForkRequest, RewindRequest};
use crate::models::CreateSessionRequest;
use crate::session::rewind::RewindRefusal;
use crate::session::Session;

use super::{Api, ApiResponse};

/// A checked fork: what the agent gets and what the create response echoes.
pub(super) struct Fork {
    pub(super) from: ForkFrom,
    pub(super) request: ForkRequest,
}

impl Api {
    /// For a create with `fork`: the source (visible to `principal`, else 404
    /// `session_not_found`), its message (else 400 `unknown_message`), and the source's model,
    /// permission mode and cwd written into `request` where it has none.
    pub(super) async fn fork_source(
        &self,
        request: &mut CreateSessionRequest,
        principal: &Principal,
    ) -> Result<Option<Fork>, ApiResponse> {
        let Some(fork) = request.fork.clone() else {
            return Ok(None);
        };
        if !self.inner.registry.can_fork() {
            return Err(ApiResponse::error(
                501,
                "This agent cannot fork sessions",
                Some("unsupported"),
            ));
        }
        let source = match self.session(&fork.session_id, principal).await {
            Ok(source) => source,
            Err(response) if response.status == 404 => {
                return Err(ApiResponse::error(
                    404,
                    "Source session not found",
                    Some("session_not_found"),
                ))
            }
            Err(response) => return Err(response),
        };
        if let Some(uuid) = &fork.message_uuid {
            if !source.has_anchor(uuid).await {
                tracing::info!(source = %fork.session_id, message_uuid = %uuid, "fork refused: unknown message");
                return Err(ApiResponse::error(
                    400,
                    "message_uuid is not a user message of the source session",
                    Some("unknown_message"),
                ));
            }
        }
        let settings = source.settings();
        if request.model.is_none() {
            request.model = settings.model;
        }
        if request.permission_mode.is_none() {
            request.permission_mode = settings.permission_mode;
        }
        if request.cwd.is_none() {
            request.cwd.clone_from(&source.meta().cwd);
        }
        tracing::info!(source = %fork.session_id, message_uuid = ?fork.message_uuid, "fork");
        Ok(Some(Fork {
            from: ForkFrom {
                agent_session_id: source.meta().agent_session_id.clone(),
                message_uuid: fork.message_uuid.clone(),
            },
            request: fork,
        }))
    }
}

/// Answers an inbound `rewind`: 200 with what was (dry run: would be) restored, or a refusal.
pub(super) async fn rewind(session: &Arc<Session>, request: RewindRequest) -> ApiResponse {
    match session.rewind(request).await {
        Ok(answer) => ApiResponse::json(200, &serde_json::json!(answer)),
        Err(refusal) => {
            tracing::info!(session_id = session.id(), refusal = %refusal, "rewind refused");
            let (status, code) = match &refusal {
                RewindRefusal::TurnRunning => (409, "turn_running"),
                RewindRefusal::UnknownMessage => (400, "unknown_message"),
                RewindRefusal::CheckpointingDisabled => (409, "checkpointing_disabled"),
                RewindRefusal::NotLive => (409, "agent_not_live"),
                RewindRefusal::Closed => return ApiResponse::error(404, "Session not found", None),
                RewindRefusal::Agent(err) => {
                    let status = match err {
                        crate::agent::AgentError::Unsupported(_) => 501,
                        crate::agent::AgentError::Timeout(_) => 504,
                        crate::agent::AgentError::Exited(_)
                        | crate::agent::AgentError::Disconnected => 409,
                        _ => 502,
                    };
                    (status, err.code())
                }
            };
            ApiResponse::error(status, &refusal, Some(code))
        }
    }
}
