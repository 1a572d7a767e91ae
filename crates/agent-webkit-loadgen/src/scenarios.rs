//! The load scenarios. Each returns a [`Report`]: metrics, plus every correctness error seen
//! (a scenario that saw any error is not `ok`, whatever its speed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::http::{subscribe, Control, Kind, Sse, Stamp, Target};

/// Correctness errors, shared by a scenario's tasks (the first few are kept verbatim).
#[derive(Clone, Default)]
pub struct Errors(Arc<Mutex<(u64, Vec<String>)>>);

impl Errors {
    /// Records one error.
    pub fn push(&self, error: impl Into<String>) {
        self.push_many(1, error);
    }

    /// Records `count` errors of one kind, described once.
    pub fn push_many(&self, count: u64, error: impl Into<String>) {
        if count == 0 {
            return;
        }
        let mut guard = self.0.lock();
        guard.0 += count;
        if guard.1.len() < 20 {
            guard.1.push(error.into());
        }
    }

    /// How many errors were recorded.
    pub fn count(&self) -> u64 {
        self.0.lock().0
    }

    /// The first errors, verbatim.
    pub fn list(&self) -> Vec<String> {
        self.0.lock().1.clone()
    }
}

/// What a scenario measured.
#[derive(Default)]
pub struct Report {
    /// Correctness errors.
    pub errors: Errors,
    /// Measurements, by name.
    pub metrics: Map<String, Value>,
    /// How the numbers were obtained, caveats.
    pub notes: Vec<String>,
}

