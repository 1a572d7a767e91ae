//! The store conformance suite against the in-memory store, and against a minimal store that
//! implements only the required methods (optional contracts must be skipped, not failed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_webkit_core::store::{
    run_session_store_conformance, InMemorySessionStore, SessionKey, SessionStore, StoreError,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;

#[tokio::test]
async fn in_memory_store_passes_every_contract() {
    let ran = run_session_store_conformance(|| async { InMemorySessionStore::new() }, &[])
        .await
        .unwrap();
    assert_eq!(ran, 17);
    let ran = run_session_store_conformance(
        || async { InMemorySessionStore::new() },
        &[
            "list_sessions",
            "delete",
            "list_subkeys",
            "list_session_summaries",
        ],
    )
    .await
    .unwrap();
    assert_eq!(ran, 9);
}

#[derive(Default)]
struct Minimal(Mutex<HashMap<SessionKey, Vec<Value>>>);

#[async_trait]
impl SessionStore for Minimal {
    async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError> {
        let mut map = self.0.lock();
        let list = map.entry(key.clone()).or_default();
        for entry in entries {
            let dup = entry.get("uuid").and_then(Value::as_str).is_some_and(|u| {
                list.iter()
                    .any(|e| e.get("uuid").and_then(Value::as_str) == Some(u))
            });
            if !dup {
                list.push(entry);
            }
        }
        Ok(())
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        Ok(self.0.lock().get(key).cloned())
    }
}

#[tokio::test]
async fn minimal_store_skips_optional_contracts() {
    let ran = run_session_store_conformance(|| async { Minimal::default() }, &[])
        .await
        .unwrap();
    assert_eq!(ran, 9);
    let s = Minimal::default();
    assert_eq!(
        s.list_sessions("p").await.unwrap_err(),
        StoreError::Unsupported("list_sessions")
    );
}

/// A store that loses entries must fail the suite (the suite can fail).
#[derive(Default)]
struct Lossy(Minimal);

#[async_trait]
impl SessionStore for Lossy {
    async fn append(&self, key: &SessionKey, mut entries: Vec<Value>) -> Result<(), StoreError> {
        entries.truncate(1);
        self.0.append(key, entries).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        self.0.load(key).await
    }
}

#[tokio::test]
async fn a_lossy_store_fails() {
    let err = run_session_store_conformance(|| async { Lossy::default() }, &[])
        .await
        .unwrap_err();
    assert_eq!(err.contract, "append_then_load");
}
