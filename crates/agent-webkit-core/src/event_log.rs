//! Per-session append-only event log: a bounded ring with multi-subscriber fan-out.
//!
//! Every event gets the next sequence number (from 1) and is serialised **once**, at append
//! time, into its complete SSE frame (`id: N\nevent: name\ndata: {json}\n\n`). The frame is a
//! reference-counted [`Bytes`]: every subscriber writes the same allocation to its socket, so
//! fan-out costs one atomic increment per subscriber, never a copy or a re-serialisation.
//!
//! Subscribers each keep their own cursor and pull from the ring; `append` only takes a short
//! lock and bumps a version counter, so a slow subscriber never blocks `append` or anyone else.
//!
//! **Retention follows live readers.** The ring keeps the newest `max_size` events for clients
//! that went away (`Last-Event-ID` resume). Beyond it, an event some live [`Subscription`] has
//! not read yet is kept as well — up to the log's *lag budget* of bytes for such extra events
//! (see [`EventLog::with_lag_budget`]) — and released as soon as the last reader that needed it
//! has read it (or left). So a reader that keeps up with its socket is never cut, whatever the
//! burst; only one more than the budget behind loses events, and it gets
//! [`SubscribeError::Lagged`] instead of a silent gap. An idle log holds no extra events.
//!
//! The ring has a hot part (the newest events, as shared frames) and, once the log has been
//! quiet and [`EventLog::compact`] ran, a cold part: older events packed into compressed blocks
//! (`cold`). Readers never see the difference, except that reading back into the cold part
//! decompresses a block (once, shared by every concurrent reader of it).
//!
//! A log restored from a store (a take-over) may also start with a stored part: the older
//! events of its ring, left in the store and read back on demand (`stored`).

mod cold;
mod stored;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use self::cold::{ColdBlock, BLOCK_EVENTS};
pub(crate) use self::stored::OlderEvents;
use self::stored::StoredPart;
use crate::models::EventKind;

/// Default ring capacity (events kept for replay).
pub const DEFAULT_MAX_SIZE: usize = 1000;

/// Default lag budget: bytes of events kept beyond the ring for live subscribers that have not
/// read them yet (16 MiB: a burst of ~50 000 typical events). Held only while a reader lags.
pub const DEFAULT_LAG_BUDGET: usize = 16 * 1024 * 1024;

/// One persisted event, exactly as it was sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Sequence number (from 1).
    pub seq: u64,
    /// Event name (`message_delta`, ...).
    pub event: String,
    /// Compact data JSON.
    pub data: String,
}

/// One event as held by the log: its seq, kind and pre-rendered SSE frame.
///
/// Cloning is cheap (one reference-count increment).
#[derive(Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    seq: u64,
    kind: EventKind,
    frame: Bytes,
    data_start: u32,
}

impl LoggedEvent {
    /// The event's sequence number (from 1).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The whole SSE frame, shared by every subscriber.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The compact JSON of the event's data, as sent on the wire.
    pub fn data_json(&self) -> &str {
        let end = self.frame.len().saturating_sub(2);
        let start = (self.data_start as usize).min(end);
        std::str::from_utf8(&self.frame[start..end]).unwrap_or("null")
    }

    /// The event as persisted (name and data JSON copied out of the frame).
    pub(crate) fn to_stored(&self) -> StoredEvent {
        StoredEvent {
            seq: self.seq,
            event: self.kind.as_str().to_owned(),
            data: self.data_json().to_owned(),
        }
    }

    /// The event's data, parsed back into a JSON value.
    pub fn data(&self) -> Value {
        serde_json::from_str(self.data_json()).unwrap_or(Value::Null)
    }
}

impl std::fmt::Debug for LoggedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedEvent")
            .field("seq", &self.seq)
            .field("event", &self.kind.as_str())
            .field("data", &self.data_json())
            .finish()
    }
}

/// Why [`EventLog::append`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The log was closed (the session ended); nothing can follow `done`.
    #[error("event log is closed")]
    Closed,
    /// The data could not be serialised to JSON.
    #[error("event data is not serialisable: {0}")]
    Serialize(String),
}

/// Why a subscription could not start or continue (both are HTTP 412 at subscribe time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The cursor is older than the oldest event still held.
    #[error("Last-Event-ID {requested} evicted; oldest available is {oldest}")]
    Evicted {
        /// The requested cursor.
        requested: u64,
        /// The oldest seq still in the ring.
        oldest: u64,
    },
    /// The cursor is beyond the last assigned seq: it belongs to a log this server does not have.
    #[error("Last-Event-ID {requested} is ahead of this session's last event {last}")]
    Future {
        /// The requested cursor.
        requested: u64,
        /// The last assigned seq.
        last: u64,
    },
    /// A live subscriber fell behind by more than the ring holds; events were lost to it.
    #[error("subscriber fell behind: event {missed} was evicted before it could be sent")]
    Lagged {
        /// The first seq it missed.
        missed: u64,
    },
    /// The next events are in the store this log was restored from, and reading them failed;
    /// nothing was lost: a client resumes from its cursor once the store answers again.
    #[error("events from {seq} could not be read from the store: {reason}")]
    Unavailable {
        /// The first seq that could not be read.
        seq: u64,
        /// What the store said.
        reason: String,
    },
}

