//! The stored part of an event log: the older events of a restored ring, left in the store
//! they were restored from and read back only when a subscriber asks for them.
//!
//! A session taken over (a restart, a failover) needs its whole ring for `Last-Event-ID`, but
//! a reconnecting client nearly always asks for the last few events only. So the take-over
//! renders just the ring's tail; the rest stays a range of seqs `[first, end)` in front of the
//! log's cold and hot parts, backed by an [`OlderEvents`] source. Readers never see the
//! difference: reading back into the range costs one store query per batch (the events are
//! rendered again, and not kept). The range only shrinks — from the front, as the ring
//! evicts — so the log's memory is that of the events rendered since the restore.

use std::sync::Arc;

use async_trait::async_trait;

use super::{render, LoggedEvent, StoredEvent};
use crate::models::EventKind;

/// Where the stored part of a log is read from (a session's persisted event log).
#[async_trait]
pub(crate) trait OlderEvents: Send + Sync + 'static {
    /// Up to `limit` events with a seq greater than `after_seq`, oldest first.
    async fn fetch(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>, String>;
}

/// The seqs `[first, end)` of a log held by `source` only (never empty while it exists).
#[derive(Clone)]
pub(super) struct StoredPart {
    pub(super) first: u64,
    pub(super) end: u64,
    pub(super) source: Arc<dyn OlderEvents>,
}

impl StoredPart {
    /// Events in the range.
    pub(super) fn len(&self) -> usize {
        usize::try_from(self.end - self.first).unwrap_or(usize::MAX)
    }

    /// Reads events `from ..` (at most `limit`, none at or beyond `end`) from the source and
    /// renders them; also returns the last seq read (events of an unknown kind are skipped, as
    /// a restore skips them). `Err` when the source fails, or does not hold `from` any more.
    pub(super) async fn read(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<LoggedEvent>, u64), String> {
        let room = usize::try_from(self.end.saturating_sub(from)).unwrap_or(usize::MAX);
        let events = self
            .source
            .fetch(from.saturating_sub(1), limit.min(room))
            .await?;
        match events.first() {
            Some(first) if first.seq == from => {}
            Some(first) => {
                return Err(format!(
                    "the store holds no event {from} any more (its oldest is {})",
                    first.seq
                ))
            }
            None => return Err(format!("the store holds no event {from} any more")),
        }
        let events: Vec<&StoredEvent> = events.iter().filter(|e| e.seq < self.end).collect();
        let last = events.last().map_or(from, |e| e.seq);
        let rendered = events
            .into_iter()
            .filter_map(|stored| {
                let kind = EventKind::from_name(&stored.event)?;
                Some(render(stored.seq, kind, stored.data.as_bytes()))
            })
            .collect();
        Ok((rendered, last))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::event_log::{EventLog, SubscribeError};

    /// A store holding events `1..=n`; counts its reads; fails while `down`.
    struct Store {
        events: Vec<StoredEvent>,
        reads: AtomicUsize,
        down: AtomicBool,
    }

    #[async_trait]
    impl OlderEvents for Store {
        async fn fetch(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err("store down".into());
            }
            Ok(self
                .events
                .iter()
                .filter(|e| e.seq > after_seq)
                .take(limit)
                .cloned()
                .collect())
        }
    }

