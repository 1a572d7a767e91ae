//! [`InMemoryPersistence`]: session persistence in process memory.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{lease_end, now_ms, Lease, PersistError, SessionPersistence, SessionRecord};
use crate::event_log::StoredEvent;

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
