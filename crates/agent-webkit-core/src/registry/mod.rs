//! The set of live sessions: create, look up, remove, shut down.
//!
//! Split by concern: this file holds the registry itself; `failover` the cross-host part
//! (persisted sessions, take-over, hand-off, leases); `tasks` the background work (idle
//! reaper, hibernation of quiet agents, ring compactor, lease renewal); `capacity` the bound on
//! live agents (slots, eviction of the least recently active, waking hibernated sessions).

mod capacity;
mod claims;
#[cfg(test)]
mod ended_tests;
mod failover;
#[cfg(test)]
mod hibernate_tests;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::agent::{AgentClientFactory, AgentContext, AgentError, SessionConfig};
use crate::event_log::{EventLog, DEFAULT_LAG_BUDGET, DEFAULT_MAX_SIZE};
use crate::models::{EventKind, SessionReadyData};
use crate::permission::{PermissionHandle, PermissionRouter};
use crate::persist::{ActivityCell, SessionActivity, SessionRecord};
use crate::session::{
    RuntimeSettings, Session, SessionMeta, SessionOptions, SessionParts, DEFAULT_INBOUND_CAPACITY,
};
use crate::store::SessionStore;

pub use failover::{Failover, ResumeError};

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// A session with no input for this long and no live subscriber is evicted (default 300 s).
    pub idle_timeout: Duration,
    /// How often the reaper looks (default: a quarter of `idle_timeout`, within 10 ms..30 s).
    pub reap_interval: Option<Duration>,
    /// Most sessions alive at once (`None`: unlimited). Over it, create is a 503.
    pub max_sessions: Option<usize>,
    /// Events kept per session for replay (default 1000).
    pub ring_size: usize,
    /// Bytes of events kept per session beyond the ring for live subscribers that have not
    /// read them yet (default [`DEFAULT_LAG_BUDGET`]; see
    /// [`EventLog::with_lag_budget`](crate::event_log::EventLog::with_lag_budget)).
    pub lag_budget: usize,
    /// Pending user messages per session (default 128).
    pub inbound_capacity: usize,
    /// Most bytes of pending user messages per session (default 32 MiB).
    pub inbound_max_bytes: usize,
    /// How long the agent factory may take before create fails (default 60 s).
    pub start_timeout: Duration,
    /// How long closing waits for the agent to disconnect (default 10 s).
    pub disconnect_timeout: Duration,
    /// With failover: how long a host owns a session without renewing (default 10 s; renewed
    /// every third of it). A crashed host's sessions move after at most this long.
    pub lease: Duration,
    /// A session whose event log has been quiet this long gets its ring compressed (see
    /// [`EventLog::compact`](crate::event_log::EventLog::compact)); `None`: never. Default 1 s.
    pub compact_after: Option<Duration>,
    /// A session whose agent has been quiet this long gets it hibernated (stopped; started
    /// again, resumed, on the next user message); `None`: never on idleness (capacity pressure
    /// still hibernates). Only for agents that can resume. Default 60 s.
    pub hibernate_after: Option<Duration>,
    /// Most live agents at once (`None`: unbounded). A session that needs one when all are
    /// taken first hibernates the least recently active hibernatable session.
    pub max_live_agents: Option<usize>,
    /// How long a hibernated session's user message waits for a free agent slot before the
    /// client gets `error {code: "at_capacity"}` (default 30 s).
    pub capacity_wait: Duration,
    /// How long a session whose agent ended on its own (exited or failed) stays readable: its
    /// stream replays the log to `done`, inputs get `session_ended`. It holds no agent and does
    /// not count toward `max_sessions`. Zero: it leaves at once. Default 300 s.
    pub ended_retention: Duration,
    /// The directory holding one attachment directory per session (see
    /// [`crate::attachments`]); `Api::new` sets it from `AppConfig::attachments`. `None`: off.
    pub attachments_root: Option<std::path::PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            reap_interval: None,
            max_sessions: None,
            ring_size: DEFAULT_MAX_SIZE,
            lag_budget: DEFAULT_LAG_BUDGET,
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
            inbound_max_bytes: crate::limits::DEFAULT_INBOUND_MAX_BYTES,
            start_timeout: Duration::from_secs(60),
            disconnect_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(10),
            compact_after: Some(Duration::from_secs(1)),
            hibernate_after: Some(Duration::from_secs(60)),
            max_live_agents: None,
            capacity_wait: Duration::from_secs(30),
            ended_retention: Duration::from_secs(300),
            attachments_root: None,
        }
    }
}

