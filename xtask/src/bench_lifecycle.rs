//! The session-lifecycle cases of `cargo xtask bench` (issue 13): `capacity` with the fake and
//! the real CLI, `wake`, `warm-create` / `cold-create` (which also measure the first token),
//! all on our server only; and the mock Anthropic API process the real CLI talks to.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::bench::{args, metric, Agent, Case, Metric};
use crate::bench_stores::Store;

/// Sizes the caller may override (`--sessions`, `--samples`).
pub(crate) struct Sizes {
    pub(crate) sessions: Option<usize>,
    pub(crate) samples: Option<usize>,
}

fn p50_p99(label50: &'static str, label99: &'static str, key: &'static str) -> [Metric; 2] {
    // `key` names a summary object of the loadgen result.
    let (p50, p99): (&'static [&'static str], &'static [&'static str]) = match key {
        "ready" => (&["ready", "p50_ms"], &["ready", "p99_ms"]),
        "first_text" => (&["first_text", "p50_ms"], &["first_text", "p99_ms"]),
        "wake_first_text" => (
            &["wake_first_text", "p50_ms"],
            &["wake_first_text", "p99_ms"],
        ),
        _ => (
            &["fresh_first_text", "p50_ms"],
            &["fresh_first_text", "p99_ms"],
        ),
    };
    [
        metric(label50, p50, false, false),
        metric(label99, p99, false, true),
    ]
}

fn capacity_metrics() -> Vec<Metric> {
    vec![
        metric(
            "total MB (server RSS + CLI PSS)",
            &["total_mb"],
            false,
            false,
        ),
        metric("total MB at full count", &["total_mb_at_full"], false, true),
        metric("server RSS MB", &["server_rss_mb"], false, false),
        metric(
            "marginal KB/session",
            &["marginal_kb_per_session"],
            false,
            true,
        ),
        metric(
            "marginal server RSS KB/session",
            &["marginal_server_rss_kb_per_session"],
            false,
            false,
        ),
        metric("live agent processes (max)", &["live_agents"], false, false),
    ]
}

/// What one open session of the Python original may cost at most, for its cap: the real CLI
/// (~130–160 MB PSS after one turn) plus the original's share, with room to spare.
const PYTHON_SESSION_BUDGET: u64 = 300 << 20;

/// The most real-CLI sessions the Python original opens: 40, and never more than half the
/// machine's memory at [`PYTHON_SESSION_BUDGET`] each.
fn python_session_cap(wanted: usize) -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let by_memory = (total / 2 / PYTHON_SESSION_BUDGET) as usize;
    wanted.min(40).min(by_memory).max(2)
}

/// The lifecycle cases.
pub(crate) fn cases(quick: bool, sizes: &Sizes) -> Vec<Case> {
    let fake_sessions = sizes.sessions.unwrap_or(if quick { 200 } else { 10_000 });
    let real_sessions = sizes.sessions.unwrap_or(if quick { 20 } else { 200 });
    let samples = sizes
        .samples
        .unwrap_or(if quick { 5 } else { 20 })
        .to_string();
    let mut out = vec![
        Case {
            id: "capacity-fake".into(),
            scenario: "capacity",
            // Thousands of requests on a shared 2-core machine: a slow one is not an error.
            args: args(&[
                "--sessions",
                &fake_sessions.to_string(),
                "--concurrency",
                "8",
                "--request-timeout",
                "30",
            ]),
            ring_size: None,
            agent: Agent::FakeCli,
            // One subscriber (an open connection) per session: above the default bounds of
            // 8 192 subscribers and 10 000 connections (past which new connections wait to be
            // accepted: the last sessions' requests hung).
            server_args: args(&[
                "--max-live-agents",
                "16",
                "--hibernate-after",
                "600",
                "--max-subscribers",
                &(fake_sessions + 1024).to_string(),
                "--max-connections",
                &(fake_sessions + 1024).to_string(),
            ]),
            python_args: None,
            aliases: &[],
            store: Store::Memory,
            timeout_s: 120 + fake_sessions as u64 / 5,
            metrics: capacity_metrics(),
        },
        Case {
            id: "capacity-real".into(),
            scenario: "capacity",
            // A create may wait for a live CLI to stop and a new one to start: on a loaded
            // 2-core machine that took over 10 s (29 of 200 creates once).
            args: args(&[
                "--sessions",
                &real_sessions.to_string(),
                "--concurrency",
                "4",
                "--request-timeout",
                "60",
            ]),
            ring_size: None,
            agent: Agent::RealCli,
            server_args: args(&["--max-live-agents", "8", "--hibernate-after", "600"]),
            python_args: Some(args(&[
                "--sessions",
                &python_session_cap(real_sessions).to_string(),
                "--concurrency",
                "4",
            ])),
            aliases: &[],
            store: Store::Memory,
            timeout_s: 120 + real_sessions as u64 * 5,
            metrics: capacity_metrics(),
        },
    ];
    let [w50, w99] = p50_p99(
        "wake → first delta p50 ms",
        "wake p99 ms",
        "wake_first_text",
    );
    let [f50, f99] = p50_p99(
        "fresh create → first delta p50 ms",
        "fresh p99 ms",
        "fresh_first_text",
    );
    for (id, agent) in [("wake", Agent::RealCli), ("wake-fake", Agent::FakeCli)] {
        out.push(Case {
            id: id.into(),
            scenario: "wake",
            args: args(&["--wakes", &samples, "--spares", "0"]),
            ring_size: None,
            agent,
            server_args: args(&["--hibernate-after", "1", "--claude-warm-spares", "0"]),
            // The original has no hibernation: nothing to wake.
            python_args: None,
            aliases: &[],
            store: Store::Memory,
            timeout_s: 600,
            metrics: vec![w50.clone(), w99.clone(), f50.clone(), f99.clone()],
        });
    }
    for (id, spares, aliases) in [
        ("warm-create", "1", &["first-token"][..]),
        ("cold-create", "0", &[][..]),
    ] {
        let [r50, r99] = p50_p99("create → session_ready p50 ms", "ready p99 ms", "ready");
        let [t50, t99] = p50_p99(
            "create → first token p50 ms",
            "first token p99 ms",
            "first_text",
        );
        let create_args = args(&["--count", &samples, "--gap", "3"]);
        out.push(Case {
            id: id.into(),
            scenario: "create",
            args: create_args.clone(),
            ring_size: None,
            agent: Agent::RealCli,
            server_args: args(&["--claude-warm-spares", spares]),
            // The original has no spares: every create of it is cold. It runs once, beside
            // the warm case (the comparison the issue asks for).
            python_args: (spares != "0").then_some(create_args),
            aliases,
            store: Store::Memory,
            timeout_s: 600,
            metrics: vec![r50, r99, t50, t99],
        });
    }
    out
}

