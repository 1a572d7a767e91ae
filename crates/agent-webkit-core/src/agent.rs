//! The seam between a session and whatever runs the agent (the Claude CLI bridge, the replay
//! agent, a test fake).
//!
//! A session asks its [`AgentClientFactory`] for one [`AgentConnection`] at create time: an
//! [`AgentClient`] for commands (query, interrupt, controls, disconnect) and an
//! [`AgentMessageStream`] of normalised [`AgentMessage`]s that the session translates into wire
//! events. The agent asks for tool permissions through the [`PermissionHandle`] in its
//! [`AgentContext`].

pub mod rewind;
pub mod slots;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::Stream;
use serde_json::{Map, Value};

use crate::models::UserContent;
use crate::permission::PermissionHandle;
use crate::store::SessionStore;
use slots::AgentSlots;

/// Per-session settings, from `POST /sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionConfig {
    /// Model (the replay agent reads it as the scenario name).
    pub model: Option<String>,
    /// Initial permission mode.
    pub permission_mode: Option<String>,
    /// Working directory, already validated against the allowed roots and canonicalised.
    pub cwd: Option<PathBuf>,
    /// Stream tool-input deltas (`message_delta` with `input_json_delta`) for this session;
    /// `None`: the agent's default (for the Claude bridge, `--claude-tool-input-deltas`).
    pub tool_input_deltas: Option<bool>,
    /// The principal (JWT `sub`) that owns the session; None under a shared token or no auth.
    pub owner: Option<String>,
    /// The session id the caller chose (already checked by [`crate::session_id::validate`]);
    /// `None`: the registry picks a UUID v4.
    pub session_id: Option<String>,
    /// The agent's own session id when it is not the server's (set by the registry for a
    /// caller-chosen id: a fresh UUID v4, since the Claude CLI takes only UUIDs); `None`: the
    /// server's id. See [`AgentContext::agent_session_id`].
    pub agent_session_id: Option<String>,
    /// The client's MCP servers (create option `mcp_servers`, replaced by `mcp_set_servers`),
    /// already allowed by the operator's policy and normalised
    /// ([`crate::mcp::config::to_agent_json`]); `None`: none.
    pub mcp_servers: Option<Map<String, Value>>,
    /// The session's attachment directory (see [`crate::attachments`]), set by the registry
    /// when the agent starts: the agent must be able to read it without asking (the Claude
    /// bridge passes it as `--add-dir`). `None`: attachments are off.
    pub attachments_dir: Option<PathBuf>,
    /// File checkpointing for `rewind` (`None`: the agent's default; for the Claude bridge,
    /// `--file-checkpointing`).
    pub file_checkpointing: Option<bool>,
    /// Start from another session's conversation (create only; ignored when resuming).
    pub fork: Option<rewind::ForkFrom>,
}

/// Everything a factory gets to build the agent of one session.
#[derive(Clone)]
pub struct AgentContext {
    /// The server's session id (UUID v4); agents may reuse it as their own session id.
    pub session_id: String,
    /// The session's settings.
    pub config: SessionConfig,
    /// Where the agent asks for tool permissions and questions.
    pub permissions: PermissionHandle,
    /// The configured transcript store, if any.
    pub store: Option<Arc<dyn SessionStore>>,
    /// Set when the session is being resumed on this host after another host held it (see
    /// [`crate::persist`]): the agent's own session id to continue (for the Claude CLI,
    /// `--resume=<id>` over the transcript materialised from `store`). `None` for new sessions.
    pub resume: Option<String>,
}

impl AgentContext {
    /// The id a new agent session runs under: [`SessionConfig::agent_session_id`], else the
    /// server's [`session_id`](Self::session_id). (A resume continues [`resume`](Self::resume).)
    pub fn agent_session_id(&self) -> &str {
        self.config
            .agent_session_id
            .as_deref()
            .unwrap_or(&self.session_id)
    }
}

impl std::fmt::Debug for AgentContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentContext")
            .field("session_id", &self.session_id)
            .field("config", &self.config)
            .field("store", &self.store.is_some())
            .field("resume", &self.resume)
            .finish()
    }
}

/// The stream of normalised messages an agent produces. It ends when the agent is gone; an
/// end or an `Err` that the session did not ask for (via `disconnect`) is reported to clients
/// as an `error` event followed by `done`.
pub type AgentMessageStream = Pin<Box<dyn Stream<Item = Result<AgentMessage, AgentError>> + Send>>;

/// A freshly started agent: its command side and its message stream.
pub struct AgentConnection {
    /// Commands.
    pub client: Arc<dyn AgentClient>,
    /// Messages, consumed by the session.
    pub messages: AgentMessageStream,
}

impl std::fmt::Debug for AgentConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConnection").finish_non_exhaustive()
    }
}

