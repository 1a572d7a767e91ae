//! MCP servers at runtime: what a client may name (config parsing, the operator's
//! [`policy::McpPolicy`]), what it sees ([`status::McpServerStatus`], never a secret), and
//! why an MCP operation on a session failed ([`McpError`]).
//!
//! Two sets of servers live in a session's agent: the operator's (the Claude bridge's
//! `--claude-mcp-config`, started with every agent) and the client's (create option
//! `mcp_servers`, replaced as a whole by the inbound `mcp_set_servers`; recorded with the
//! session so a woken or taken-over agent starts with them again). Clients may toggle and
//! reconnect any server of either set; they may add only what the policy allows.

pub mod config;
pub mod policy;
pub mod status;

use crate::agent::AgentError;

/// Why an MCP operation on a session did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// The session has no server of that name (HTTP 404 `unknown_mcp_server`).
    #[error("no MCP server named {0:?} in this session")]
    UnknownServer(String),
    /// The session's agent is hibernated: its servers run again at the next user message
    /// (HTTP 409 `session_hibernated`).
    #[error(
        "the session's agent is hibernated; its MCP servers start with it at the next user message"
    )]
    Hibernated,
    /// The session is gone.
    #[error("Session not found")]
    Closed,
    /// The agent refused or failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
}