impl RegistryConfig {
    fn effective_reap_interval(&self) -> Duration {
        self.reap_interval.unwrap_or_else(|| {
            (self.idle_timeout / 4)
                .min(self.lease / 3)
                .min(self.hibernate_after.map_or(Duration::MAX, |d| d / 4))
                .clamp(Duration::from_millis(10), Duration::from_secs(30))
        })
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The session cap is reached (HTTP 503 + `Retry-After`).
    #[error("Session limit reached ({0} sessions); retry later")]
    AtCapacity(usize),
    /// Every live-agent slot is taken and no session can be hibernated (HTTP 503 +
    /// `Retry-After`, code `at_capacity`).
    #[error("All {0} agents are busy; retry later")]
    AgentsAtCapacity(usize),
    /// The server is shutting down (HTTP 503).
    #[error("Server is shutting down")]
    ShuttingDown,
    /// The agent could not be started.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The session could not be saved for failover (HTTP 503).
    #[error("Session persistence unavailable: {0}")]
    Persistence(String),
    /// The caller's session id is taken (HTTP 409, code `session_exists`).
    #[error("A session with id {0} already exists")]
    Exists(String),
}

/// What listings know of a session being launched: its activity so far and what it was
/// created with.
struct Started {
    activity: Arc<ActivityCell>,
    meta: SessionMeta,
}

/// Decides whether this host may take over a session with this stored configuration
/// (`Err(reason)` refuses; the reason is logged, not sent to clients).
pub type TakeOverCheck = Arc<dyn Fn(&SessionConfig) -> Result<(), String> + Send + Sync>;

struct Inner {
    factory: Arc<dyn AgentClientFactory>,
    store: Option<Arc<dyn SessionStore>>,
    config: RegistryConfig,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    /// Checked before taking over a session from another host (see [`TakeOverCheck`]).
    take_over_check: std::sync::OnceLock<TakeOverCheck>,
    /// Live sessions plus creations in flight (for the cap).
    reserved: AtomicUsize,
    shutting_down: AtomicBool,
    reaper: Mutex<Option<JoinHandle<()>>>,
    compactor: Mutex<Option<JoinHandle<()>>>,
    failover: Option<Failover>,
    /// Event writers of the sessions held here (failover only).
    writers: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Single flight for take-overs; removals and hand-offs hold the same gate.
    resuming: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Live-agent slots, shared with the factory's warm spares (`None`: unbounded).
    live_agents: Option<crate::agent::slots::AgentSlots>,
    /// Whether the factory's agents can be resumed, so sessions may hibernate.
    hibernation: bool,
    /// Caller-chosen ids of creates in flight.
    claims: claims::IdClaims,
}

impl Inner {
    /// Forgets `id`'s take-over gate once nobody else holds or waits for it.
    fn drop_gate(&self, id: &str, gate: &Arc<tokio::sync::Mutex<()>>) {
        let mut resuming = self.resuming.lock();
        if resuming.get(id).is_some_and(|g| Arc::ptr_eq(g, gate)) && Arc::strong_count(gate) <= 2 {
            resuming.remove(id);
        }
    }

    fn forget(&self, id: &str) -> Option<Arc<Session>> {
        let removed = self.sessions.write().remove(id);
        if let Some(session) = &removed {
            self.release(session);
        }
        removed
    }