    /// A log of `n` events written here, and the same events as a store holds them.
    fn original(n: u64, ring: usize) -> (Arc<EventLog>, Arc<Store>) {
        let log = Arc::new(EventLog::new(ring));
        for i in 1..=n {
            log.append(
                EventKind::MessageDelta,
                &json!({"n": i, "text": "x".repeat(40)}),
            )
            .unwrap();
        }
        let events = log.snapshot().iter().map(LoggedEvent::to_stored).collect();
        let store = Arc::new(Store {
            events,
            reads: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        (log, store)
    }

    /// `log` restored from `store` with only its last `tail` events rendered.
    fn restored(store: &Arc<Store>, ring: usize, tail: usize) -> Arc<EventLog> {
        let events = &store.events[store.events.len() - tail..];
        let oldest = store.events[0].seq;
        let source: Arc<dyn OlderEvents> = Arc::clone(store) as Arc<dyn OlderEvents>;
        Arc::new(EventLog::restore(ring, events, Some((oldest, source))))
    }

    async fn read_all(log: &Arc<EventLog>, after: u64) -> Result<Vec<LoggedEvent>, SubscribeError> {
        let mut sub = log.subscribe(after)?;
        let mut out = Vec::new();
        while sub.cursor() < log.last_seq() {
            out.extend(sub.next_batch(7).await?.unwrap_or_default());
        }
        Ok(out)
    }

    fn frames(events: &[LoggedEvent]) -> Vec<Bytes> {
        events.iter().map(|e| e.frame().clone()).collect()
    }

    #[tokio::test]
    async fn a_reconnect_anywhere_in_the_ring_replays_the_original_frames() {
        let (original, store) = original(100, 100);
        let log = restored(&store, 100, 10);
        let memory = log.memory();
        assert_eq!((memory.events, memory.stored_events), (10, 90));
        assert_eq!((log.oldest_seq(), log.last_seq(), log.len()), (1, 100, 100));

        // The tail a reconnecting client asks for is served without a read.
        let tail = read_all(&log, 95).await.unwrap();
        assert_eq!(frames(&tail), frames(&original.snapshot()[95..]));
        assert_eq!(store.reads.load(Ordering::SeqCst), 0);

        for after in [0, 1, 42, 89, 90] {
            let replay = read_all(&log, after).await.unwrap();
            let want = &original.snapshot()[usize::try_from(after).unwrap()..];
            assert_eq!(frames(&replay), frames(want), "after {after}");
        }
        assert!(store.reads.load(Ordering::SeqCst) > 0);
        assert_eq!(frames(&log.history().await), frames(&original.snapshot()));
        // Nothing read back is kept.
        assert_eq!(log.memory().stored_events, 90);
    }

    #[tokio::test]
    async fn the_ring_evicts_the_stored_part_first() {
        let (_, store) = original(100, 100);
        let log = restored(&store, 100, 10);
        for i in 0..30 {
            log.append(EventKind::MessageDelta, &json!({"after": i}))
                .unwrap();
        }
        assert_eq!((log.oldest_seq(), log.len()), (31, 100));
        assert_eq!(log.memory().stored_events, 60);
        assert!(matches!(
            log.subscribe(29),
            Err(SubscribeError::Evicted { oldest: 31, .. })
        ));
        let replay = read_all(&log, 30).await.unwrap();
        let seqs: Vec<u64> = replay.iter().map(LoggedEvent::seq).collect();
        assert_eq!(seqs, (31..=130).collect::<Vec<_>>());
        for i in 0..60 {
            log.append(EventKind::MessageDelta, &json!({"more": i}))
                .unwrap();
        }
        assert_eq!(log.memory().stored_events, 0);
        assert!(!log.has_stored_part());
    }

    #[tokio::test]
    async fn a_store_that_fails_ends_the_read_and_loses_nothing() {
        let (original, store) = original(50, 50);
        let log = restored(&store, 50, 5);
        store.down.store(true, Ordering::SeqCst);
        let mut sub = log.subscribe(20).unwrap();
        let err = sub.next_batch(10).await.unwrap_err();
        assert!(
            matches!(err, SubscribeError::Unavailable { seq: 21, .. }),
            "{err:?}"
        );
        assert_eq!(
            sub.cursor(),
            20,
            "the cursor stays on the last event handed out"
        );
        drop(sub);
        store.down.store(false, Ordering::SeqCst);
        let replay = read_all(&log, 20).await.unwrap();
        assert_eq!(frames(&replay), frames(&original.snapshot()[20..]));
    }

    #[test]
    fn the_stored_part_stays_within_the_ring() {
        let (_, store) = original(100, 100);
        let log = restored(&store, 40, 10);
        assert_eq!((log.oldest_seq(), log.len()), (61, 40));
        let whole = restored(&store, 100, 100);
        assert!(!whole.has_stored_part());
    }
}
