//! Property tests of the event log: under concurrent appends, compactions, closes and
//! resumes, every subscriber sees a gap-free, duplicate-free, ordered sequence of intact
//! frames — or is told it lagged. Compaction (the compressed cold ring) is invisible to
//! readers. Retention follows live readers: a subscriber is cut only when what it has not read
//! beyond the ring exceeds the lag budget, and nothing beyond the ring outlives its need.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agent_webkit_core::event_log::{EventLog, SubscribeError};
use agent_webkit_core::models::EventKind;
use proptest::prelude::*;
use serde_json::json;

/// What one subscriber does: read `chunks[i]` events, then drop and resume from its cursor.
#[derive(Debug, Clone)]
struct Reader {
    start: Option<u64>,
    chunks: Vec<usize>,
    batch: usize,
}

fn reader() -> impl Strategy<Value = Reader> {
    (
        proptest::option::of(0u64..5),
        proptest::collection::vec(1usize..40, 0..5),
        1usize..16,
    )
        .prop_map(|(start, chunks, batch)| Reader {
            start,
            chunks,
            batch,
        })
}

/// Outcome of one reader: the seqs it saw, and how it ended.
#[derive(Debug)]
enum End {
    Drained,
    Lagged(u64),
    ResumeRefused(SubscribeError),
}

