//! The restart case of `cargo xtask bench` (issue 15): N open sessions with full rings
//! (replay agent) on the SQLite default, SIGKILL, start again on the same data directory →
//! time until listening, until every session is served again (a reconnect with
//! `Last-Event-ID` returns the events after it), and the first resumed turn's first event.
//! The two halves of the load are the loadgen's `restart-fill` and `restart-resume`.
//!
//! Two depths: `restart` (each client reads back the last 10 events, as a client that lost its
//! connection does; the target) and `restart-deep` (500, half the ring: beyond the tail a
//! take-over renders, so every reconnect reads the ring's older part back from the database).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::bench::{
    args, metric, run_loadgen_as, start_server, Agent, Case, Cell, CliPaths, Launch,
};
use crate::bench_stores::Store;

/// The target: every session served again within this long after the start (issue 15).
const TARGET_MS: f64 = 2000.0;

/// Events each client reads back in `restart` / `restart-deep`.
const BACK: u64 = 10;
const DEEP_BACK: u64 = 500;

/// How many events a client of `case` reads back.
fn back(case: &Case) -> u64 {
    if case.id == "restart-deep" {
        DEEP_BACK
    } else {
        BACK
    }
}

/// The restart cases (`sessions` 1 000, `--quick` 50): `restart` and `restart-deep`.
pub(crate) fn cases(quick: bool) -> Vec<Case> {
    let deep = Case {
        id: "restart-deep".into(),
        ..case(quick)
    };
    vec![case(quick), deep]
}

/// The restart case (`sessions` 1 000, `--quick` 50).
fn case(quick: bool) -> Case {
    let sessions = if quick { "50" } else { "1000" };
    Case {
        id: "restart".into(),
        scenario: "restart",
        // Fill: 998 messages + session_ready + result = the ring of 1 000 exactly.
        args: args(&["--sessions", sessions, "--events", "998", "--bytes", "200"]),
        ring_size: Some(1000),
        timeout_s: if quick { 120 } else { 900 },
        metrics: vec![
            metric(
                "start → all sessions served ms",
                &["all_served_ms"],
                false,
                true,
            ),
            metric("start → listening ms", &["listening_ms"], false, false),
            metric(
                "start → first session served ms",
                &["first_served_ms"],
                false,
                false,
            ),
            metric(
                "reconnect p99 ms",
                &["per_reconnect", "p99_ms"],
                false,
                false,
            ),
            metric(
                "first resumed turn: input → first event ms",
                &["first_turn_first_event_ms"],
                false,
                false,
            ),
            metric(
                "resumed turns: input → first event p50 ms",
                &["turn_first_event", "p50_ms"],
                false,
                false,
            ),
            metric("fill s (before the kill)", &["fill_s"], false, false),
            metric(
                "server RSS before the kill MB",
                &["rss_before_kill_mb"],
                false,
                false,
            ),
            metric(
                "server RSS after the resume MB",
                &["server_rss_mb"],
                false,
                false,
            ),
        ],
        agent: Agent::Replay,
        store: Store::Sqlite,
        server_args: Vec::new(),
        python_args: None,
        aliases: &[],
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One run: fill, SIGKILL, start again (same flags, same data directory), resume. Returns one
/// loadgen-shaped result (`ok`, `errors`, `metrics`, and both halves' raw outputs).
pub(crate) fn run(
    launch: &Launch,
    case: &Case,
    store_args: &[String],
    log: &Path,
    cli: &CliPaths,
) -> Result<Value, String> {
    let state = log.with_extension("state.json");
    let first_log = log.with_extension("before-kill.log");
    let mut server = start_server(launch, case, &first_log, cli, store_args)?;
    let mut fill_args = case.args.clone();
    fill_args.extend(["--state".to_owned(), state.display().to_string()]);
    let fill = run_loadgen_as(
        &cli.loadgen,
        "restart-fill",
        case.timeout_s,
        &fill_args,
        &server,
    )?;
    if fill.get("ok") != Some(&Value::Bool(true)) {
        return Ok(fill);
    }
    // SIGKILL (std's `kill` on Unix): no shutdown path runs.
    server.kill()?;
    drop(server);

    let started_at = unix_micros();
    let started = Instant::now();
    let server = start_server(launch, case, log, cli, store_args)?;
    let listening_ms = started.elapsed().as_secs_f64() * 1e3;
    let resume_args = vec![
        "--state".to_owned(),
        state.display().to_string(),
        "--started-at-us".to_owned(),
        started_at.to_string(),
        "--back".to_owned(),
        back(case).to_string(),
    ];
    let resume = run_loadgen_as(
        &cli.loadgen,
        "restart-resume",
        case.timeout_s,
        &resume_args,
        &server,
    )?;
    drop(server);
    let _ = std::fs::remove_file(&state);

    let mut metrics = resume["metrics"].as_object().cloned().unwrap_or_default();
    metrics.insert("listening_ms".into(), listening_ms.into());
    if let Some(fill_s) = fill["metrics"].get("fill_s") {
        metrics.insert("fill_s".into(), fill_s.clone());
    }
    if let Some(rss) = fill["metrics"].get("server_rss_mb") {
        metrics.insert("rss_before_kill_mb".into(), rss.clone());
    }
    let ok = resume.get("ok") == Some(&Value::Bool(true));
    Ok(json!({
        "scenario": "restart",
        "ok": ok,
        "error_count": resume["error_count"],
        "errors": resume["errors"],
        "metrics": metrics,
        "notes": [
            "listening_ms: from right before the xtask spawned the server again to its `listening on` line; every other time also runs from that instant (the load generator's own start is inside them: loadgen_began_ms).",
        ],
        "fill": fill,
        "resume": resume,
    }))
}

/// The report's line on the restart target, when the case ran.
pub(crate) fn verdict(
    cases: &[&Case],
    targets: &[String],
    cells: &BTreeMap<(String, String), Cell>,
) -> Option<String> {
    let case = cases.iter().find(|c| c.id == "restart")?;
    let sessions = crate::bench_lifecycle::full_count(case).unwrap_or(0.0);
    let mut parts = Vec::new();
    for target in targets.iter().filter(|t| t.starts_with("ours-")) {
        let Some(st) = cells
            .get(&(case.id.clone(), target.clone()))
            .and_then(|c| c.stats(0))
        else {
            continue;
        };
        let met = if st.max <= TARGET_MS {
            "met"
        } else {
            "**not met**"
        };
        parts.push(format!(
            "{}: {} ms ({met})",
            target.trim_start_matches("ours-"),
            crate::bench::num(st.max)
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "restart: {sessions} sessions with full rings on the SQLite default, SIGKILL, start again → every one served again (reconnect with Last-Event-ID returns the events after it) within {} ms (issue 15's target; the slowest run counts): {}.",
            TARGET_MS,
            parts.join(", ")
        )
    })
}
