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
use crate::models::{ErrorData, EventKind, SessionReadyData};
use crate::permission::{PermissionHandle, PermissionRouter};
use crate::persist::{spawn_event_writer, Lease, SessionPersistence, SessionRecord, StoredEvent};
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
}

/// Fewest uncompressed events worth compressing (a smaller tail stays as it is).
const COMPACT_MIN_EVENTS: usize = 32;

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            reap_interval: None,
            max_sessions: None,
            ring_size: DEFAULT_MAX_SIZE,
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
            inbound_max_bytes: crate::limits::DEFAULT_INBOUND_MAX_BYTES,
            start_timeout: Duration::from_secs(60),
            disconnect_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(10),
            compact_after: Some(Duration::from_secs(1)),
        }
    }
}

impl RegistryConfig {
    fn effective_reap_interval(&self) -> Duration {
        self.reap_interval.unwrap_or_else(|| {
            (self.idle_timeout / 4)
                .min(self.lease / 3)
                .clamp(Duration::from_millis(10), Duration::from_secs(30))
        })
    }
}

/// Whether the log ends inside a turn (events after the last `result`, other than
/// `session_ready`), and the prompts asked in that unfinished turn.
fn unfinished_turn(events: &[StoredEvent]) -> (bool, Vec<String>) {
    let start = events
        .iter()
        .rposition(|e| e.event == EventKind::Result.as_str())
        .map_or(0, |i| i + 1);
    let tail = &events[start..];
    let interrupted = tail
        .iter()
        .any(|e| e.event != EventKind::SessionReady.as_str());
    let prompts = tail
        .iter()
        .filter(|e| {
            e.event == EventKind::PermissionRequest.as_str()
                || e.event == EventKind::AskUserQuestion.as_str()
                || e.event == EventKind::HookDecisionRequest.as_str()
        })
        .filter_map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data)
                .ok()?
                .get("correlation_id")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    (interrupted, prompts)
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
    /// The session could not be saved for failover (HTTP 503).
    #[error("Session persistence unavailable: {0}")]
    Persistence(String),
}

/// Failover settings: where sessions are persisted and who this host is.
#[derive(Clone)]
pub struct Failover {
    /// Shared by every host.
    pub persistence: Arc<dyn SessionPersistence>,
    /// This host's identity in leases (unique per process).
    pub host_id: String,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("host_id", &self.host_id)
            .finish_non_exhaustive()
    }
}