/// The report's notes on the lifecycle cases among `cases`.
pub(crate) fn notes(cases: &[&Case]) -> Vec<String> {
    let mut notes = vec![
        "lifecycle cases: real CLI = the pinned Claude Code CLI against the mock Anthropic API (answers at once: no model latency in any figure); fake CLI = the testkit's fake `claude`. The Python original runs the same real CLI through its own SDK factory (`bench/python/serve.py --cli-path`), with its idle reaper pushed out of the way; it has no hibernation (no `wake`) and no spares (its create is always cold, so it runs beside `warm-create` only).".to_owned(),
    ];
    for case in cases.iter().filter(|c| c.scenario == "capacity") {
        if let (Some(full), Some(py)) = (full_count(case), &case.python_args) {
            let capped = py
                .iter()
                .position(|a| a == "--sessions")
                .and_then(|i| py.get(i + 1))
                .cloned()
                .unwrap_or_default();
            if capped.parse::<f64>().is_ok_and(|n| n >= full) {
                continue;
            }
            notes.push(format!(
                "{}: the Python original keeps one live CLI per open session, so it opens only {capped} (at most 40, and at most half the machine's memory at {} MB a session); its `total MB at full count` is extrapolated to {full} sessions: measured total + ({full} − {capped}) × its measured marginal per session.",
                case.id,
                PYTHON_SESSION_BUDGET >> 20
            ));
        }
    }
    notes
}

/// The session count a capacity case asks of our server (its `--sessions`).
pub(crate) fn full_count(case: &Case) -> Option<f64> {
    let at = case.args.iter().position(|a| a == "--sessions")?;
    case.args.get(at + 1)?.parse().ok()
}

/// Adds the derived figures the report shows (MB, KB) to a capacity result's metrics, with
/// the total at `full` sessions: measured when that many were opened, else the measured total
/// plus the missing sessions at the measured marginal cost (the Python original, capped).
pub(crate) fn derive(result: &mut Value, full: Option<f64>) {
    let Some(m) = result.get_mut("metrics").and_then(Value::as_object_mut) else {
        return;
    };
    let get = |k: &str| m.get(k).and_then(Value::as_f64);
    let at_full = match (get("total_bytes"), get("sessions"), full) {
        (Some(total), Some(opened), Some(full)) if opened < full => {
            get("marginal_bytes_per_session")
                .map(|marginal| (total + (full - opened) * marginal) / 1e6)
        }
        (Some(total), _, _) => Some(total / 1e6),
        _ => None,
    };
    let derived = [
        ("total_mb_at_full", at_full),
        ("total_mb", get("total_bytes").map(|v| v / 1e6)),
        ("server_rss_mb", get("server_rss_bytes").map(|v| v / 1e6)),
        (
            "marginal_kb_per_session",
            get("marginal_bytes_per_session").map(|v| v / 1e3),
        ),
        (
            "marginal_server_rss_kb_per_session",
            get("marginal_server_rss_per_session").map(|v| v / 1e3),
        ),
    ];
    for (k, v) in derived {
        if let Some(v) = v {
            m.insert(k.to_owned(), v.into());
        }
    }
}

/// The mock Anthropic API (`agent-webkit-loadgen mock-api`), killed on drop.
pub(crate) struct MockApi {
    child: Child,
    /// Environment for the server (and so its CLIs).
    pub(crate) env: Vec<(String, String)>,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the mock API with its CLI home under `home`.
pub(crate) fn start_mock_api(loadgen: &Path, home: &Path) -> Result<MockApi, String> {
    let mut child = Command::new(loadgen)
        .args(["mock-api", "--home"])
        .arg(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the mock API: {e}"))?;
    let stdout = child.stdout.take().ok_or("no mock API stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let mut mock = MockApi {
        child,
        env: Vec::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the mock API printed nothing within 30 s")?;
    let v: Value =
        serde_json::from_str(&line).map_err(|e| format!("mock API: bad JSON ({e}): {line}"))?;
    mock.env = v["env"]
        .as_object()
        .ok_or("mock API: no env")?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    Ok(mock)
}
