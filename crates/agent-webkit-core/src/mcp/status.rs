//! What `GET /sessions/{id}/mcp` shows of a session's MCP servers: name, status, error, tool
//! names, scope. Never a config: env values, headers, URLs and arguments stay on the server.

use serde::{Deserialize, Serialize};

/// One server as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpServerStatus {
    /// The server's name.
    pub name: String,
    /// `connected`, `pending`, `failed`, `needs-auth`, `disabled`, ...
    pub status: String,
    /// Why it failed (redacted of the server's secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The names of its tools (as the server lists them; the model sees
    /// `mcp__<server>__<tool>`), when connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Where its config came from, as the agent says (`dynamic`, `user`, `project`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Body of `GET /sessions/{id}/mcp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpStatusResponse {
    /// Every server of the session, operator's and client's.
    pub servers: Vec<McpServerStatus>,
}
