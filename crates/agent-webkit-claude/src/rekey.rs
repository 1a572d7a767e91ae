//! The transcript store seen by a session that took a warm spare: the spare's CLI was started
//! before the session existed, under its own session id, so [`Rekey`] files what it mirrors
//! under the session's id (store key and each entry's `sessionId`). The store then holds
//! exactly what a CLI started with `--session-id=<session id>` would have written, and resume
//! and failover (which continue the session's id) find it.

use std::sync::Arc;

use agent_webkit_core::store::{
    SessionKey, SessionListing, SessionStore, SessionSummary, StoreCapabilities, StoreError,
};
use async_trait::async_trait;
use serde_json::Value;

/// A [`SessionStore`] that renames one CLI session id to another on the way in.
pub(crate) struct Rekey {
    inner: Arc<dyn SessionStore>,
    from: String,
    to: String,
}

impl Rekey {
    /// Entries of CLI session `from` are stored as session `to`.
    pub(crate) fn new(inner: Arc<dyn SessionStore>, from: &str, to: &str) -> Self {
        Self {
            inner,
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    fn key(&self, key: &SessionKey) -> SessionKey {
        let mut key = key.clone();
        if key.session_id == self.from {
            key.session_id.clone_from(&self.to);
        }
        key
    }
}

#[async_trait]
impl SessionStore for Rekey {
    async fn append(&self, key: &SessionKey, mut entries: Vec<Value>) -> Result<(), StoreError> {
        for entry in &mut entries {
            if let Some(id) = entry.get_mut("sessionId") {
                if id.as_str() == Some(self.from.as_str()) {
                    *id = Value::String(self.to.clone());
                }
            }
        }
        self.inner.append(&self.key(key), entries).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        self.inner.load(&self.key(key)).await
    }

    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    async fn list_sessions(&self, project_key: &str) -> Result<Vec<SessionListing>, StoreError> {
        self.inner.list_sessions(project_key).await
    }

    async fn list_session_summaries(
        &self,
        project_key: &str,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        self.inner.list_session_summaries(project_key).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.inner.delete(&self.key(key)).await
    }

    async fn list_subkeys(&self, key: &SessionKey) -> Result<Vec<String>, StoreError> {
        self.inner.list_subkeys(&self.key(key)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use agent_webkit_core::store::InMemorySessionStore;
    use serde_json::json;

    #[tokio::test]
    async fn entries_of_the_spare_are_filed_under_the_session() {
        let inner = Arc::new(InMemorySessionStore::new());
        let store = Rekey::new(inner.clone(), "spare", "session");
        let entries = vec![
            json!({"uuid": "1", "sessionId": "spare", "type": "user"}),
            json!({"uuid": "2", "sessionId": "other", "type": "user"}),
        ];
        store
            .append(&SessionKey::main("p", "spare"), entries)
            .await
            .unwrap();
        assert!(inner
            .load(&SessionKey::main("p", "spare"))
            .await
            .unwrap()
            .is_none());
        let stored = inner
            .load(&SessionKey::main("p", "session"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored[0]["sessionId"], "session");
        assert_eq!(stored[1]["sessionId"], "other");
        let sub = SessionKey::main("p", "spare").with_subpath("subagents/agent-1");
        store
            .append(&sub, vec![json!({"uuid": "3"})])
            .await
            .unwrap();
        assert!(inner
            .load(&SessionKey::main("p", "session").with_subpath("subagents/agent-1"))
            .await
            .unwrap()
            .is_some());
    }
}
