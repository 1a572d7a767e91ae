//! The registry's background work: the idle reaper (which also hibernates quiet agents and
//! renews leases) and the ring compactor, which holds freshly restored rings back while
//! take-overs go on ([`RestoreHold`]).

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::SessionRegistry;
use crate::event_log::Restored;
use crate::session::Session;

/// Fewest uncompressed events worth compressing (a smaller tail stays as it is).
const COMPACT_MIN_EVENTS: usize = 32;

/// How the compactor holds back the rings of sessions just taken over (restored from
/// persistence): after a restart every client reconnects at once, and compressing the rings
/// restored a second earlier (deflate: ~4 ms per 1 000 events) would take the CPU the
/// reconnects need. A restored ring that has gone quiet is compressed once the burst of
/// take-overs is over (no restore for `settle`), or `max` after its own restore, whichever
/// comes first; and at most `bytes` of restored frames are held back at any time (beyond it
/// the earliest restored are compressed at once), so the memory the compactor saves is only
/// borrowed for a bounded time and amount.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestoreHold {
    /// The burst is over once no log was restored for this long.
    pub(crate) settle: Duration,
    /// A restored ring is held back at most this long after its restore.
    pub(crate) max: Duration,
    /// At most this many bytes of restored frames are held back.
    pub(crate) bytes: usize,
}

/// The compactor's [`RestoreHold`].
pub(crate) const RESTORE_HOLD: RestoreHold = RestoreHold {
    settle: Duration::from_secs(2),
    max: Duration::from_secs(30),
    bytes: 512 << 20,
};

