//! `TimedStore`: a [`SessionStore`] that forwards every call and times transcript appends for
//! the `store_writes` / `store_write_seconds` metrics. [`Api::new`](crate::http::Api::new)
//! wraps the configured store in it.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;

use crate::store::{
    SessionKey, SessionListing, SessionStore, SessionSummary, StoreCapabilities, StoreError,
};

/// Times `append`; forwards everything else unchanged.
pub(crate) struct TimedStore(Arc<dyn SessionStore>);

impl TimedStore {
    /// `store`, timed.
    pub(crate) fn wrap(store: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(Self(store))
    }
}

#[async_trait]
impl SessionStore for TimedStore {
    async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.0.append(key, entries).await;
        super::store_write(started.elapsed(), result.is_ok());
        result
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        self.0.load(key).await
    }

    fn capabilities(&self) -> StoreCapabilities {
        self.0.capabilities()
    }

    async fn list_sessions(&self, project_key: &str) -> Result<Vec<SessionListing>, StoreError> {
        self.0.list_sessions(project_key).await
    }

    async fn list_session_summaries(
        &self,
        project_key: &str,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        self.0.list_session_summaries(project_key).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.0.delete(key).await
    }

    async fn list_subkeys(&self, key: &SessionKey) -> Result<Vec<String>, StoreError> {
        self.0.list_subkeys(key).await
    }
}
