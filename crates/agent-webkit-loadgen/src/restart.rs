//! The two halves of the restart case (`cargo xtask bench --case restart`), run around a
//! server that is SIGKILLed and started again on the same data directory in between:
//! `restart-fill` opens N sessions with a full ring each and writes them to a state file;
//! `restart-resume` reconnects every one of them with `Last-Event-ID` (each must return exactly
//! the events after it) and then runs a first turn on a few of them (the resumed agent).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::http::{subscribe, unix_micros, Control, Kind, Target};
use crate::scenarios::{read_turn, session_after_one_turn, summary_ms, Report};

/// `restart-fill`: `sessions` sessions, each one `stream:events:0:bytes` turn read to its
/// `result` (with durable delivery, the `result` arrives only once the turn is stored), then
/// the stream is closed. Writes `[{"session", "last"}]` to `state`.
pub async fn fill(
    target: &Target,
    sessions: usize,
    events: u64,
    bytes: usize,
    concurrency: usize,
    state: &Path,
) -> Result<Report, String> {
    let mut report = Report::default();
    let next = Arc::new(AtomicU64::new(0));
    let model = format!("stream:{events}:0:{bytes}");
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, next, errors, model) = (
            target.clone(),
            next.clone(),
            report.errors.clone(),
            model.clone(),
        );
        workers.spawn(async move {
            let mut done = Vec::new();
            let mut ctl = Control::new(&target);
            while next.fetch_add(1, Ordering::Relaxed) < sessions as u64 && errors.count() < 20 {
                match session_after_one_turn(&target, &mut ctl, &model).await {
                    Ok((session, _, (count, last))) if count == events + 1 => {
                        done.push(json!({"session": session, "last": last}));
                    }
                    Ok((_, _, (count, _))) => {
                        errors.push(format!("saw {count} events, expected {}", events + 1));
                    }
                    Err(e) => errors.push(e),
                }
            }
            done
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = workers.join_next().await {
        done.extend(joined.map_err(|e| e.to_string())?);
    }
    let text = serde_json::to_string(&done).map_err(|e| e.to_string())?;
    std::fs::write(state, text).map_err(|e| format!("{}: {e}", state.display()))?;
    report.metric("sessions", done.len());
    report.metric("fill_s", started.elapsed().as_secs_f64());
    report.notes.push(format!(
        "{sessions} sessions ({concurrency} at a time), each one {model} turn read to its result, stream closed; written to {}",
        state.display()
    ));
    Ok(report)
}

/// One session of the state file.
struct Filled {
    session: String,
    last: u64,
}

fn read_state(state: &Path) -> Result<Vec<Filled>, String> {
    let text = std::fs::read_to_string(state).map_err(|e| format!("{}: {e}", state.display()))?;
    let entries: Vec<Value> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", state.display()))?;
    entries
        .iter()
        .map(|e| {
            Some(Filled {
                session: e["session"].as_str()?.to_owned(),
                last: e["last"].as_u64()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("{}: not a restart-fill state file", state.display()))
}

/// Milliseconds from `since` (Unix µs) to now.
fn ms_since(since: u64) -> f64 {
    unix_micros().saturating_sub(since) as f64 / 1e3
}

/// `restart-resume`: against the restarted server (`started_at`: the Unix µs at which it was
/// started), every session of `state` reconnects with `Last-Event-ID: last − back` and must read
/// exactly seqs `last − back + 1 ..= last`; then `turns` sessions, one after another, each get a
/// `user_message` on a stream reconnected at `last`, timed to the first event of that turn.
pub async fn resume(
    target: &Target,
    state: &Path,
    started_at: u64,
    back: u64,
    concurrency: usize,
    turns: usize,
) -> Result<Report, String> {
    let mut report = Report::default();
    let filled = read_state(state)?;
    if filled.is_empty() {
        return Err(format!("{}: no sessions", state.display()));
    }
    let begun_ms = ms_since(started_at);
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut clients = JoinSet::new();
    for f in &filled {
        let (target, gate, session, last) =
            (target.clone(), gate.clone(), f.session.clone(), f.last);
        clients.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let began = Instant::now();
            let from = last.saturating_sub(back);
            let mut sse = subscribe(&target, &session, Some(from)).await?;
            for want in from + 1..=last {
                let (id, kind) = sse.next_event(target.timeout).await?;
                if id != Some(want) {
                    return Err(format!(
                        "{session}: expected seq {want}, got {id:?} ({kind:?})"
                    ));
                }
            }
            Ok::<_, String>((ms_since(started_at), began.elapsed().as_nanos() as u64))
        });
    }
    let mut served_at = Vec::with_capacity(filled.len());
    let mut per_client = Vec::with_capacity(filled.len());
    while let Some(joined) = clients.join_next().await {
        match joined.map_err(|e| e.to_string())? {
            Ok((at, took)) => {
                served_at.push(at);
                per_client.push(took);
            }
            Err(e) => report.errors.push(e),
        }
    }
    served_at.sort_by(f64::total_cmp);
    report.metric("sessions", filled.len());
    report.metric("served", served_at.len());
    report.metric("loadgen_began_ms", begun_ms);
    report.metric("first_served_ms", served_at.first().copied().unwrap_or(0.0));
    report.metric("all_served_ms", served_at.last().copied().unwrap_or(0.0));
    report.metric("per_reconnect", summary_ms(per_client));

    let mut first_events = Vec::new();
    let mut first_kinds = Vec::new();
    let mut ctl = Control::new(target);
    for f in filled.iter().take(turns) {
        let one = async {
            let mut sse = subscribe(target, &f.session, Some(f.last)).await?;
            let sent = Instant::now();
            ctl.send_message(&f.session, "after the restart").await?;
            let (id, kind) = sse.next_event(target.timeout).await?;
            let took = sent.elapsed();
            if id != Some(f.last + 1) {
                return Err(format!(
                    "{}: the resumed turn began with seq {id:?} ({kind:?}), expected {}",
                    f.session,
                    f.last + 1
                ));
            }
            // The rest of the turn: dense seqs up to its result.
            if kind != Kind::Result {
                read_turn(&mut sse, f.last + 2, target.timeout, |_, _, _| {}).await?;
            }
            Ok::<_, String>((took, kind))
        };
        match one.await {
            Ok((took, kind)) => {
                first_events.push(took.as_nanos() as u64);
                first_kinds.push(format!("{kind:?}"));
            }
            Err(e) => report.errors.push(e),
        }
    }
    if let Some(first) = first_events.first() {
        report.metric("first_turn_first_event_ms", *first as f64 / 1e6);
    }
    report.metric("turn_first_event", summary_ms(first_events));
    first_kinds.dedup();
    report.metric("turn_first_event_kinds", first_kinds);
    report.notes.push(format!(
        "times from the server's start (Unix µs {started_at}, taken by the caller right before it spawned the server): the load generator began at {begun_ms:.0} ms; {} sessions ({concurrency} in flight) each reconnect with Last-Event-ID: last − {back} and read exactly the {back} events after it (all_served_ms: the last one done). Then {turns} sessions one after another: reconnect at last, user_message → the turn's first event (turn_first_event; first_turn_first_event_ms is the first session's, whose agent is the first resumed), read to its result.",
        filled.len()
    ));
    Ok(report)
}