struct LogState {
    /// The oldest events of a restored ring, still only in the store (all before `cold`).
    stored: Option<StoredPart>,
    /// Compressed blocks of the oldest events, oldest first, contiguous, all before `ring`.
    cold: VecDeque<Arc<ColdBlock>>,
    /// Leading events of `cold.front()` already evicted.
    cold_skip: usize,
    /// Events held in `cold` (not counting evicted ones).
    cold_len: usize,
    /// The newest events, uncompressed ("hot").
    ring: VecDeque<LoggedEvent>,
    next_seq: u64,
    closed: bool,
    /// Where appended events are also sent (persistence), if anywhere.
    sink: Option<mpsc::UnboundedSender<LoggedEvent>>,
    /// With durable delivery: the last seq known to be persisted (subscribers see no further).
    durable: Option<u64>,
    /// `next_seq` as last seen by [`EventLog::quiet_for`], and when it first saw it (kept out
    /// of `append`, which would otherwise read the clock for every event).
    quiet_since: (u64, Instant),
    /// The cursors of the live subscriptions (a multiset: cursor → how many).
    readers: BTreeMap<u64, usize>,
    /// Bytes of the events held beyond the newest `max_size` ones (kept for live readers),
    /// each counted as [`LogState::frame_len`] saw it when it went beyond the ring.
    lag_bytes: usize,
}

impl LogState {
    fn oldest_seq(&self) -> u64 {
        if let Some(part) = &self.stored {
            return part.first;
        }
        match self.cold.front() {
            Some(block) => block.first_seq() + self.cold_skip as u64,
            None => self.hot_first_seq(),
        }
    }

    /// The seq of the oldest uncompressed event (`next_seq` when there is none).
    fn hot_first_seq(&self) -> u64 {
        self.ring.front().map_or(self.next_seq, |ev| ev.seq)
    }

    fn len(&self) -> usize {
        self.stored.as_ref().map_or(0, StoredPart::len) + self.cold_len + self.ring.len()
    }

    /// Drops the oldest event.
    fn evict_oldest(&mut self) {
        if let Some(part) = &mut self.stored {
            part.first += 1;
            if part.first >= part.end {
                self.stored = None;
            }
        } else if let Some(front) = self.cold.front() {
            self.cold_skip += 1;
            self.cold_len -= 1;
            if self.cold_skip >= front.count() {
                self.cold.pop_front();
                self.cold_skip = 0;
            }
        } else {
            self.ring.pop_front();
        }
    }

    /// The cold block holding `seq`, if `seq` is in the cold part.
    fn cold_block(&self, seq: u64) -> Option<&Arc<ColdBlock>> {
        let i = self.cold.partition_point(|b| b.end_seq() <= seq);
        self.cold.get(i).filter(|b| b.first_seq() <= seq)
    }

    /// The size counted for held event `seq` in `lag_bytes`: its frame's length when hot, its
    /// block's average when cold (a cold event is not decompressed to be counted; events beyond
    /// the ring are never compacted, so an event is counted the same way in and out), 0 when
    /// stored (it takes no memory here).
    fn frame_len(&self, seq: u64) -> usize {
        let hot_first = self.hot_first_seq();
        if seq >= hot_first {
            let i = usize::try_from(seq - hot_first).unwrap_or(usize::MAX);
            self.ring.get(i).map_or(0, |ev| ev.frame.len())
        } else {
            self.cold_block(seq)
                .map_or(0, |b| b.raw_bytes() / b.count().max(1))
        }
    }

    /// The oldest held seq a live subscriber still has to read (`u64::MAX` with none). A
    /// subscriber whose next event is already gone (it lagged out) needs nothing.
    fn oldest_needed(&self) -> u64 {
        let oldest = self.oldest_seq();
        self.readers
            .range(oldest.saturating_sub(1)..)
            .next()
            .map_or(u64::MAX, |(cursor, _)| cursor.saturating_add(1))
    }

    fn add_reader(&mut self, cursor: u64) {
        *self.readers.entry(cursor).or_insert(0) += 1;
    }

    /// Moves a reader's `cursor` to `seq` and releases what no reader needs any more.
    fn advance_reader(&mut self, cursor: &mut u64, seq: u64, max_size: usize, lag_budget: usize) {
        self.remove_reader(*cursor);
        self.add_reader(seq);
        *cursor = seq;
        self.trim(max_size, lag_budget);
    }

    fn remove_reader(&mut self, cursor: u64) {
        if let Some(n) = self.readers.get_mut(&cursor) {
            *n -= 1;
            if *n == 0 {
                self.readers.remove(&cursor);
            }
        }
    }

    /// Evicts the events held beyond the newest `max_size` that no live subscriber needs, and
    /// beyond `lag_budget` bytes of such events the oldest ones even if a subscriber does (it
    /// then gets [`SubscribeError::Lagged`]).
    fn trim(&mut self, max_size: usize, lag_budget: usize) {
        while self.len() > max_size {
            let oldest = self.oldest_seq();
            if self.oldest_needed() <= oldest && self.lag_bytes <= lag_budget {
                break;
            }
            let size = self.frame_len(oldest);
            self.evict_oldest();
            self.lag_bytes = self.lag_bytes.saturating_sub(size);
        }
        if self.len() <= max_size {
            self.lag_bytes = 0;
        }
    }
}

