//! A scripted agent for the engine's own tests: the test drives it message by message.
//!
//! [`ScriptedFactory`] hands every agent it starts to the test as a [`Scripted`]: the test pushes
//! the agent's messages ([`Scripted::send`]), ends its stream ([`Scripted::exit`]), sees the user
//! messages the session queried it with ([`Scripted::next_query`]) and asks for permissions
//! through the agent's own [`PermissionHandle`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::agent::slots::{AgentSlot, AgentSlots};
use crate::agent::{
    AgentClient, AgentClientFactory, AgentConnection, AgentContext, AgentError, AgentMessage,
    AssistantMessage, SessionConfig, TurnResult,
};
use crate::event_log::LoggedEvent;
use crate::models::{EventKind, UserContent};
use crate::permission::PermissionHandle;
use crate::registry::{RegistryConfig, SessionRegistry};
use crate::session::SessionSubscriber;

/// Upper bound for any wait in these tests (they await events, never sleep).
pub(crate) const WAIT: Duration = Duration::from_secs(10);

type Item = Result<AgentMessage, AgentError>;

/// The test's end of one scripted agent.
pub(crate) struct Scripted {
    /// The session's id.
    pub(crate) session_id: String,
    /// The agent's permission handle, as a real agent would use it.
    pub(crate) permissions: PermissionHandle,
    /// What it was started with.
    pub(crate) config: SessionConfig,
    /// The agent session it resumes (`None`: a new one).
    pub(crate) resume: Option<String>,
    messages: Option<mpsc::UnboundedSender<Item>>,
    queries: mpsc::UnboundedReceiver<UserContent>,
    client: Arc<Client>,
}

impl Scripted {
    /// Streams one message to the session.
    pub(crate) fn send(&self, message: AgentMessage) {
        if let Some(tx) = &self.messages {
            let _ = tx.send(Ok(message));
        }
    }

    /// Ends the agent's message stream, as a crashed agent would.
    pub(crate) fn exit(&mut self) {
        self.messages = None;
    }

    /// The next user message the session sent (fails the test after [`WAIT`]).
    pub(crate) async fn next_query(&mut self) -> UserContent {
        tokio::time::timeout(WAIT, self.queries.recv())
            .await
            .expect("no query within the wait")
            .expect("query channel closed")
    }

    /// A user message already sent and not yet taken, if any.
    pub(crate) fn try_query(&mut self) -> Option<UserContent> {
        self.queries.try_recv().ok()
    }

    /// Runs `hook` when the session disconnects the agent.
    pub(crate) fn on_disconnect(&self, hook: OnDisconnect) {
        *self.client.on_disconnect.lock() = Some(hook);
    }

    /// Whether the session disconnected the agent.
    pub(crate) fn disconnected(&self) -> bool {
        self.client.disconnected.load(Ordering::Acquire)
    }
}

/// Called (once) when the session disconnects the agent.
pub(crate) type OnDisconnect = Box<dyn FnOnce() + Send>;

struct Client {
    queries: mpsc::UnboundedSender<UserContent>,
    disconnected: AtomicBool,
    on_disconnect: Mutex<Option<OnDisconnect>>,
    /// It takes anchored user messages and rewinds (see [`ScriptedFactory::with_anchors`]).
    anchors: bool,
}

#[async_trait]
impl AgentClient for Client {
    async fn query(&self, content: UserContent) -> Result<(), AgentError> {
        self.queries
            .send(content)
            .map_err(|_| AgentError::Disconnected)
    }
    fn supports_anchors(&self) -> bool {
        self.anchors
    }
    /// Rewinds nothing, and says it rewound the conversation to `latest` (so tests see it).
    async fn rewind(
        &self,
        request: &crate::models::anchors::RewindRequest,
        latest: Option<&str>,
    ) -> Result<crate::agent::rewind::RewindOutcome, crate::agent::rewind::RewindError> {
        if !self.anchors {
            return Err(AgentError::Unsupported("rewind").into());
        }
        Ok(crate::agent::rewind::RewindOutcome {
            conversation: request.conversation.then(|| {
                crate::models::anchors::ConversationRewind {
                    rewound: true,
                    error: latest.map(|l| format!("latest {l}")),
                }
            }),
            ..Default::default()
        })
    }
    async fn interrupt(&self) -> Result<(), AgentError> {
        Ok(())
    }
    async fn set_permission_mode(&self, _mode: &str) -> Result<(), AgentError> {
        Ok(())
    }
    async fn set_model(&self, _model: Option<&str>) -> Result<(), AgentError> {
        Ok(())
    }
    async fn stop_task(&self, _task_id: &str) -> Result<(), AgentError> {
        Ok(())
    }
    async fn disconnect(&self) -> Result<(), AgentError> {
        self.disconnected.store(true, Ordering::Release);
        if let Some(hook) = self.on_disconnect.lock().take() {
            hook();
        }
        Ok(())
    }
}

/// Starts scripted agents and hands each to the test.
pub(crate) struct ScriptedFactory {
    started: mpsc::UnboundedSender<Scripted>,
    refuse: Mutex<Option<AgentError>>,
    /// Idle warm spares this factory pretends to hold, each with its live-agent slot (when
    /// the registry bounds live agents).
    spares: Mutex<Vec<Option<AgentSlot>>>,
    /// The registry's live-agent slots.
    slots: std::sync::OnceLock<Option<AgentSlots>>,
    /// Its agents take anchored user messages and rewind.
    anchors: AtomicBool,
}

