//! The set of live sessions: create, look up, remove, reap idle ones, shut down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::agent::{AgentClientFactory, AgentContext, AgentError, SessionConfig};
use crate::event_log::{EventLog, DEFAULT_MAX_SIZE};
use crate::models::{EventKind, SessionReadyData};
use crate::permission::{PermissionHandle, PermissionRouter};
use crate::session::{Session, SessionOptions, SessionParts, DEFAULT_INBOUND_CAPACITY};
use crate::store::SessionStore;

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
    /// Pending user messages per session (default 128).
    pub inbound_capacity: usize,
    /// How long the agent factory may take before create fails (default 60 s).
    pub start_timeout: Duration,
    /// How long closing waits for the agent to disconnect (default 10 s).
    pub disconnect_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            reap_interval: None,
            max_sessions: None,
            ring_size: DEFAULT_MAX_SIZE,
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
            start_timeout: Duration::from_secs(60),
            disconnect_timeout: Duration::from_secs(10),
        }
    }
}

impl RegistryConfig {
    fn effective_reap_interval(&self) -> Duration {
        self.reap_interval.unwrap_or_else(|| {
            (self.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(30))
        })
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The session cap is reached (HTTP 503 + `Retry-After`).
    #[error("Session limit reached ({0} sessions); retry later")]
    AtCapacity(usize),
    /// The server is shutting down (HTTP 503).
    #[error("Server is shutting down")]
    ShuttingDown,
    /// The agent could not be started.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

struct Inner {
    factory: Arc<dyn AgentClientFactory>,
    store: Option<Arc<dyn SessionStore>>,
    config: RegistryConfig,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    /// Live sessions plus creations in flight (for the cap).
    reserved: AtomicUsize,
    shutting_down: AtomicBool,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn forget(&self, id: &str) -> Option<Arc<Session>> {
        let removed = self.sessions.write().remove(id);
        if removed.is_some() {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
        }
        removed
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
        Self {
            inner: Arc::new(Inner {
                factory,
                store,
                config,
                sessions: RwLock::new(HashMap::new()),
                reserved: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                reaper: Mutex::new(None),
            }),
        }
    }

    /// The registry's settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.inner.sessions.read().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids of the live sessions.
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

    async fn start_session(&self, config: SessionConfig) -> Result<Arc<Session>, CreateError> {
        let inner = &self.inner;
        let id = uuid::Uuid::new_v4().to_string();
        let log = Arc::new(EventLog::new(inner.config.ring_size));
        log.append(EventKind::SessionReady, &SessionReadyData::new(&id))
            .map_err(|e| AgentError::StartFailed(e.to_string()))?;
        let router = Arc::new(PermissionRouter::new());
        let (flush_tx, flush_rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = AgentContext {
            session_id: id.clone(),
            config,
            permissions: PermissionHandle::with_flush(
                Arc::clone(&log),
                Arc::clone(&router),
                flush_tx,
            ),
            store: inner.store.clone(),
        };
        let connection =
            match tokio::time::timeout(inner.config.start_timeout, inner.factory.create(ctx)).await
            {
                Ok(result) => result?,
                Err(_) => {
                    return Err(AgentError::StartFailed(format!(
                        "the agent did not start within {:?}",
                        inner.config.start_timeout
                    ))
                    .into())
                }
            };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let session = Session::start(
            SessionParts {
                id: id.clone(),
                log,
                router,
                connection,
                flushes: flush_rx,
            },
            SessionOptions {
                inbound_capacity: inner.config.inbound_capacity,
                disconnect_timeout: inner.config.disconnect_timeout,
            },
            Box::new(move |id| {
                if let Some(inner) = weak.upgrade() {
                    inner.forget(id);
                }
            }),
        );
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

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.sessions.read().get(id).cloned()
    }

    /// Removes and closes a session (its streams end with `done`). Returns whether it existed.
    pub async fn remove(&self, id: &str) -> bool {
        match self.inner.forget(id) {
            Some(session) => {
                session.close().await;
                true
            }
            None => false,
        }
    }

    /// Starts the idle reaper (idempotent). Needs a Tokio runtime.
    pub fn start_reaper(&self) {
        let mut slot = self.inner.reaper.lock();
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.effective_reap_interval();
        *slot = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                SessionRegistry { inner }.reap_idle().await;
            }
        }));
    }

    /// Evicts every session idle for longer than the idle timeout with no live subscriber.
    /// Returns how many were evicted.
    pub async fn reap_idle(&self) -> usize {
        let timeout = self.inner.config.idle_timeout;
        let mut stale = Vec::new();
        for session in self.inner.sessions.read().values() {
            if session.idle_for() < timeout {
                continue;
            }
            if session.subscriber_count() == 0 {
                stale.push(session.id().to_owned());
            } else {
                // Idle but watched: make sure the watchers are still there.
                session.probe_subscribers();
            }
        }
        for id in &stale {
            tracing::info!(session_id = %id, "evicting idle session");
        }
        join_all(stale.iter().map(|id| self.remove(id))).await;
        stale.len()
    }

    /// Stops the reaper and closes every session; new creates are refused.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        if let Some(reaper) = self.inner.reaper.lock().take() {
            reaper.abort();
        }
        let ids = self.ids();
        tracing::info!(sessions = ids.len(), "closing all sessions");
        join_all(ids.iter().map(|id| self.remove(id))).await;
    }
}
