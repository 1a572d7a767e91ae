//! One live session: its event log, pending prompts, inbound queue and agent.
//!
//! Each session runs one task (the *loop*) that
//! - reads the agent's [`AgentMessageStream`] and translates every message into events
//!   (`events`),
//! - opens the prompts the agent asks for through its
//!   [`PermissionHandle`](crate::permission::PermissionHandle): first it translates every
//!   message the agent sent before asking, then it registers the prompt with the router, then it
//!   appends the prompt's event. The loop is the only writer of prompts into the log, so *a
//!   prompt never overtakes the messages that announce its tool call* is a property of its one
//!   `select!`,
//! - takes the next queued user message only when the previous turn has ended (its `result`),
//! - on an unexpected end of the agent appends `error` then `done` and marks the session ended
//!   (the registry keeps it readable for its ended-session retention, then forgets it).
//!
//! Subscribers are in `subscriber`; the agent's lifecycle (live ↔ hibernated: stopped while
//! quiet, resumed by the next user message) in `lifecycle`.
//!
//! HTTP handlers call the control methods (`set_model`, ...) directly on the agent client
//! (while hibernated they are recorded or no-ops); user messages go through the bounded inbound
//! queue, and an interrupt through the loop, so that it never overtakes the message whose turn it
//! stops (`interrupt`).

mod context;
mod events;
mod interrupt;
mod lifecycle;
mod mcp;
pub mod rewind;
mod subscriber;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, OnceCell};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::{AgentConnection, AgentError, AgentMessage, AgentMessageStream};
use crate::event_log::{EventLog, LoggedEvent, SubscribeError};
use crate::models::{DoneData, ErrorData, EventKind, UserContent};
use crate::permission::{
    ConflictError, PermissionDecision, PermissionRouter, PromptReply, ToSession,
};
use crate::persist::ActivityCell;

use self::events::EventTranslator;
use self::interrupt::{PendingInterrupts, TurnAt};
pub use self::lifecycle::AgentState;
use self::lifecycle::{AgentSlot, LoopRequest};
pub(crate) use self::lifecycle::{Revive, RuntimeSettings, WakeError, Woken};
pub use self::subscriber::{Probe, SessionSubscriber};

/// Default capacity of the inbound user-message queue.
pub(crate) const DEFAULT_INBOUND_CAPACITY: usize = 128;

/// Why an inbound message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The inbound queue is full (HTTP 503 + `Retry-After: 1`).
    #[error("Inbound queue full ({0} pending user messages); retry later")]
    Backpressure(usize),
    /// The queued user messages hold their byte budget (HTTP 503 + `Retry-After: 1`).
    #[error("Inbound queue full ({0} bytes of pending user messages); retry later")]
    BackpressureBytes(usize),
    /// The session is closing or closed (HTTP 404).
    #[error("Session is closed")]
    Closed,
    /// A reply to a prompt that is not pending (HTTP 409).
    #[error(transparent)]
    Conflict(#[from] ConflictError),
    /// The agent failed the command.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Called once when the session ends on its own (agent exit), so the owner can mark it ended
/// (and forget it after its retention).
pub(crate) type OnEnded = Box<dyn Fn(&str) + Send + Sync>;

/// Settings for one session's runtime.
#[derive(Debug, Clone)]
pub(crate) struct SessionOptions {
    /// Inbound queue capacity.
    pub(crate) inbound_capacity: usize,
    /// Most bytes of queued user messages.
    pub(crate) inbound_max_bytes: usize,
    /// How long `close` waits for the agent's `disconnect`.
    pub(crate) disconnect_timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
            inbound_max_bytes: crate::limits::DEFAULT_INBOUND_MAX_BYTES,
            disconnect_timeout: Duration::from_secs(10),
        }
    }
}