impl Report {
    pub(crate) fn metric(&mut self, name: &str, value: impl Into<Value>) {
        self.metrics.insert(name.to_owned(), value.into());
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn rate(count: u64, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        count as f64 / wall.as_secs_f64()
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50/p99/max of nanosecond samples, in milliseconds.
pub(crate) fn summary_ms(mut samples: Vec<u64>) -> Value {
    samples.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    json!({
        "samples": samples.len(),
        "p50_ms": ms(pct(&samples, 50.0)),
        "p99_ms": ms(pct(&samples, 99.0)),
        "max_ms": ms(samples.last().copied().unwrap_or_default()),
    })
}

/// Opens a stream from the start and reads `session_ready` (seq 1).
pub(crate) async fn open_ready(target: &Target, session: &str) -> Result<Sse, String> {
    let mut sse = subscribe(target, session, None).await?;
    match sse.next_event(target.timeout).await? {
        (Some(1), Kind::SessionReady) => Ok(sse),
        other => Err(format!("expected session_ready with id 1, got {other:?}")),
    }
}

/// Creates a session with `model`, subscribes from its start, sends one message and reads
/// that turn to its `result`. Returns the session, its still-open stream, and what
/// [`read_turn`] returns.
pub(crate) async fn session_after_one_turn(
    target: &Target,
    ctl: &mut Control,
    model: &str,
) -> Result<(String, Sse, (u64, u64)), String> {
    let session = ctl.create_session(model).await?;
    let mut sse = open_ready(target, &session).await?;
    ctl.send_message(&session, "fill").await?;
    let read = read_turn(&mut sse, 2, target.timeout, |_, _, _| {}).await?;
    Ok((session, sse, read))
}

/// Reads one turn up to its `result`, checking that seqs run on from `next_seq` without a gap
/// or a repeat. Returns (events read, seq of the result). `on_event` gets each event's seq,
/// kind and stamp (`message_complete` of a stream reading stamps only).
pub(crate) async fn read_turn(
    sse: &mut Sse,
    mut next_seq: u64,
    limit: Duration,
    mut on_event: impl FnMut(u64, Kind, Option<Stamp>),
) -> Result<(u64, u64), String> {
    let mut count = 0;
    loop {
        let event = sse.next_stamped(limit).await?;
        let (id, kind) = (event.id, event.kind);
        let id = id.ok_or_else(|| format!("{kind:?} event without id"))?;
        if id != next_seq {
            return Err(format!(
                "expected seq {next_seq}, got {id} ({kind:?}) after {count} events"
            ));
        }
        next_seq += 1;
        count += 1;
        on_event(id, kind, event.stamp);
        match kind {
            Kind::Result => return Ok((count, id)),
            Kind::Done => return Err(format!("done (seq {id}) before result")),
            _ => {}
        }
    }
}

/// `fanout`: one `stream:N:0:bytes` turn delivered to S subscribers.
pub async fn fanout(
    target: &Target,
    events: u64,
    subscribers: usize,
    bytes: usize,
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut ctl = Control::new(target);
    let session = ctl
        .create_session(&format!("stream:{events}:0:{bytes}"))
        .await?;
    let mut streams = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        streams.push(open_ready(target, &session).await?);
    }
    let start = Instant::now();
    let mut readers = JoinSet::new();
    for mut sse in streams {
        let limit = target.timeout;
        readers.spawn(async move {
            let read = read_turn(&mut sse, 2, limit, |_, _, _| {}).await;
            (read, start.elapsed(), sse.bytes)
        });
    }
    ctl.send_message(&session, "go").await?;
    let (mut total, mut wall, mut received) = (0u64, Duration::ZERO, 0u64);
    while let Some(joined) = readers.join_next().await {
        let (read, elapsed, bytes_in) = joined.map_err(|e| e.to_string())?;
        wall = wall.max(elapsed);
        received += bytes_in;
        match read {
            Ok((count, _)) if count == events + 1 => total += count,
            Ok((count, _)) => {
                total += count;
                report.errors.push(format!(
                    "a subscriber saw {count} events, expected {}",
                    events + 1
                ));
            }
            Err(e) => report.errors.push(format!("subscriber: {e}")),
        }
    }
    let _ = ctl.delete(&session).await;
    report.metric("events_per_sec", rate(total, wall));
    report.metric(
        "events_per_sec_per_subscriber",
        rate(total, wall) / subscribers.max(1) as f64,
    );
    report.metric("mbytes_per_sec", rate(received, wall) / 1e6);
    report.metric("events_delivered", total);
    report.metric("events_expected", (events + 1) * subscribers as u64);
    report.metric("wall_s", secs(wall));
    report.notes.push(
        "events/s = events delivered (message_complete + result, summed over subscribers) / time from sending the user_message to the last subscriber's result; every subscriber must see seq 2..=N+2 exactly once, in order".into(),
    );
    Ok(report)
}

/// `latency`: a paced `stream:N:ms:bytes:ts` turn; per-event emission and receipt times at every
/// subscriber.
pub async fn latency(
    target: &Target,
    rate_per_s: u64,
    seconds: u64,
    subscribers: usize,
    bytes: usize,
) -> Result<Report, String> {
    let mut report = Report::default();
    let interval_ms = (1000 / rate_per_s.max(1)).max(1);
    let events = (rate_per_s * seconds).max(1);
    let mut ctl = Control::new(target);
    // `ts`: the agent writes its emission time (Unix µs) into every message's text.
    let session = ctl
        .create_session(&format!("stream:{events}:{interval_ms}:{bytes}:ts"))
        .await?;
    let mut streams = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut sse = open_ready(target, &session).await?;
        sse.read_stamps();
        streams.push(sse);
    }
    let start = Instant::now();
    let mut readers = JoinSet::new();
    for mut sse in streams {
        let limit = target.timeout;
        readers.spawn(async move {
            let mut seen = Vec::with_capacity(events as usize + 1);
            // Emission → receipt, µs (receipt before emission: the wall clock stepped back).
            let mut lags = Vec::with_capacity(events as usize + 1);
            let (mut unstamped, mut first_unstamped, mut backwards) = (0u64, None, 0u64);
            let read = read_turn(&mut sse, 2, limit, |seq, kind, stamp| {
                if kind == Kind::MessageComplete {
                    seen.push((seq, start.elapsed().as_nanos() as u64));
                    match stamp {
                        Some(Stamp {
                            emitted_us: Some(emitted),
                            received_us,
                        }) => {
                            if received_us < emitted {
                                backwards += 1;
                            }
                            lags.push(received_us.saturating_sub(emitted));
                        }
                        _ => {
                            unstamped += 1;
                            first_unstamped.get_or_insert(seq);
                        }
                    }
                }
            })
            .await;
            (read, seen, lags, unstamped, first_unstamped, backwards)
        });
    }
    ctl.send_message(&session, "go").await?;
    let mut all = Vec::new();
    let mut emission = Vec::new();
    let mut backwards_total = 0;
    while let Some(joined) = readers.join_next().await {
        let (read, seen, lags, unstamped, first_unstamped, backwards) =
            joined.map_err(|e| e.to_string())?;
        if let Err(e) = read {
            report.errors.push(format!("subscriber: {e}"));
        } else if seen.len() as u64 != events {
            report.errors.push(format!(
                "a subscriber saw {} message_complete events, expected {events}",
                seen.len()
            ));
        }
        report.errors.push_many(
            unstamped,
            format!(
                "a subscriber saw {unstamped} message_complete event(s) without a well-formed emission timestamp (` t=<unix µs>` in the text), the first at seq {}",
                first_unstamped.unwrap_or_default()
            ),
        );
        backwards_total += backwards;
        emission.extend(lags.into_iter().map(|us| us.saturating_mul(1000)));
        all.push(seen);
    }
    let _ = ctl.delete(&session).await;
    let mut emission_lag = summary_ms(emission);
    emission_lag["clock_went_back"] = json!(backwards_total);
    report.metric("emission_lag", emission_lag);
    let first_seq = all
        .iter()
        .filter_map(|s| s.first().map(|(seq, _)| *seq))
        .min()
        .unwrap_or(2);
    let mut earliest = vec![u64::MAX; events as usize + 1];
    for seen in &all {
        for &(seq, t) in seen {
            if let Some(slot) = earliest.get_mut((seq - first_seq) as usize) {
                *slot = (*slot).min(t);
            }
        }
    }
    let interval_ns = interval_ms * 1_000_000;
    let mut spread = Vec::new();
    let mut schedule = Vec::new();
    for seen in &all {
        for &(seq, t) in seen {
            let i = seq - first_seq;
            if let Some(&first) = earliest.get(i as usize) {
                spread.push(t - first);
            }
            schedule.push(t as i128 - (i * interval_ns) as i128);
        }
    }
    // The emitter's real cadence: a least-squares line through the earliest receipts.
    let points: Vec<(f64, f64)> = earliest
        .iter()
        .enumerate()
        .filter(|(_, t)| **t != u64::MAX)
        .map(|(i, t)| (i as f64, *t as f64))
        .collect();
    let n = points.len() as f64;
    let (mean_i, mean_t) = (
        points.iter().map(|p| p.0).sum::<f64>() / n.max(1.0),
        points.iter().map(|p| p.1).sum::<f64>() / n.max(1.0),
    );
    let var_i: f64 = points.iter().map(|p| (p.0 - mean_i).powi(2)).sum();
    let cov: f64 = points.iter().map(|p| (p.0 - mean_i) * (p.1 - mean_t)).sum();
    let slope = if var_i > 0.0 { cov / var_i } else { 0.0 };
    let intercept = mean_t - slope * mean_i;
    let mut cadence: Vec<f64> = Vec::new();
    for seen in &all {
        for &(seq, t) in seen {
            let i = (seq - first_seq) as f64;
            cadence.push(t as f64 - (intercept + slope * i));
        }
    }
    let low = cadence.iter().copied().fold(f64::INFINITY, f64::min);
    let cadence: Vec<u64> = cadence.iter().map(|v| (v - low) as u64).collect();
    report.metric("emission_interval_ms", slope / 1e6);
    report.metric("cadence_lag", summary_ms(cadence));
    let offset = schedule.iter().copied().min().unwrap_or(0);
    let schedule: Vec<u64> = schedule.iter().map(|v| (v - offset) as u64).collect();
    let received: Vec<u64> = earliest
        .iter()
        .copied()
        .filter(|t| *t != u64::MAX)
        .collect();
    if let (Some(first), Some(last)) = (received.first(), received.last()) {
        let span = Duration::from_nanos(last - first);
        report.metric(
            "achieved_rate_per_s",
            rate(received.len().saturating_sub(1) as u64, span),
        );
        report.metric("first_event_ms", *first as f64 / 1e6);
    }
    report.metric("target_rate_per_s", 1000.0 / interval_ms as f64);
    report.metric("fanout_spread", summary_ms(spread));
    report.metric("schedule_lag", summary_ms(schedule));
    report.notes.push(format!(
        "{events} events {interval_ms} ms apart to {subscribers} subscribers (model stream:{events}:{interval_ms}:{bytes}:ts). emission_lag (the headline): per (subscriber, message_complete), receipt time minus emission time, both wall-clock Unix µs on this machine's clock — the agent writes its clock into the message text (`chunk <i> t=<µs>`) right before handing the message to the session, and the load generator reads its own clock as soon as it has parsed the frame; so it is the server's whole emission → receipt path (event log, fan-out, SSE writing, loopback TCP) plus the load generator's own scheduling delay, with no clock offset to estimate. A message_complete without a well-formed stamp is an error; clock_went_back counts receipts stamped before their emission (a wall-clock step; counted as 0 lag). fanout_spread: per (subscriber, event), receipt time minus the earliest receipt of that event at any subscriber — the delivery skew the server adds across subscribers. schedule_lag: receipt time minus the event's place on the ideal schedule (send + i*{interval_ms} ms), minus the smallest such value (which removes the unknown emission offset); it also grows with the emitter's timer drift (a sleep of {interval_ms} ms lasts a little longer), so achieved_rate_per_s is reported beside it. cadence_lag removes that drift: receipt time minus a least-squares line through the earliest receipts (the emitter's real cadence, emission_interval_ms), minus the smallest such value — emitter jitter plus delivery delay. Receipt timestamps are taken by the load generator, which shares the CPUs with the server."
    ));
    Ok(report)
}

/// Resident set size of a process, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("/proc/{pid}/status: no VmRSS"))
}