/// How much memory an [`EventLog`] holds (see [`EventLog::memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMemory {
    /// Events held in memory, hot and cold.
    pub events: usize,
    /// Events of the ring left in the store it was restored from (read back on demand).
    pub stored_events: usize,
    /// Events held uncompressed.
    pub hot_events: usize,
    /// Bytes of the uncompressed frames.
    pub hot_bytes: usize,
    /// Compressed blocks.
    pub cold_blocks: usize,
    /// Bytes of the compressed blocks.
    pub cold_bytes: usize,
    /// What the compressed events take uncompressed.
    pub cold_raw_bytes: usize,
    /// Events held beyond the ring because a live subscriber has not read them yet.
    pub lag_events: usize,
    /// Bytes of those events (counted against the lag budget).
    pub lag_bytes: usize,
}

/// A bounded, append-only, multi-subscriber event log (see the module docs).
pub struct EventLog {
    max_size: usize,
    /// Bytes of events kept beyond the ring for live subscribers (see the module docs).
    lag_budget: usize,
    state: Mutex<LogState>,
    version: watch::Sender<u64>,
    /// The last frame's length: the next frame's buffer is sized from it.
    size_hint: AtomicUsize,
    /// A compaction is running (one at a time).
    compacting: AtomicBool,
    /// For a log built by [`EventLog::restore`]: when, and the bytes of the frames it was
    /// restored with (the compactor holds such rings back during a burst of take-overs).
    restored: Option<Restored>,
}

/// When a log was restored and how many bytes of frames it was restored with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restored {
    /// When [`EventLog::restore`] built the log.
    pub(crate) at: Instant,
    /// Bytes of the frames it restored (all hot).
    pub(crate) bytes: usize,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("EventLog")
            .field("max_size", &self.max_size)
            .field("lag_budget", &self.lag_budget)
            .field("len", &state.len())
            .field("last_seq", &(state.next_seq - 1))
            .field("closed", &state.closed)
            .finish()
    }
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SIZE)
    }
}

impl EventLog {
    /// A log whose ring holds `max_size` events (at least 1), with the default lag budget
    /// ([`DEFAULT_LAG_BUDGET`]).
    pub fn new(max_size: usize) -> Self {
        let (version, _) = watch::channel(0);
        Self {
            max_size: max_size.max(1),
            lag_budget: DEFAULT_LAG_BUDGET,
            state: Mutex::new(LogState {
                stored: None,
                cold: VecDeque::new(),
                cold_skip: 0,
                cold_len: 0,
                ring: VecDeque::new(),
                next_seq: 1,
                closed: false,
                sink: None,
                durable: None,
                quiet_since: (1, Instant::now()),
                readers: BTreeMap::new(),
                lag_bytes: 0,
            }),
            version,
            size_hint: AtomicUsize::new(256),
            compacting: AtomicBool::new(false),
            restored: None,
        }
    }

    /// The same log with a lag budget of `bytes`: events a live subscriber has not read yet
    /// are kept beyond the ring until they take more than `bytes` (0: the ring alone bounds
    /// every reader, as for a client that went away).
    #[must_use]
    pub fn with_lag_budget(mut self, bytes: usize) -> Self {
        self.lag_budget = bytes;
        self
    }

    /// A log continuing from persisted events (another host's log of the same session): the
    /// ring holds the last `max_size` of `events`, and the next append gets the seq after the
    /// last one. Events whose name is unknown are skipped. With `older` (the oldest seq the
    /// store holds, and the store), the seqs from there up to the first of `events` make the
    /// ring's stored part (see `stored`), within the ring's `max_size`.
    pub(crate) fn restore(
        max_size: usize,
        events: &[StoredEvent],
        older: Option<(u64, Arc<dyn OlderEvents>)>,
    ) -> Self {
        let mut log = Self::new(max_size);
        let bytes = {
            let mut state = log.state.lock();
            let skip = events.len().saturating_sub(log.max_size);
            for stored in &events[skip..] {
                let Some(kind) = EventKind::from_name(&stored.event) else {
                    tracing::warn!(seq = stored.seq, event = %stored.event, "unknown persisted event skipped");
                    continue;
                };
                if stored.seq < state.next_seq {
                    continue;
                }
                state
                    .ring
                    .push_back(render(stored.seq, kind, stored.data.as_bytes()));
                state.next_seq = stored.seq + 1;
            }
            if let Some((oldest, source)) = older {
                let end = state.ring.front().map_or(state.next_seq, |ev| ev.seq);
                let room = log.max_size.saturating_sub(state.ring.len()) as u64;
                let first = oldest.max(end.saturating_sub(room)).max(1);
                if first < end {
                    state.stored = Some(StoredPart { first, end, source });
                }
            }
            let last = state.next_seq - 1;
            let bytes = state.ring.iter().map(|ev| ev.frame.len()).sum();
            drop(state);
            log.version.send_replace(last);
            bytes
        };
        log.restored = Some(Restored {
            at: Instant::now(),
            bytes,
        });
        log
    }

