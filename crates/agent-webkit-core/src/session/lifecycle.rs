//! A session's agent lifecycle: live ↔ hibernated.
//!
//! A session outlives its agent. When the session's agent has been quiet long enough (the
//! registry's reaper decides who) or another session needs its slot (capacity), the loop
//! *hibernates* it: only when no turn is running, no user message is queued, no prompt is
//! pending and the agent reports no background work, it disconnects the agent gracefully and
//! drops its message stream and its capacity permit. The session itself — id, event log and
//! seqs, subscribers, runtime settings — stays; nothing is appended to the log.
//!
//! The next user message (or a request that needs a live agent, such as the context usage)
//! *wakes* it: the loop asks its [`Revive`] (built by the registry) for
//! a new agent resumed from the transcript store ([`AgentContext::resume`]), started with the
//! model and permission mode changed at runtime, then sends the message. While hibernated,
//! `set_model` / `set_permission_mode` are only recorded and `interrupt` is a no-op.
//!
//! [`AgentContext::resume`]: crate::agent::AgentContext::resume

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::agent::{AgentClient, AgentConnection, AgentError, AgentMessageStream};
use crate::models::{ErrorData, EventKind, UserContent};
use crate::permission::{PermissionRouter, ToSession};

use super::Session;

/// Where a session's agent is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// The agent is running.
    Live,
    /// The agent was stopped; the next user message starts it again.
    Hibernated,
    /// A new agent is being started for a user message.
    Waking,
}

/// Model and permission mode as the client last set them (applied again at wake-up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RuntimeSettings {
    /// Model (`None`: the default).
    pub(crate) model: Option<String>,
    /// Permission mode (`None`: the agent's default).
    pub(crate) permission_mode: Option<String>,
    /// The client's MCP servers (`mcp_set_servers`), normalised.
    pub(crate) mcp_servers: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether `mcp_servers` was replaced at runtime (then it is persisted with the activity,
    /// so a restart or take-over starts with it instead of the create-time set).
    pub(crate) mcp_replaced: bool,
    /// MCP servers turned off (`mcp_toggle`): turned off again in every new agent.
    pub(crate) mcp_disabled: Vec<String>,
}

/// A new agent for a hibernated session.
pub(crate) struct Woken {
    /// The agent.
    pub(crate) connection: AgentConnection,
    /// What its permission handle asks of the loop.
    pub(crate) prompts: mpsc::UnboundedReceiver<ToSession>,
    /// Its slot among the live agents (`None`: unbounded).
    pub(crate) permit: Option<crate::agent::slots::AgentSlot>,
}

/// Why a hibernated session could not be woken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WakeError {
    /// Every agent slot stayed taken for this long.
    #[error("no agent slot became free within {0:?}")]
    AtCapacity(Duration),
    /// The agent could not be started.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl WakeError {
    fn code(&self) -> &'static str {
        match self {
            WakeError::AtCapacity(_) => "at_capacity",
            WakeError::Agent(err) => err.code(),
        }
    }
}

/// Starts a resumed agent for a hibernated session (implemented by the registry).
#[async_trait]
pub(crate) trait Revive: Send + Sync + 'static {
    /// A new agent resumed from the store, started with `settings`, asking for permissions
    /// through `router`.
    async fn revive(
        &self,
        router: Arc<PermissionRouter>,
        settings: RuntimeSettings,
    ) -> Result<Woken, WakeError>;
}

/// The agent half of a session: the client while live, and its capacity permit.
pub(crate) struct AgentSlot {
    pub(crate) state: AgentState,
    pub(crate) client: Option<Arc<dyn AgentClient>>,
    pub(crate) permit: Option<crate::agent::slots::AgentSlot>,
}

/// A request to the loop about its agent: hibernate it now, or wake it for a request that
/// needs a live agent (`GET /sessions/{id}/context`), each answered with whether it was done;
/// or interrupt its turn, in order with the messages queued before (`interrupt`).
pub(crate) enum LoopRequest {
    Hibernate(tokio::sync::oneshot::Sender<bool>),
    Wake(tokio::sync::oneshot::Sender<bool>),
    Interrupt(super::interrupt::InterruptReply),
}

impl Session {
    /// Where the session's agent is in its lifecycle.
    pub fn agent_state(&self) -> AgentState {
        self.agent.lock().state
    }

    /// Whether this session's agent may be hibernated at all (its agent can be resumed).
    pub(crate) fn can_hibernate(&self) -> bool {
        self.revive.is_some()
    }

    /// The live agent's client (`None` while hibernated or waking).
    pub(super) fn client(&self) -> Option<Arc<dyn AgentClient>> {
        self.agent.lock().client.clone()
    }