/// What a session is made of (built by the registry).
pub(crate) struct SessionParts {
    /// Session id.
    pub(crate) id: String,
    /// Its event log, holding `session_ready`.
    pub(crate) log: Arc<EventLog>,
    /// Its pending prompts.
    pub(crate) router: Arc<PermissionRouter>,
    /// Its agent.
    pub(crate) connection: AgentConnection,
    /// What its agent's [`PermissionHandle`](crate::permission::PermissionHandle) asks of the
    /// loop.
    pub(crate) prompts: mpsc::UnboundedReceiver<ToSession>,
    /// Its agent's slot among the live agents (`None`: unbounded).
    pub(crate) permit: Option<crate::agent::slots::AgentSlot>,
    /// The principal that owns it (see [`Session::owner`]).
    pub(crate) owner: Option<String>,
    /// Model and permission mode it was started with.
    pub(crate) settings: RuntimeSettings,
    /// How to start its agent again after hibernation (`None`: it is never hibernated).
    pub(crate) revive: Option<Arc<dyn Revive>>,
    /// What listings show about it, kept current here (shared with its event writer).
    pub(crate) activity: Arc<ActivityCell>,
    /// Its settings that never change.
    pub(crate) meta: SessionMeta,
}

/// What a session was created with that listings show and that never changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionMeta {
    /// Creation time, epoch ms.
    pub(crate) created_at_ms: i64,
    /// Working directory.
    pub(crate) cwd: Option<String>,
    /// The principal that owns it.
    pub(crate) owner: Option<String>,
    /// Its attachment directory (see [`crate::attachments`]).
    pub(crate) attachments_dir: Option<std::path::PathBuf>,
    /// The agent's own session id (the server's id unless the caller chose it; see
    /// [`crate::persist::SessionRecord::agent_session_id`]): what a fork of it resumes.
    pub(crate) agent_session_id: String,
    /// A fork's user messages inherited from its source (its first anchors).
    pub(crate) inherited_anchors: Vec<String>,
}

impl SessionMeta {
    pub(crate) fn of(record: &crate::persist::SessionRecord) -> Self {
        Self {
            created_at_ms: record.created_at_ms,
            cwd: record.cwd.clone(),
            owner: record.owner.clone(),
            attachments_dir: None,
            agent_session_id: record.agent_session_id.clone(),
            inherited_anchors: record.inherited_anchors.clone(),
        }
    }
}

type QueryFuture = Pin<Box<dyn Future<Output = Result<(), AgentError>> + Send>>;