async fn run_reader(log: Arc<EventLog>, r: Reader) -> (Vec<u64>, End) {
    let mut seen = Vec::new();
    let mut sub = match r.start {
        None => log.subscribe_from_start(),
        Some(after) => match log.subscribe(after) {
            Ok(sub) => sub,
            Err(err) => return (seen, End::ResumeRefused(err)),
        },
    };
    let mut chunks = r.chunks.into_iter();
    let mut budget = chunks.next();
    loop {
        match sub.next_batch(r.batch).await {
            Ok(Some(batch)) => {
                for ev in &batch {
                    let header = format!("id: {}\nevent: {}\ndata: ", ev.seq(), ev.kind().as_str());
                    assert!(
                        ev.frame().starts_with(header.as_bytes()),
                        "intact frame {ev:?}"
                    );
                    assert!(ev.frame().ends_with(b"\n\n"));
                    assert!(ev.data().is_object(), "data parses: {ev:?}");
                }
                seen.extend(batch.iter().map(|ev| ev.seq()));
                if let Some(b) = budget.as_mut() {
                    *b = b.saturating_sub(batch.len());
                    if *b == 0 {
                        // Disconnect and resume with Last-Event-ID = cursor.
                        let cursor = sub.cursor();
                        drop(sub);
                        sub = match log.subscribe(cursor) {
                            Ok(sub) => sub,
                            Err(err) => return (seen, End::ResumeRefused(err)),
                        };
                        budget = chunks.next();
                    }
                }
            }
            Ok(None) => return (seen, End::Drained),
            Err(SubscribeError::Lagged { missed }) => return (seen, End::Lagged(missed)),
            Err(err) => return (seen, End::ResumeRefused(err)),
        }
        tokio::task::yield_now().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn every_subscriber_sees_an_ordered_gap_free_sequence(
        ring in 1usize..64,
        events in 0u64..300,
        producers in 1usize..4,
        readers in proptest::collection::vec(reader(), 1..6),
        compaction in proptest::option::of((0usize..8, 1usize..20)),
        budget in prop_oneof![Just(0usize), 0usize..4_000, Just(usize::MAX)],
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async move {
            let log = Arc::new(EventLog::new(ring).with_lag_budget(budget));
            log.append(EventKind::SessionReady, &json!({})).unwrap();
            let reader_tasks: Vec<_> = readers
                .iter()
                .cloned()
                .map(|r| tokio::spawn(run_reader(Arc::clone(&log), r)))
                .collect();
            // A compactor packs the hot events into compressed blocks as they come.
            let compactor = compaction.map(|(keep_hot, min_events)| {
                let log = Arc::clone(&log);
                tokio::task::spawn_blocking(move || {
                    let mut packed = 0;
                    while !log.is_closed() {
                        packed += log.compact(keep_hot, min_events);
                        std::thread::yield_now();
                    }
                    packed
                })
            });
            // Several producers append concurrently; seqs must still be unique and dense.
            let per = events / producers as u64;
            let producer_tasks: Vec<_> = (0..producers)
                .map(|p| {
                    let log = Arc::clone(&log);
                    tokio::spawn(async move {
                        let mut mine = Vec::new();
                        for i in 0..per {
                            let ev = log.append(EventKind::MessageDelta, &json!({"p": p, "i": i})).unwrap();
                            assert!(log.memory().lag_bytes <= budget, "within the lag budget");
                            mine.push(ev.seq());
                            if i % 7 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                        mine
                    })
                })
                .collect();
            let mut all: Vec<u64> = vec![1];
            for t in producer_tasks {
                let mine = t.await.unwrap();
                prop_assert!(mine.windows(2).all(|w| w[0] < w[1]), "a producer's seqs increase");
                all.extend(mine);
            }
            let done = log.append(EventKind::Done, &json!({})).unwrap();
            log.close();
            if let Some(compactor) = compactor {
                compactor.await.unwrap();
            }
            all.push(done.seq());
            all.sort_unstable();
            let total = 1 + per * producers as u64 + 1;
            prop_assert_eq!(all, (1..=total).collect::<Vec<_>>(), "seqs are unique and dense");

            for (task, r) in reader_tasks.into_iter().zip(readers) {
                let (seen, end) = task.await.unwrap();
                let first = r.start.map_or(1, |s| s + 1);
                if let Some(&head) = seen.first() {
                    // From the start of the ring the first event may already be evicted.
                    if r.start.is_some() {
                        prop_assert_eq!(head, first);
                    }
                }
                prop_assert!(
                    seen.windows(2).all(|w| w[1] == w[0] + 1),
                    "gap-free, duplicate-free, ordered: {:?}", seen
                );
                match end {
                    End::Drained => {
                        prop_assert_eq!(seen.last().copied(), Some(total), "drained readers end at done");
                    }
                    End::Lagged(missed) => {
                        let last = seen.last().copied().unwrap_or(first - 1);
                        prop_assert_eq!(missed, last + 1, "lag names the first missing seq");
                        prop_assert!(missed + (ring as u64) <= total, "lag only when the ring overflowed");
                        prop_assert!(budget < usize::MAX, "a live reader within the budget is never cut");
                    }
                    End::ResumeRefused(SubscribeError::Evicted { requested, oldest }) => {
                        prop_assert!(requested + 1 < oldest);
                        let last = seen.last().copied().unwrap_or(0);
                        prop_assert!(last == requested || seen.is_empty());
                    }
                    End::ResumeRefused(SubscribeError::Future { requested, last }) => {
                        // Only an initial cursor beyond the log can be "future".
                        prop_assert!(seen.is_empty());
                        prop_assert!(requested > last);
                    }
                    End::ResumeRefused(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            // Every reader is gone: only the ring is left.
            let mem = log.memory();
            prop_assert_eq!((mem.lag_events, mem.lag_bytes), (0, 0));
            prop_assert!(log.len() <= ring);
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_never_blocks_append_or_others() {
    let log = Arc::new(EventLog::new(10_000));
    let _stalled = log.subscribe_from_start(); // never polled
    let mut fast = log.subscribe_from_start();
    for i in 0..5_000 {
        log.append(EventKind::MessageDelta, &json!({"i": i}))
            .unwrap();
    }
    log.close();
    let mut n = 0;
    while let Some(batch) = fast.next_batch(1000).await.unwrap() {
        n += batch.len();
    }
    assert_eq!(n, 5_000);
}

#[tokio::test]
async fn frames_are_shared_not_copied() {
    let log = Arc::new(EventLog::new(10));
    let mut a = log.subscribe_from_start();
    let mut b = log.subscribe_from_start();
    log.append(
        EventKind::Result,
        &json!({"session_id": "s", "subtype": "success"}),
    )
    .unwrap();
    let ea = a.next().await.unwrap().unwrap();
    let eb = b.next().await.unwrap().unwrap();
    assert_eq!(
        ea.frame().as_ptr(),
        eb.frame().as_ptr(),
        "both subscribers hold the same allocation"
    );
}

fn varied_event(i: u64) -> serde_json::Value {
    const WORDS: [&str; 8] = [
        "alpha", "beta", "gamma", "delta", "tool", "result", "ok", "file",
    ];
    let text: Vec<&str> = (0..12)
        .map(|k| WORDS[((i * 7 + k * 13) ^ (i >> 2)) as usize % WORDS.len()])
        .collect();
    json!({"message_id": format!("msg_{}", i / 10), "delta": {"type": "text_delta", "text": text.join(" ")}})
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Whatever was compacted, every cursor reads back the very same frames, and eviction
    /// continues through the compressed blocks with the same bounds.
    #[test]
    fn compaction_is_invisible_to_readers(
        ring in 1usize..400,
        before in 0u64..500,
        after in 0u64..300,
        keep_hot in 0usize..40,
        min_events in 1usize..10,
        batch in 1usize..200,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            let log = Arc::new(EventLog::new(ring));
            let mut all = Vec::new();
            for i in 0..before {
                all.push(log.append(EventKind::MessageDelta, &varied_event(i)).unwrap());
            }
            log.compact(keep_hot, min_events);
            for i in before..before + after {
                all.push(log.append(EventKind::MessageDelta, &varied_event(i)).unwrap());
            }
            log.compact(keep_hot, min_events);
            let last = before + after;
            let oldest = last.saturating_sub(ring as u64) + 1;
            prop_assert_eq!(log.len() as u64, last + 1 - oldest);
            prop_assert_eq!(log.oldest_seq(), oldest);
            let mem = log.memory();
            prop_assert_eq!(mem.events, log.len());
            prop_assert!(mem.hot_events <= log.len());
            let expected: Vec<&[u8]> = all[(oldest - 1) as usize..].iter().map(|ev| &ev.frame()[..]).collect();
            let snapshot = log.snapshot();
            prop_assert_eq!(snapshot.iter().map(|ev| &ev.frame()[..]).collect::<Vec<_>>(), expected.clone());
            for cursor in (oldest - 1)..=last {
                let mut sub = log.subscribe(cursor).unwrap();
                let mut got = Vec::new();
                while got.len() < (last - cursor) as usize {
                    let b = sub.next_batch(batch).await.unwrap().unwrap();
                    prop_assert!(!b.is_empty() && b.len() <= batch);
                    got.extend(b);
                }
                for (ev, want) in got.iter().zip(&all[cursor as usize..]) {
                    prop_assert_eq!(ev.seq(), want.seq());
                    prop_assert_eq!(ev.kind(), want.kind());
                    prop_assert_eq!(ev.frame(), want.frame());
                    prop_assert_eq!(ev.data_json(), want.data_json());
                }
            }
            if oldest > 1 {
                let evicted = log.subscribe(oldest - 2).err();
                prop_assert_eq!(evicted, Some(SubscribeError::Evicted { requested: oldest - 2, oldest }));
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_compacted_ring_is_smaller_and_shares_decompressed_blocks() {
    let log = Arc::new(EventLog::new(1000));
    for i in 0..1000 {
        log.append(EventKind::MessageDelta, &varied_event(i))
            .unwrap();
    }
    let before = log.memory();
    assert_eq!(before.hot_events, 1000);
    assert_eq!(log.compact(0, 1), 1000);
    let after = log.memory();
    assert_eq!((after.events, after.hot_events), (1000, 0));
    assert_eq!(after.cold_raw_bytes, before.hot_bytes);
    assert!(
        after.cold_bytes * 4 < before.hot_bytes,
        "compressed {} of {} bytes",
        after.cold_bytes,
        before.hot_bytes
    );
    // Two readers of the same compressed block get the same decompressed bytes.
    let mut a = log.subscribe(500).unwrap();
    let mut b = log.subscribe(500).unwrap();
    let ea = a.next().await.unwrap().unwrap();
    let eb = b.next().await.unwrap().unwrap();
    assert_eq!(ea.seq(), 501);
    assert_eq!(ea.frame().as_ptr(), eb.frame().as_ptr());
    // New events stay hot; a live reader reads on from the cold part into them.
    log.append(EventKind::Done, &json!({})).unwrap();
    log.close();
    let mut n = 1;
    while let Some(batch) = a.next_batch(64).await.unwrap() {
        n += batch.len();
    }
    assert_eq!(n, 501);
    assert_eq!(
        log.oldest_seq(),
        2,
        "appending to a full compacted ring evicts from the cold part"
    );
}

/// One step of [`retention_follows_live_readers`].
#[derive(Debug, Clone)]
enum Op {
    /// Append an event whose text is this long.
    Append(usize),
    /// Reader `i` (modulo the live ones) reads up to `n` events, if any are there.
    Read(usize, usize),
    /// Reader `i` leaves.
    Leave(usize),
    /// A reader joins from the oldest event held (`None`) or resumes after a cursor.
    Join(Option<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..120).prop_map(Op::Append),
        4 => (0usize..8, 1usize..20).prop_map(|(i, n)| Op::Read(i, n)),
        1 => (0usize..8).prop_map(Op::Leave),
        1 => proptest::option::of(0u64..40).prop_map(Op::Join),
    ]
}

/// A reader of the model: its subscription, what it saw, and whether what it had not read
/// beyond the ring ever took more than the budget.
struct ModelReader {
    sub: agent_webkit_core::event_log::Subscription,
    seen: Vec<u64>,
    first: u64,
    over_budget: bool,
    cut: Option<u64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Step by step: events beyond the ring are held exactly while a live, uncut reader still
    /// needs them, within the budget; a reader is cut only if the events it had not read
    /// beyond the ring ever took more than the budget; whoever is not cut reads every event in
    /// order.
    #[test]
    fn retention_follows_live_readers(
        ring in 1usize..12,
        budget in 0usize..3_000,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        use futures_util::FutureExt;
        let log = Arc::new(EventLog::new(ring).with_lag_budget(budget));
        let mut frames: Vec<usize> = vec![0]; // frame length by seq (index 0 unused)
        let mut readers: Vec<ModelReader> = Vec::new();
        for op in ops {
            match op {
                Op::Append(len) => {
                    let ev = log.append(EventKind::MessageDelta, &json!({"t": "x".repeat(len)})).unwrap();
                    frames.push(ev.frame().len());
                }
                Op::Read(i, n) if !readers.is_empty() => {
                    let n_readers = readers.len();
                    let r = &mut readers[i % n_readers];
                    if r.cut.is_none() && r.sub.cursor() < log.last_seq() {
                        match r.sub.next_batch(n).now_or_never().expect("events are ready") {
                            Ok(Some(batch)) => r.seen.extend(batch.iter().map(|ev| ev.seq())),
                            Ok(None) => unreachable!("the log is open"),
                            Err(SubscribeError::Lagged { missed }) => r.cut = Some(missed),
                            Err(other) => prop_assert!(false, "unexpected {other:?}"),
                        }
                    }
                }
                Op::Leave(i) if !readers.is_empty() => {
                    let i = i % readers.len();
                    drop(readers.swap_remove(i));
                }
                Op::Join(after) => {
                    let sub = match after {
                        None => Some(log.subscribe_from_start()),
                        Some(after) => log.subscribe(after).ok(),
                    };
                    if let Some(sub) = sub {
                        let first = sub.cursor() + 1;
                        readers.push(ModelReader { sub, seen: Vec::new(), first, over_budget: false, cut: None });
                    }
                }
                _ => {}
            }
            // The model: what the log holds and why.
            let last = log.last_seq();
            let oldest = log.oldest_seq();
            let ring_start = last.saturating_sub(ring as u64) + 1;
            prop_assert!(oldest <= ring_start, "the ring is always held");
            let extra: usize = (oldest..ring_start).map(|s| frames[s as usize]).sum();
            let mem = log.memory();
            prop_assert_eq!(mem.lag_events as u64, ring_start - oldest);
            prop_assert_eq!(mem.lag_bytes, extra, "lag bytes are the frames beyond the ring");
            prop_assert!(extra <= budget, "within the budget");
            if oldest < ring_start {
                prop_assert!(
                    readers.iter().any(|r| r.sub.cursor() + 1 == oldest),
                    "the oldest extra event is one a live reader reads next"
                );
            }
            for r in &mut readers {
                // What the reader still needs beyond the ring, as of this step.
                let next = r.sub.cursor() + 1;
                if r.cut.is_none() {
                    let behind: usize = (next..ring_start.max(next)).map(|s| frames[s as usize]).sum();
                    r.over_budget |= behind > budget;
                }
            }
        }
        for r in &readers {
            prop_assert!(
                r.seen.iter().copied().eq(r.first..r.first + r.seen.len() as u64),
                "in order, nothing missing: {:?}", r.seen
            );
            if let Some(missed) = r.cut {
                prop_assert!(r.over_budget, "cut at {} although never more than the budget behind", missed);
                prop_assert_eq!(missed, r.first + r.seen.len() as u64);
            }
        }
        drop(readers);
        let mem = log.memory();
        prop_assert_eq!((mem.lag_events, mem.lag_bytes), (0, 0), "released once every reader left");
    }
}