/// Builds one agent per session.
#[async_trait]
pub trait AgentClientFactory: Send + Sync + 'static {
    /// Starts the agent for a new session. Errors become the create request's status:
    /// [`AgentError::InvalidConfig`] 400, [`AgentError::Unavailable`] 503, anything else 502.
    async fn create(&self, ctx: AgentContext) -> Result<AgentConnection, AgentError>;

    /// Idle agents started ahead of demand (warm spares); they count as live agents.
    fn spare_count(&self) -> usize {
        0
    }

    /// Called once by the registry that uses this factory, with its live-agent slots (`None`:
    /// live agents are unbounded). A factory keeping warm spares holds one slot per spare,
    /// taken before the spare starts and dropped once it has exited or been handed to a
    /// session (see [`slots`]), and starts spares only after this call (or when used without a
    /// registry). Default: ignored.
    fn bind_live_agent_slots(&self, slots: Option<AgentSlots>) {
        let _ = slots;
    }

    /// With bounded live agents, reserves an idle spare that can serve `ctx` for the
    /// [`create`](Self::create) with this `ctx` that the registry calls next, and hands over
    /// the spare's slot, which becomes the session's: a create served by a spare needs no
    /// second slot, so concurrent creates never release a spare another one is about to take.
    /// A reservation not used by that create is discarded with its spare. Default: `None`.
    fn reserve_spare(&self, ctx: &AgentContext) -> Option<slots::AgentSlot> {
        let _ = ctx;
        None
    }

    /// Stops one idle spare, and returns its slot once its process has exited, to free the slot
    /// under pressure; `false` when none was idle.
    async fn release_spare(&self) -> bool {
        false
    }

    /// Whether an agent of this factory, once disconnected, can be started again with
    /// [`AgentContext::resume`] and continue its conversation, given the transcript store the
    /// sessions use. Sessions of a factory that cannot are never hibernated. Default: `false`.
    fn can_resume(&self, store: Option<&Arc<dyn SessionStore>>) -> bool {
        let _ = store;
        false
    }

    /// Whether agents of this factory honour [`SessionConfig::fork`]; the create of a fork is
    /// refused with 501 `unsupported` otherwise. Default: `false`.
    fn can_fork(&self) -> bool {
        false
    }

    /// Whether agents can be started right now, cheaply (no agent is started; `/readyz` asks
    /// at most once a second): `Err(why)` e.g. when the CLI is missing. Default: ready.
    fn check_ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The command side of a running agent. Methods take `&self` and may be called concurrently
/// (the session calls `query`, HTTP handlers call the controls).
#[async_trait]
pub trait AgentClient: Send + Sync + 'static {
    /// Sends one user message, starting a turn. The session sends the next only after this
    /// turn's [`AgentMessage::Result`].
    async fn query(&self, content: UserContent) -> Result<(), AgentError>;
    /// Interrupts the running turn; the agent ends it with a `Result` (subtype `interrupted`).
    async fn interrupt(&self) -> Result<(), AgentError>;
    /// Changes the permission mode.
    async fn set_permission_mode(&self, mode: &str) -> Result<(), AgentError>;
    /// Changes the model (`None` = default).
    async fn set_model(&self, model: Option<&str>) -> Result<(), AgentError>;
    /// Stops a background task.
    async fn stop_task(&self, task_id: &str) -> Result<(), AgentError>;
    /// Shuts the agent down; its message stream ends afterwards. Must be idempotent.
    async fn disconnect(&self) -> Result<(), AgentError>;

    /// The agent's MCP servers and their status. Default: [`AgentError::Unsupported`].
    async fn mcp_status(&self) -> Result<Vec<crate::mcp::status::McpServerStatus>, AgentError> {
        Err(AgentError::Unsupported("MCP servers"))
    }

    /// Enables or disables one MCP server. Default: [`AgentError::Unsupported`].
    async fn mcp_toggle(&self, server_name: &str, enabled: bool) -> Result<(), AgentError> {
        let _ = (server_name, enabled);
        Err(AgentError::Unsupported("MCP servers"))
    }

    /// Reconnects one MCP server. Default: [`AgentError::Unsupported`].
    async fn mcp_reconnect(&self, server_name: &str) -> Result<(), AgentError> {
        let _ = server_name;
        Err(AgentError::Unsupported("MCP servers"))
    }

    /// Replaces the client's MCP servers with `servers` (normalised configs by name; the
    /// operator's servers stay); returns the agent's account of it (for the Claude CLI
    /// `{"added", "removed", "errors"}`). Default: [`AgentError::Unsupported`].
    async fn mcp_set_servers(&self, servers: &Map<String, Value>) -> Result<Value, AgentError> {
        let _ = servers;
        Err(AgentError::Unsupported("MCP servers"))
    }

    /// Whether the agent still works between turns (a background task, a subagent): a busy
    /// agent is not hibernated. Default: `false`.
    fn is_busy(&self) -> bool {
        false
    }

    /// The context-window usage as the agent estimates it now (`GET /sessions/{id}/context`).
    /// Default: [`AgentError::Unsupported`].
    async fn context_usage(&self) -> Result<crate::context_usage::ContextUsage, AgentError> {
        Err(AgentError::Unsupported("context usage"))
    }

    /// Whether the agent uses the session's ids for user messages
    /// ([`query_anchored`](Self::query_anchored)): the session then announces each user message
    /// with a `user_message` event naming its uuid, the anchor `rewind` and `fork` name.
    /// Default: `false` (no `user_message` events).
    fn supports_anchors(&self) -> bool {
        false
    }

    /// Like [`query`](Self::query), with the message's id in the agent's transcript chosen by
    /// the session. Default: `query` (the uuid is not used).
    async fn query_anchored(&self, content: UserContent, uuid: &str) -> Result<(), AgentError> {
        let _ = uuid;
        self.query(content).await
    }

    /// Rewinds files and/or the conversation to just before the user message `uuid` (sent with
    /// [`query_anchored`](Self::query_anchored)). `latest` is the conversation's latest user
    /// message as the session knows it (it may have been sent to an earlier agent of the
    /// session, before a wake-up or restart). Called between turns only. Default:
    /// [`AgentError::Unsupported`].
    async fn rewind(
        &self,
        request: &crate::models::anchors::RewindRequest,
        latest: Option<&str>,
    ) -> Result<rewind::RewindOutcome, rewind::RewindError> {
        let _ = (request, latest);
        Err(AgentError::Unsupported("rewind").into())
    }
}

