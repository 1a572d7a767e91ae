//! Session-lifecycle scenarios for a server running a CLI agent (the fake `claude` or the real
//! one): `capacity` (memory of many open, mostly hibernated sessions), `wake` (a hibernated
//! session's next turn vs a fresh session's first) and `create` (create → `session_ready` and
//! → first text, with or without warm spares).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::http::{Control, Kind, Sse, Target};
use crate::procmem;
use crate::scenarios::{open_ready, summary_ms, Report};

/// Reads one turn to its `result`; returns how long after `start` its first text arrived
/// (`message_delta`, or `message_complete` from a server that sends no deltas).
async fn first_text_then_result(
    sse: &mut Sse,
    limit: Duration,
    start: Instant,
) -> Result<Duration, String> {
    let mut first = None;
    loop {
        let (_, kind) = sse.next_event(limit).await?;
        match kind {
            Kind::MessageDelta | Kind::MessageComplete => {
                first.get_or_insert_with(|| start.elapsed());
            }
            Kind::Result => return first.ok_or_else(|| "result before any text".to_owned()),
            Kind::Error => return Err("error event during the turn".into()),
            Kind::Done => return Err("done before result".into()),
            Kind::SessionReady | Kind::Other => {}
        }
    }
}

/// Creates a session (`{}`: the server's defaults), subscribes, sends one message and reads
/// the turn. Returns the session, its open stream, and (create → session_ready, create →
/// first text).
async fn session_with_one_turn(
    target: &Target,
    ctl: &mut Control,
    text: &str,
) -> Result<(String, Sse, Duration, Duration), String> {
    let start = Instant::now();
    let session = ctl.create_with(&json!({})).await?;
    let mut sse = open_ready(target, &session).await?;
    let ready = start.elapsed();
    ctl.send_message(&session, text).await?;
    let first = first_text_then_result(&mut sse, target.timeout, start).await?;
    Ok((session, sse, ready, first))
}

fn reading_json(r: &procmem::Reading) -> Value {
    json!({
        "server_rss_bytes": r.server_rss,
        "agents_pss_bytes": r.agents_pss,
        "total_bytes": r.total(),
        "live_agents": r.live_agents,
        "descendants": r.descendants,
    })
}