    /// Stops counting `session` toward the cap (once per session, whoever calls first).
    fn release(&self, session: &Session) {
        if session.release_slot() {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The agent of session `id` ended on its own: without retention it leaves at once;
    /// otherwise it stays readable (not counting toward the cap) and leaves after
    /// `ended_retention`.
    fn ended(self: &Arc<Self>, id: &str) {
        // The writer finishes on its own once the log closes (`done` marks the record gone).
        let writer = self.writers.lock().remove(id);
        let retention = self.config.ended_retention;
        if retention.is_zero() {
            if let Some(writer) = writer {
                // Until `done` is stored, this host must not take the session back.
                let gate = Arc::clone(self.resuming.lock().entry(id.to_owned()).or_default());
                let inner = Arc::clone(self);
                let id = id.to_owned();
                let held = Arc::clone(&gate).try_lock_owned();
                tokio::spawn(async move {
                    let turn = match held {
                        Ok(turn) => turn,
                        Err(_) => Arc::clone(&gate).lock_owned().await,
                    };
                    let _ = writer.await;
                    drop(turn);
                    inner.drop_gate(&id, &gate);
                });
            }
            self.forget(id);
            return;
        }
        let Some(session) = self.sessions.read().get(id).cloned() else {
            return;
        };
        self.release(&session);
        tracing::info!(session_id = %id, ?retention, "session ended; kept readable");
        let weak = Arc::downgrade(self);
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(retention).await;
            let Some(inner) = weak.upgrade() else { return };
            let mut sessions = inner.sessions.write();
            // Only this ended session: a DELETE may already have removed it.
            if sessions.get(&id).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                sessions.remove(&id);
                tracing::info!(session_id = %id, "ended session retention over");
            }
        });
    }
}

/// The set of live sessions. Cheap to clone (shared).
#[derive(Clone)]
pub struct SessionRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("sessions", &self.len())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl SessionRegistry {
    /// Whether the factory's agents can start as forks (see `AgentClientFactory::can_fork`).
    pub(crate) fn can_fork(&self) -> bool {
        self.inner.factory.can_fork()
    }

    /// A registry with default settings (idle timeout 300 s).
    pub fn new(factory: Arc<dyn AgentClientFactory>) -> Self {
        Self::with_config(factory, None, RegistryConfig::default())
    }

    /// A registry with explicit settings and an optional transcript store for the agents.
    pub fn with_config(
        factory: Arc<dyn AgentClientFactory>,
        store: Option<Arc<dyn SessionStore>>,
        config: RegistryConfig,
    ) -> Self {
        Self::with_failover(factory, store, config, None)
    }

    /// A registry whose sessions are persisted for failover: any host sharing `failover`'s
    /// persistence can take over a session whose host died or handed it off.
    pub fn with_failover(
        factory: Arc<dyn AgentClientFactory>,
        store: Option<Arc<dyn SessionStore>>,
        config: RegistryConfig,
        failover: Option<Failover>,
    ) -> Self {
        let hibernation = factory.can_resume(store.as_ref());
        if hibernation {
            tracing::info!(
                hibernate_after = ?config.hibernate_after,
                max_live_agents = ?config.max_live_agents,
                "sessions hibernate their agents when quiet or under capacity pressure"
            );
        } else {
            tracing::info!(
                max_live_agents = ?config.max_live_agents,
                "sessions are never hibernated: this agent cannot resume a conversation (no transcript store, or mirroring off)"
            );
        }
        let live_agents = config
            .max_live_agents
            .map(crate::agent::slots::AgentSlots::new);
        factory.bind_live_agent_slots(live_agents.clone());
        Self {
            inner: Arc::new(Inner {
                live_agents,
                hibernation,
                factory,
                store,
                config,
                sessions: RwLock::new(HashMap::new()),
                take_over_check: std::sync::OnceLock::new(),
                reserved: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                reaper: Mutex::new(None),
                compactor: Mutex::new(None),
                failover,
                writers: Mutex::new(HashMap::new()),
                resuming: Mutex::new(HashMap::new()),
                claims: claims::IdClaims::default(),
            }),
        }
    }

    /// The failover settings, if any.
    pub fn failover(&self) -> Option<&Failover> {
        self.inner.failover.as_ref()
    }

