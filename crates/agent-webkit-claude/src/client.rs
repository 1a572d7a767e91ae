//! [`ClaudeClient`]: the command side of one session's CLI (user messages, interrupt,
//! `set_*`, disconnect).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_core::agent::{AgentClient, AgentError};
use agent_webkit_core::models::UserContent;
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::control::Shared;
use crate::factory::check_mode;

/// The command side of one session's CLI.
pub struct ClaudeClient {
    pub(crate) shared: Arc<Shared>,
    pub(crate) reader: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    pub(crate) disconnected: OnceCell<()>,
    pub(crate) graceful_exit: Duration,
    pub(crate) terminate: Duration,
    pub(crate) server_info: Value,
    /// Whether this CLI runs with file checkpointing (`rewind` files).
    pub(crate) checkpointing: bool,
    /// The user messages sent to this CLI process, in order (their file checkpoints are its
    /// own).
    pub(crate) sent: parking_lot::Mutex<Vec<String>>,
}

impl std::fmt::Debug for ClaudeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeClient")
            .field("session_id", &self.shared.session_id)
            .field("pid", &self.shared.process.pid())
            .finish_non_exhaustive()
    }
}

impl ClaudeClient {
    /// The CLI's `initialize` response (commands, models, account, version, pid...).
    pub fn server_info(&self) -> &Value {
        &self.server_info
    }

    /// The CLI's process id.
    pub fn pid(&self) -> Option<u32> {
        self.shared.process.pid()
    }

    fn live(&self) -> Result<(), AgentError> {
        if self.shared.closing.load(Ordering::Acquire) {
            Err(AgentError::Disconnected)
        } else {
            Ok(())
        }
    }

    /// Whether user message `uuid` was sent to this CLI process.
    pub(crate) fn sent_here(&self, uuid: &str) -> bool {
        self.sent.lock().iter().any(|u| u == uuid)
    }

    /// The last user message sent to this CLI process.
    pub(crate) fn last_sent(&self) -> Option<String> {
        self.sent.lock().last().cloned()
    }

    pub(crate) async fn control(
        &self,
        request: Value,
        invalid_codes: &[&str],
    ) -> Result<Value, AgentError> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(AgentError::Disconnected);
        }
        self.shared
            .request(request, self.shared.control_timeout)
            .await
            .map_err(|e| e.into_agent_error(invalid_codes))
    }
}

impl Drop for ClaudeClient {
    fn drop(&mut self) {
        if self.disconnected.get().is_none() {
            self.shared.abandon();
        }
    }
}

#[async_trait]
impl AgentClient for ClaudeClient {
    fn is_busy(&self) -> bool {
        self.shared.background.lock().is_busy()
    }

    fn supports_anchors(&self) -> bool {
        true
    }

    async fn query(&self, content: UserContent) -> Result<(), AgentError> {
        self.query_anchored(content, &uuid::Uuid::new_v4().to_string())
            .await
    }

    /// The CLI files the user message under the frame's `uuid` (its transcript entry's id).
    async fn query_anchored(&self, content: UserContent, uuid: &str) -> Result<(), AgentError> {
        let uuid = uuid.to_owned();
        let content = match content {
            UserContent::Text(text) => Value::String(text),
            UserContent::Blocks(blocks) => Value::Array(blocks),
        };
        let frame = json!({
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": null,
            "session_id": "default",
            "uuid": uuid,
        });
        self.shared.awaiting.lock().push_back(uuid.clone());
        if let Err(err) = self.shared.write(&frame).await {
            self.shared.awaiting.lock().retain(|u| *u != uuid);
            return Err(err);
        }
        tracing::debug!(session_id = %self.shared.session_id, message_uuid = %uuid, "user message sent");
        self.sent.lock().push(uuid);
        Ok(())
    }

