//! A session's MCP operations: list, toggle, reconnect (the live agent only) and replace the
//! client's servers (recorded with the session, so a woken agent starts with them).

use serde_json::{Map, Value};

use crate::mcp::status::McpServerStatus;
use crate::mcp::McpError;

use super::{AgentState, Session, SessionError};

impl Session {
    /// The session's MCP servers as its agent reports them.
    pub async fn mcp_status(&self) -> Result<Vec<McpServerStatus>, McpError> {
        let client = self.mcp_client()?;
        Ok(client.mcp_status().await?)
    }

    /// Enables or disables a server the session has (recorded: a new agent — woken, or
    /// after a restart or take-over — turns it off again).
    pub async fn mcp_toggle(&self, server_name: &str, enabled: bool) -> Result<(), McpError> {
        let client = self.mcp_client()?;
        self.mcp_known(&client, server_name).await?;
        client.mcp_toggle(server_name, enabled).await?;
        self.record(|s| {
            s.mcp_disabled.retain(|name| name != server_name);
            if !enabled {
                s.mcp_disabled.push(server_name.to_owned());
            }
        });
        self.note_mcp();
        Ok(())
    }

    /// Turns off again, in a new agent (woken, or the first after a restart or take-over),
    /// the servers the client had turned off (a failure is logged: the server then runs).
    pub(crate) async fn mcp_disable_recorded(&self) {
        let disabled = self.settings().mcp_disabled;
        let Some(client) = self.client().filter(|_| !disabled.is_empty()) else {
            return;
        };
        for name in &disabled {
            if let Err(err) = client.mcp_toggle(name, false).await {
                tracing::warn!(session_id = %self.id, server = %name, error = %err, "turning an MCP server off again failed");
            }
        }
    }

    /// Copies the MCP settings into the activity the event writer persists.
    fn note_mcp(&self) {
        let settings = self.settings();
        let servers = settings
            .mcp_replaced
            .then(|| settings.mcp_servers.unwrap_or_default());
        self.activity.mcp(servers, settings.mcp_disabled);
    }

    /// Reconnects a server the session has.
    pub async fn mcp_reconnect(&self, server_name: &str) -> Result<(), McpError> {
        let client = self.mcp_client()?;
        self.mcp_known(&client, server_name).await?;
        Ok(client.mcp_reconnect(server_name).await?)
    }

    /// Replaces the client's servers with `servers` (already allowed by the policy and
    /// normalised). Live: the agent's account (`Some`); hibernated: recorded for the next
    /// agent (`None`). Servers of the previous set that `servers` drops leave the list of
    /// servers turned off.
    pub async fn mcp_set_servers(
        &self,
        servers: Map<String, Value>,
    ) -> Result<Option<Value>, McpError> {
        self.live().map_err(|_| McpError::Closed)?;
        let answer = match self.client() {
            Some(client) => Some(client.mcp_set_servers(&servers).await?),
            None if self.agent_state() == AgentState::Hibernated => None,
            None => return Err(McpError::Hibernated),
        };
        self.record(|s| {
            // A server the new set drops is gone, not turned off: added again later, it runs.
            if let Some(old) = &s.mcp_servers {
                s.mcp_disabled
                    .retain(|name| !old.contains_key(name) || servers.contains_key(name));
            }
            s.mcp_servers = (!servers.is_empty()).then_some(servers);
            s.mcp_replaced = true;
        });
        self.note_mcp();
        Ok(answer)
    }

    fn mcp_client(&self) -> Result<std::sync::Arc<dyn crate::agent::AgentClient>, McpError> {
        match self.live() {
            Err(SessionError::Closed) | Err(_) => return Err(McpError::Closed),
            Ok(()) => {}
        }
        self.client().ok_or(McpError::Hibernated)
    }

    async fn mcp_known(
        &self,
        client: &std::sync::Arc<dyn crate::agent::AgentClient>,
        server_name: &str,
    ) -> Result<(), McpError> {
        let servers = client.mcp_status().await?;
        if servers.iter().any(|s| s.name == server_name) {
            Ok(())
        } else {
            Err(McpError::UnknownServer(server_name.to_owned()))
        }
    }
}