impl RestoreHold {
    /// Of the `quiet` logs (each with how it was restored, if it was), the ones to compact at
    /// `now`, given the most recent restore of any log (`latest`): all but the restored ones
    /// held back — restored less than `max` ago during a burst (a restore less than `settle`
    /// before `now`), the most recently restored first, within `bytes`.
    pub(crate) fn select<T>(
        &self,
        quiet: Vec<(T, Option<Restored>)>,
        latest: Option<Instant>,
        now: Instant,
    ) -> Vec<T> {
        let burst = latest.is_some_and(|at| now.saturating_duration_since(at) < self.settle);
        let mut compact = Vec::with_capacity(quiet.len());
        let mut held = Vec::new();
        for (log, restored) in quiet {
            match restored {
                Some(r) if burst && now.saturating_duration_since(r.at) < self.max => {
                    held.push((log, r));
                }
                _ => compact.push(log),
            }
        }
        held.sort_by_key(|(_, r)| Reverse(r.at));
        let mut bytes = 0usize;
        for (log, r) in held {
            bytes = bytes.saturating_add(r.bytes);
            if bytes > self.bytes {
                compact.push(log);
            }
        }
        compact
    }
}

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
    /// (on a blocking thread: deflate is CPU work), except restored rings held back while
    /// take-overs go on (`RestoreHold`). Returns how many events were compressed.
    pub async fn compact_quiet_logs(&self) -> usize {
        self.compact_quiet_logs_at(Instant::now(), RESTORE_HOLD)
            .await
    }

    /// [`compact_quiet_logs`](Self::compact_quiet_logs) as if it were `now` for `hold`.
    pub(crate) async fn compact_quiet_logs_at(&self, now: Instant, hold: RestoreHold) -> usize {
        let Some(after) = self.inner.config.compact_after else {
            return 0;
        };
        let mut latest: Option<Instant> = None;
        let mut candidates = Vec::new();
        for s in self.inner.sessions.read().values() {
            let log = s.event_log();
            let restored = log.restored();
            if let Some(r) = restored {
                latest = latest.max(Some(r.at));
            }
            if log.hot_len() >= COMPACT_MIN_EVENTS && log.quiet_for() >= after {
                candidates.push((Arc::clone(s), restored));
            }
        }
        let quiet: Vec<Arc<Session>> = hold.select(candidates, latest, now);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::sync::mpsc;

    use super::{RestoreHold, RESTORE_HOLD};
    use crate::agent::{AgentClientFactory, SessionConfig};
    use crate::event_log::Restored;
    use crate::models::EventKind;
    use crate::persist::{InMemoryPersistence, SessionPersistence};
    use crate::registry::{Failover, RegistryConfig, SessionRegistry};
    use crate::scripted::{delta, result, until, Scripted, ScriptedFactory};
    use crate::session::Session;

    /// Deltas per turn: more than the compactor's minimum.
    const DELTAS: usize = 40;

    /// A host of `persistence` that compacts every quiet ring at once (`compact_after` 0).
    fn host(
        persistence: &Arc<InMemoryPersistence>,
        id: &str,
    ) -> (SessionRegistry, mpsc::UnboundedReceiver<Scripted>) {
        let (factory, agents) = ScriptedFactory::new();
        let config = RegistryConfig {
            compact_after: Some(Duration::ZERO),
            hibernate_after: None,
            ..RegistryConfig::default()
        };
        let failover = Failover {
            persistence: Arc::clone(persistence) as Arc<dyn SessionPersistence>,
            host_id: id.to_owned(),
        };
        let registry = SessionRegistry::with_failover(
            factory as Arc<dyn AgentClientFactory>,
            None,
            config,
            Some(failover),
        );
        (registry, agents)
    }

    /// One turn of [`DELTAS`] deltas, read (so persisted) to its `result`.
    async fn turn(session: &Arc<Session>, agent: &Scripted) {
        let mut sub = session
            .subscribe(Some(session.event_log().last_seq()))
            .unwrap();
        for n in 0..DELTAS {
            agent.send(delta("m", n));
        }
        agent.send(result());
        until(&mut sub, EventKind::Result).await;
    }

    #[tokio::test]
    async fn restored_rings_are_not_compacted_until_the_take_overs_settle() {
        let persistence = Arc::new(InMemoryPersistence::new(10_000));
        let (a, mut a_agents) = host(&persistence, "a");
        let session = a.create(SessionConfig::default()).await.unwrap();
        let agent = a_agents.recv().await.unwrap();
        turn(&session, &agent).await;
        let id = session.id().to_owned();
        let before = session.event_log().snapshot();
        drop(session);
        a.shutdown().await; // hands the session off

        let (b, mut b_agents) = host(&persistence, "b");
        let restored = b.get_or_resume(&id).await.unwrap().unwrap();
        let _resumed = b_agents.recv().await.unwrap();
        // A ring that started here is compacted as before, beside the held-back one.
        let fresh = b.create(SessionConfig::default()).await.unwrap();
        let fresh_agent = b_agents.recv().await.unwrap();
        turn(&fresh, &fresh_agent).await;
        let fresh_len = fresh.event_log().len();

        let held = restored.event_log().memory();
        assert_eq!(held.events, before.len());
        assert_eq!(b.compact_quiet_logs().await, fresh_len);
        assert_eq!(fresh.event_log().memory().hot_events, 0);
        assert_eq!(
            restored.event_log().memory(),
            held,
            "compacted during the burst"
        );

        // Once no take-over happened for `settle`, it is compacted, and replays the same frames.
        let later = Instant::now() + RESTORE_HOLD.settle;
        assert_eq!(
            b.compact_quiet_logs_at(later, RESTORE_HOLD).await,
            before.len()
        );
        let cold = restored.event_log().memory();
        assert_eq!((cold.events, cold.hot_events), (before.len(), 0));
        let frames = |log: Vec<_>| {
            log.iter()
                .map(|e: &crate::event_log::LoggedEvent| e.frame().clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(frames(restored.event_log().snapshot()), frames(before));
        b.shutdown().await;
    }

    fn restored(at: Instant, bytes: usize) -> Option<Restored> {
        Some(Restored { at, bytes })
    }

    #[test]
    fn the_hold_is_bounded_in_time_and_bytes() {
        let hold = RestoreHold {
            settle: Duration::from_secs(2),
            max: Duration::from_secs(30),
            bytes: 100,
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // During a burst (a restore 1 s ago): restored rings wait, others do not.
        let quiet = || {
            vec![
                (1, restored(at(0), 40)),
                (2, None),
                (3, restored(at(9), 40)),
            ]
        };
        assert_eq!(hold.select(quiet(), Some(at(9)), at(10)), vec![2]);
        // The burst settled: everything.
        assert_eq!(hold.select(quiet(), Some(at(9)), at(11)), vec![1, 2, 3]);
        // A restore older than `max` waits no longer, even while restores go on.
        assert_eq!(hold.select(quiet(), Some(at(34)), at(35)), vec![1, 2]);
        // Over the byte budget: the earliest restored go first.
        let many = vec![
            (1, restored(at(0), 40)),
            (2, restored(at(1), 40)),
            (3, restored(at(2), 40)),
        ];
        assert_eq!(hold.select(many, Some(at(2)), at(3)), vec![1]);
    }
}
