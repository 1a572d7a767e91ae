//! The reference in-memory store (§5.7): every optional method, uuid idempotency, a strictly
//! increasing millisecond clock shared by `list_sessions` and summaries.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;

use super::{
    fold_session_summary, SessionKey, SessionListing, SessionStore, SessionSummary,
    StoreCapabilities, StoreError,
};

#[derive(Default)]
struct Transcript {
    entries: Vec<Value>,
    uuids: HashSet<String>,
    mtime: i64,
}

#[derive(Default)]
struct State {
    transcripts: BTreeMap<SessionKey, Transcript>,
    summaries: HashMap<(String, String), SessionSummary>,
    last_ms: i64,
}

impl State {
    fn stamp(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.last_ms = now.max(self.last_ms + 1);
        self.last_ms
    }
}

/// A [`SessionStore`] in process memory (the default; lost on restart).
#[derive(Default)]
pub struct InMemorySessionStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for InMemorySessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemorySessionStore")
            .field("transcripts", &self.state.lock().transcripts.len())
            .finish()
    }
}

impl InMemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn uuid_of(entry: &Value) -> Option<&str> {
    entry.get("uuid").and_then(Value::as_str)
}

#[async_trait]
impl SessionStore for InMemorySessionStore {
    async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let stamp = state.stamp();
        let transcript = state.transcripts.entry(key.clone()).or_default();
        let mut added = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(uuid) = uuid_of(&entry) {
                if !transcript.uuids.insert(uuid.to_owned()) {
                    continue;
                }
            }
            added.push(entry);
        }
        transcript.entries.extend(added.iter().cloned());
        transcript.mtime = stamp;
        if key.is_main() {
            let id = (key.project_key.clone(), key.session_id.clone());
            let mut summary = fold_session_summary(state.summaries.get(&id), key, &added);
            summary.mtime = stamp;
            state.summaries.insert(id, summary);
        }
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        Ok(self
            .state
            .lock()
            .transcripts
            .get(key)
            .map(|t| t.entries.clone()))
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::ALL
    }

    async fn list_sessions(&self, project_key: &str) -> Result<Vec<SessionListing>, StoreError> {
        Ok(self
            .state
            .lock()
            .transcripts
            .iter()
            .filter(|(k, _)| k.is_main() && k.project_key == project_key)
            .map(|(k, t)| SessionListing {
                session_id: k.session_id.clone(),
                mtime: t.mtime,
            })
            .collect())
    }

    async fn list_session_summaries(
        &self,
        project_key: &str,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        Ok(self
            .state
            .lock()
            .summaries
            .iter()
            .filter(|((pk, _), _)| pk == project_key)
            .map(|(_, s)| s.clone())
            .collect())
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if key.is_main() {
            state.transcripts.retain(|k, _| {
                !(k.project_key == key.project_key && k.session_id == key.session_id)
            });
            state
                .summaries
                .remove(&(key.project_key.clone(), key.session_id.clone()));
        } else {
            state.transcripts.remove(key);
        }
        Ok(())
    }

    async fn list_subkeys(&self, key: &SessionKey) -> Result<Vec<String>, StoreError> {
        let mut subkeys: Vec<String> = self
            .state
            .lock()
            .transcripts
            .keys()
            .filter(|k| k.project_key == key.project_key && k.session_id == key.session_id)
            .filter_map(|k| k.subpath.clone())
            .collect();
        subkeys.sort();
        Ok(subkeys)
    }
}