/// A live session (see the module docs).
pub struct Session {
    id: String,
    /// The principal that owns it (see [`Session::owner`]).
    owner: Option<String>,
    log: Arc<EventLog>,
    router: Arc<PermissionRouter>,
    /// The agent while live (see `lifecycle`).
    agent: Mutex<AgentSlot>,
    /// Model and permission mode as last set (applied again at wake-up).
    runtime: Mutex<RuntimeSettings>,
    revive: Option<Arc<dyn Revive>>,
    /// Hibernation requests to the loop.
    control: mpsc::Sender<LoopRequest>,
    inbound: mpsc::Sender<UserContent>,
    inbound_capacity: usize,
    inbound_bytes: crate::limits::InboundBytes,
    last_activity: Mutex<Instant>,
    /// When the agent last sent a message.
    last_agent_message: Mutex<Instant>,
    /// What listings show (last activity, title, usage), shared with the event writer.
    activity: Arc<ActivityCell>,
    meta: SessionMeta,
    /// The uuids of the user messages of its conversation, in order (see `rewind`).
    anchors: Mutex<rewind::Anchors>,
    /// A turn runs (a user message was sent and its `result` has not arrived yet).
    turn_running: std::sync::atomic::AtomicBool,
    subscribers: AtomicUsize,
    /// The agent ended on its own: the log holds `error` then `done`; inputs are refused with
    /// `session_ended`.
    ended: std::sync::atomic::AtomicBool,
    /// Whether the session stopped counting toward the session cap (see
    /// [`Session::release_slot`]).
    slot_released: std::sync::atomic::AtomicBool,
    /// Closed to hand the session to another host: streams end without `done`.
    handed_off: std::sync::atomic::AtomicBool,
    /// Bumped to make every subscriber's stream write a keepalive now (see
    /// [`Session::probe_subscribers`]).
    probe: tokio::sync::watch::Sender<u64>,
    cancel: CancellationToken,
    pump: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    finished: OnceCell<()>,
    disconnect_timeout: Duration,
    on_ended: OnEnded,
    turn: crate::metrics::TurnClock,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("log", &self.log)
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session over an already-connected agent. `parts.log` must already hold
    /// `session_ready` (the registry appends it before the agent starts, so it is seq 1).
    pub(crate) fn start(
        parts: SessionParts,
        options: SessionOptions,
        on_ended: OnEnded,
    ) -> Arc<Self> {
        let SessionParts {
            id,
            log,
            router,
            connection,
            prompts,
            permit,
            owner,
            settings,
            revive,
            activity,
            meta,
        } = parts;
        let (client, messages) = (connection.client, connection.messages);
        let capacity = options.inbound_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (control, control_rx) = mpsc::channel(4);
        let anchors = Mutex::new(rewind::anchors_of(&meta.inherited_anchors, &log));
        let session = Arc::new(Self {
            id,
            owner,
            log,
            router,
            agent: Mutex::new(AgentSlot {
                state: AgentState::Live,
                client: Some(client),
                permit,
            }),
            runtime: Mutex::new(settings),
            revive,
            control,
            inbound: tx,
            inbound_capacity: capacity,
            inbound_bytes: crate::limits::InboundBytes::new(options.inbound_max_bytes),
            last_activity: Mutex::new(Instant::now()),
            last_agent_message: Mutex::new(Instant::now()),
            activity,
            meta,
            anchors,
            turn_running: std::sync::atomic::AtomicBool::new(false),
            subscribers: AtomicUsize::new(0),
            probe: tokio::sync::watch::Sender::new(0),
            handed_off: std::sync::atomic::AtomicBool::new(false),
            ended: std::sync::atomic::AtomicBool::new(false),
            slot_released: std::sync::atomic::AtomicBool::new(false),
            cancel: CancellationToken::new(),
            pump: tokio::sync::Mutex::new(None),
            finished: OnceCell::new(),
            disconnect_timeout: options.disconnect_timeout,
            on_ended,
            turn: crate::metrics::TurnClock::default(),
        });
        let span = tracing::info_span!(parent: None, "session", session_id = %session.id);
        crate::trace::adopt_current(&span);
        let handle = tokio::spawn(
            Arc::clone(&session)
                .pump(messages, rx, prompts, control_rx)
                .instrument(span),
        );
        if let Ok(mut slot) = session.pump.try_lock() {
            *slot = Some(handle);
        }
        session
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The principal (JWT `sub`) that owns the session; `None` for a session created under the
    /// shared token or with auth disabled. Only that principal (or an admin) may use it: see
    /// [`Principal::may_access`](crate::auth::principal::Principal::may_access).
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The session's event log.
    pub fn event_log(&self) -> &Arc<EventLog> {
        &self.log
    }

    /// The session's pending prompts.
    pub fn router(&self) -> &Arc<PermissionRouter> {
        &self.router
    }

    /// Number of live subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    /// Time since the last input (or the last subscriber leaving).
    pub fn idle_for(&self) -> Duration {
        self.last_activity.lock().elapsed()
    }

    /// Whether the session has ended (its log is closed).
    pub fn is_closed(&self) -> bool {
        self.log.is_closed()
    }

    /// Whether the agent ended on its own (exited or failed): the session is readable (its
    /// stream replays to `done`) but takes no input.
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the session as no longer counting toward the session cap; `true` only for the
    /// first caller (so the registry's count drops exactly once, whoever gets there first).
    pub(crate) fn release_slot(&self) -> bool {
        !self.slot_released.swap(true, Ordering::AcqRel)
    }

    /// The last input or agent message, whichever is later (least-recently-active eviction
    /// orders sessions by it).
    pub(crate) fn last_active(&self) -> Instant {
        (*self.last_activity.lock()).max(*self.last_agent_message.lock())
    }

    /// Time since [`last_active`](Self::last_active) (hibernation goes by it).
    pub(crate) fn quiet_for(&self) -> Duration {
        self.last_active().elapsed()
    }

    fn touch(&self) {
        *self.last_activity.lock() = Instant::now();
    }

    /// An input from a client: activity for the idle reaper and for listings.
    fn input(&self) {
        self.touch();
        self.activity.touch();
    }

    /// What listings show about it now (last activity, title, usage totals).
    pub(crate) fn activity(&self) -> crate::persist::SessionActivity {
        self.activity.snapshot()
    }

    /// What it was created with.
    pub(crate) fn meta(&self) -> &SessionMeta {
        &self.meta
    }

    /// Model and permission mode as last set.
    pub(crate) fn settings(&self) -> RuntimeSettings {
        self.runtime.lock().clone()
    }

    /// Copies the model and mode as last set into the activity listings persist.
    fn note_settings(&self) {
        let settings = self.settings();
        self.activity
            .settings(settings.model, settings.permission_mode);
    }

    /// Whether a turn is running (a user message was sent, its `result` has not arrived).
    pub(crate) fn turn_running(&self) -> bool {
        self.turn_running.load(Ordering::Acquire)
    }

    /// Queues a user message; it is sent to the agent when the previous turn has ended.
    pub fn submit_user_message(&self, content: UserContent) -> Result<(), SessionError> {
        if self.cancel.is_cancelled() {
            return Err(SessionError::Closed);
        }
        let size = content.size_hint();
        if !self.inbound_bytes.try_reserve(size) {
            tracing::warn!(session_id = %self.id, size, "inbound queue byte budget full");
            return Err(SessionError::BackpressureBytes(self.inbound_bytes.max()));
        }
        self.turn.queued();
        let title = self.activity.title_candidate(&content);
        match self.inbound.try_send(content) {
            Ok(()) => {
                if let Some(title) = title {
                    self.activity.set_title(title);
                }
                self.input();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.turn.unqueue();
                self.inbound_bytes.release(size);
                tracing::warn!(session_id = %self.id, "inbound queue full");
                Err(SessionError::Backpressure(self.inbound_capacity))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.turn.unqueue();
                self.inbound_bytes.release(size);
                Err(SessionError::Closed)
            }
        }
    }

    /// Answers a `permission_request`.
    pub fn resolve_permission(
        &self,
        correlation_id: &str,
        decision: PermissionDecision,
    ) -> Result<(), SessionError> {
        self.router
            .resolve(correlation_id, PromptReply::Permission(decision))?;
        tracing::debug!(session_id = %self.id, correlation_id, "permission answered");
        self.input();
        Ok(())
    }

    /// Answers an `ask_user_question`.
    pub fn resolve_question(
        &self,
        correlation_id: &str,
        answers: Value,
    ) -> Result<(), SessionError> {
        self.router
            .resolve(correlation_id, PromptReply::Question(answers))?;
        tracing::debug!(session_id = %self.id, correlation_id, "question answered");
        self.input();
        Ok(())
    }

    /// Answers a `hook_decision_request`.
    pub fn resolve_hook(
        &self,
        correlation_id: &str,
        decision: serde_json::Map<String, Value>,
    ) -> Result<(), SessionError> {
        self.router
            .resolve(correlation_id, PromptReply::Hook(decision))?;
        tracing::debug!(session_id = %self.id, correlation_id, "hook decision answered");
        self.input();
        Ok(())
    }

    fn live(&self) -> Result<(), SessionError> {
        if self.cancel.is_cancelled() {
            Err(SessionError::Closed)
        } else {
            self.input();
            Ok(())
        }
    }

    /// Interrupts the running turn — or, when none runs, the turn of the message queued next
    /// (the one the client sees running); a no-op while idle. Goes through the loop, after the
    /// messages accepted before it (`interrupt`).
    pub async fn interrupt(&self) -> Result<(), SessionError> {
        self.live()?;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        if self
            .control
            .send(LoopRequest::Interrupt(reply))
            .await
            .is_err()
        {
            return Err(SessionError::Closed);
        }
        match outcome.await {
            Ok(outcome) => Ok(outcome?),
            // The loop ended (the session closed) before the interrupt was sent.
            Err(_) => Err(SessionError::Closed),
        }
    }

    /// Changes the permission mode (while hibernated: recorded, applied at wake-up).
    pub async fn set_permission_mode(&self, mode: &str) -> Result<(), SessionError> {
        self.live()?;
        if let Some(client) = self.client() {
            client.set_permission_mode(mode).await?;
        }
        self.record(|s| s.permission_mode = Some(mode.to_owned()));
        self.note_settings();
        Ok(())
    }

    /// Changes the model (while hibernated: recorded, applied at wake-up).
    pub async fn set_model(&self, model: Option<&str>) -> Result<(), SessionError> {
        self.live()?;
        if let Some(client) = self.client() {
            client.set_model(model).await?;
        }
        self.record(|s| s.model = model.map(str::to_owned));
        self.note_settings();
        Ok(())
    }

    /// Stops a background task (a no-op while hibernated: none runs).
    pub async fn stop_task(&self, task_id: &str) -> Result<(), SessionError> {
        self.live()?;
        match self.client() {
            Some(client) => Ok(client.stop_task(task_id).await?),
            None => Ok(()),
        }
    }

    /// Subscribes to the event log (`None`: from the start of the ring). The returned
    /// subscriber counts as live until dropped.
    pub fn subscribe(
        self: &Arc<Self>,
        after_seq: Option<u64>,
    ) -> Result<SessionSubscriber, SubscribeError> {
        let inner = match after_seq {
            None => self.log.subscribe_from_start(),
            Some(seq) => self.log.subscribe(seq)?,
        };
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        Ok(SessionSubscriber {
            session: Arc::clone(self),
            probe: self.probe.subscribe(),
            inner,
        })
    }

    /// Stops the session here without ending it for its clients: the agent is disconnected and
    /// the log closed **without** `done`, so clients reconnect (with `Last-Event-ID`) and the
    /// host that takes the session over continues it. Used for failover hand-off.
    pub(crate) async fn close_for_handoff(&self) {
        self.handed_off.store(true, Ordering::Release);
        self.close().await;
    }

    /// Asks every subscriber's stream to write a keepalive now. Some servers (actix-web) notice
    /// a vanished client only when a write fails, so the reaper probes idle sessions that still
    /// count subscribers: a dead connection fails within two probes and stops counting.
    pub(crate) fn probe_subscribers(&self) {
        self.probe.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Gracefully ends the session: withdraws pending prompts, stops the pump, disconnects the
    /// agent, appends `done` and closes the log. Idempotent; concurrent callers all return
    /// once it is done.
    pub async fn close(&self) {
        self.cancel.cancel();
        {
            let mut pump = self.pump.lock().await;
            if let Some(handle) = pump.take() {
                // The pump ends promptly on cancel; a panic in it is logged, not propagated.
                if let Err(err) = handle.await {
                    tracing::error!(session_id = %self.id, error = %err, "session task failed");
                }
            }
        }
        self.finish().await;
    }

    async fn finish(&self) {
        self.finished
            .get_or_init(|| async {
                self.router.cancel_all();
                let client = self.agent.lock().client.take();
                if let Some(client) = client {
                    match tokio::time::timeout(self.disconnect_timeout, client.disconnect()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => {
                            tracing::warn!(session_id = %self.id, error = %err, "agent disconnect failed")
                        }
                        Err(_) => tracing::warn!(
                            session_id = %self.id,
                            timeout = ?self.disconnect_timeout,
                            "agent disconnect timed out"
                        ),
                    }
                }
                drop(self.agent.lock().permit.take());
                if !self.handed_off.load(Ordering::Acquire) {
                    self.append(EventKind::Done, &DoneData {});
                }
                self.log.close();
                tracing::info!(session_id = %self.id, last_seq = self.log.last_seq(), "session closed");
            })
            .await;
    }

    fn append<T: serde::Serialize>(&self, kind: EventKind, data: &T) -> Option<LoggedEvent> {
        match self.log.append(kind, data) {
            Ok(ev) => Some(ev),
            Err(err) => {
                tracing::debug!(session_id = %self.id, event = kind.as_str(), error = %err, "event dropped");
                None
            }
        }
    }

    async fn pump(
        self: Arc<Self>,
        messages: AgentMessageStream,
        mut inbound: mpsc::Receiver<UserContent>,
        mut prompts: mpsc::UnboundedReceiver<ToSession>,
        mut control: mpsc::Receiver<LoopRequest>,
    ) {
        // `None` while hibernated.
        let mut messages = Some(messages);
        let mut translator = EventTranslator::default();
        let mut turn_open = false;
        let mut query: Option<QueryFuture> = None;
        let mut interrupts = PendingInterrupts::default();
        let failure = loop {
            self.turn_running
                .store(turn_open || query.is_some(), Ordering::Release);
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return,
                // Before the agent's messages: what the handle sent was sent before whatever the
                // agent streamed after it (a withdrawal precedes the `result` that follows it).
                Some(request) = prompts.recv() => {
                    if matches!(request, ToSession::Open { .. }) {
                        // Translate everything the agent sent before asking, then open the
                        // prompt: it never overtakes the message that announced its tool call.
                        if let Err(err) = self.drain(&mut messages, &mut translator, &mut turn_open) {
                            // The agent is gone: its prompt is refused (`SessionClosed`).
                            break err;
                        }
                    }
                    // A withdrawal is announced at once: the agent withdrew before whatever it
                    // streams next.
                    request.apply(&self.log, &self.router);
                }
                message = next_opt(&mut messages) => {
                    if let Err(err) = self.handle(&mut translator, &mut turn_open, message) {
                        break err;
                    }
                }
                Some(request) = control.recv() => match request {
                    LoopRequest::Wake(reply) => {
                        if messages.is_none() {
                            let woken = tokio::select! {
                                () = self.cancel.cancelled() => return,
                                woken = self.revive_agent(&mut prompts) => woken,
                            };
                            if let Some(Ok(stream)) = woken {
                                messages = Some(stream);
                            }
                        }
                        let _ = reply.send(messages.is_some());
                    }
                    LoopRequest::Hibernate(reply) => {
                        let idle = !turn_open && query.is_none() && inbound.is_empty();
                        // Whatever the agent sent before is translated first.
                        if let Err(err) = self.drain(&mut messages, &mut translator, &mut turn_open) {
                            let _ = reply.send(false);
                            break err;
                        }
                        let hibernated = self.hibernate_now(idle && !turn_open, &mut messages).await;
                        let _ = reply.send(hibernated);
                    }
                    LoopRequest::Interrupt(reply) => {
                        let at = if query.is_some() {
                            TurnAt::Writing
                        } else if turn_open {
                            TurnAt::Running
                        } else if !inbound.is_empty() {
                            TurnAt::Queued
                        } else {
                            TurnAt::Idle
                        };
                        tracing::debug!(session_id = %self.id, ?at, "interrupt");
                        interrupts.request(reply, at, self.client());
                    }
                },
                outcome = poll_opt(&mut query) => {
                    query = None;
                    if let Err(err) = outcome {
                        tracing::warn!(session_id = %self.id, error = %err, "query failed");
                        turn_open = false;
                        self.turn.finished(false);
                        self.append(EventKind::Error, &ErrorData::new("query_failed", err.to_string()));
                        interrupts.written(None);
                    } else {
                        interrupts.written(self.client());
                    }
                }
                Some(content) = inbound.recv(), if !turn_open && query.is_none() => {
                    self.inbound_bytes.release(content.size_hint());
                    interrupts.turn_started();
                    if messages.is_none() {
                        let woken = tokio::select! {
                            () = self.cancel.cancelled() => return,
                            woken = self.wake(&mut prompts, &content) => woken,
                        };
                        match woken {
                            Some(stream) => messages = Some(stream),
                            // Reported as not sent; the session stays hibernated.
                            None => {
                                interrupts.written(None);
                                continue;
                            }
                        }
                    }
                    let Some(client) = self.client() else {
                        interrupts.written(None);
                        continue;
                    };
                    turn_open = true;
                    self.turn.started(&self.id);
                    // Attachment blocks become what the agent reads (crate::attachments); the
                    // `user_message` event keeps the posted content.
                    let anchor = self.announce_user_message(client.as_ref(), &content);
                    let attachments = self.meta.attachments_dir.clone();
                    query = Some(Box::pin(async move {
                        let content = crate::attachments::expand(attachments, content).await;
                        match anchor {
                            Some(uuid) => client.query_anchored(content, &uuid).await,
                            None => client.query(content).await,
                        }
                    }));
                }
            }
        };
        if self.cancel.is_cancelled() {
            return;
        }
        tracing::warn!(session_id = %self.id, error = %failure, "agent ended unexpectedly");
        self.turn_running.store(false, Ordering::Release);
        self.activity.ended();
        self.append(
            EventKind::Error,
            &ErrorData::new(failure.code(), failure.to_string()),
        );
        self.ended.store(true, Ordering::Release);
        self.cancel.cancel();
        // Tell the registry before `done` is visible: a client that reads `done` and asks
        // again must get the ended session (or, without retention, 404), never a live one
        // (with TCP_NODELAY `done` can arrive before a later notice would).
        (self.on_ended)(&self.id);
        self.finish().await;
    }
}

impl Session {
    /// Translates every message the agent has already sent (without waiting for more).
    fn drain(
        &self,
        messages: &mut Option<AgentMessageStream>,
        translator: &mut EventTranslator,
        turn_open: &mut bool,
    ) -> Result<(), AgentError> {
        let Some(messages) = messages else {
            return Ok(());
        };
        while let Some(message) = messages.next().now_or_never() {
            self.handle(translator, turn_open, message)?;
        }
        Ok(())
    }

    fn handle(
        &self,
        translator: &mut EventTranslator,
        turn_open: &mut bool,
        message: Option<Result<AgentMessage, AgentError>>,
    ) -> Result<(), AgentError> {
        match message {
            Some(Ok(message)) => {
                *self.last_agent_message.lock() = Instant::now();
                self.turn.agent_message(&message);
                self.activity.touch();
                if translator.translate(self, message) {
                    *turn_open = false;
                    self.turn.finished(true);
                }
                Ok(())
            }
            Some(Err(err)) => Err(err),
            None => Err(AgentError::Exited(
                "the agent's message stream ended".into(),
            )),
        }
    }
}

async fn next_opt(
    messages: &mut Option<AgentMessageStream>,
) -> Option<Result<AgentMessage, AgentError>> {
    match messages {
        Some(messages) => messages.next().await,
        None => std::future::pending().await,
    }
}

async fn poll_opt<F: Future + Unpin>(fut: &mut Option<F>) -> F::Output {
    match fut {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}
