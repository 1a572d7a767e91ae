//! Session persistence for cross-host failover: what a session needs to outlive its host.
//!
//! A [`SessionPersistence`] keeps, per session, its [`SessionRecord`] (settings and the agent's
//! own session id), its event log (seq, event name, data JSON) and an ownership **lease**: only
//! the host holding an unexpired lease runs the session's agent. Any host that is asked for a
//! session it does not hold loads the record and the tail of the log from here, takes the lease
//! and resumes the agent, so a client's `Last-Event-ID` continues where it left off.
//!
//! Implementations: [`InMemoryPersistence`] (one process; tests and single-host setups) and the
//! Postgres one in `agent-webkit-postgres`. [`run_persistence_conformance`] checks any of them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::agent::SessionConfig;

/// What a session needs to be resumed on another host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The server's session id.
    pub session_id: String,
    /// The agent's own session id (the Claude CLI's `--session-id`, resumed with `--resume`).
    pub agent_session_id: String,
    /// Model from the create request.
    pub model: Option<String>,
    /// Permission mode from the create request.
    pub permission_mode: Option<String>,
    /// Working directory (already validated when the session was created).
    pub cwd: Option<String>,
    /// Creation time, epoch ms.
    pub created_at_ms: i64,
}

impl SessionRecord {
    /// A record for a new session.
    pub fn new(session_id: &str, agent_session_id: &str, config: &SessionConfig) -> Self {
        Self {
            session_id: session_id.to_owned(),
            agent_session_id: agent_session_id.to_owned(),
            model: config.model.clone(),
            permission_mode: config.permission_mode.clone(),
            cwd: config
                .cwd
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            created_at_ms: now_ms(),
        }
    }

    /// The session settings to resume with.
    pub fn config(&self) -> SessionConfig {
        SessionConfig {
            model: self.model.clone(),
            permission_mode: self.permission_mode.clone(),
            cwd: self.cwd.as_ref().map(Into::into),
        }
    }
}

/// One persisted event, exactly as it was sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Sequence number (from 1).
    pub seq: u64,
    /// Event name (`message_delta`, ...).
    pub event: String,
    /// Compact data JSON.
    pub data: String,
}

/// The outcome of [`SessionPersistence::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This owner now holds the lease (it was free, expired, or already ours).
    Acquired,
    /// Another live owner holds it until `expires_at_ms`.
    HeldBy {
        /// The holder.
        owner: String,
        /// When its lease expires, epoch ms.
        expires_at_ms: i64,
    },
    /// No such session (never created, or deleted).
    Gone,
}

/// Persistence failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The backend failed (connection lost, query failed...). Callers retry.
    #[error("session persistence backend error: {0}")]
    Backend(String),
    /// A session with this id already exists.
    #[error("session {0} already exists")]
    Exists(String),
}