/// `Max open files` (soft) of a process, from `/proc/<pid>/limits`.
pub fn nofile_of(pid: u32) -> Option<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).map(str::to_owned)
}

/// `memory`: N sessions with a full ring each and one idle subscriber each; server RSS growth.
pub async fn memory(
    target: &Target,
    pid: u32,
    sessions: usize,
    ring: u64,
    bytes: usize,
    concurrency: usize,
    settle: Duration,
) -> Result<Report, String> {
    let mut report = Report::default();
    let before = rss_bytes(pid)?;
    let next = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    let started = Instant::now();
    for _ in 0..concurrency.max(1) {
        let (target, next, errors, received) = (
            target.clone(),
            next.clone(),
            report.errors.clone(),
            received.clone(),
        );
        workers.spawn(async move {
            let mut held = Vec::new();
            let mut ctl = Control::new(&target);
            while next.fetch_add(1, Ordering::Relaxed) < sessions as u64 {
                let one = async {
                    // session_ready + messages + result fill the ring exactly: a subscriber
                    // that reads slower than the turn is produced can never lag out of it.
                    let messages = ring.saturating_sub(2).max(1);
                    let model = format!("stream:{messages}:0:{bytes}");
                    let (_, sse, (count, _)) =
                        session_after_one_turn(&target, &mut ctl, &model).await?;
                    if count != messages + 1 {
                        return Err(format!("saw {count} events, expected {}", messages + 1));
                    }
                    Ok::<_, String>(sse)
                };
                match one.await {
                    Ok(sse) => {
                        received.fetch_add(sse.bytes, Ordering::Relaxed);
                        held.push(sse);
                    }
                    Err(e) => {
                        errors.push(e);
                        if errors.count() > 20 {
                            break;
                        }
                    }
                }
            }
            held
        });
    }
    let mut held = Vec::new();
    while let Some(joined) = workers.join_next().await {
        held.extend(joined.map_err(|e| e.to_string())?);
    }
    let fill = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = rss_bytes(pid)?;
    // Idle sessions: give the server `settle` to do what it does with idle sessions (ours
    // compresses quiet rings), keepalives flowing, then read the RSS again.
    tokio::time::sleep(settle.saturating_sub(Duration::from_millis(500))).await;
    let after = rss_bytes(pid)?;
    let n = held.len().max(1) as u64;
    report.metric("sessions", held.len());
    report.metric("rss_before_bytes", before);
    report.metric("rss_fresh_bytes", fresh);
    report.metric("rss_after_bytes", after);
    report.metric("bytes_per_session_fresh", fresh.saturating_sub(before) / n);
    report.metric("bytes_per_session", after.saturating_sub(before) / n);
    report.metric(
        "stream_bytes_per_session",
        received.load(Ordering::Relaxed) / n,
    );
    report.metric("fill_s", secs(fill));
    report.notes.push(format!(
        "{sessions} sessions, each one stream:{ring}:0:{bytes} turn (a full ring of {ring} events) and one idle subscriber held open; bytes_per_session = (VmRSS {settle:?} after the last session was filled − VmRSS before the first session) / sessions, read from /proc/{pid}/status (bytes_per_session_fresh: the same 0.5 s after the fill). stream_bytes_per_session is what one subscriber received (≈ the ring's SSE payload)."
    ));
    drop(held);
    Ok(report)
}