    /// Asks the loop to hibernate the agent now; `true` if it did (it refuses while a turn
    /// runs, a message is queued, a prompt is pending or the agent is busy).
    pub(crate) async fn hibernate(&self) -> bool {
        if !self.can_hibernate()
            || self.cancel.is_cancelled()
            || self.agent_state() != AgentState::Live
        {
            return false;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.control.try_send(LoopRequest::Hibernate(tx)).is_err() {
            return false;
        }
        // A loop busy elsewhere (its own wake-up, waiting for a slot) answers late: never wait
        // on it for longer than a disconnect may take, or two waking sessions could wait on
        // each other.
        let patience = self.disconnect_timeout + Duration::from_secs(1);
        matches!(tokio::time::timeout(patience, rx).await, Ok(Ok(true)))
    }

    /// Wakes a hibernated agent for a request that needs it live (not a user message: a
    /// failure appends nothing); `true` once the agent is live.
    pub(crate) async fn wake_for_request(&self) -> bool {
        if self.agent_state() == AgentState::Live {
            return true;
        }
        if !self.can_hibernate() || self.cancel.is_cancelled() {
            return false;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.control.send(LoopRequest::Wake(tx)).await.is_err() {
            return false;
        }
        matches!(rx.await, Ok(true))
    }

    /// Records a runtime setting; applied to the next agent at wake-up.
    pub(super) fn record(&self, change: impl FnOnce(&mut RuntimeSettings)) {
        change(&mut self.runtime.lock());
    }

    /// The loop's half of [`hibernate`](Self::hibernate): `idle` says that no turn runs and no
    /// message is queued. Disconnects the agent and drops its stream (`messages` = `None`).
    pub(super) async fn hibernate_now(
        &self,
        idle: bool,
        messages: &mut Option<AgentMessageStream>,
    ) -> bool {
        if !idle || messages.is_none() || !self.router.pending_ids().is_empty() {
            return false;
        }
        let client = {
            let mut slot = self.agent.lock();
            match &slot.client {
                Some(client) if slot.state == AgentState::Live && !client.is_busy() => {}
                _ => return false,
            }
            slot.state = AgentState::Hibernated;
            slot.client.take()
        };
        if let Some(client) = client {
            match tokio::time::timeout(self.disconnect_timeout, client.disconnect()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(session_id = %self.id, error = %err, "agent disconnect failed while hibernating")
                }
                Err(_) => {
                    tracing::warn!(session_id = %self.id, "agent disconnect timed out while hibernating")
                }
            }
        }
        *messages = None;
        // The slot is free only once the agent is gone.
        drop(self.agent.lock().permit.take());
        tracing::info!(session_id = %self.id, last_seq = self.log.last_seq(), "session hibernated");
        true
    }

    /// Starts a new agent for a hibernated session: on success the loop reads `prompts` and the
    /// returned stream. On failure the session stays hibernated and the message that needed
    /// the agent is reported as not sent (an `error` event).
    pub(super) async fn wake(
        &self,
        prompts: &mut mpsc::UnboundedReceiver<ToSession>,
        content: &UserContent,
    ) -> Option<AgentMessageStream> {
        match self.revive_agent(prompts).await? {
            Ok(stream) => Some(stream),
            Err(err) => {
                let text = match content {
                    UserContent::Text(text) => format!("{:?}", preview(text)),
                    UserContent::Blocks(blocks) => format!("{} content block(s)", blocks.len()),
                };
                self.append(
                    EventKind::Error,
                    &ErrorData::new(
                        err.code(),
                        format!("The user message ({text}) was not sent: {err}. Send it again."),
                    ),
                );
                None
            }
        }
    }

    /// Starts a new agent for a hibernated session (`None`: it cannot hibernate); on failure
    /// the session stays hibernated.
    pub(super) async fn revive_agent(
        &self,
        prompts: &mut mpsc::UnboundedReceiver<ToSession>,
    ) -> Option<Result<AgentMessageStream, WakeError>> {
        let revive = self.revive.as_ref()?;
        self.agent.lock().state = AgentState::Waking;
        let started = std::time::Instant::now();
        let settings = self.runtime.lock().clone();
        match revive
            .revive(Arc::clone(&self.router), settings.clone())
            .await
        {
            Ok(woken) => {
                let client = woken.connection.client;
                self.activity.new_agent_process();
                {
                    let mut slot = self.agent.lock();
                    slot.client = Some(Arc::clone(&client));
                    slot.permit = woken.permit;
                    slot.state = AgentState::Live;
                }
                *prompts = woken.prompts;
                // Settings changed while the agent was starting.
                let now = self.runtime.lock().clone();
                if now.model != settings.model {
                    if let Err(err) = client.set_model(now.model.as_deref()).await {
                        tracing::warn!(session_id = %self.id, error = %err, "re-applying the model failed");
                    }
                }
                if let (Some(mode), true) = (
                    &now.permission_mode,
                    now.permission_mode != settings.permission_mode,
                ) {
                    if let Err(err) = client.set_permission_mode(mode).await {
                        tracing::warn!(session_id = %self.id, error = %err, "re-applying the permission mode failed");
                    }
                }
                self.mcp_disable_recorded().await;
                tracing::info!(session_id = %self.id, elapsed = ?started.elapsed(), "session woken");
                Some(Ok(woken.connection.messages))
            }
            Err(err) => {
                self.agent.lock().state = AgentState::Hibernated;
                tracing::warn!(session_id = %self.id, error = %err, "waking the session failed");
                Some(Err(err))
            }
        }
    }
}

/// The first characters of a message, for error texts.
fn preview(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
