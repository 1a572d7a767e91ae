//! MCP servers at runtime over the CLI's control requests (CLI 2.1.330, verified against the
//! real CLI): `mcp_status` → `{"mcpServers":[{name, status, error?, config?, scope?,
//! tools?:[{name}]}]}`; `mcp_toggle {serverName, enabled}` and `mcp_reconnect {serverName}` →
//! success, or the error `Server not found: <name>`; `mcp_set_servers {servers}` → `{added,
//! removed, errors}`. `mcp_set_servers` replaces only the servers set through it: the
//! operator's (`--mcp-config`) stay. The CLI sends no frame when a status changes (only the
//! next turn's `system/init` lists them), so after each of these requests the bridge asks for
//! `mcp_status` and reports what changed as `McpStatus` messages (`removed` for a server that
//! is gone), diffed against the same record the `system/init` translation uses, so no change
//! is reported twice.

use std::collections::HashMap;
use std::sync::Arc;

use agent_webkit_core::agent::{AgentError, AgentMessage, SessionConfig};
use agent_webkit_core::mcp::status::McpServerStatus;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::control::Shared;
use crate::reader::MessageSender;
use crate::translate::Translator;

/// The status last reported per server (shared with the [`Translator`]).
pub(crate) type McpStatuses = Arc<Mutex<HashMap<String, String>>>;

/// The status a server gets in an `mcp_status_change` once it is no longer in the session.
pub const REMOVED: &str = "removed";

/// What a session's bridge reports about its MCP servers, and where.
#[derive(Default)]
pub(crate) struct McpReport {
    statuses: McpStatuses,
    /// The session's message stream (weak: the stream ends when the reader's sender goes).
    events: Mutex<Option<mpsc::WeakSender<Result<AgentMessage, AgentError>>>>,
}

impl McpReport {
    /// Shares the status record with `translator` and reports into `tx`'s stream.
    pub(crate) fn wire(&self, translator: &mut Translator, tx: &MessageSender) {
        translator.share_mcp_statuses(Arc::clone(&self.statuses));
        *self.events.lock() = Some(tx.downgrade());
    }

    /// Reports each server whose status changed since the last report, and each server gone.
    async fn report(&self, servers: &[McpServerStatus]) {
        let changes: Vec<AgentMessage> = {
            let mut known = self.statuses.lock();
            let mut changes = Vec::new();
            for server in servers {
                if known.get(&server.name) != Some(&server.status) {
                    known.insert(server.name.clone(), server.status.clone());
                    changes.push(AgentMessage::McpStatus {
                        server_name: server.name.clone(),
                        status: server.status.clone(),
                    });
                }
            }
            let gone: Vec<String> = known
                .keys()
                .filter(|name| !servers.iter().any(|s| &s.name == *name))
                .cloned()
                .collect();
            for name in gone {
                known.remove(&name);
                changes.push(AgentMessage::McpStatus {
                    server_name: name,
                    status: REMOVED.to_owned(),
                });
            }
            changes
        };
        let Some(tx) = self
            .events
            .lock()
            .as_ref()
            .and_then(mpsc::WeakSender::upgrade)
        else {
            return;
        };
        for change in changes {
            if tx.send(Ok(change)).await.is_err() {
                return;
            }
        }
    }
}

/// One server of an `mcp_status` answer, without its config; errors redacted.
fn parse_status(shared: &Shared, server: &Value) -> Option<McpServerStatus> {
    let text = |key: &str| server.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(McpServerStatus {
        name: text("name")?,
        status: text("status")?,
        error: text("error").map(|e| shared.process.redact(&e)),
        tools: server.get("tools").and_then(Value::as_array).map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        }),
        scope: text("scope"),
    })
}

impl Shared {
    async fn mcp_request(&self, request: Value) -> Result<Value, AgentError> {
        self.request(request, self.control_timeout)
            .await
            .map_err(|e| e.into_agent_error(&[]))
    }

    /// `mcp_status`, parsed.
    pub(crate) async fn mcp_status(&self) -> Result<Vec<McpServerStatus>, AgentError> {
        let answer = self.mcp_request(json!({"subtype": "mcp_status"})).await?;
        let servers = answer
            .get("mcpServers")
            .and_then(Value::as_array)
            .ok_or_else(|| AgentError::Protocol("mcp_status answer without mcpServers".into()))?;
        Ok(servers
            .iter()
            .filter_map(|s| parse_status(self, s))
            .collect())
    }

    /// Asks for the statuses and reports the changes (a failure is only logged: the change
    /// itself was made).
    pub(crate) async fn mcp_report(&self) {
        match self.mcp_status().await {
            Ok(servers) => self.mcp.report(&servers).await,
            Err(err) => {
                tracing::warn!(session_id = %self.session_id, error = %err, "mcp_status after an MCP change failed");
            }
        }
    }

    /// `mcp_toggle`, then a report.
    pub(crate) async fn mcp_toggle(&self, name: &str, enabled: bool) -> Result<(), AgentError> {
        self.mcp_request(json!({"subtype": "mcp_toggle", "serverName": name, "enabled": enabled}))
            .await?;
        self.mcp_report().await;
        Ok(())
    }

    /// `mcp_reconnect`, then a report.
    pub(crate) async fn mcp_reconnect(&self, name: &str) -> Result<(), AgentError> {
        self.mcp_request(json!({"subtype": "mcp_reconnect", "serverName": name}))
            .await?;
        self.mcp_report().await;
        Ok(())
    }

    /// `mcp_set_servers`, then a report; the CLI's answer with its errors redacted.
    pub(crate) async fn mcp_set_servers(
        &self,
        servers: &Map<String, Value>,
    ) -> Result<Value, AgentError> {
        let answer = self
            .mcp_request(json!({"subtype": "mcp_set_servers", "servers": servers}))
            .await?;
        self.mcp_report().await;
        let list = |key: &str| answer.get(key).cloned().unwrap_or_else(|| json!([]));
        let errors: Map<String, Value> = answer
            .get("errors")
            .and_then(Value::as_object)
            .map(|errors| {
                errors
                    .iter()
                    .map(|(name, e)| {
                        let text = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
                        (name.clone(), Value::String(self.process.redact(&text)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(json!({"added": list("added"), "removed": list("removed"), "errors": errors}))
    }
}

/// Starts the session's own servers (create option, or the set recorded before hibernation)
/// on a freshly started or adopted CLI, and reports every server's status.
pub(crate) async fn start_session_servers(
    shared: &Shared,
    config: &SessionConfig,
) -> Result<(), AgentError> {
    let Some(servers) = config.mcp_servers.as_ref().filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let answer = shared.mcp_set_servers(servers).await?;
    tracing::info!(session_id = %shared.session_id, added = %answer["added"], errors = %answer["errors"], "session MCP servers started");
    Ok(())
}