impl ScriptedFactory {
    /// From now on its agents take anchored user messages (`user_message` events) and
    /// rewind (nothing: they only answer).
    pub(crate) fn with_anchors(&self) {
        self.anchors.store(true, Ordering::Release);
    }

    /// A factory, and where the agents it starts arrive.
    pub(crate) fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Scripted>) {
        let (started, rx) = mpsc::unbounded_channel();
        let factory = Arc::new(Self {
            started,
            refuse: Mutex::new(None),
            spares: Mutex::new(Vec::new()),
            slots: std::sync::OnceLock::new(),
            anchors: AtomicBool::new(false),
        });
        (factory, rx)
    }

    /// Starts one pretend warm spare if a live-agent slot is free (as a real pool must);
    /// whether it started.
    pub(crate) fn start_spare(&self) -> bool {
        let slot = match self.slots.get() {
            Some(Some(slots)) => match slots.try_take() {
                Some(slot) => Some(slot),
                None => return false,
            },
            _ => None,
        };
        self.spares.lock().push(slot);
        true
    }

    /// Idle warm spares left.
    pub(crate) fn spares(&self) -> usize {
        self.spares.lock().len()
    }

    /// Makes the next create fail with `err`.
    pub(crate) fn refuse_next(&self, err: AgentError) {
        *self.refuse.lock() = Some(err);
    }
}

#[async_trait]
impl AgentClientFactory for ScriptedFactory {
    async fn create(&self, ctx: AgentContext) -> Result<AgentConnection, AgentError> {
        if let Some(err) = self.refuse.lock().take() {
            return Err(err);
        }
        let (messages_tx, messages_rx) = mpsc::unbounded_channel::<Item>();
        let (queries_tx, queries_rx) = mpsc::unbounded_channel();
        let client = Arc::new(Client {
            queries: queries_tx,
            disconnected: AtomicBool::new(false),
            on_disconnect: Mutex::new(None),
            anchors: self.anchors.load(Ordering::Acquire),
        });
        let messages = futures_util::stream::unfold(messages_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let _ = self.started.send(Scripted {
            session_id: ctx.session_id,
            permissions: ctx.permissions,
            config: ctx.config,
            resume: ctx.resume,
            messages: Some(messages_tx),
            queries: queries_rx,
            client: Arc::clone(&client),
        });
        Ok(AgentConnection {
            client,
            messages: Box::pin(messages),
        })
    }

    fn can_resume(&self, _store: Option<&Arc<dyn crate::store::SessionStore>>) -> bool {
        true
    }

    fn spare_count(&self) -> usize {
        self.spares()
    }

    fn bind_live_agent_slots(&self, slots: Option<AgentSlots>) {
        let _ = self.slots.set(slots);
    }

    async fn release_spare(&self) -> bool {
        // Its slot returns with it.
        self.spares.lock().pop().is_some()
    }
}

/// A registry over a scripted factory, and where its agents arrive.
pub(crate) fn registry(
    config: RegistryConfig,
) -> (
    SessionRegistry,
    Arc<ScriptedFactory>,
    mpsc::UnboundedReceiver<Scripted>,
) {
    let (factory, agents) = ScriptedFactory::new();
    let registry = SessionRegistry::with_config(
        Arc::clone(&factory) as Arc<dyn AgentClientFactory>,
        None,
        config,
    );
    (registry, factory, agents)
}

/// Creates a session and takes its agent.
pub(crate) async fn start(
    registry: &SessionRegistry,
    agents: &mut mpsc::UnboundedReceiver<Scripted>,
) -> (Arc<crate::session::Session>, Scripted) {
    let session = registry.create(SessionConfig::default()).await.unwrap();
    let agent = agents.recv().await.unwrap();
    assert_eq!(agent.session_id, session.id());
    (session, agent)
}

/// An assistant message holding one tool_use block per id.
pub(crate) fn assistant(message_id: &str, tool_use_ids: &[&str]) -> AgentMessage {
    AgentMessage::Assistant(AssistantMessage {
        id: message_id.to_owned(),
        content: tool_use_ids
            .iter()
            .map(|id| json!({"type": "tool_use", "id": id, "name": "Read", "input": {}}))
            .collect(),
        model: None,
        stop_reason: None,
    })
}

/// A streamed delta of `message_id`.
pub(crate) fn delta(message_id: &str, n: usize) -> AgentMessage {
    AgentMessage::Delta {
        message_id: message_id.to_owned(),
        delta: json!({"n": n}),
    }
}

/// The result ending the current turn.
pub(crate) fn result() -> AgentMessage {
    AgentMessage::Result(TurnResult::new("scripted", "success"))
}

/// The `tool_use_id` context of a permission request.
pub(crate) fn context(tool_use_id: &str) -> Value {
    Value::Object(Map::from_iter([(
        "tool_use_id".to_owned(),
        Value::String(tool_use_id.to_owned()),
    )]))
}

/// Reads `subscriber` until an event of `kind` (inclusive); fails the test after [`WAIT`].
pub(crate) async fn until(subscriber: &mut SessionSubscriber, kind: EventKind) -> Vec<LoggedEvent> {
    let mut seen = Vec::new();
    loop {
        let batch = tokio::time::timeout(WAIT, subscriber.next_batch(1))
            .await
            .unwrap_or_else(|_| panic!("no {} within the wait; saw {seen:?}", kind.as_str()))
            .expect("subscriber lagged")
            .unwrap_or_else(|| panic!("log closed before {}; saw {seen:?}", kind.as_str()));
        for event in batch {
            let done = event.kind() == kind;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

/// The kinds of `events`, as wire names.
pub(crate) fn kinds(events: &[LoggedEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind().as_str()).collect()
}