/// A complete (or, for streaming agents, complete-so-far) assistant message.
#[derive(Debug, Clone, PartialEq)]
pub struct AssistantMessage {
    /// Message id.
    pub id: String,
    /// Every content block so far, each with `type`. `message_complete` replaces a message's
    /// content in clients, so agents that receive blocks one by one must accumulate them.
    pub content: Vec<Value>,
    /// Model.
    pub model: Option<String>,
    /// Stop reason (`None` while streaming).
    pub stop_reason: Option<String>,
}

/// The end of a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnResult {
    /// The agent's session id.
    pub session_id: String,
    /// `success`, `interrupted`, `error_during_execution`, ...
    pub subtype: String,
    /// Every other field, forwarded to the `result` event in order.
    pub extra: Map<String, Value>,
    /// Whether this result ends the turn the session is waiting on (false for results of turns
    /// the agent started on its own). Not sent on the wire.
    pub ends_turn: bool,
}

impl TurnResult {
    /// A result ending the current turn.
    pub fn new(session_id: impl Into<String>, subtype: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            subtype: subtype.into(),
            extra: Map::new(),
            ends_turn: true,
        }
    }
}

/// A normalised message from an agent; the session turns each into wire events.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentMessage {
    /// → `message_complete`, then one `tool_use` per tool_use block not announced before.
    Assistant(AssistantMessage),
    /// → `message_delta`.
    Delta {
        /// The message the delta belongs to.
        message_id: String,
        /// The delta object.
        delta: Value,
    },
    /// User-side content echoed by the agent: each `tool_result` block → `tool_result`.
    User {
        /// Content blocks.
        content: Vec<Value>,
    },
    /// → `result`; ends the turn when `ends_turn`.
    Result(TurnResult),
    /// → `mcp_status_change`.
    McpStatus {
        /// Server name.
        server_name: String,
        /// New status.
        status: String,
    },
    /// → `error` (the session continues).
    Error {
        /// Code.
        code: String,
        /// Message.
        message: String,
    },
    /// → `api_retry` (ours): a failed model call the agent retries.
    ApiRetry(crate::models::ApiRetryData),
}

/// Agent failures. [`code`](AgentError::code) is the `error` event code or HTTP mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The session configuration cannot be served (unknown scenario, bad model...). HTTP 400.
    #[error("{0}")]
    InvalidConfig(String),
    /// The agent cannot be started right now (missing executable, overloaded). HTTP 503.
    #[error("{0}")]
    Unavailable(String),
    /// The agent failed to start. HTTP 502.
    #[error("agent failed to start: {0}")]
    StartFailed(String),
    /// The agent process or task ended.
    #[error("agent exited: {0}")]
    Exited(String),
    /// The agent broke its protocol.
    #[error("agent protocol error: {0}")]
    Protocol(String),
    /// A command was rejected or failed inside the agent. HTTP 502.
    #[error("agent rejected the request: {0}")]
    Rejected(String),
    /// The agent does not support the operation. HTTP 501.
    #[error("operation not supported by this agent: {0}")]
    Unsupported(&'static str),
    /// The agent is already disconnected.
    #[error("agent is disconnected")]
    Disconnected,
    /// A command timed out.
    #[error("agent did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl AgentError {
    /// The machine-readable code used in `error` events and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::InvalidConfig(_) => "invalid_config",
            AgentError::Unavailable(_) => "agent_unavailable",
            AgentError::StartFailed(_) => "agent_start_failed",
            AgentError::Exited(_) | AgentError::Disconnected => "agent_exited",
            AgentError::Protocol(_) => "receive_loop_crashed",
            AgentError::Rejected(_) => "agent_error",
            AgentError::Unsupported(_) => "unsupported",
            AgentError::Timeout(_) => "agent_timeout",
        }
    }
}