/// Durable session state shared by every host (see the module docs). All methods must be safe
/// to call concurrently from several hosts.
#[async_trait]
pub trait SessionPersistence: Send + Sync + 'static {
    /// Stores a new session owned by `owner` for `lease`.
    async fn create(
        &self,
        record: &SessionRecord,
        owner: &str,
        lease: Duration,
    ) -> Result<(), PersistError>;

    /// Appends events (in seq order; a seq already stored is ignored, so retries are safe).
    /// Appending to an unknown or deleted session is a no-op.
    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), PersistError>;

    /// The record and the last `tail` events (oldest first), or `None` when the session does
    /// not exist (never created, or deleted).
    async fn load(
        &self,
        session_id: &str,
        tail: usize,
    ) -> Result<Option<(SessionRecord, Vec<StoredEvent>)>, PersistError>;

    /// Takes the lease for `owner` if it is free, expired or already `owner`'s.
    async fn acquire(
        &self,
        session_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Lease, PersistError>;

    /// Extends `owner`'s leases; returns the ids among `session_ids` it no longer holds
    /// (deleted, or taken over after its lease expired).
    async fn renew(
        &self,
        owner: &str,
        session_ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, PersistError>;

    /// Gives up `owner`'s lease (another host may take over at once).
    async fn release(&self, session_id: &str, owner: &str) -> Result<(), PersistError>;

    /// Deletes the session everywhere (idempotent).
    async fn delete(&self, session_id: &str) -> Result<(), PersistError>;
}

/// Most events written in one `append_events` call.
pub const WRITE_BATCH: usize = 256;
/// How long the writer keeps retrying a failed write before it reports the store as down.
pub const WRITE_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Persists a session's events as the log appends them: whatever has accumulated while the
/// previous write was in flight goes in the next one (so batches grow with load and an idle
/// session's event is written at once). A failed write is retried with backoff, in order, for
/// [`WRITE_RETRY_BUDGET`]; past it the batch is reported as lost with an `error` event
/// (`code: "persistence_failed"`) and later events still go through. Ends (after writing
/// everything) when the log closes.
pub fn spawn_event_writer(
    persistence: std::sync::Arc<dyn SessionPersistence>,
    session_id: String,
    mut events: tokio::sync::mpsc::UnboundedReceiver<crate::event_log::LoggedEvent>,
    log: std::sync::Weak<crate::event_log::EventLog>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch: Vec<StoredEvent> = Vec::with_capacity(WRITE_BATCH);
        while let Some(first) = events.recv().await {
            batch.push(first.to_stored());
            while batch.len() < WRITE_BATCH {
                match events.try_recv() {
                    Ok(event) => batch.push(event.to_stored()),
                    Err(_) => break,
                }
            }
            let started = tokio::time::Instant::now();
            let mut delay = Duration::from_millis(50);
            let last_seq = batch[batch.len() - 1].seq;
            loop {
                match persistence.append_events(&session_id, &batch).await {
                    Ok(()) => {
                        if let Some(log) = log.upgrade() {
                            log.mark_durable(last_seq);
                        }
                        break;
                    }
                    Err(err) if started.elapsed() < WRITE_RETRY_BUDGET => {
                        tracing::warn!(session_id = %session_id, error = %err, first_seq = batch[0].seq, "persisting events failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                    Err(err) => {
                        tracing::error!(session_id = %session_id, error = %err, first_seq = batch[0].seq, count = batch.len(), "persisting events failed past the retry budget");
                        if let Some(log) = log.upgrade() {
                            // Do not hold the stream back forever: deliver them anyway.
                            log.mark_durable(last_seq);
                            let data = crate::models::ErrorData::new(
                                "persistence_failed",
                                format!(
                                    "Events {}..={} could not be saved for failover: {err}",
                                    batch[0].seq,
                                    batch[batch.len() - 1].seq
                                ),
                            );
                            let _ = log.append(crate::models::EventKind::Error, &data);
                        }
                        break;
                    }
                }
            }
            batch.clear();
        }
    })
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn lease_end(lease: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

struct Entry {
    record: SessionRecord,
    events: Vec<StoredEvent>,
    owner: Option<String>,
    expires_at_ms: i64,
}

/// [`SessionPersistence`] in process memory: shared by every registry of one process (tests
/// run two "hosts" over one instance). Keeps at most `max_events` per session.
#[derive(Default)]
pub struct InMemoryPersistence {
    sessions: Mutex<HashMap<String, Entry>>,
    max_events: usize,
}

impl std::fmt::Debug for InMemoryPersistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryPersistence")
            .field("sessions", &self.sessions.lock().len())
            .finish()
    }
}

impl InMemoryPersistence {
    /// Keeps at most `max_events` events per session (older ones are dropped).
    pub fn new(max_events: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max_events: max_events.max(1),
        }
    }
}

