//! Resource limits against slow or greedy clients: connection-level settings the adapters
//! apply, subscriber caps, and the per-session byte budget of queued user messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on open connections (SSE streams included).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time graceful shutdown waits for connections before dropping them.
pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// Default cap on subscribers of one session.
pub const DEFAULT_MAX_SUBSCRIBERS_PER_SESSION: usize = 256;
/// Default cap on subscribers across all sessions.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 8_192;
/// Default bound on the bytes of user messages queued in one session.
pub const DEFAULT_INBOUND_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Limits every adapter applies the same way (the connection-level ones in its `serve`, the
/// rest in [`Api`](crate::http::Api)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// A connection that has not sent a complete request head within this is closed.
    pub header_read_timeout: Duration,
    /// A request body not received within this gets 408 `body_timeout`.
    pub body_read_timeout: Duration,
    /// Most open connections; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// After the shutdown signal (and every session closed), connections still open after this
    /// long are dropped.
    pub shutdown_drain: Duration,
    /// Most subscribers of one session (more: 429 `subscriber_limit`).
    pub max_subscribers_per_session: usize,
    /// Most subscribers in total (more: 503 `subscriber_capacity`).
    pub max_subscribers: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_drain: DEFAULT_SHUTDOWN_DRAIN,
            max_subscribers_per_session: DEFAULT_MAX_SUBSCRIBERS_PER_SESSION,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
        }
    }
}

/// Why a subscriber was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriberLimitError {
    /// The session has its maximum of subscribers (HTTP 429).
    #[error("Too many subscribers for this session (limit {0}); close one or retry later")]
    PerSession(usize),
    /// The server has its maximum of subscribers (HTTP 503).
    #[error("Too many subscribers on this server (limit {0}); retry later")]
    Total(usize),
}

impl SubscriberLimitError {
    /// HTTP status and error `code`.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            SubscriberLimitError::PerSession(_) => (429, "subscriber_limit"),
            SubscriberLimitError::Total(_) => (503, "subscriber_capacity"),
        }
    }
}

/// Counts subscribers per session and in total, exactly (no check-then-act race).
#[derive(Debug, Default)]
pub(crate) struct SubscriberCaps {
    per_session: usize,
    total: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_session: HashMap<String, usize>,
}

impl SubscriberCaps {
    pub(crate) fn new(per_session: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_session,
            total,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A permit for one more subscriber of `session_id`, released on drop.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        session_id: &str,
    ) -> Result<SubscriberPermit, SubscriberLimitError> {
        let mut counts = self.counts.lock();
        if counts.total >= self.total {
            return Err(SubscriberLimitError::Total(self.total));
        }
        let current = counts.by_session.get(session_id).copied().unwrap_or(0);
        if current >= self.per_session {
            return Err(SubscriberLimitError::PerSession(self.per_session));
        }
        counts.total += 1;
        counts.by_session.insert(session_id.to_owned(), current + 1);
        Ok(SubscriberPermit {
            caps: Arc::clone(self),
            session_id: session_id.to_owned(),
        })
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.counts.lock().total
    }
}

/// One counted subscriber; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct SubscriberPermit {
    caps: Arc<SubscriberCaps>,
    session_id: String,
}

impl Drop for SubscriberPermit {
    fn drop(&mut self) {
        let mut counts = self.caps.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_session.get_mut(&self.session_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_session.remove(&self.session_id);
            }
        }
    }
}

/// The bytes of user messages waiting in one session's inbound queue, bounded. One message
/// larger than the whole budget is still accepted into an empty queue (the body limit bounds
/// it), so a budget below the body limit cannot make a message impossible to send.
#[derive(Debug)]
pub(crate) struct InboundBytes {
    max: usize,
    used: AtomicUsize,
}

impl InboundBytes {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// The budget.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Bytes currently reserved.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Reserves `n` bytes; `false` (nothing reserved) when that would exceed the budget.
    pub(crate) fn try_reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(n) <= self.max).then(|| used.saturating_add(n))
            })
            .is_ok()
    }

    /// Gives back `n` reserved bytes (the message left the queue).
    pub(crate) fn release(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn subscriber_caps_per_session_and_total() {
        let caps = SubscriberCaps::new(2, 3);
        let a1 = caps.acquire("a").unwrap();
        let _a2 = caps.acquire("a").unwrap();
        assert_eq!(
            caps.acquire("a").unwrap_err(),
            SubscriberLimitError::PerSession(2)
        );
        let _b1 = caps.acquire("b").unwrap();
        assert_eq!(
            caps.acquire("c").unwrap_err(),
            SubscriberLimitError::Total(3)
        );
        drop(a1);
        assert_eq!(caps.total(), 2);
        let _c1 = caps.acquire("c").unwrap();
        assert_eq!(
            caps.acquire("a").unwrap_err(),
            SubscriberLimitError::Total(3)
        );
    }

    #[test]
    fn inbound_bytes_bound() {
        let budget = InboundBytes::new(100);
        assert!(budget.try_reserve(60));
        assert!(!budget.try_reserve(41));
        assert!(budget.try_reserve(40));
        assert_eq!(budget.used(), 100);
        budget.release(60);
        budget.release(40);
        assert_eq!(budget.used(), 0);
        // One oversized message fits an empty queue, and nothing after it.
        assert!(budget.try_reserve(500));
        assert!(!budget.try_reserve(1));
        budget.release(500);
        assert!(budget.try_reserve(1));
    }
}