    /// When this log was restored from persisted events, and with how many bytes of frames
    /// (`None` for a log that started here).
    pub(crate) fn restored(&self) -> Option<Restored> {
        self.restored
    }

    /// Sends every event appended from now on (in seq order) to `sink` as well; persistence
    /// writers batch them from there. The channel closes when the log closes. From now on
    /// subscribers only receive events confirmed with [`mark_durable`](Self::mark_durable)
    /// (everything already in the log counts as durable).
    pub(crate) fn set_sink(&self, sink: mpsc::UnboundedSender<LoggedEvent>) {
        let mut state = self.state.lock();
        state.sink = Some(sink);
        state.durable = Some(state.next_seq - 1);
    }

    /// Confirms that every event up to `seq` is persisted: subscribers may now receive them.
    pub(crate) fn mark_durable(&self, seq: u64) {
        let mut state = self.state.lock();
        let Some(durable) = state.durable.as_mut() else {
            return;
        };
        if seq <= *durable {
            return;
        }
        *durable = seq;
        let last = state.next_seq - 1;
        drop(state);
        self.version.send_replace(last);
    }

    /// Ring capacity.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Bytes of events kept beyond the ring for live subscribers, at most.
    pub fn lag_budget(&self) -> usize {
        self.lag_budget
    }

    /// The last assigned seq (0 before the first append).
    pub fn last_seq(&self) -> u64 {
        self.state.lock().next_seq - 1
    }