#[async_trait]
impl SessionPersistence for InMemoryPersistence {
    async fn create(
        &self,
        record: &SessionRecord,
        owner: &str,
        lease: Duration,
    ) -> Result<(), PersistError> {
        let mut sessions = self.sessions.lock();
        if sessions.contains_key(&record.session_id) {
            return Err(PersistError::Exists(record.session_id.clone()));
        }
        sessions.insert(
            record.session_id.clone(),
            Entry {
                record: record.clone(),
                events: Vec::new(),
                owner: Some(owner.to_owned()),
                expires_at_ms: lease_end(lease),
            },
        );
        Ok(())
    }

    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), PersistError> {
        let mut sessions = self.sessions.lock();
        let Some(entry) = sessions.get_mut(session_id) else {
            return Ok(());
        };
        for event in events {
            if entry
                .events
                .last()
                .is_some_and(|last| last.seq >= event.seq)
            {
                continue;
            }
            entry.events.push(event.clone());
        }
        let max = if self.max_events == 0 {
            usize::MAX
        } else {
            self.max_events
        };
        if entry.events.len() > max {
            let excess = entry.events.len() - max;
            entry.events.drain(..excess);
        }
        Ok(())
    }

    async fn load(
        &self,
        session_id: &str,
        tail: usize,
    ) -> Result<Option<(SessionRecord, Vec<StoredEvent>)>, PersistError> {
        let sessions = self.sessions.lock();
        Ok(sessions.get(session_id).map(|entry| {
            let skip = entry.events.len().saturating_sub(tail);
            (entry.record.clone(), entry.events[skip..].to_vec())
        }))
    }

    async fn acquire(
        &self,
        session_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Lease, PersistError> {
        let mut sessions = self.sessions.lock();
        let Some(entry) = sessions.get_mut(session_id) else {
            return Ok(Lease::Gone);
        };
        match &entry.owner {
            Some(holder) if holder != owner && entry.expires_at_ms > now_ms() => {
                Ok(Lease::HeldBy {
                    owner: holder.clone(),
                    expires_at_ms: entry.expires_at_ms,
                })
            }
            _ => {
                entry.owner = Some(owner.to_owned());
                entry.expires_at_ms = lease_end(lease);
                Ok(Lease::Acquired)
            }
        }
    }

    async fn renew(
        &self,
        owner: &str,
        session_ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, PersistError> {
        let mut sessions = self.sessions.lock();
        let mut lost = Vec::new();
        for id in session_ids {
            match sessions.get_mut(id) {
                Some(entry) if entry.owner.as_deref() == Some(owner) => {
                    entry.expires_at_ms = lease_end(lease);
                }
                _ => lost.push(id.clone()),
            }
        }
        Ok(lost)
    }

    async fn release(&self, session_id: &str, owner: &str) -> Result<(), PersistError> {
        if let Some(entry) = self.sessions.lock().get_mut(session_id) {
            if entry.owner.as_deref() == Some(owner) {
                entry.owner = None;
                entry.expires_at_ms = 0;
            }
        }
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), PersistError> {
        self.sessions.lock().remove(session_id);
        Ok(())
    }
}

/// The first contract a persistence implementation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("persistence contract {contract:?} failed: {reason}")]
pub struct PersistenceFailure {
    /// Contract name.
    pub contract: &'static str,
    /// What went wrong.
    pub reason: String,
}

fn check(
    contract: &'static str,
    ok: bool,
    reason: impl Into<String>,
) -> Result<(), PersistenceFailure> {
    if ok {
        Ok(())
    } else {
        Err(PersistenceFailure {
            contract,
            reason: reason.into(),
        })
    }
}

fn backend(contract: &'static str) -> impl Fn(PersistError) -> PersistenceFailure {
    move |err| PersistenceFailure {
        contract,
        reason: format!("backend error: {err}"),
    }
}

fn ev(seq: u64) -> StoredEvent {
    StoredEvent {
        seq,
        event: "message_delta".into(),
        data: format!("{{\"n\":{seq}}}"),
    }
}

/// Checks the [`SessionPersistence`] contracts against `store` (ids are made unique with
/// `prefix`, so a shared database can be used). Returns how many contracts ran.
pub async fn run_persistence_conformance(
    store: &dyn SessionPersistence,
    prefix: &str,
) -> Result<usize, PersistenceFailure> {
    let lease = Duration::from_secs(30);
    let config = SessionConfig {
        model: Some("m".into()),
        permission_mode: Some("plan".into()),
        cwd: Some("/w".into()),
    };

    let c = "create_then_load";
    let id = format!("{prefix}-a");
    let record = SessionRecord::new(&id, "agent-a", &config);
    store
        .create(&record, "host-1", lease)
        .await
        .map_err(backend(c))?;
    let loaded = store.load(&id, 10).await.map_err(backend(c))?;
    check(
        c,
        loaded == Some((record.clone(), Vec::new())),
        format!("{loaded:?}"),
    )?;
    check(c, record.config() == config, "config round trip")?;
    let again = store.create(&record, "host-1", lease).await;
    check(
        c,
        matches!(again, Err(PersistError::Exists(_))),
        format!("{again:?}"),
    )?;

    let c = "events_in_order_idempotent_tail";
    let batch: Vec<StoredEvent> = (1..=5).map(ev).collect();
    store
        .append_events(&id, &batch[..3])
        .await
        .map_err(backend(c))?;
    store
        .append_events(&id, &batch[1..])
        .await
        .map_err(backend(c))?;
    let (_, events) = store
        .load(&id, 10)
        .await
        .map_err(backend(c))?
        .unwrap_or((record.clone(), Vec::new()));
    check(c, events == batch, format!("{events:?}"))?;
    let (_, tail) = store
        .load(&id, 2)
        .await
        .map_err(backend(c))?
        .unwrap_or((record.clone(), Vec::new()));
    check(c, tail == batch[3..], format!("tail: {tail:?}"))?;

    let c = "lease_exclusive_until_released";
    let held = store
        .acquire(&id, "host-2", lease)
        .await
        .map_err(backend(c))?;
    check(
        c,
        matches!(&held, Lease::HeldBy { owner, .. } if owner == "host-1"),
        format!("{held:?}"),
    )?;
    let mine = store
        .acquire(&id, "host-1", lease)
        .await
        .map_err(backend(c))?;
    check(c, mine == Lease::Acquired, format!("{mine:?}"))?;
    store.release(&id, "host-2").await.map_err(backend(c))?;
    let still = store
        .acquire(&id, "host-2", lease)
        .await
        .map_err(backend(c))?;
    check(
        c,
        matches!(still, Lease::HeldBy { .. }),
        "a non-owner cannot release",
    )?;
    store.release(&id, "host-1").await.map_err(backend(c))?;
    let taken = store
        .acquire(&id, "host-2", lease)
        .await
        .map_err(backend(c))?;
    check(c, taken == Lease::Acquired, format!("{taken:?}"))?;

    let c = "expired_lease_is_taken_over_and_renew_reports_loss";
    let short = Duration::from_millis(50);
    let id2 = format!("{prefix}-b");
    store
        .create(
            &SessionRecord::new(&id2, "agent-b", &config),
            "host-1",
            short,
        )
        .await
        .map_err(backend(c))?;
    let lost = store
        .renew("host-1", std::slice::from_ref(&id2), short)
        .await
        .map_err(backend(c))?;
    check(c, lost.is_empty(), format!("{lost:?}"))?;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let taken = store
        .acquire(&id2, "host-2", lease)
        .await
        .map_err(backend(c))?;
    check(c, taken == Lease::Acquired, format!("{taken:?}"))?;
    let lost = store
        .renew("host-1", std::slice::from_ref(&id2), lease)
        .await
        .map_err(backend(c))?;
    check(c, lost == vec![id2.clone()], format!("{lost:?}"))?;

    let c = "delete_is_everywhere_and_idempotent";
    store.delete(&id).await.map_err(backend(c))?;
    store.delete(&id).await.map_err(backend(c))?;
    check(
        c,
        store.load(&id, 10).await.map_err(backend(c))?.is_none(),
        "still loads",
    )?;
    let gone = store
        .acquire(&id, "host-1", lease)
        .await
        .map_err(backend(c))?;
    check(c, gone == Lease::Gone, format!("{gone:?}"))?;
    store
        .append_events(&id, &[ev(9)])
        .await
        .map_err(backend(c))?;
    check(
        c,
        store.load(&id, 10).await.map_err(backend(c))?.is_none(),
        "append resurrected it",
    )?;
    let lost = store
        .renew("host-2", std::slice::from_ref(&id), lease)
        .await
        .map_err(backend(c))?;
    check(c, lost == vec![id], format!("{lost:?}"))?;
    store.delete(&id2).await.map_err(backend(c))?;
    Ok(5)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn in_memory_passes_the_contracts() {
        let store = InMemoryPersistence::new(100);
        assert_eq!(run_persistence_conformance(&store, "t").await.unwrap(), 5);
    }
}
