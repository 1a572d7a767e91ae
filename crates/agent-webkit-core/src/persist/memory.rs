//! [`InMemoryPersistence`]: session persistence in process memory.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    lease_end, now_ms, Lease, ListQuery, ListedSession, PersistError, SessionActivity,
    SessionPersistence, SessionRecord,
};
use crate::event_log::StoredEvent;

struct Entry {
    record: SessionRecord,
    events: Vec<StoredEvent>,
    owner: Option<String>,
    expires_at_ms: i64,
    activity: SessionActivity,
    last_seq: u64,
}

impl Entry {
    fn listed(&self, now: i64) -> ListedSession {
        ListedSession {
            record: self.record.clone(),
            activity: self.activity.clone(),
            last_seq: self.last_seq,
            lease_holder: self.owner.clone().filter(|_| self.expires_at_ms > now),
        }
    }
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
                activity: SessionActivity::created(record),
                last_seq: 0,
            },
        );
        Ok(())
    }

    async fn append_batch(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        activity: Option<&SessionActivity>,
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
        if let Some(last) = events.iter().map(|e| e.seq).max() {
            entry.last_seq = entry.last_seq.max(last);
        }
        if let Some(activity) = activity {
            entry.activity = activity.clone();
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

    async fn load_events(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, PersistError> {
        let sessions = self.sessions.lock();
        Ok(sessions.get(session_id).map_or_else(Vec::new, |entry| {
            let from = entry.events.partition_point(|e| e.seq <= after_seq);
            entry.events[from..].iter().take(limit).cloned().collect()
        }))
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<ListedSession>, PersistError> {
        let now = now_ms();
        let sessions = self.sessions.lock();
        let mut page: Vec<&Entry> = sessions
            .values()
            .filter(|e| query.owner.is_none() || e.record.owner == query.owner)
            .filter(|e| !e.activity.ended || e.activity.last_activity_ms >= query.ended_since_ms)
            .filter(|e| match &query.before {
                None => true,
                Some((ms, id)) => {
                    (e.activity.last_activity_ms, e.record.session_id.as_str()) < (*ms, id.as_str())
                }
            })
            .collect();
        page.sort_by(|a, b| {
            (b.activity.last_activity_ms, &b.record.session_id)
                .cmp(&(a.activity.last_activity_ms, &a.record.session_id))
        });
        Ok(page
            .into_iter()
            .take(query.limit)
            .map(|e| e.listed(now))
            .collect())
    }

    async fn get(&self, session_id: &str) -> Result<Option<ListedSession>, PersistError> {
        Ok(self
            .sessions
            .lock()
            .get(session_id)
            .map(|e| e.listed(now_ms())))
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
