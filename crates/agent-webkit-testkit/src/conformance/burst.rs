//! Bursts larger than the ring: live readers get every event (retention follows them); a
//! reader that stops reading is cut with `evicted` once past the lag budget.

use std::time::Duration;

use serde_json::json;

use super::{next_event, Target, Turn};
use crate::{Result, SseFrame, SseStream, TestkitError};

/// Reading a whole burst may take this long (debug builds, shared CI machines).
const BURST_T: Duration = Duration::from_secs(120);

/// Reads `stream` to the turn's `result`, keeping only seqs and names (a 20 000-event burst).
async fn read_burst(stream: &mut SseStream) -> Result<Vec<(u64, String)>> {
    let mut seen = Vec::new();
    let wait = async {
        while let Some(frame) = stream.next_event().await? {
            let end = frame.event == "result" || frame.id.is_none();
            seen.push((frame.id.unwrap_or(0), frame.event));
            if end {
                return Ok(());
            }
        }
        Err(TestkitError::Unexpected(
            "stream ended before result".into(),
        ))
    };
    tokio::time::timeout(BURST_T, wait).await.map_err(|_| {
        TestkitError::Timeout(format!("burst result after {} events", seen.len()))
    })??;
    Ok(seen)
}

/// `--ring-size 1000`: bursts of 2 000 and 20 000 events reach two live readers whole — every
/// seq from `session_ready` to `result`, in order, no `evicted` — although they are many times
/// the ring. (Replay agent only: `stream:N` is its burst.)
pub async fn check_burst_beyond_ring_reaches_live_readers(target: &Target) -> Result<()> {
    const CHECK: &str = "check_burst_beyond_ring_reaches_live_readers";
    if target.agent != super::Agent::Replay {
        return target.skip(CHECK, "bursts of thousands of events come from `stream:N`");
    }
    let server = target.start(&["--ring-size", "1000"]).await?;
    for n in [2_000u64, 20_000] {
        let turn = Turn::new(Some(&format!("stream:{n}")), "go");
        let id = server.create(&turn).await?;
        let mut a = server.client.stream(&id, None).await?;
        let mut b = server.client.stream(&id, None).await?;
        for stream in [&mut a, &mut b] {
            ensure_eq!(next_event(stream).await?.id, Some(1), "session_ready first");
        }
        server.send(&id, &turn).await?;
        let (a, b) = tokio::join!(read_burst(&mut a), read_burst(&mut b));
        for (name, seen) in [("a", a?), ("b", b?)] {
            let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
            ensure!(
                ids.iter().copied().eq(2..=n + 2),
                "reader {name} of a {n}-event burst: every seq 2..={} in order; got {} events, \
                 last {:?}",
                n + 2,
                ids.len(),
                seen.last()
            );
        }
        ensure_eq!(server.client.delete(&id).await?, 204);
    }
    Ok(())
}

/// `--ring-size 100 --lag-budget-bytes 1048576`: a subscriber that stops reading during a
/// 20 MB burst (more than socket buffers, ring and budget hold) is cut: when it reads again it
/// gets a dense prefix, then `error {code:"evicted"}` without an `id`, and its stream ends;
/// its reconnect with `Last-Event-ID` is 412. A live reader beside it gets everything.
pub async fn check_stalled_reader_cut_past_lag_budget(target: &Target) -> Result<()> {
    const CHECK: &str = "check_stalled_reader_cut_past_lag_budget";
    if target.agent != super::Agent::Replay {
        return target.skip(CHECK, "bursts of megabytes come from `stream:N:0:bytes`");
    }
    let server = target
        .start(&["--ring-size", "100", "--lag-budget-bytes", "1048576"])
        .await?;
    let n = 10_000u64;
    let turn = Turn::new(Some(&format!("stream:{n}:0:2000")), "go");
    let id = server.create(&turn).await?;
    let mut stalled = server.client.stream(&id, None).await?;
    let mut live = server.client.stream(&id, None).await?;
    for stream in [&mut stalled, &mut live] {
        ensure_eq!(next_event(stream).await?.id, Some(1), "session_ready first");
    }
    server.send(&id, &turn).await?;
    // The live reader only paces the check (it reads until the burst is over). With a budget
    // this small a heavily loaded machine can let even a reading client fall past it, which is
    // the rule working; that every keeping-up reader gets everything is
    // `check_burst_beyond_ring_reaches_live_readers`' job. So: a dense prefix, whole or cut.
    let seen = read_burst(&mut live).await?;
    let ids: Vec<u64> = seen
        .iter()
        .filter(|(_, e)| e != "error")
        .map(|(id, _)| *id)
        .collect();
    let whole = ids.iter().copied().eq(2..=n + 2);
    let cut = seen.last().is_some_and(|(id, e)| *id == 0 && e == "error")
        && ids.iter().copied().eq(2..2 + ids.len() as u64);
    ensure!(
        whole || cut,
        "the live reader reads a dense sequence, whole or cut with evicted ({} seen, last {:?})",
        seen.len(),
        seen.last()
    );
    // Now the stalled reader reads what its socket held, then learns it was cut.
    let mut frames: Vec<SseFrame> = Vec::new();
    let wait = async {
        while let Some(frame) = stalled.next_event().await? {
            let cut = frame.id.is_none();
            frames.push(frame);
            if cut {
                break;
            }
        }
        Ok::<_, TestkitError>(())
    };
    tokio::time::timeout(BURST_T, wait)
        .await
        .map_err(|_| TestkitError::Timeout("the stalled reader's end".into()))??;
    let last = frames
        .last()
        .ok_or_else(|| TestkitError::Unexpected("the stalled stream ended empty".into()))?;
    ensure_eq!(
        last.event,
        "error",
        "the stalled reader ends with an error: {:?}",
        last.raw
    );
    ensure_eq!(last.json()["code"], json!("evicted"), "{}", last.data);
    let prefix: Vec<u64> = frames.iter().filter_map(|f| f.id).collect();
    ensure!(
        prefix.iter().copied().eq(2..2 + prefix.len() as u64) && (prefix.len() as u64) < n,
        "a dense prefix before the cut ({} events)",
        prefix.len()
    );
    ensure!(
        stalled.next_frame().await?.is_none(),
        "the stream ends after evicted"
    );
    let cursor = prefix.last().copied().unwrap_or(1).to_string();
    super::Reply::read(server.client.stream_raw(&id, Some(&cursor)).await?)
        .await?
        .expect_error_code(412, Some("evicted"))?;
    Ok(())
}