    /// The oldest seq still held (`last_seq + 1` when empty).
    pub fn oldest_seq(&self) -> u64 {
        self.state.lock().oldest_seq()
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.state.lock().len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Whether the ring has a stored part (events read from the store on demand; see
    /// [`history`](Self::history)).
    pub(crate) fn has_stored_part(&self) -> bool {
        self.state.lock().stored.is_some()
    }

    /// Every event of the ring, oldest first: [`snapshot`](Self::snapshot) preceded by the
    /// stored part, read from the store (what it fails to read is logged and left out).
    pub(crate) async fn history(&self) -> Vec<LoggedEvent> {
        let Some(part) = self.state.lock().stored.clone() else {
            return self.snapshot();
        };
        let mut older = Vec::new();
        let mut from = part.first;
        while from < part.end {
            match part.read(from, self.max_size).await {
                Ok((batch, last)) => {
                    from = last + 1;
                    older.extend(batch);
                }
                Err(err) => {
                    tracing::error!(error = %err, seq = from, "stored events unreadable");
                    break;
                }
            }
        }
        let held = self.snapshot();
        let first_held = held.first().map_or(u64::MAX, |ev| ev.seq);
        older.retain(|ev| ev.seq < first_held);
        older.extend(held);
        older
    }

    /// A copy of the events currently held in memory, oldest first (compressed ones
    /// decompressed; an unreadable block is logged and left out). A restored log's stored
    /// part (events left in the store, read back by subscribers) is not included.
    pub fn snapshot(&self) -> Vec<LoggedEvent> {
        let (cold, skip, hot) = {
            let state = self.state.lock();
            let hot: Vec<LoggedEvent> = state.ring.iter().cloned().collect();
            (
                state.cold.iter().cloned().collect::<Vec<_>>(),
                state.cold_skip,
                hot,
            )
        };
        let mut out = Vec::new();
        for (i, block) in cold.iter().enumerate() {
            let from = block.first_seq() + if i == 0 { skip as u64 } else { 0 };
            match block.events(from, usize::MAX) {
                Ok(events) => out.extend(events),
                Err(err) => tracing::error!(error = %err, "event block unreadable"),
            }
        }
        out.extend(hot);
        out
    }

    /// Events held uncompressed.
    pub(crate) fn hot_len(&self) -> usize {
        self.state.lock().ring.len()
    }

    /// How long the log has gone without a new event, as observed by calls to this method:
    /// measured from the first call that saw the current last event, so it lags the truth by
    /// up to the interval between calls (the compactor polls it on every tick).
    pub(crate) fn quiet_for(&self) -> Duration {
        let mut state = self.state.lock();
        if state.quiet_since.0 != state.next_seq {
            state.quiet_since = (state.next_seq, Instant::now());
        }
        state.quiet_since.1.elapsed()
    }

    /// What the log holds, hot and cold.
    pub fn memory(&self) -> LogMemory {
        let state = self.state.lock();
        let stored_events = state.stored.as_ref().map_or(0, StoredPart::len);
        LogMemory {
            events: state.len() - stored_events,
            stored_events,
            hot_events: state.ring.len(),
            hot_bytes: state.ring.iter().map(|ev| ev.frame.len()).sum(),
            cold_blocks: state.cold.len(),
            cold_bytes: state.cold.iter().map(|b| b.heap_bytes()).sum(),
            cold_raw_bytes: state.cold.iter().map(|b| b.raw_bytes()).sum(),
            lag_events: state.len().saturating_sub(self.max_size),
            lag_bytes: state.lag_bytes,
        }
    }

    /// Compresses the hot events (all but the newest `keep_hot`) into cold blocks, when there
    /// are at least `min_events` of them. Returns how many events were compressed.
    ///
    /// CPU-bound (deflate): call it from a blocking thread for logs that have gone quiet
    /// (`quiet_for`). Appends and subscribers proceed meanwhile; the lock
    /// is held only to copy the event handles and to swap the result in.
    pub fn compact(&self, keep_hot: usize, min_events: usize) -> usize {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return 0;
        }
        let packed = self.compact_inner(keep_hot, min_events.max(1));
        self.compacting.store(false, Ordering::Release);
        packed
    }

    fn compact_inner(&self, keep_hot: usize, min_events: usize) -> usize {
        let events: Vec<LoggedEvent> = {
            let state = self.state.lock();
            if state.len() > self.max_size {
                // Events beyond the ring exist only while a live reader lags; they leave as it
                // reads, and are never compressed (they are counted as they were held).
                return 0;
            }
            let n = state.ring.len().saturating_sub(keep_hot);
            if n < min_events {
                return 0;
            }
            state.ring.iter().take(n).cloned().collect()
        };
        let blocks: Vec<ColdBlock> = events
            .chunks(BLOCK_EVENTS)
            .map_while(ColdBlock::pack)
            .collect();
        drop(events);
        let mut packed = 0;
        let mut state = self.state.lock();
        if state.len() > self.max_size {
            return 0; // a reader started lagging meanwhile
        }
        for block in blocks {
            let hot_first = state.hot_first_seq();
            if let Some(last) = state.cold.back() {
                // Cold and hot stay contiguous: this block must start where both meet.
                if last.end_seq() != block.first_seq() || hot_first != block.first_seq() {
                    break;
                }
            } else if hot_first >= block.end_seq() {
                continue; // evicted meanwhile
            } else if hot_first < block.first_seq() {
                break;
            } else {
                state.cold_skip = usize::try_from(hot_first - block.first_seq()).unwrap_or(0);
            }
            let n = usize::try_from(block.end_seq() - hot_first).unwrap_or(0);
            let n_hot = n.min(state.ring.len());
            state.ring.drain(..n_hot);
            state.cold_len += n;
            packed += n;
            state.cold.push_back(Arc::new(block));
        }
        if state.ring.is_empty() {
            state.ring.shrink_to_fit();
        } else {
            let len = state.ring.len();
            state.ring.shrink_to(len.max(BLOCK_EVENTS));
        }
        packed
    }

    /// Appends an event: assigns the next seq, renders the SSE frame once, wakes subscribers.
    pub fn append<T: Serialize + ?Sized>(
        &self,
        kind: EventKind,
        data: &T,
    ) -> Result<LoggedEvent, AppendError> {
        // Serialise outside the lock, straight into the frame's buffer behind room for the
        // header; only the seq (and so the header) is filled in under the lock.
        let name = kind.as_str();
        let headroom = HEADER_MAX + name.len();
        let mut buf =
            BytesMut::with_capacity(headroom + self.size_hint.load(Ordering::Relaxed) + 16);
        buf.put_bytes(0, headroom);
        serde_json::to_writer((&mut buf).writer(), data)
            .map_err(|e| AppendError::Serialize(e.to_string()))?;
        buf.put_slice(b"\n\n");
        self.size_hint
            .store(buf.len() - headroom, Ordering::Relaxed);
        let mut state = self.state.lock();
        if state.closed {
            return Err(AppendError::Closed);
        }
        let seq = state.next_seq;
        let event = finish_frame(buf, headroom, seq, kind);
        state.next_seq += 1;
        let len = state.len();
        if len >= self.max_size {
            // The oldest event of the ring goes beyond it: kept while a live reader needs it.
            let leaving = state.oldest_seq() + (len - self.max_size) as u64;
            state.lag_bytes += state.frame_len(leaving);
        }
        state.ring.push_back(event.clone());
        state.trim(self.max_size, self.lag_budget);
        if let Some(sink) = &state.sink {
            // Under the lock, so the sink sees events in seq order.
            let _ = sink.send(event.clone());
        }
        drop(state);
        self.version.send_replace(seq);
        tracing::trace!(seq, event = name, "event appended");
        crate::metrics::event_appended();
        Ok(event)
    }

    /// Closes the log: appends fail from now on, and subscribers end once they have drained it.
    pub fn close(&self) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        state.closed = true;
        state.sink = None;
        let last = state.next_seq - 1;
        drop(state);
        self.version.send_replace(last);
    }

    /// Subscribes from the oldest event still held (no `Last-Event-ID`).
    pub fn subscribe_from_start(self: &Arc<Self>) -> Subscription {
        let mut state = self.state.lock();
        let cursor = state.oldest_seq() - 1;
        state.add_reader(cursor);
        drop(state);
        Subscription {
            log: Arc::clone(self),
            cursor,
            version: self.version.subscribe(),
        }
    }

