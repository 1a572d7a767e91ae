//! Session persistence for cross-host failover: what a session needs to outlive its host.
//!
//! A [`SessionPersistence`] keeps, per session, its [`SessionRecord`] (settings and the agent's
//! own session id), its event log (seq, event name, data JSON) and an ownership **lease**: only
//! the host holding an unexpired lease runs the session's agent. Any host that is asked for a
//! session it does not hold loads the record and the tail of the log from here, takes the lease
//! and resumes the agent, so a client's `Last-Event-ID` continues where it left off.
//!
//! Implementations: [`InMemoryPersistence`] (one process; tests and single-host setups) and the
//! Postgres one in `agent-webkit-postgres`. `run_persistence_conformance` (with the `testing` feature) checks any of them.

mod activity;
#[cfg(any(test, feature = "testing"))]
mod conformance;
mod cost;
mod memory;
mod writer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::agent::SessionConfig;
use crate::event_log::StoredEvent;

pub(crate) use activity::ActivityCell;
pub use activity::{SessionActivity, UsageTotals};
#[cfg(any(test, feature = "testing"))]
pub use conformance::{run_persistence_conformance, PersistenceFailure};
pub use cost::{CostTotals, ModelCost};
pub use memory::InMemoryPersistence;
pub(crate) use writer::spawn_event_writer;

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
    /// The principal that owns the session (see [`SessionConfig::owner`]); `None` under a
    /// shared token or no auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The client's MCP servers from the create request (see [`SessionConfig::mcp_servers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<serde_json::Map<String, serde_json::Value>>,
    /// File checkpointing asked at create (see [`SessionConfig::file_checkpointing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_checkpointing: Option<bool>,
    /// For a fork: the user messages it inherited from its source (see
    /// [`ForkFrom::anchors`](crate::agent::rewind::ForkFrom::anchors)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited_anchors: Vec<String>,
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
            owner: config.owner.clone(),
            mcp_servers: config.mcp_servers.clone(),
            file_checkpointing: config.file_checkpointing,
            inherited_anchors: config
                .fork
                .as_ref()
                .map(|fork| fork.anchors.clone())
                .unwrap_or_default(),
        }
    }

    /// The session settings to resume with.
    pub fn config(&self) -> SessionConfig {
        SessionConfig {
            model: self.model.clone(),
            permission_mode: self.permission_mode.clone(),
            cwd: self.cwd.as_ref().map(Into::into),
            // Not persisted: a session taken over by another host streams that host's default.
            tool_input_deltas: None,
            owner: self.owner.clone(),
            mcp_servers: self.mcp_servers.clone(),
            // Set again by the registry from its attachment root when the agent starts.
            file_checkpointing: self.file_checkpointing,
            fork: None,
            ..SessionConfig::default()
        }
    }
}

/// Which persisted sessions [`SessionPersistence::list`] returns: newest activity first
/// (`last_activity_ms` descending, then `session_id` descending), strictly after `before`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only sessions whose [`SessionRecord::owner`] is this (`None`: every session).
    pub owner: Option<String>,
    /// Keyset cursor: only sessions sorting after `(last_activity_ms, session_id)`, i.e. with
    /// an older activity, or the same one and a smaller id.
    pub before: Option<(i64, String)>,
    /// Most sessions returned.
    pub limit: usize,
    /// Ended sessions (see [`SessionActivity::ended`]) whose last activity is older than this
    /// (epoch ms) are left out.
    pub ended_since_ms: i64,
}

/// One session as [`SessionPersistence::list`] and [`SessionPersistence::get`] return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSession {
    /// Its record.
    pub record: SessionRecord,
    /// Its activity as last written with an event batch ([`SessionActivity::created`] before
    /// the first).
    pub activity: SessionActivity,
    /// The highest seq stored (0 before the first batch).
    pub last_seq: u64,
    /// The host whose lease is live (unexpired), if any.
    pub lease_holder: Option<String>,
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

    /// Appends events (in seq order; a seq already stored is ignored, so retries are safe)
    /// and, in the same write, replaces the session's [`SessionActivity`] when one is given.
    /// Appending to an unknown or deleted session is a no-op.
    async fn append_batch(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        activity: Option<&SessionActivity>,
    ) -> Result<(), PersistError>;

    /// [`append_batch`](Self::append_batch) without activity.
    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), PersistError> {
        self.append_batch(session_id, events, None).await
    }

    /// One page of sessions, newest activity first (see [`ListQuery`]).
    async fn list(&self, query: &ListQuery) -> Result<Vec<ListedSession>, PersistError>;

    /// One session as [`list`](Self::list) shows it, or `None` when it does not exist.
    async fn get(&self, session_id: &str) -> Result<Option<ListedSession>, PersistError>;

    /// The record and the last `tail` events (oldest first), or `None` when the session does
    /// not exist (never created, or deleted).
    async fn load(
        &self,
        session_id: &str,
        tail: usize,
    ) -> Result<Option<(SessionRecord, Vec<StoredEvent>)>, PersistError>;

    /// Up to `limit` stored events with a seq greater than `after_seq`, oldest first (empty
    /// when there are none, or no such session). A session taken over reads the older part
    /// of its ring from here, on demand (see [`load`](Self::load), which restores only its
    /// tail). The default loads the whole log through `load`: stores override it with a
    /// range read.
    async fn load_events(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, PersistError> {
        Ok(match self.load(session_id, usize::MAX).await? {
            Some((_, events)) => events
                .into_iter()
                .filter(|e| e.seq > after_seq)
                .take(limit)
                .collect(),
            None => Vec::new(),
        })
    }

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

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn lease_end(lease: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}
