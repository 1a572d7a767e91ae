//! Smoke version of `cargo xtask bench`: every load scenario with tiny parameters against our
//! server (both adapters, replay agent), asserting correctness only (every event seen exactly
//! once, no errors) — never speed. Runs in `cargo xtask test` (`cargo test --workspace`).
//! The stores of the bench's store cases: the scenarios run on the SQLite default, the restart
//! case (fill, SIGKILL, start on the same data directory, resume) on both adapters, and fan-out
//! and churn on PostgreSQL when `AGENT_WEBKIT_PG_DSN` is set (`cargo xtask test` sets it).
//!
//! The server binary is the `agent-webkit-server` that cargo built next to this test (in
//! `target/<profile>/`); when it is missing (e.g. `cargo test -p agent-webkit-loadgen` alone)
//! it is built first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const TOKEN: &str = "smoke";

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/smoke-<hash> → target/<profile>/agent-webkit-server
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let binary = profile_dir.join(format!(
        "agent-webkit-server{}",
        std::env::consts::EXE_SUFFIX
    ));
    if !binary.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "agent-webkit-server"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build -p agent-webkit-server");
        assert!(status.success(), "building agent-webkit-server failed");
    }
    assert!(binary.is_file(), "{} not found", binary.display());
    binary
}

struct Server {
    child: Child,
    url: String,
    /// Its own `--data-dir` (the default SQLite store), never the per-user one; `None` when
    /// the caller keeps it (restart) or the store is PostgreSQL.
    _data: Option<agent_webkit_testkit::real_cli::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(framework: &str) -> Server {
    start_with(&["--agent", "replay"], framework)
}

fn start_with(agent: &[&str], framework: &str) -> Server {
    let data = agent_webkit_testkit::real_cli::TempDir::new("loadgen-data").unwrap();
    let store = ["--data-dir".to_owned(), data.path().display().to_string()];
    let mut server = start_on(agent, &store, framework);
    server._data = Some(data);
    server
}

/// A server with these agent and store flags.
fn start_on(agent: &[&str], store: &[String], framework: &str) -> Server {
    let mut child = Command::new(server_binary())
        .args(agent)
        .args(store)
        .args([
            "--framework",
            framework,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--token",
            TOKEN,
            // Larger than any turn below: a subscriber slowed down by a busy machine must never
            // lag out of the ring (that is an `evicted` error, i.e. a failed scenario).
            "--ring-size",
            "4096",
            "--keepalive",
            "1",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent-webkit-server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some((_, url)) = line.split_once(" listening on ") {
                let _ = tx.send(url.trim().to_owned());
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server printed no listening line within 30 s");
    Server {
        child,
        url,
        _data: None,
    }
}

fn loadgen(server: &Server, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_agent-webkit-loadgen"))
        .args(args)
        .args([
            "--url",
            &server.url,
            "--token",
            TOKEN,
            "--json",
            "--timeout",
            "60",
        ])
        .args(["--pid", &server.child.id().to_string()])
        .output()
        .expect("run agent-webkit-loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON line ({e}): {stdout}"));
    assert_eq!(report["ok"], true, "{args:?}: {report:#}");
    assert!(output.status.success(), "{args:?}: {report:#}");
    report
}

fn all_scenarios(framework: &str) {
    let server = start(framework);
    let r = loadgen(
        &server,
        &["fanout", "--events", "2000", "--subscribers", "3"],
    );
    assert_eq!(r["metrics"]["events_delivered"], 3 * 2001, "{r:#}");

    let r = loadgen(
        &server,
        &[
            "latency",
            "--rate",
            "200",
            "--seconds",
            "1",
            "--subscribers",
            "5",
        ],
    );
    assert_eq!(r["metrics"]["fanout_spread"]["samples"], 5 * 200, "{r:#}");
    // Every message_complete carried its emission stamp (a missing one is an error anyway).
    assert_eq!(r["metrics"]["emission_lag"]["samples"], 5 * 200, "{r:#}");

    let r = loadgen(
        &server,
        &[
            "memory",
            "--sessions",
            "20",
            "--ring",
            "200",
            "--settle",
            "0.5",
        ],
    );
    assert_eq!(r["metrics"]["sessions"], 20, "{r:#}");
    assert!(
        r["metrics"]["rss_after_bytes"].as_u64().unwrap() > 0,
        "{r:#}"
    );

    let r = loadgen(
        &server,
        &[
            "connections",
            "--max",
            "200",
            "--step",
            "100",
            "--sessions",
            "4",
        ],
    );
    assert_eq!(r["metrics"]["max_held"], 200, "{r:#}");

    let r = loadgen(
        &server,
        &[
            "resume",
            "--clients",
            "50",
            "--back",
            "100",
            "--events",
            "150",
        ],
    );
    assert_eq!(r["metrics"]["completed"], 50, "{r:#}");

    let r = loadgen(&server, &["churn", "--seconds", "1", "--concurrency", "4"]);
    assert!(r["metrics"]["completed"].as_u64().unwrap() > 0, "{r:#}");
}

/// The session-lifecycle scenarios (`capacity`, `wake`, `create`) with the fake CLI: at most 2
/// live agents, one warm spare, hibernation after 1 s of quiet.
fn lifecycle_scenarios(framework: &str) {
    let fake = agent_webkit_testkit::fake_claude_path();
    let fake = fake.to_str().unwrap();
    let server = start_with(
        &[
            "--agent",
            "claude",
            "--claude-path",
            fake,
            "--max-live-agents",
            "2",
            "--claude-warm-spares",
            "1",
            "--hibernate-after",
            "1",
        ],
        framework,
    );
    let r = loadgen(
        &server,
        &[
            "capacity",
            "--sessions",
            "6",
            "--concurrency",
            "2",
            "--settle",
            "0.5",
        ],
    );
    assert_eq!(r["metrics"]["sessions"], 6, "{r:#}");
    assert!(r["metrics"]["total_bytes"].as_u64().unwrap() > 0, "{r:#}");
    // Sessions were hibernated: six live agents plus the spare would be seven.
    assert!(
        r["metrics"]["all"]["live_agents"].as_u64().unwrap() < 6,
        "{r:#}"
    );

    let r = loadgen(&server, &["wake", "--wakes", "2", "--spares", "1"]);
    assert_eq!(r["metrics"]["wake_first_text"]["samples"], 2, "{r:#}");
    assert_eq!(r["metrics"]["fresh_first_text"]["samples"], 2, "{r:#}");

    let r = loadgen(&server, &["create", "--count", "2", "--gap", "0.2"]);
    assert_eq!(r["metrics"]["ready"]["samples"], 2, "{r:#}");
    assert_eq!(r["metrics"]["first_text"]["samples"], 2, "{r:#}");
}

#[test]
fn lifecycle_scenarios_against_axum() {
    lifecycle_scenarios("axum");
}

#[test]
fn lifecycle_scenarios_against_actix() {
    lifecycle_scenarios("actix");
}

#[test]
fn every_scenario_against_axum() {
    all_scenarios("axum");
}

#[test]
fn every_scenario_against_actix() {
    all_scenarios("actix");
}

/// The restart case at tiny scale: sessions with full rings, SIGKILL, a new server on the same
/// data directory; every session is served again from where its client stopped, and a resumed
/// session runs a turn.
fn restart(framework: &str) {
    let data = agent_webkit_testkit::real_cli::TempDir::new("loadgen-restart").unwrap();
    let scratch = agent_webkit_testkit::real_cli::TempDir::new("loadgen-state").unwrap();
    let state = scratch.path().join("state.json");
    let state = state.to_str().unwrap();
    let store = ["--data-dir".to_owned(), data.path().display().to_string()];
    let mut server = start_on(&["--agent", "replay"], &store, framework);
    let r = loadgen(
        &server,
        &[
            "restart-fill",
            "--sessions",
            "6",
            "--events",
            "40",
            "--concurrency",
            "3",
            "--state",
            state,
        ],
    );
    assert_eq!(r["metrics"]["sessions"], 6, "{r:#}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        .to_string();
    let server = start_on(&["--agent", "replay"], &store, framework);
    let r = loadgen(
        &server,
        &[
            "restart-resume",
            "--state",
            state,
            "--started-at-us",
            &started_at,
            "--back",
            "10",
            "--turns",
            "2",
        ],
    );
    assert_eq!(r["metrics"]["served"], 6, "{r:#}");
    assert_eq!(r["metrics"]["turn_first_event"]["samples"], 2, "{r:#}");
}

#[test]
fn restart_against_axum() {
    restart("axum");
}

#[test]
fn restart_against_actix() {
    restart("actix");
}

/// A fresh database on the admin DSN of `AGENT_WEBKIT_PG_DSN`; `None` (said loudly) without one.
fn fresh_database() -> Option<String> {
    let Some(admin) = std::env::var("AGENT_WEBKIT_PG_DSN")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!("SKIPPED: the PostgreSQL store smoke needs AGENT_WEBKIT_PG_DSN (cargo xtask test sets it)");
        return None;
    };
    let name = format!(
        "loadgen_smoke_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    });
    let (server, _) = admin.rsplit_once('/').unwrap();
    let (_, query) = admin.split_once('?').unwrap_or(("", ""));
    Some(if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{}/{name}?{query}", server.split('?').next().unwrap())
    })
}

/// Fan-out and churn with `--database-url` (the bench's `-postgres` cases).
#[test]
fn fanout_and_churn_on_postgres() {
    let Some(url) = fresh_database() else {
        return;
    };
    let store = ["--database-url".to_owned(), url];
    for framework in ["axum", "actix"] {
        let server = start_on(&["--agent", "replay"], &store, framework);
        let r = loadgen(
            &server,
            &["fanout", "--events", "500", "--subscribers", "2"],
        );
        assert_eq!(r["metrics"]["events_delivered"], 2 * 501, "{r:#}");
        let r = loadgen(&server, &["churn", "--seconds", "1", "--concurrency", "2"]);
        assert!(r["metrics"]["completed"].as_u64().unwrap() > 0, "{r:#}");
    }
}