/// Opens `count` sessions (one turn each, stream kept open), `concurrency` at a time.
async fn open_sessions(
    target: &Target,
    count: usize,
    concurrency: usize,
    report: &Report,
    held: &mut Vec<Sse>,
) -> u64 {
    let mut retries = 0;
    let gate = std::sync::Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let (target, gate) = (target.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut ctl = Control::new(&target);
            // A create while every agent is busy gets 503 at_capacity: retry, as a client would.
            let mut retries = 0u64;
            loop {
                match session_with_one_turn(&target, &mut ctl, "hello").await {
                    Err(e) if e.contains("at_capacity") && retries < 200 => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => return other.map(|ok| (ok, retries)),
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(((_, sse, _, _), r)) => {
                retries += r;
                held.push(sse);
            }
            Err(e) => report.errors.push(format!("session: {e}")),
        }
    }
    retries
}

/// `capacity`: `sessions` sessions, each created, given one turn and left idle with its
/// subscriber connected; memory (server RSS + agents' PSS) after the first half and after all,
/// the marginal memory per session between the two, and the most live agents seen.
pub async fn capacity(
    target: &Target,
    pid: u32,
    sessions: usize,
    concurrency: usize,
    settle: Duration,
) -> Result<Report, String> {
    let mut report = Report::default();
    let baseline = procmem::read(pid)?;
    let half = sessions / 2;
    let mut held = Vec::with_capacity(sessions);
    let started = Instant::now();
    let mut retries = open_sessions(target, half, concurrency, &report, &mut held).await;
    tokio::time::sleep(settle).await;
    let mid = procmem::read(pid)?;
    retries += open_sessions(target, sessions - half, concurrency, &report, &mut held).await;
    let fill = started.elapsed();
    tokio::time::sleep(settle).await;
    let end = procmem::read(pid)?;
    let added = (sessions - half).max(1) as f64;
    report.metric("sessions", held.len() as u64);
    report.metric("fill_s", fill.as_secs_f64());
    report.metric("at_capacity_retries", retries);
    report.metric("baseline", reading_json(&baseline));
    report.metric("half", reading_json(&mid));
    report.metric("all", reading_json(&end));
    report.metric("total_bytes", end.total());
    report.metric("server_rss_bytes", end.server_rss);
    report.metric("live_agents", end.live_agents.max(mid.live_agents));
    report.metric(
        "marginal_bytes_per_session",
        (end.total() as f64 - mid.total() as f64) / added,
    );
    report.metric(
        "marginal_server_rss_per_session",
        (end.server_rss as f64 - mid.server_rss as f64) / added,
    );
    report.notes.push(format!(
        "{sessions} sessions, {concurrency} at a time: POST /sessions {{}}, subscribe, one user_message read to its result, the stream kept open (a create answered 503 at_capacity — every agent busy — is retried 50 ms later, counted in at_capacity_retries). Memory = server VmRSS + the Pss (smaps_rollup) of every live descendant of the server, read {:.1} s after the first half and after all; marginal = (all − half) / the sessions of the second half, i.e. per session beyond the live-agent bound when the server hibernates (its live agents are read at both points: live_agents is the larger).",
        settle.as_secs_f64()
    ));
    drop(held);
    Ok(report)
}

/// Polls (50 ms, bounded) until the server has at most `agents` live agent processes.
async fn until_agents_at_most(pid: u32, agents: u64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let live = procmem::live_agents(pid);
        if live <= agents {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{live} agent processes (children mentioning `{}`) still live after {limit:?} (expected ≤ {agents}: is the server running with a short --hibernate-after?)",
                procmem::AGENT_MATCH
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `wake`: `wakes` fresh sessions (create → first text), then, once every agent is hibernated
/// (at most `spares` live children), each session's next user message → its first text.
pub async fn wake(
    target: &Target,
    pid: u32,
    wakes: usize,
    spares: u64,
    hibernate_timeout: Duration,
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut ctl = Control::new(target);
    let mut sessions = Vec::with_capacity(wakes);
    let mut fresh = Vec::with_capacity(wakes);
    for _ in 0..wakes {
        let (session, sse, _, first) = session_with_one_turn(target, &mut ctl, "hello").await?;
        fresh.push(first.as_nanos() as u64);
        sessions.push((session, sse));
    }
    until_agents_at_most(pid, spares, hibernate_timeout).await?;
    let mut woken = Vec::with_capacity(wakes);
    for (session, sse) in &mut sessions {
        // Earlier wakes' agents may still be live: this one must be hibernated.
        let start = Instant::now();
        ctl.send_message(session, "hello again").await?;
        match first_text_then_result(sse, target.timeout, start).await {
            Ok(first) => woken.push(first.as_nanos() as u64),
            Err(e) => report.errors.push(format!("wake: {e}")),
        }
    }
    for (session, _) in &sessions {
        let _ = ctl.delete(session).await;
    }
    let fresh = summary_ms(fresh);
    let woken = summary_ms(woken);
    let diff = |key: &str| {
        woken[key].as_f64().unwrap_or_default() - fresh[key].as_f64().unwrap_or_default()
    };
    report.metric("wake_minus_fresh_p50_ms", diff("p50_ms"));
    report.metric("wake_minus_fresh_p99_ms", diff("p99_ms"));
    report.metric("fresh_first_text", fresh);
    report.metric("wake_first_text", woken);
    report.notes.push(format!(
        "fresh: POST /sessions → subscribe → user_message → first message_delta, {wakes} sessions one after another. Then the load generator waits until the server has ≤ {spares} live agent processes (children whose command line mentions `claude`) (every session hibernated), and wakes each session in turn: user_message → its first message_delta on the stream kept open since creation. Sessions woken earlier stay live meanwhile (a bound on live agents may hibernate them again)."
    ));
    Ok(report)
}

/// `create`: `count` times, `gap` apart: create → `session_ready` on a new stream, then the
/// first user message → first text; the session is deleted after its turn.
pub async fn create(target: &Target, count: usize, gap: Duration) -> Result<Report, String> {
    let mut report = Report::default();
    let mut ctl = Control::new(target);
    let (mut ready, mut first) = (Vec::new(), Vec::new());
    for _ in 0..count {
        tokio::time::sleep(gap).await;
        match session_with_one_turn(target, &mut ctl, "hello").await {
            Ok((session, _sse, r, f)) => {
                ready.push(r.as_nanos() as u64);
                first.push(f.as_nanos() as u64);
                if let Err(e) = ctl.delete(&session).await {
                    report.errors.push(e);
                }
            }
            Err(e) => report.errors.push(format!("create: {e}")),
        }
    }
    report.metric("ready", summary_ms(ready));
    report.metric("first_text", summary_ms(first));
    report.notes.push(format!(
        "{count} sessions one after another, {:.1} s apart (time for a warm spare to be replaced): ready = POST /sessions → session_ready (seq 1) on a stream opened once the POST returned; first_text = POST /sessions → first message_delta of the reply to the first user_message (sent once session_ready arrived). Each session is deleted after its turn.",
        gap.as_secs_f64()
    ));
    Ok(report)
}