    /// Subscribes to every event with seq greater than `after_seq`, then tails live.
    ///
    /// Fails when `after_seq` is older than the ring ([`SubscribeError::Evicted`]) or beyond
    /// the last assigned seq ([`SubscribeError::Future`]).
    pub fn subscribe(self: &Arc<Self>, after_seq: u64) -> Result<Subscription, SubscribeError> {
        let mut state = self.state.lock();
        let oldest = state.oldest_seq();
        let last = state.next_seq - 1;
        if after_seq > last {
            return Err(SubscribeError::Future {
                requested: after_seq,
                last,
            });
        }
        if after_seq + 1 < oldest {
            return Err(SubscribeError::Evicted {
                requested: after_seq,
                oldest,
            });
        }
        state.add_reader(after_seq);
        drop(state);
        Ok(Subscription {
            log: Arc::clone(self),
            cursor: after_seq,
            version: self.version.subscribe(),
        })
    }
}

/// Longest frame header without the event name: `id: <20 digits>\nevent: ` + `\ndata: `.
const HEADER_MAX: usize = 4 + 20 + 8 + 7;

/// Length of the header `id: <seq>\nevent: <name>\ndata: ` for a seq of `seq_digits` digits.
fn header_len(seq_digits: usize, kind: EventKind) -> usize {
    4 + seq_digits + 8 + kind.as_str().len() + 7
}

/// Where the data starts in the frame of event `seq` of kind `kind`.
fn data_start_of(seq: u64, kind: EventKind) -> u32 {
    u32::try_from(header_len(itoa_buf(seq).as_str().len(), kind)).unwrap_or(u32::MAX)
}

/// Writes the header of event `seq` right before the data that starts at `headroom` in `buf`
/// (which ends with the data and `\n\n`), and drops the unused room in front of it.
fn finish_frame(mut buf: BytesMut, headroom: usize, seq: u64, kind: EventKind) -> LoggedEvent {
    let seq_buf = itoa_buf(seq);
    let seq_str = seq_buf.as_str().as_bytes();
    let name = kind.as_str().as_bytes();
    let header_len = header_len(seq_str.len(), kind);
    let start = headroom - header_len;
    let mut at = start;
    for part in [b"id: ", seq_str, b"\nevent: ", name, b"\ndata: "] {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    buf.advance(start);
    LoggedEvent {
        seq,
        kind,
        frame: buf.freeze(),
        data_start: u32::try_from(header_len).unwrap_or(u32::MAX),
    }
}

/// Renders one complete SSE frame.
fn render(seq: u64, kind: EventKind, json: &[u8]) -> LoggedEvent {
    let headroom = HEADER_MAX + kind.as_str().len();
    let mut buf = BytesMut::with_capacity(headroom + json.len() + 2);
    buf.put_bytes(0, headroom);
    buf.put_slice(json);
    buf.put_slice(b"\n\n");
    finish_frame(buf, headroom, seq, kind)
}

/// Formats a u64 without allocating.
struct SeqBuf {
    buf: [u8; 20],
    start: usize,
}

impl SeqBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
}

fn itoa_buf(mut n: u64) -> SeqBuf {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    SeqBuf { buf, start: i }
}

/// One subscriber's cursor into an [`EventLog`]. While it exists, the log keeps the events
/// it has not read yet (within the lag budget; see the module docs): drop it when its reader
/// goes away.
pub struct Subscription {
    log: Arc<EventLog>,
    cursor: u64,
    version: watch::Receiver<u64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.log.state.lock();
        state.remove_reader(self.cursor);
        state.trim(self.log.max_size, self.log.lag_budget);
    }
}