struct Conn {
    /// Milliseconds since the scenario start (+1) of the last frame; 0: none yet.
    last_frame: AtomicU64,
    dead: AtomicBool,
}

/// `connections`: SSE subscribers opened in steps, each step verified live.
pub async fn connections(
    target: &Target,
    max: usize,
    step: usize,
    sessions: usize,
    verify_timeout: Duration,
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut ctl = Control::new(target);
    let mut ids = Vec::new();
    for _ in 0..sessions.max(1) {
        ids.push(ctl.create_session("echo").await?);
    }
    let t0 = Instant::now();
    let now_ms = move || t0.elapsed().as_millis() as u64 + 1;
    let mut conns: Vec<Arc<Conn>> = Vec::new();
    let mut readers = JoinSet::new();
    let gate = Arc::new(Semaphore::new(256));
    let failed = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let mut held = 0usize;
    let mut steps = Vec::new();
    let step = step.max(1);
    while conns.len() < max {
        let level = (conns.len() + step).min(max);
        let step_start = Instant::now();
        let want = level - conns.len();
        let base_opened = opened.load(Ordering::Relaxed);
        let base_failed = failed.load(Ordering::Relaxed);
        for i in conns.len()..level {
            let conn = Arc::new(Conn {
                last_frame: AtomicU64::new(0),
                dead: AtomicBool::new(false),
            });
            conns.push(conn.clone());
            let (target, session, gate, opened, failed, errors) = (
                target.clone(),
                ids[i % ids.len()].clone(),
                gate.clone(),
                opened.clone(),
                failed.clone(),
                report.errors.clone(),
            );
            readers.spawn(async move {
                let permit = gate.acquire_owned().await;
                let mut sse = match subscribe(&target, &session, None).await {
                    Ok(sse) => sse,
                    Err(e) => {
                        errors.push(format!("connection {i}: {e}"));
                        conn.dead.store(true, Ordering::Relaxed);
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                opened.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                loop {
                    match sse.next().await {
                        Ok(Some(_)) => conn.last_frame.store(now_ms(), Ordering::Relaxed),
                        Ok(None) => {
                            errors.push(format!("connection {i}: stream ended"));
                            break;
                        }
                        Err(e) => {
                            errors.push(format!("connection {i}: {e}"));
                            break;
                        }
                    }
                }
                conn.dead.store(true, Ordering::Relaxed);
            });
        }
        // Wait for this step's opens.
        let open_deadline = Instant::now() + target.timeout * 4;
        loop {
            let done = (opened.load(Ordering::Relaxed) - base_opened)
                + (failed.load(Ordering::Relaxed) - base_failed);
            if done as usize >= want || Instant::now() > open_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let open_s = secs(step_start.elapsed());
        if report.errors.count() > 0 || opened.load(Ordering::Relaxed) as usize != level {
            report
                .errors
                .push(format!("step to {level}: not every connection opened"));
            break;
        }
        // Every connection must now see a frame: a keepalive, or the events of one echo turn
        // sent to every session.
        let mark = now_ms();
        let verify_start = Instant::now();
        for id in &ids {
            if let Err(e) = ctl.send_message(id, "ping").await {
                report.errors.push(e);
            }
        }
        let verified = loop {
            let dead = conns.iter().any(|c| c.dead.load(Ordering::Relaxed));
            let live = conns
                .iter()
                .all(|c| c.last_frame.load(Ordering::Relaxed) > mark);
            if dead || live || verify_start.elapsed() > verify_timeout {
                break !dead && live;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if !verified || report.errors.count() > 0 {
            let silent = conns
                .iter()
                .filter(|c| c.last_frame.load(Ordering::Relaxed) <= mark)
                .count();
            report.errors.push(format!(
                "step to {level}: {silent} connection(s) saw no frame within {verify_timeout:?}"
            ));
            break;
        }
        held = level;
        steps.push(
            json!({"level": level, "open_s": open_s, "verify_s": secs(verify_start.elapsed())}),
        );
    }
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    for id in &ids {
        let _ = ctl.delete(id).await;
    }
    report.metric("max_held", held);
    report.metric("steps", Value::Array(steps));
    report.notes.push(format!(
        "SSE subscribers over {} session(s), opened {step} at a time (256 in flight) up to {max}; after each step one echo turn goes to every session and every connection must see a frame (event or keepalive) within {verify_timeout:?}. max_held is the last fully verified level.",
        ids.len()
    ));
    Ok(report)
}

/// `resume`: many clients reconnecting with `Last-Event-ID` into a full ring.
pub async fn resume(
    target: &Target,
    clients: usize,
    back: u64,
    events: u64,
    bytes: usize,
    concurrency: usize,
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut ctl = Control::new(target);
    let model = format!("stream:{events}:0:{bytes}");
    let (session, sse, (_, last)) = session_after_one_turn(target, &mut ctl, &model).await?;
    drop(sse);
    if back >= last {
        return Err(format!("--back {back} must be below the last seq {last}"));
    }
    let from = last - back;
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut clients_set = JoinSet::new();
    let start = Instant::now();
    for _ in 0..clients {
        let (target, session, gate) = (target.clone(), session.clone(), gate.clone());
        clients_set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let began = Instant::now();
            let mut sse = subscribe(&target, &session, Some(from)).await?;
            let mut next = from + 1;
            while next <= last {
                let (id, kind) = sse.next_event(target.timeout).await?;
                if id != Some(next) {
                    return Err(format!("expected seq {next}, got {id:?} ({kind:?})"));
                }
                next += 1;
            }
            Ok::<_, String>(began.elapsed().as_nanos() as u64)
        });
    }
    let mut times = Vec::with_capacity(clients);
    while let Some(joined) = clients_set.join_next().await {
        match joined.map_err(|e| e.to_string())? {
            Ok(t) => times.push(t),
            Err(e) => report.errors.push(e),
        }
    }
    let wall = start.elapsed();
    let _ = ctl.delete(&session).await;
    report.metric("reconnects_per_sec", rate(times.len() as u64, wall));
    report.metric("events_per_sec", rate(times.len() as u64 * back, wall));
    report.metric("completed", times.len());
    report.metric("wall_s", secs(wall));
    report.metric("per_client", summary_ms(times));
    report.notes.push(format!(
        "{clients} clients ({concurrency} in flight) each reconnect with Last-Event-ID: {from} (last seq {last} − {back}), read seqs {}..={last} exactly and disconnect",
        from + 1
    ));
    Ok(report)
}

/// `churn`: full session lifecycles back to back.
pub async fn churn(target: &Target, seconds: f64, concurrency: usize) -> Result<Report, String> {
    let mut report = Report::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, errors) = (target.clone(), report.errors.clone());
        workers.spawn(async move {
            let mut ctl = Control::new(&target);
            let mut times = Vec::new();
            while Instant::now() < deadline && errors.count() < 50 {
                let began = Instant::now();
                let one = async {
                    let session = ctl.create_session("echo").await?;
                    let mut sse = open_ready(&target, &session).await?;
                    ctl.send_message(&session, "hi").await?;
                    let mut kinds = Vec::new();
                    read_turn(&mut sse, 2, target.timeout, |_, k, _| kinds.push(k)).await?;
                    if kinds != [Kind::MessageComplete, Kind::Result] {
                        return Err(format!("echo turn: unexpected events {kinds:?}"));
                    }
                    ctl.delete(&session).await?;
                    Ok::<_, String>(())
                };
                match one.await {
                    Ok(()) => times.push(began.elapsed().as_nanos() as u64),
                    Err(e) => errors.push(e),
                }
            }
            times
        });
    }
    let mut times = Vec::new();
    while let Some(joined) = workers.join_next().await {
        times.extend(joined.map_err(|e| e.to_string())?);
    }
    let wall = start.elapsed();
    report.metric("sessions_per_sec", rate(times.len() as u64, wall));
    report.metric("completed", times.len());
    report.metric("wall_s", secs(wall));
    report.metric("per_session", summary_ms(times));
    report.notes.push(format!(
        "{concurrency} workers for {seconds} s, each looping: POST /sessions (echo) → open stream (session_ready) → user_message → message_complete + result → DELETE"
    ));
    Ok(report)
}