/// Why a session this host does not hold could not be taken over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// Another live host owns it (HTTP 503 + `Retry-After`).
    #[error("Session is active on another host ({owner}); retry in {retry_after_secs} s")]
    HeldElsewhere {
        /// The owning host.
        owner: String,
        /// Seconds until its lease expires.
        retry_after_secs: u64,
    },
    /// The persistence backend failed (HTTP 503).
    #[error("Session persistence unavailable: {0}")]
    Persistence(String),
    /// Resuming the agent failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// This host's policy refuses the stored session (cwd outside its roots, or a permission
    /// mode or model it does not allow); details in the log.
    #[error("This host may not run this session: its working directory, permission mode or model is not allowed here")]
    Refused(String),
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
    /// Single flight for take-overs.
    resuming: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
        Self {
            inner: Arc::new(Inner {
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
        if let Some(failover) = &inner.failover {
            let record = SessionRecord::new(&id, &id, &config);
            failover
                .persistence
                .create(&record, &failover.host_id, inner.config.lease)
                .await
                .map_err(|e| CreateError::Persistence(e.to_string()))?;
            self.attach_writer(&id, &log, failover);
        }
        log.append(EventKind::SessionReady, &SessionReadyData::new(&id))
            .map_err(|e| AgentError::StartFailed(e.to_string()))?;
        match self.launch(&id, log, config, None).await {
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

    /// Waits until a session's event writer has persisted everything (its log is closed).
    async fn finish_writer(&self, id: &str) {
        let writer = self.inner.writers.lock().remove(id);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }

    fn attach_writer(&self, id: &str, log: &Arc<EventLog>, failover: &Failover) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        log.set_sink(tx);
        let writer = spawn_event_writer(
            Arc::clone(&failover.persistence),
            id.to_owned(),
            rx,
            Arc::downgrade(log),
        );
        self.inner.writers.lock().insert(id.to_owned(), writer);
    }

    /// Starts the agent and the session over `log` and registers it.
    async fn launch(
        &self,
        id: &str,
        log: Arc<EventLog>,
        config: SessionConfig,
        resume: Option<String>,
    ) -> Result<Arc<Session>, CreateError> {
        let inner = &self.inner;
        let id = id.to_owned();
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
            resume,
        };
        let connection =
            match tokio::time::timeout(inner.config.start_timeout, inner.factory.create(ctx)).await
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
                flushes: flush_rx,
            },
            SessionOptions {
                inbound_capacity: inner.config.inbound_capacity,
                inbound_max_bytes: inner.config.inbound_max_bytes,
                disconnect_timeout: inner.config.disconnect_timeout,
            },
            Box::new(move |id| {
                if let Some(inner) = weak.upgrade() {
                    inner.forget(id);
                    // The writer finishes on its own once the log closes.
                    inner.writers.lock().remove(id);
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

    /// The session with this id: the live one here, or — with failover — the one another host
    /// held, taken over now (its log restored so `Last-Event-ID` continues, its agent resumed).
    /// `Ok(None)`: no such session anywhere.
    pub async fn get_or_resume(&self, id: &str) -> Result<Option<Arc<Session>>, ResumeError> {
        if let Some(session) = self.get(id) {
            return Ok(Some(session));
        }
        let Some(failover) = self.inner.failover.clone() else {
            return Ok(None);
        };
        if self.inner.shutting_down.load(Ordering::Acquire) || uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let gate = Arc::clone(self.inner.resuming.lock().entry(id.to_owned()).or_default());
        let outcome = {
            let _turn = gate.lock().await;
            match self.get(id) {
                Some(session) => Ok(Some(session)),
                None => self.take_over(id, &failover).await,
            }
        };
        let mut resuming = self.inner.resuming.lock();
        if resuming.get(id).is_some_and(|g| Arc::ptr_eq(g, &gate)) && Arc::strong_count(&gate) <= 2
        {
            resuming.remove(id);
        }
        outcome
    }

    async fn take_over(
        &self,
        id: &str,
        failover: &Failover,
    ) -> Result<Option<Arc<Session>>, ResumeError> {
        let inner = &self.inner;
        let persistence = &failover.persistence;
        let backend = |e: crate::persist::PersistError| ResumeError::Persistence(e.to_string());
        let Some((record, events)) = persistence
            .load(id, inner.config.ring_size)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        if events
            .last()
            .is_some_and(|e| e.event == EventKind::Done.as_str())
        {
            // It ended (agent exit) on its host: gone for good.
            let _ = persistence.delete(id).await;
            return Ok(None);
        }
        if let Some(check) = inner.take_over_check.get() {
            check(&record.config()).map_err(ResumeError::Refused)?;
        }
        match persistence
            .acquire(id, &failover.host_id, inner.config.lease)
            .await
            .map_err(backend)?
        {
            Lease::Acquired => {}
            Lease::Gone => return Ok(None),
            Lease::HeldBy {
                owner,
                expires_at_ms,
            } => {
                let left = expires_at_ms.saturating_sub(crate::persist::now_ms());
                return Err(ResumeError::HeldElsewhere {
                    owner,
                    retry_after_secs: u64::try_from(left.max(0))
                        .unwrap_or(0)
                        .div_ceil(1000)
                        .max(1),
                });
            }
        }
        let reserved = inner.reserved.fetch_add(1, Ordering::AcqRel);
        if inner.config.max_sessions.is_some_and(|max| reserved >= max) {
            inner.reserved.fetch_sub(1, Ordering::AcqRel);
            let _ = persistence.release(id, &failover.host_id).await;
            return Err(CreateError::AtCapacity(inner.config.max_sessions.unwrap_or(0)).into());
        }
        let log = Arc::new(EventLog::restore(inner.config.ring_size, &events));
        self.attach_writer(id, &log, failover);
        tracing::info!(session_id = %id, host = %failover.host_id, last_seq = log.last_seq(), "taking over session");
        // The turn that was running on the old host is gone with its agent process: withdraw
        // its prompts and say so, so clients do not wait for what will not come.
        let (interrupted, prompts) = unfinished_turn(&events);
        for correlation_id in prompts {
            let mut data = ErrorData::new(
                "permission_cancelled",
                "the session moved to another host; ask again",
            );
            data.correlation_id = Some(correlation_id);
            let _ = log.append(EventKind::Error, &data);
        }
        if interrupted {
            let _ = log.append(
                EventKind::Error,
                &ErrorData::new(
                    "agent_restarted",
                    "The session moved to another host and its agent was resumed from the saved conversation; the turn in progress was interrupted.",
                ),
            );
        }
        match self
            .launch(id, log, record.config(), Some(record.agent_session_id))
            .await
        {
            Ok(session) => Ok(Some(session)),
            Err(err) => {
                inner.reserved.fetch_sub(1, Ordering::AcqRel);
                self.finish_writer(id).await;
                let _ = persistence.release(id, &failover.host_id).await;
                Err(err.into())
            }
        }
    }

    /// Sets the check a stored session must pass before this host takes it over (once; later
    /// calls are ignored).
    pub fn set_take_over_check(&self, check: TakeOverCheck) {
        let _ = self.inner.take_over_check.set(check);
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.sessions.read().get(id).cloned()
    }

    /// Removes and closes a session (its streams end with `done`); with failover it is deleted
    /// on every host. Returns whether it was live here.
    pub async fn remove(&self, id: &str) -> bool {
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
    }

    /// Stops a session here without ending it: streams end without `done`, its events are
    /// flushed and its lease released, so another host can take it over at once.
    async fn hand_off(&self, id: &str) {
        let Some(session) = self.inner.forget(id) else {
            return;
        };
        session.close_for_handoff().await;
        if let Some(failover) = &self.inner.failover {
            self.finish_writer(id).await;
            if let Err(err) = failover.persistence.release(id, &failover.host_id).await {
                tracing::warn!(session_id = %id, error = %err, "could not release the lease");
            }
        }
    }

    /// Renews this host's leases; sessions it lost (deleted elsewhere, or taken over after a
    /// missed renewal) stop here: deleted ones end with `done`, taken-over ones without.
    pub async fn renew_leases(&self) {
        let Some(failover) = self.inner.failover.clone() else {
            return;
        };
        let ids = self.ids();
        if ids.is_empty() {
            return;
        }
        let lost = match failover
            .persistence
            .renew(&failover.host_id, &ids, self.inner.config.lease)
            .await
        {
            Ok(lost) => lost,
            Err(err) => {
                tracing::warn!(error = %err, "lease renewal failed; retrying next tick");
                return;
            }
        };
        for id in lost {
            let deleted = matches!(failover.persistence.load(&id, 0).await, Ok(None));
            tracing::info!(session_id = %id, deleted, "lease lost");
            let Some(session) = self.inner.forget(&id) else {
                continue;
            };
            if deleted {
                session.close().await;
            } else {
                session.close_for_handoff().await;
            }
            self.inner.writers.lock().remove(&id);
        }
    }

    /// Starts the idle reaper and the ring compactor (idempotent). Needs a Tokio runtime.
    pub fn start_reaper(&self) {
        self.start_compactor();
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
                let registry = SessionRegistry { inner };
                registry.reap_idle().await;
                registry.renew_leases().await;
            }
        }));
    }

    fn start_compactor(&self) {
        let Some(after) = self.inner.config.compact_after else {
            return;
        };
        let mut slot = self.inner.compactor.lock();
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        *slot = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval((after / 2).max(Duration::from_millis(50)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let registry = SessionRegistry { inner };
                registry.compact_quiet_logs().await;
            }
        }));
    }

    /// Compresses the rings of sessions whose event log has been quiet for `compact_after`
    /// (on a blocking thread: deflate is CPU work). Returns how many events were compressed.
    pub async fn compact_quiet_logs(&self) -> usize {
        let Some(after) = self.inner.config.compact_after else {
            return 0;
        };
        let quiet: Vec<Arc<Session>> = self
            .inner
            .sessions
            .read()
            .values()
            .filter(|s| {
                let log = s.event_log();
                log.hot_len() >= COMPACT_MIN_EVENTS && log.quiet_for() >= after
            })
            .cloned()
            .collect();
        if quiet.is_empty() {
            return 0;
        }
        // Deflate is CPU work: spread it over the cores, on blocking threads.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let per = quiet.len().div_ceil(threads.min(quiet.len()));
        let work: Vec<_> = quiet
            .chunks(per)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                tokio::task::spawn_blocking(move || {
                    chunk
                        .iter()
                        .map(|s| {
                            let packed = s.event_log().compact(0, COMPACT_MIN_EVENTS);
                            if packed > 0 {
                                tracing::debug!(session_id = %s.id(), events = packed, "ring compressed");
                            }
                            packed
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        let mut packed = 0;
        for result in join_all(work).await {
            match result {
                Ok(n) => packed += n,
                Err(err) => tracing::error!(error = %err, "ring compaction failed"),
            }
        }
        packed
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
