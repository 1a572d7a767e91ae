//! [`PermissionRouter`]: pending decisions by correlation id; the first reply wins.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{ConflictError, PermissionError, PromptKind, PromptReply};
use crate::event_log::StoredEvent;

struct Pending {
    kind: PromptKind,
    reply: oneshot::Sender<PromptReply>,
    /// The prompt's event as the stream sent it, once appended.
    announced: Option<StoredEvent>,
}

/// Pending decisions by correlation id. First reply wins.
#[derive(Default)]
pub struct PermissionRouter {
    pending: Mutex<HashMap<String, Pending>>,
    closed: Mutex<bool>,
}

impl std::fmt::Debug for PermissionRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermissionRouter")
            .field("pending", &self.pending.lock().len())
            .finish()
    }
}

impl PermissionRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a prompt; the receiver resolves with the client's reply, or errors when the
    /// prompt is cancelled.
    pub(crate) fn register(
        &self,
        correlation_id: &str,
        kind: PromptKind,
    ) -> Result<oneshot::Receiver<PromptReply>, PermissionError> {
        if *self.closed.lock() {
            return Err(PermissionError::SessionClosed);
        }
        let mut pending = self.pending.lock();
        if pending.contains_key(correlation_id) {
            return Err(PermissionError::Duplicate(correlation_id.to_owned()));
        }
        let (tx, rx) = oneshot::channel();
        pending.insert(
            correlation_id.to_owned(),
            Pending {
                kind,
                reply: tx,
                announced: None,
            },
        );
        Ok(rx)
    }

    /// Delivers a reply. Fails with [`ConflictError`] unless a prompt of the reply's kind is
    /// pending under `correlation_id`.
    pub fn resolve(&self, correlation_id: &str, reply: PromptReply) -> Result<(), ConflictError> {
        let kind = reply.kind();
        let conflict = || ConflictError {
            kind: kind.noun(),
            correlation_id: correlation_id.to_owned(),
        };
        let entry = {
            let mut pending = self.pending.lock();
            match pending.get(correlation_id) {
                Some(p) if p.kind == kind => pending.remove(correlation_id),
                _ => None,
            }
        };
        let entry = entry.ok_or_else(conflict)?;
        entry.reply.send(reply).map_err(|_| conflict())
    }

    /// Records the event that announced the pending prompt `correlation_id`.
    pub(crate) fn announced(&self, correlation_id: &str, event: StoredEvent) {
        if let Some(pending) = self.pending.lock().get_mut(correlation_id) {
            pending.announced = Some(event);
        }
    }

    /// The events of the prompts waiting for a reply, as the stream sent them, in seq order
    /// (a prompt registered but not appended yet is left out: its event is still to come).
    pub fn pending_events(&self) -> Vec<StoredEvent> {
        let mut events: Vec<StoredEvent> = self
            .pending
            .lock()
            .values()
            .filter_map(|p| p.announced.clone())
            .collect();
        events.sort_by_key(|e| e.seq);
        events
    }

    /// Number of prompts waiting for a reply.
    pub fn pending_count(&self) -> usize {
        self.pending.lock().len()
    }

    /// Whether `correlation_id` is waiting for a reply.
    pub fn has_pending(&self, correlation_id: &str) -> bool {
        self.pending.lock().contains_key(correlation_id)
    }

    /// The correlation ids waiting for a reply.
    pub(crate) fn pending_ids(&self) -> Vec<String> {
        self.pending.lock().keys().cloned().collect()
    }

    /// Withdraws one prompt; its waiter gets [`PermissionError::Cancelled`]. Returns whether it
    /// was pending.
    pub(crate) fn cancel(&self, correlation_id: &str) -> bool {
        self.pending.lock().remove(correlation_id).is_some()
    }

    /// Withdraws every prompt and refuses new ones (session close).
    pub(crate) fn cancel_all(&self) {
        *self.closed.lock() = true;
        self.pending.lock().clear();
    }
}