    /// The registry's settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Number of sessions held here (live, hibernated, or ended and kept for their retention).
    pub fn len(&self) -> usize {
        self.inner.sessions.read().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids of the sessions held here (ended ones included, see [`Session::has_ended`]).
    pub fn ids(&self) -> Vec<String> {
        self.inner.sessions.read().keys().cloned().collect()
    }

    /// Creates a session: appends `session_ready` (seq 1), starts the agent, starts the pump.
    pub async fn create(&self, config: SessionConfig) -> Result<Arc<Session>, CreateError> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::Acquire) {
            return Err(CreateError::ShuttingDown);
        }
        let reserved = inner.reserved.fetch_add(1, Ordering::AcqRel);
        if let Some(max) = inner.config.max_sessions {
            if reserved >= max {
                inner.reserved.fetch_sub(1, Ordering::AcqRel);
                return Err(CreateError::AtCapacity(max));
            }
        }
        match self.start_session(config).await {
            Ok(session) => Ok(session),
            Err(err) => {
                inner.reserved.fetch_sub(1, Ordering::AcqRel);
                Err(err)
            }
        }
    }

    async fn start_session(&self, mut config: SessionConfig) -> Result<Arc<Session>, CreateError> {
        let inner = &self.inner;
        // A caller-chosen id is claimed until the session is registered (or nothing was made);
        // the agent runs under a fresh UUID of its own (the Claude CLI takes only UUIDs).
        let (id, _claim) = match config.session_id.clone() {
            Some(id) => {
                let claim = inner
                    .claims
                    .claim(&id, |id| inner.sessions.read().contains_key(id))
                    .ok_or_else(|| CreateError::Exists(id.clone()))?;
                config.agent_session_id = Some(uuid::Uuid::new_v4().to_string());
                (id, Some(claim))
            }
            None => (uuid::Uuid::new_v4().to_string(), None),
        };
        let log = Arc::new(
            EventLog::new(inner.config.ring_size).with_lag_budget(inner.config.lag_budget),
        );
        let agent_id = config
            .agent_session_id
            .clone()
            .unwrap_or_else(|| id.clone());
        let record = SessionRecord::new(&id, &agent_id, &config);
        let activity = Arc::new(ActivityCell::new(SessionActivity::created(&record)));
        if let Some(failover) = &inner.failover {
            failover
                .persistence
                .create(&record, &failover.host_id, inner.config.lease)
                .await
                .map_err(|e| match e {
                    crate::persist::PersistError::Exists(id) => CreateError::Exists(id),
                    e => CreateError::Persistence(e.to_string()),
                })?;
            self.attach_writer(&id, &log, failover, Arc::clone(&activity));
        }
        log.append(EventKind::SessionReady, &SessionReadyData::new(&id))
            .map_err(|e| AgentError::StartFailed(e.to_string()))?;
        let started = Started {
            activity,
            meta: SessionMeta::of(&record),
        };
        match self.launch(&id, log, config, None, started).await {
            Ok(session) => Ok(session),
            Err(err) => {
                if let Some(failover) = &inner.failover {
                    self.finish_writer(&id).await;
                    let _ = failover.persistence.delete(&id).await;
                }
                Err(err)
            }
        }
    }

    /// Starts the agent and the session over `log` and registers it.
    async fn launch(
        &self,
        id: &str,
        log: Arc<EventLog>,
        config: SessionConfig,
        resume: Option<String>,
        started: Started,
    ) -> Result<Arc<Session>, CreateError> {
        let inner = &self.inner;
        let id = id.to_owned();
        let mut config = config;
        let mut started = started;
        if let Some(root) = &inner.config.attachments_root {
            config.attachments_dir = crate::attachments::prepare_session_dir(root, &id);
            started
                .meta
                .attachments_dir
                .clone_from(&config.attachments_dir);
        }
        let router = Arc::new(PermissionRouter::new());
        let (permissions, prompts) = PermissionHandle::for_session(Arc::clone(&router));
        // A session taken over continues with the MCP settings the client made at runtime.
        let stored = started.activity.snapshot();
        let settings = RuntimeSettings {
            model: config.model.clone(),
            permission_mode: config.permission_mode.clone(),
            mcp_servers: config.mcp_servers.clone(),
            mcp_replaced: stored.mcp_servers.is_some(),
            mcp_disabled: stored.mcp_disabled,
        };
        let revive = self.reviver(
            &id,
            &config,
            resume.as_deref().or(config.agent_session_id.as_deref()),
        );
        let owner = config.owner.clone();
        let ctx = AgentContext {
            session_id: id.clone(),
            config,
            permissions,
            store: inner.store.clone(),
            resume,
        };
        // A warm spare brings its own slot; otherwise take one (making room if needed).
        let reserved = inner
            .live_agents
            .as_ref()
            .and_then(|_| inner.factory.reserve_spare(&ctx));
        let permit = match reserved {
            Some(slot) => Some(slot),
            None => match self.agent_slot(Duration::ZERO, None).await {
                Ok(permit) => permit,
                Err(_) => {
                    log.close();
                    return Err(CreateError::AgentsAtCapacity(
                        inner.config.max_live_agents.unwrap_or(0),
                    ));
                }
            },
        };
        let connection = match crate::metrics::timed_agent_start(tokio::time::timeout(
            inner.config.start_timeout,
            inner.factory.create(ctx),
        ))
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => {
                log.close();
                return Err(err.into());
            }
            Err(_) => {
                log.close();
                return Err(AgentError::StartFailed(format!(
                    "the agent did not start within {:?}",
                    inner.config.start_timeout
                ))
                .into());
            }
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let session = Session::start(
            SessionParts {
                id: id.clone(),
                log,
                router,
                connection,
                prompts,
                permit,
                owner,
                settings,
                revive,
                activity: started.activity,
                meta: started.meta,
            },
            SessionOptions {
                inbound_capacity: inner.config.inbound_capacity,
                inbound_max_bytes: inner.config.inbound_max_bytes,
                disconnect_timeout: inner.config.disconnect_timeout,
            },
            Box::new(move |id| {
                if let Some(inner) = weak.upgrade() {
                    inner.ended(id);
                }
            }),
        );
        session.mcp_disable_recorded().await;
        inner
            .sessions
            .write()
            .insert(id.clone(), Arc::clone(&session));
        tracing::info!(session_id = %id, "session created");
        if inner.shutting_down.load(Ordering::Acquire) {
            // Lost a race with shutdown: do not leave a session behind.
            self.remove(&id).await;
            return Err(CreateError::ShuttingDown);
        }
        Ok(session)
    }

    /// Sets the check a stored session must pass before this host takes it over (once; later
    /// calls are ignored).
    pub fn set_take_over_check(&self, check: TakeOverCheck) {
        let _ = self.inner.take_over_check.set(check);
    }

    /// The session with this id (possibly ended: see [`Session::has_ended`]).
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.sessions.read().get(id).cloned()
    }

    /// Removes and closes a session (its streams end with `done`); with failover it is deleted
    /// on every host. Returns whether it was live here.
    pub async fn remove(&self, id: &str) -> bool {
        self.gated(id, async {
            let live = match self.inner.forget(id) {
                Some(session) => {
                    session.close().await;
                    true
                }
                None => false,
            };
            if let Some(failover) = &self.inner.failover {
                self.finish_writer(id).await;
                if let Err(err) = failover.persistence.delete(id).await {
                    tracing::warn!(session_id = %id, error = %err, "could not delete the persisted session");
                }
            }
            live
        })
        .await
    }

    /// Stops the reaper and closes every session; new creates are refused.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        if let Some(reaper) = self.inner.reaper.lock().take() {
            reaper.abort();
        }
        if let Some(compactor) = self.inner.compactor.lock().take() {
            compactor.abort();
        }
        let ids = self.ids();
        if self.inner.failover.is_some() {
            // Other hosts carry on: hand the sessions off instead of ending them.
            tracing::info!(sessions = ids.len(), "handing off all sessions");
            join_all(ids.iter().map(|id| self.hand_off(id))).await;
        } else {
            tracing::info!(sessions = ids.len(), "closing all sessions");
            join_all(ids.iter().map(|id| self.remove(id))).await;
        }
    }
}