    async fn rewind(
        &self,
        request: &agent_webkit_core::models::anchors::RewindRequest,
        latest: Option<&str>,
    ) -> Result<
        agent_webkit_core::agent::rewind::RewindOutcome,
        agent_webkit_core::agent::rewind::RewindError,
    > {
        crate::rewind::rewind(self, request, latest).await
    }

    async fn interrupt(&self) -> Result<(), AgentError> {
        self.control(json!({"subtype": "interrupt"}), &[]).await?;
        Ok(())
    }

    async fn set_permission_mode(&self, mode: &str) -> Result<(), AgentError> {
        check_mode(mode)?;
        self.control(
            json!({"subtype": "set_permission_mode", "mode": mode}),
            &["not_found", "invalid_request", "invalid_mode"],
        )
        .await?;
        Ok(())
    }

    async fn set_model(&self, model: Option<&str>) -> Result<(), AgentError> {
        self.control(
            json!({"subtype": "set_model", "model": model}),
            &["not_found", "invalid_request", "model_not_found"],
        )
        .await?;
        Ok(())
    }

    async fn context_usage(
        &self,
    ) -> Result<agent_webkit_core::context_usage::ContextUsage, AgentError> {
        let answer = self
            .control(json!({"subtype": "get_context_usage"}), &[])
            .await?;
        Ok(crate::context::normalise(&answer))
    }

    async fn stop_task(&self, task_id: &str) -> Result<(), AgentError> {
        self.control(json!({"subtype": "stop_task", "task_id": task_id}), &[])
            .await?;
        Ok(())
    }

    async fn mcp_status(
        &self,
    ) -> Result<Vec<agent_webkit_core::mcp::status::McpServerStatus>, AgentError> {
        self.live()?;
        self.shared.mcp_status().await
    }

    async fn mcp_toggle(&self, server_name: &str, enabled: bool) -> Result<(), AgentError> {
        self.live()?;
        self.shared.mcp_toggle(server_name, enabled).await
    }

    async fn mcp_reconnect(&self, server_name: &str) -> Result<(), AgentError> {
        self.live()?;
        self.shared.mcp_reconnect(server_name).await
    }

    async fn mcp_set_servers(
        &self,
        servers: &serde_json::Map<String, Value>,
    ) -> Result<Value, AgentError> {
        self.live()?;
        self.shared.mcp_set_servers(servers).await
    }

    async fn disconnect(&self) -> Result<(), AgentError> {
        self.disconnected
            .get_or_init(|| async {
                let shared = &self.shared;
                shared.closing.store(true, Ordering::Release);
                let started = Instant::now();
                // A running turn would keep the CLI busy after stdin closes: interrupt it first.
                if !shared.awaiting.lock().is_empty() {
                    let interrupt = shared.request(json!({"subtype": "interrupt"}), Duration::from_secs(2));
                    if let Err(err) = interrupt.await {
                        tracing::debug!(session_id = %shared.session_id, error = ?err, "interrupt before close failed");
                    }
                }
                // Close stdin: the CLI finishes writing (transcript tail entries) and exits.
                shared.process.close_stdin().await;
                let mut reader = self.reader.lock().await;
                if let Some(handle) = reader.as_mut() {
                    // The reader drains stdout to EOF and flushes the mirror one last time.
                    if tokio::time::timeout(self.graceful_exit, &mut *handle)
                        .await
                        .is_ok()
                    {
                        *reader = None;
                    }
                }
                let left = self.graceful_exit.saturating_sub(started.elapsed());
                let status = shared.process.terminate(left, self.terminate).await;
                if let Some(handle) = reader.take() {
                    // Output ends with the process; give the final flush a moment, then stop.
                    let abort = handle.abort_handle();
                    if tokio::time::timeout(Duration::from_secs(2), handle).await.is_err() {
                        abort.abort();
                        tracing::warn!(session_id = %shared.session_id, "stdout reader did not finish; stopped");
                    }
                }
                tracing::info!(
                    session_id = %shared.session_id,
                    status = ?status,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Claude CLI disconnected"
                );
            })
            .await;
        Ok(())
    }
}
