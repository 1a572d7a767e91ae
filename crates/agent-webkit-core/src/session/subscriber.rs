//! A session's subscribers: each counts as live until dropped, and can be probed for a
//! keepalive.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Session;
use crate::event_log::{LoggedEvent, SubscribeError, Subscription};

/// A live subscriber of a session: counts toward "has a live subscriber" until dropped.
pub struct SessionSubscriber {
    pub(super) session: Arc<Session>,
    pub(super) probe: tokio::sync::watch::Receiver<u64>,
    pub(super) inner: Subscription,
}

impl std::fmt::Debug for SessionSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSubscriber")
            .field("session_id", &self.session.id)
            .field("cursor", &self.inner.cursor())
            .finish()
    }
}

impl SessionSubscriber {
    /// See [`Subscription::next_batch`].
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<LoggedEvent>>, SubscribeError> {
        self.inner.next_batch(max).await
    }

    /// A handle that completes each time the registry (probing idle sessions) asks this subscriber's
    /// stream for a keepalive.
    pub fn probe(&self) -> Probe {
        Probe(self.probe.clone())
    }

    /// The seq of the last event handed out.
    pub fn cursor(&self) -> u64 {
        self.inner.cursor()
    }
}

/// See [`SessionSubscriber::probe`].
#[derive(Debug)]
pub struct Probe(tokio::sync::watch::Receiver<u64>);

impl Probe {
    /// Completes at the next probe (never, once the session is gone).
    pub async fn probed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for SessionSubscriber {
    fn drop(&mut self) {
        self.session.touch();
        self.session.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}