impl Subscription {
    /// The seq of the last event handed out (the client's `Last-Event-ID`).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Waits for the next events after the cursor and returns up to `max` of them, in order.
    ///
    /// `Ok(None)` means the log is closed and fully delivered. Cancel-safe: dropping the future
    /// loses nothing.
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<LoggedEvent>>, SubscribeError> {
        let max = max.max(1);
        loop {
            // Mark the current version seen *before* reading the ring, so an append that
            // lands after the read is guaranteed to wake `changed()` below.
            self.version.borrow_and_update();
            // Events in the stored part are read after the lock is released.
            let from_store = 'held: {
                let mut state = self.log.state.lock();
                let oldest = state.oldest_seq();
                let next = self.cursor + 1;
                if next < oldest {
                    return Err(SubscribeError::Lagged { missed: next });
                }
                // With durable delivery on, only events already persisted are handed out, so
                // a cursor a client holds can always be restored on another host.
                let visible = state.durable.map_or(state.next_seq, |d| d + 1);
                if next < visible {
                    let take = usize::try_from(visible - next)
                        .unwrap_or(usize::MAX)
                        .min(max);
                    if let Some(part) = state.stored.clone().filter(|p| next < p.end) {
                        break 'held Some((part, next, take));
                    }
                    let hot_first = state.hot_first_seq();
                    if next < hot_first {
                        // Compressed: decompress outside the log's lock.
                        let block = state.cold_block(next).cloned();
                        drop(state);
                        let Some(block) = block else {
                            return Err(SubscribeError::Lagged { missed: next });
                        };
                        let batch = block.events(next, take).map_err(|err| {
                            tracing::error!(error = %err, seq = next, "cannot replay compressed events");
                            SubscribeError::Lagged { missed: next }
                        })?;
                        if let Some(last) = batch.last() {
                            let log = &self.log;
                            log.state.lock().advance_reader(
                                &mut self.cursor,
                                last.seq,
                                log.max_size,
                                log.lag_budget,
                            );
                        }
                        return Ok(Some(batch));
                    }
                    let start = usize::try_from(next - hot_first).unwrap_or(usize::MAX);
                    let batch: Vec<LoggedEvent> =
                        state.ring.iter().skip(start).take(take).cloned().collect();
                    if let Some(last) = batch.last() {
                        let (max_size, lag_budget) = (self.log.max_size, self.log.lag_budget);
                        state.advance_reader(&mut self.cursor, last.seq, max_size, lag_budget);
                    }
                    return Ok(Some(batch));
                }
                if state.closed && visible >= state.next_seq {
                    return Ok(None);
                }
                None
            };
            if let Some((part, next, take)) = from_store {
                let (batch, last) = part.read(next, take).await.map_err(|reason| {
                    tracing::warn!(seq = next, error = %reason, "cannot read stored events");
                    SubscribeError::Unavailable { seq: next, reason }
                })?;
                let log = &self.log;
                log.state.lock().advance_reader(
                    &mut self.cursor,
                    last,
                    log.max_size,
                    log.lag_budget,
                );
                if batch.is_empty() {
                    continue; // only events of unknown kinds: read on
                }
                return Ok(Some(batch));
            }
            if self.version.changed().await.is_err() {
                // The sender lives inside the log we hold an Arc to; this cannot happen, but
                // if it did, the log can produce nothing more.
                return Ok(None);
            }
        }
    }

    /// Waits for the next single event (`Ok(None)` once the closed log is drained).
    pub async fn next(&mut self) -> Result<Option<LoggedEvent>, SubscribeError> {
        Ok(self.next_batch(1).await?.and_then(|mut batch| batch.pop()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn frame_is_rendered_once_and_exactly() {
        let log = EventLog::new(10);
        let ev = log
            .append(
                EventKind::SessionReady,
                &json!({"session_id": "s", "protocol_version": "1.0"}),
            )
            .unwrap();
        assert_eq!(
            &ev.frame()[..],
            b"id: 1\nevent: session_ready\ndata: {\"session_id\":\"s\",\"protocol_version\":\"1.0\"}\n\n"
        );
        assert_eq!(
            ev.data_json(),
            r#"{"session_id":"s","protocol_version":"1.0"}"#
        );
        assert_eq!(ev.data()["session_id"], "s");
        assert_eq!(itoa_buf(0).as_str(), "0");
        assert_eq!(itoa_buf(u64::MAX).as_str(), "18446744073709551615");
    }

    #[test]
    fn ring_evicts_oldest_and_subscribe_checks_bounds() {
        let log = Arc::new(EventLog::new(3));
        assert!(log.subscribe(0).is_ok());
        assert_eq!(
            log.subscribe(1).unwrap_err(),
            SubscribeError::Future {
                requested: 1,
                last: 0
            }
        );
        for i in 0..5 {
            log.append(EventKind::MessageDelta, &json!({"i": i}))
                .unwrap();
        }
        assert_eq!(log.oldest_seq(), 3);
        assert_eq!(log.last_seq(), 5);
        assert!(
            log.subscribe(2).is_ok(),
            "cursor just before the oldest is fine"
        );
        assert_eq!(
            log.subscribe(1).unwrap_err(),
            SubscribeError::Evicted {
                requested: 1,
                oldest: 3
            }
        );
        assert_eq!(
            log.subscribe(6).unwrap_err(),
            SubscribeError::Future {
                requested: 6,
                last: 5
            }
        );
    }

    #[tokio::test]
    async fn subscribers_replay_then_tail_then_end_after_close() {
        let log = Arc::new(EventLog::new(100));
        log.append(EventKind::SessionReady, &json!({})).unwrap();
        let mut sub = log.subscribe_from_start();
        let mut late = log.subscribe(1).unwrap();
        let first = sub.next().await.unwrap().unwrap();
        assert_eq!(first.seq(), 1);
        let log2 = Arc::clone(&log);
        let producer = tokio::spawn(async move {
            for i in 0..50 {
                log2.append(EventKind::MessageDelta, &json!({"i": i}))
                    .unwrap();
                tokio::task::yield_now().await;
            }
            log2.append(EventKind::Done, &json!({})).unwrap();
            log2.close();
        });
        let mut seen = vec![1];
        while let Some(batch) = sub.next_batch(7).await.unwrap() {
            assert!(batch.len() <= 7);
            seen.extend(batch.iter().map(LoggedEvent::seq));
        }
        producer.await.unwrap();
        assert_eq!(seen, (1..=52).collect::<Vec<_>>());
        let mut late_seen = vec![];
        while let Some(ev) = late.next().await.unwrap() {
            late_seen.push(ev.seq());
        }
        assert_eq!(late_seen, (2..=52).collect::<Vec<_>>());
        assert_eq!(
            log.append(EventKind::Error, &json!({})).unwrap_err(),
            AppendError::Closed
        );
    }

    #[tokio::test]
    async fn lagging_subscriber_is_told_not_skipped() {
        let log = Arc::new(EventLog::new(4).with_lag_budget(0));
        let mut sub = log.subscribe_from_start();
        for i in 0..10 {
            log.append(EventKind::MessageDelta, &json!({"i": i}))
                .unwrap();
        }
        assert_eq!(
            sub.next().await.unwrap_err(),
            SubscribeError::Lagged { missed: 1 }
        );
    }

    fn frame_len_of(i: u64) -> usize {
        let seq = i + 1;
        format!("id: {seq}\nevent: message_delta\ndata: {{\"i\":{i}}}\n\n").len()
    }

    #[tokio::test]
    async fn a_live_reader_keeps_what_it_has_not_read_and_releases_it_as_it_reads() {
        let log = Arc::new(EventLog::new(4));
        let mut sub = log.subscribe_from_start();
        for i in 0..10 {
            log.append(EventKind::MessageDelta, &json!({"i": i}))
                .unwrap();
        }
        let mem = log.memory();
        assert_eq!(
            (log.oldest_seq(), log.len()),
            (1, 10),
            "nothing unread is dropped"
        );
        assert_eq!(mem.lag_events, 6);
        assert_eq!(mem.lag_bytes, (0..6).map(frame_len_of).sum::<usize>());
        let batch = sub.next_batch(3).await.unwrap().unwrap();
        assert_eq!(
            batch.iter().map(LoggedEvent::seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(
            (log.oldest_seq(), log.len()),
            (4, 7),
            "read events are released at once"
        );
        assert_eq!(
            log.memory().lag_bytes,
            (3..6).map(frame_len_of).sum::<usize>()
        );
        let mut seen = 3;
        while seen < 10 {
            seen += sub.next_batch(100).await.unwrap().unwrap().len();
        }
        assert_eq!((log.oldest_seq(), log.len()), (7, 4), "back to the ring");
        assert_eq!((log.memory().lag_events, log.memory().lag_bytes), (0, 0));
    }

    #[tokio::test]
    async fn a_reader_beyond_the_budget_is_cut_and_a_dropped_one_releases_at_once() {
        // A budget of three frames of the size the last ones have.
        let budget = 3 * frame_len_of(19);
        let log = Arc::new(EventLog::new(4).with_lag_budget(budget));
        let mut stalled = log.subscribe_from_start();
        let mut live = log.subscribe_from_start();
        for i in 0..6 {
            log.append(EventKind::MessageDelta, &json!({"i": i}))
                .unwrap();
            assert_eq!(live.next().await.unwrap().unwrap().seq(), i + 1);
        }
        assert_eq!(log.len(), 6, "the stalled reader still has everything");
        log.append(EventKind::MessageDelta, &json!({"i": 6}))
            .unwrap();
        assert_eq!(live.next().await.unwrap().unwrap().seq(), 7);
        assert_eq!(
            (log.oldest_seq(), log.len()),
            (1, 7),
            "three extra events fit in the budget"
        );
        log.append(EventKind::MessageDelta, &json!({"i": 7}))
            .unwrap();
        assert_eq!(
            log.oldest_seq(),
            5,
            "the fourth does not: the stalled reader is cut"
        );
        assert_eq!(live.next().await.unwrap().unwrap().seq(), 8);
        for i in 8..20 {
            log.append(EventKind::MessageDelta, &json!({"i": i}))
                .unwrap();
            assert!(log.memory().lag_bytes <= budget);
            assert_eq!(
                live.next().await.unwrap().unwrap().seq(),
                i + 1,
                "the live reader is never cut"
            );
        }
        assert_eq!(
            log.len(),
            4,
            "once cut, the stalled reader holds nothing beyond the ring"
        );
        assert_eq!(
            stalled.next().await.unwrap_err(),
            SubscribeError::Lagged { missed: 1 }
        );
        drop(stalled);
        // No reader: the ring alone, as for clients that went away.
        drop(live);
        for i in 20..30 {
            log.append(EventKind::MessageDelta, &json!({"i": i}))
                .unwrap();
        }
        assert_eq!((log.oldest_seq(), log.len()), (27, 4));
        assert_eq!(log.memory().lag_bytes, 0);
    }

    #[tokio::test]
    async fn extra_events_are_not_compacted_and_a_reader_reads_on_from_cold_ones() {
        let log = Arc::new(EventLog::new(4));
        for i in 0..4 {
            log.append(EventKind::MessageDelta, &json!({"i": i}))
                .unwrap();
        }
        assert_eq!(log.compact(0, 1), 4);
        let mut sub = log.subscribe(0).unwrap();
        for i in 4..8 {
            log.append(EventKind::MessageDelta, &json!({"i": i}))
                .unwrap();
        }
        assert_eq!(
            log.len(),
            8,
            "cold events unread by a live reader are kept too"
        );
        assert_eq!(log.compact(0, 1), 0, "no compaction while a reader lags");
        let mut seen = Vec::new();
        while seen.len() < 8 {
            seen.extend(
                sub.next_batch(3)
                    .await
                    .unwrap()
                    .unwrap()
                    .iter()
                    .map(LoggedEvent::seq),
            );
        }
        assert_eq!(seen, (1..=8).collect::<Vec<_>>());
        assert_eq!((log.len(), log.memory().lag_bytes), (4, 0));
        assert_eq!(log.compact(0, 1), 4);
    }
}
