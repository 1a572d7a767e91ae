//! The MCP endpoints: `GET /sessions/{id}/mcp`, the inbound `mcp_toggle` / `mcp_reconnect` /
//! `mcp_set_servers`, and the create option `mcp_servers` checked against the operator's
//! [`McpPolicy`](crate::mcp::policy::McpPolicy).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{Api, ApiResponse};
use crate::agent::AgentError;
use crate::audit::{AuditAction, AuditEvent};
use crate::auth::principal::Principal;
use crate::mcp::config::{parse_servers, to_agent_json, McpConfigError};
use crate::mcp::policy::McpForbidden;
use crate::mcp::status::McpStatusResponse;
use crate::mcp::McpError;
use crate::models::InboundMessage;
use crate::session::Session;

impl Api {
    /// `GET /sessions/{id}/mcp`.
    pub(super) async fn mcp_list(&self, id: &str, principal: &Principal) -> ApiResponse {
        let session = match self.session(id, principal).await {
            Ok(session) => session,
            Err(response) => return response,
        };
        match session.mcp_status().await {
            Ok(servers) => ApiResponse::json(200, &json!(McpStatusResponse { servers })),
            Err(err) => mcp_error(id, err),
        }
    }

    /// A client's server set, parsed, checked against the policy and normalised for the
    /// agent (an empty set is no set).
    pub(super) fn mcp_servers(
        &self,
        raw: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ApiResponse> {
        let servers = parse_servers(&Value::Object(raw.clone()))
            .map_err(|err| ApiResponse::error(400, &err, Some(McpConfigError::CODE)))?;
        if let Err(err) = self.inner.policy.mcp.check_all(&servers) {
            tracing::info!(server = %err.server, reason = %err.reason, "MCP server refused by policy");
            return Err(ApiResponse::error(403, &err, Some(McpForbidden::CODE)));
        }
        Ok(to_agent_json(&servers))
    }

    /// The create option `mcp_servers`.
    pub(super) fn mcp_create_servers(
        &self,
        raw: Option<&Map<String, Value>>,
    ) -> Result<Option<Map<String, Value>>, ApiResponse> {
        match raw {
            None => Ok(None),
            Some(raw) => Ok(Some(self.mcp_servers(raw)?).filter(|s| !s.is_empty())),
        }
    }

    /// An inbound MCP message (see [`InboundMessage::is_mcp`]).
    pub(super) async fn mcp_input(
        &self,
        id: &str,
        session: &Arc<Session>,
        message: InboundMessage,
        principal: &Principal,
    ) -> ApiResponse {
        let (detail, outcome) = match message {
            InboundMessage::McpToggle {
                server_name,
                enabled,
            } => (
                json!({"type": "mcp_toggle", "server_name": server_name, "enabled": enabled}),
                session
                    .mcp_toggle(&server_name, enabled)
                    .await
                    .map(|()| None),
            ),
            InboundMessage::McpReconnect { server_name } => (
                json!({"type": "mcp_reconnect", "server_name": server_name}),
                session.mcp_reconnect(&server_name).await.map(|()| None),
            ),
            InboundMessage::McpSetServers { servers } => {
                let servers = match self.mcp_servers(&servers) {
                    Ok(servers) => servers,
                    Err(response) => return response,
                };
                let names: Vec<&String> = servers.keys().collect();
                let detail = json!({"type": "mcp_set_servers", "servers": names});
                (detail, session.mcp_set_servers(servers).await)
            }
            _ => {
                return ApiResponse::error(400, "not an MCP message", None);
            }
        };
        match outcome {
            Ok(answer) => {
                let mut event = AuditEvent::new(self.actor(principal), id, AuditAction::Mcp);
                event.detail = Some(detail);
                self.audit(event);
                match answer {
                    Some(answer) => ApiResponse::json(200, &answer),
                    None => ApiResponse::no_content(),
                }
            }
            Err(err) => mcp_error(id, err),
        }
    }
}

/// The take-over check of a stored session's client servers against this host's policy.
pub(super) fn check_stored(
    policy: &crate::policy::ClientPolicy,
    servers: Option<&Map<String, Value>>,
) -> Result<(), String> {
    let Some(servers) = servers else {
        return Ok(());
    };
    let servers = parse_servers(&Value::Object(servers.clone())).map_err(|e| e.to_string())?;
    policy.mcp.check_all(&servers).map_err(|e| e.to_string())
}

fn mcp_error(id: &str, err: McpError) -> ApiResponse {
    match err {
        McpError::UnknownServer(_) => ApiResponse::error(404, &err, Some("unknown_mcp_server")),
        McpError::Hibernated => ApiResponse::error(409, &err, Some("session_hibernated")),
        McpError::Closed => ApiResponse::error(404, "Session not found", None),
        McpError::Agent(err) => {
            tracing::warn!(session_id = id, error = %err, "MCP command failed");
            let status = match err {
                AgentError::InvalidConfig(_) => 400,
                AgentError::Unsupported(_) => 501,
                AgentError::Timeout(_) => 504,
                AgentError::Exited(_) | AgentError::Disconnected => 409,
                _ => 502,
            };
            ApiResponse::error(status, &err, Some(err.code()))
        }
    }
}
