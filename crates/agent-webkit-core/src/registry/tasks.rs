//! The registry's background work: the idle reaper (which also hibernates quiet agents and
//! renews leases) and the ring compactor.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::SessionRegistry;
use crate::session::Session;

/// Fewest uncompressed events worth compressing (a smaller tail stays as it is).
const COMPACT_MIN_EVENTS: usize = 32;

impl SessionRegistry {
    /// Starts the idle reaper and the ring compactor (idempotent). Needs a Tokio runtime.
    pub fn start_reaper(&self) {
        self.start_compactor();
        let mut slot = self.inner.reaper.lock();
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.effective_reap_interval();
        *slot = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let registry = SessionRegistry { inner };
                registry.reap_idle().await;
                registry.hibernate_quiet().await;
                registry.renew_leases().await;
            }
        }));
    }

    fn start_compactor(&self) {
        let Some(after) = self.inner.config.compact_after else {
            return;
        };
        let mut slot = self.inner.compactor.lock();
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        *slot = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval((after / 2).max(Duration::from_millis(50)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let registry = SessionRegistry { inner };
                registry.compact_quiet_logs().await;
            }
        }));
    }

    /// Compresses the rings of sessions whose event log has been quiet for `compact_after`
    /// (on a blocking thread: deflate is CPU work). Returns how many events were compressed.
    pub async fn compact_quiet_logs(&self) -> usize {
        let Some(after) = self.inner.config.compact_after else {
            return 0;
        };
        let quiet: Vec<Arc<Session>> = self
            .inner
            .sessions
            .read()
            .values()
            .filter(|s| {
                let log = s.event_log();
                log.hot_len() >= COMPACT_MIN_EVENTS && log.quiet_for() >= after
            })
            .cloned()
            .collect();
        if quiet.is_empty() {
            return 0;
        }
        // Deflate is CPU work: spread it over the cores, on blocking threads.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let per = quiet.len().div_ceil(threads.min(quiet.len()));
        let work: Vec<_> = quiet
            .chunks(per)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                tokio::task::spawn_blocking(move || {
                    chunk
                        .iter()
                        .map(|s| {
                            let packed = s.event_log().compact(0, COMPACT_MIN_EVENTS);
                            if packed > 0 {
                                tracing::debug!(session_id = %s.id(), events = packed, "ring compressed");
                            }
                            packed
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        let mut packed = 0;
        for result in join_all(work).await {
            match result {
                Ok(n) => packed += n,
                Err(err) => tracing::error!(error = %err, "ring compaction failed"),
            }
        }
        packed
    }

    /// Evicts every session idle for longer than the idle timeout with no live subscriber.
    /// Returns how many were evicted.
    pub(crate) async fn reap_idle(&self) -> usize {
        let timeout = self.inner.config.idle_timeout;
        let mut stale = Vec::new();
        for session in self.inner.sessions.read().values() {
            // An ended session holds no agent; its retention removes it.
            if session.has_ended() || session.idle_for() < timeout {
                continue;
            }
            if session.subscriber_count() == 0 {
                stale.push(session.id().to_owned());
            } else {
                // Idle but watched: make sure the watchers are still there.
                session.probe_subscribers();
            }
        }
        for id in &stale {
            tracing::info!(session_id = %id, "evicting idle session");
        }
        join_all(stale.iter().map(|id| self.remove(id))).await;
        stale.len()
    }
}
