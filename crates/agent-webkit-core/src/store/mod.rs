//! Transcript stores (temporary stub; replaced by the full module).
use async_trait::async_trait;
use serde_json::Value;
/// Key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// pk
    pub project_key: String,
    /// sid
    pub session_id: String,
    /// sub
    pub subpath: Option<String>,
}
/// Error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// x
    #[error("unsupported {0}")]
    Unsupported(&'static str),
}
/// Store.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// append
    async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError>;
    /// load
    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError>;
}
/// Mem.
#[derive(Default)]
pub struct InMemorySessionStore;
impl InMemorySessionStore {
    /// new
    pub fn new() -> Self {
        Self
    }
}
#[async_trait]
impl SessionStore for InMemorySessionStore {
    async fn append(&self, _key: &SessionKey, _entries: Vec<Value>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn load(&self, _key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        Ok(None)
    }
}
