//! Transcript stores: where an agent mirrors its conversation so any host can resume it.
//!
//! The contract follows the official Agent SDK's `SessionStore` (see
//! `docs/claude-cli-protocol.md` §5.6): `append` and `load` are required; `list_sessions`,
//! `list_session_summaries`, `delete` and `list_subkeys` are optional — their default bodies
//! return [`StoreError::Unsupported`], and [`SessionStore::capabilities`] lets callers probe
//! without calling.

#[cfg(any(test, feature = "testing"))]
mod conformance;
mod memory;
mod summary;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(any(test, feature = "testing"))]
pub use conformance::{run_session_store_conformance, ConformanceFailure};
pub use memory::InMemorySessionStore;
pub use summary::fold_session_summary;

/// Identifies one transcript: a session's main transcript, or a subagent's (`subpath`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionKey {
    /// The project (by default the sanitized cwd; a tenant id in multi-tenant setups).
    pub project_key: String,
    /// The CLI session id.
    pub session_id: String,
    /// `subagents/agent-<id>` for subagent transcripts; `None` for the main one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

impl SessionKey {
    /// The main transcript of a session.
    pub fn main(project_key: impl Into<String>, session_id: impl Into<String>) -> Self {
        Self {
            project_key: project_key.into(),
            session_id: session_id.into(),
            subpath: None,
        }
    }

    /// The same session with a subpath.
    pub fn with_subpath(&self, subpath: impl Into<String>) -> Self {
        Self {
            subpath: Some(subpath.into()),
            ..self.clone()
        }
    }

    /// Whether this is a main transcript key.
    pub fn is_main(&self) -> bool {
        self.subpath.is_none()
    }
}

/// A session in [`SessionStore::list_sessions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionListing {
    /// Session id.
    pub session_id: String,
    /// Last write, epoch milliseconds.
    pub mtime: i64,
}

/// A session summary sidecar (see [`fold_session_summary`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Session id.
    pub session_id: String,
    /// Write time, epoch ms, on the same clock as [`SessionListing::mtime`].
    pub mtime: i64,
    /// Opaque folded data; stores persist it verbatim.
    pub data: Map<String, Value>,
}

/// Which optional methods a store implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCapabilities {
    /// `list_sessions`.
    pub list_sessions: bool,
    /// `list_session_summaries`.
    pub list_session_summaries: bool,
    /// `delete`.
    pub delete: bool,
    /// `list_subkeys`.
    pub list_subkeys: bool,
}

impl StoreCapabilities {
    /// Every optional method.
    pub const ALL: Self = Self {
        list_sessions: true,
        list_session_summaries: true,
        delete: true,
        list_subkeys: true,
    };
}

/// Store failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store does not implement this optional method.
    #[error("session store does not support {0}")]
    Unsupported(&'static str),
    /// The backend failed (retryable by the caller).
    #[error("session store backend error: {0}")]
    Backend(String),
    /// The backend did not answer in time (the write may still land).
    #[error("session store timed out")]
    Timeout,
    /// The key is not acceptable to this store.
    #[error("invalid session key: {0}")]
    InvalidKey(String),
}

/// A transcript store. Object-safe: used as `Arc<dyn SessionStore>`.
///
/// Contract: `append` persists entries in call order (within a process) and treats an entry's
/// string `uuid` as an idempotency key (retries may overlap a partial write; uuid-less entries
/// are never deduplicated); `load` returns entries deep-equal to what was stored, in order, and
/// `None` for a key never written. `mtime`s are epoch milliseconds. Deleting a main key removes
/// its subkeys and summary; deleting a never-written key is not an error.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Appends entries to a transcript (an empty list is a no-op that may create the key).
    async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError>;

    /// Loads a transcript; `None` if never written.
    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError>;

    /// Which optional methods are implemented.
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::default()
    }

    /// Main transcripts of a project, with their last write time. Optional.
    async fn list_sessions(&self, _project_key: &str) -> Result<Vec<SessionListing>, StoreError> {
        Err(StoreError::Unsupported("list_sessions"))
    }

    /// Summary sidecars of a project's sessions. Optional.
    async fn list_session_summaries(
        &self,
        _project_key: &str,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        Err(StoreError::Unsupported("list_session_summaries"))
    }

    /// Deletes a transcript (a main key cascades to its subkeys). Optional.
    async fn delete(&self, _key: &SessionKey) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("delete"))
    }

    /// Subpaths stored under a session (`key` is its main key). Optional.
    async fn list_subkeys(&self, _key: &SessionKey) -> Result<Vec<String>, StoreError> {
        Err(StoreError::Unsupported("list_subkeys"))
    }
}
