//! `cargo xtask bench`: load scenarios (the `agent-webkit-loadgen` binary) against our server
//! (axum and actix adapters, replay agent) and the Python original (`bench/python/serve.py`,
//! provisioned by [`crate::python_original`]), over loopback. Every run gets a fresh server
//! process. Writes `target/bench/report.md` (also printed), `target/bench/report.png` and the
//! raw loadgen outputs `target/bench/results.json`. See `docs/benchmarks.md`.
//!
//! Flags (`cargo xtask bench --help`): `--quick` (tiny sizes), `--only`/`--case
//! <scenario|case>[,…]`, `--store memory,sqlite,postgres` (see [`crate::bench_stores`]),
//! `--targets ours-axum,…`, `--runs N` (default 5: median, min, max).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench_stores::{Backends, Store};

/// The servers' bearer token. Our server never passes the CLI an environment variable whose
/// value contains it (a secret), so it must not occur in any path: with the old token `bench`
/// the CLI lost `HOME`, `CLAUDE_CONFIG_DIR` and `TMPDIR` (all under `target/bench/`), wrote its
/// transcripts under the real `~/.claude`, and the transcript mirror dropped them.
const TOKEN: &str = "agent-webkit-bench-token-0c5f";
const TARGETS: [&str; 3] = ["ours-axum", "ours-actix", "python-original"];
const PYTHON: &str = "python-original";

/// One number taken from a loadgen result.
#[derive(Clone)]
pub(crate) struct Metric {
    pub(crate) label: &'static str,
    /// Path into the result's `metrics` object.
    path: &'static [&'static str],
    pub(crate) higher_is_better: bool,
    /// Drawn in the PNG.
    pub(crate) chart: bool,
}

/// Emission → receipt lag p50 / p99 / max (p99 charted when `chart`).
fn emission_lag_metrics(chart: bool) -> Vec<Metric> {
    vec![
        metric(
            "emission lag p50 ms",
            &["emission_lag", "p50_ms"],
            false,
            false,
        ),
        metric(
            "emission lag p99 ms",
            &["emission_lag", "p99_ms"],
            false,
            chart,
        ),
        metric(
            "emission lag max ms",
            &["emission_lag", "max_ms"],
            false,
            false,
        ),
    ]
}

pub(crate) const fn metric(
    label: &'static str,
    path: &'static [&'static str],
    higher_is_better: bool,
    chart: bool,
) -> Metric {
    Metric {
        label,
        path,
        higher_is_better,
        chart,
    }
}

/// One benchmark case: a loadgen scenario with its parameters and the server it needs.
#[derive(Clone)]
pub(crate) struct Case {
    pub(crate) id: String,
    pub(crate) scenario: &'static str,
    pub(crate) args: Vec<String>,
    pub(crate) ring_size: Option<u64>,
    pub(crate) timeout_s: u64,
    pub(crate) metrics: Vec<Metric>,
    /// The agent behind our server (and the Python original's: the fake agent for replay
    /// cases, the real CLI where `python_args` says so).
    pub(crate) agent: Agent,
    /// Extra flags for our server.
    pub(crate) server_args: Vec<String>,
    /// Loadgen arguments for the Python original in a CLI case (it runs the real CLI through
    /// its SDK; `None`: it sits the case out). The replay cases run it with `args`.
    pub(crate) python_args: Option<Vec<String>>,
    /// Other names `--only` accepts for this case.
    pub(crate) aliases: &'static [&'static str],
    /// Our server's store (the Python original runs only the in-memory cases, its own).
    pub(crate) store: Store,
}

/// The agent behind our server in a case.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agent {
    /// The scripted replay agent (the server's own cost).
    Replay,
    /// `--agent claude` with the fake `claude` (the server's cost with a CLI bridge).
    FakeCli,
    /// `--agent claude` with the real CLI against the mock Anthropic API (the CLI's cost).
    RealCli,
}

pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn cases(quick: bool) -> Vec<Case> {
    let mut out = Vec::new();
    let events: u64 = if quick { 5_000 } else { 100_000 };
    for subs in [1u32, 10, 100] {
        out.push(Case {
            id: format!("fanout-{subs}"),
            scenario: "fanout",
            args: args(&[
                "--events",
                &events.to_string(),
                "--subscribers",
                &subs.to_string(),
                "--bytes",
                "200",
            ]),
            // Large enough that no subscriber can lag out of the ring: this measures
            // throughput, not the eviction policy.
            ring_size: Some(events + 16),
            agent: Agent::Replay,
            server_args: Vec::new(),
            python_args: None,
            aliases: &[],
            store: Store::Memory,
            timeout_s: if quick { 120 } else { 900 },
            metrics: vec![metric(
                "events/s delivered",
                &["events_per_sec"],
                true,
                true,
            )],
        });
    }
    let (rate, seconds, subs) = if quick {
        ("200", "1", "10")
    } else {
        ("1000", "10", "100")
    };
    out.push(Case {
        id: "latency".into(),
        scenario: "latency",
        args: args(&[
            "--rate",
            rate,
            "--seconds",
            seconds,
            "--subscribers",
            subs,
            "--bytes",
            "200",
        ]),
        ring_size: None,
        agent: Agent::Replay,
        server_args: Vec::new(),
        python_args: None,
        aliases: &[],
        store: Store::Memory,
        timeout_s: if quick { 60 } else { 300 },
        // The headline: emission → receipt, both on this machine's wall clock (the agent
        // stamps each message as it emits it; the model is `stream:N:ms:bytes:ts`).
        metrics: [
            emission_lag_metrics(true),
            vec![
                metric(
                    "fan-out spread p99 ms",
                    &["fanout_spread", "p99_ms"],
                    false,
                    false,
                ),
                metric(
                    "cadence lag p99 ms",
                    &["cadence_lag", "p99_ms"],
                    false,
                    false,
                ),
                metric("achieved events/s", &["achieved_rate_per_s"], true, false),
            ],
        ]
        .concat(),
    });
    if !quick {
        // A load the Python original survives (at 1 000 events/s × 100 subscribers its
        // subscribers skip events), so there is a latency ratio too.
        out.push(Case {
            id: "latency-light".into(),
            scenario: "latency",
            args: args(&[
                "--rate",
                "200",
                "--seconds",
                "10",
                "--subscribers",
                "10",
                "--bytes",
                "200",
            ]),
            ring_size: None,
            agent: Agent::Replay,
            server_args: Vec::new(),
            python_args: None,
            aliases: &[],
            store: Store::Memory,
            timeout_s: 120,
            metrics: [
                emission_lag_metrics(true),
                vec![metric(
                    "achieved events/s",
                    &["achieved_rate_per_s"],
                    true,
                    false,
                )],
            ]
            .concat(),
        });
    }
    let sessions = if quick { "50" } else { "1000" };
    out.push(Case {
        id: "memory".into(),
        scenario: "memory",
        args: args(&["--sessions", sessions, "--ring", "1000", "--bytes", "200"]),
        ring_size: Some(1000),
        agent: Agent::Replay,
        server_args: Vec::new(),
        python_args: None,
        aliases: &[],
        store: Store::Memory,
        timeout_s: if quick { 120 } else { 900 },
        metrics: vec![
            metric(
                "RSS bytes/session (idle 20 s)",
                &["bytes_per_session"],
                false,
                true,
            ),
            metric(
                "RSS bytes/session (0.5 s after fill)",
                &["bytes_per_session_fresh"],
                false,
                false,
            ),
            metric(
                "SSE bytes/session (ring payload)",
                &["stream_bytes_per_session"],
                false,
                false,
            ),
        ],
    });
    let (max, step) = if quick {
        ("500", "250")
    } else {
        ("10000", "1000")
    };
    out.push(Case {
        id: "connections".into(),
        scenario: "connections",
        args: args(&["--max", max, "--step", step, "--sessions", "10"]),
        ring_size: None,
        agent: Agent::Replay,
        server_args: Vec::new(),
        python_args: None,
        aliases: &[],
        store: Store::Memory,
        timeout_s: if quick { 120 } else { 900 },
        metrics: vec![metric("SSE connections held", &["max_held"], true, true)],
    });
    let clients = if quick { "100" } else { "1000" };
    out.push(Case {
        id: "resume".into(),
        scenario: "resume",
        // 998 messages + session_ready + result = the ring exactly: the setup reader can
        // never lag out of it (with 1 000 it did, once in 3 runs on actix).
        args: args(&["--clients", clients, "--back", "500", "--events", "998"]),
        ring_size: Some(1000),
        agent: Agent::Replay,
        server_args: Vec::new(),
        python_args: None,
        aliases: &[],
        store: Store::Memory,
        timeout_s: if quick { 120 } else { 600 },
        metrics: vec![
            metric("reconnects/s", &["reconnects_per_sec"], true, true),
            metric(
                "per-reconnect p99 ms",
                &["per_client", "p99_ms"],
                false,
                false,
            ),
        ],
    });
    let (secs, conc) = if quick { ("2", "4") } else { ("10", "16") };
    out.push(Case {
        id: "churn".into(),
        scenario: "churn",
        args: args(&["--seconds", secs, "--concurrency", conc]),
        ring_size: None,
        agent: Agent::Replay,
        server_args: Vec::new(),
        python_args: None,
        aliases: &[],
        store: Store::Memory,
        timeout_s: if quick { 60 } else { 120 },
        metrics: vec![
            metric("sessions/s", &["sessions_per_sec"], true, true),
            metric(
                "per-session p99 ms",
                &["per_session", "p99_ms"],
                false,
                false,
            ),
        ],
    });
    out
}

struct Options {
    quick: bool,
    only: Option<Vec<String>>,
    /// `--store a,b`: only the cases whose server runs one of these stores.
    stores: Option<Vec<Store>>,
    /// `--help`: print [`HELP`] and run nothing.
    help: bool,
    targets: Vec<String>,
    runs: usize,
    /// Runs per cell for the Python original (default: `runs`; it is slow).
    python_runs: Option<usize>,
    /// `results.json` files of earlier runs whose (case, target) results are taken instead of
    /// running those cells again (`--merge a.json,b.json`).
    merge: Vec<PathBuf>,
    /// `--sessions N` / `--samples N` for the lifecycle cases.
    sizes: crate::bench_lifecycle::Sizes,
}

impl Options {
    fn runs_for(&self, target: &str) -> usize {
        if target == PYTHON {
            self.python_runs.unwrap_or(self.runs)
        } else {
            self.runs
        }
    }
}

fn parse(argv: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        only: None,
        stores: None,
        help: false,
        targets: TARGETS.iter().map(|t| (*t).to_owned()).collect(),
        runs: 5,
        python_runs: None,
        merge: Vec::new(),
        sizes: crate::bench_lifecycle::Sizes {
            sessions: None,
            samples: None,
        },
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--help" | "-h" => opts.help = true,
            "--only" | "--case" => {
                opts.only = Some(value(arg)?.split(',').map(str::to_owned).collect())
            }
            "--store" => {
                opts.stores = Some(
                    value("--store")?
                        .split(',')
                        .map(Store::parse)
                        .collect::<Result<_, _>>()?,
                )
            }
            "--targets" => {
                opts.targets = value("--targets")?.split(',').map(str::to_owned).collect();
                for t in &opts.targets {
                    if !TARGETS.contains(&t.as_str()) {
                        return Err(format!("unknown target {t:?}; known: {TARGETS:?}"));
                    }
                }
            }
            "--runs" => {
                opts.runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?;
                if opts.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--sessions" => {
                let n = value("--sessions")?;
                opts.sizes.sessions = Some(n.parse().map_err(|e| format!("--sessions: {e}"))?);
            }
            "--samples" => {
                let n = value("--samples")?;
                opts.sizes.samples = Some(n.parse().map_err(|e| format!("--samples: {e}"))?);
            }
            "--merge" => {
                opts.merge = value("--merge")?.split(',').map(PathBuf::from).collect();
            }
            "--python-runs" => {
                let n: usize = value("--python-runs")?
                    .parse()
                    .map_err(|e| format!("--python-runs: {e}"))?;
                if n == 0 {
                    return Err("--python-runs must be at least 1".into());
                }
                opts.python_runs = Some(n);
            }
            other => {
                return Err(format!(
                    "unknown bench flag {other:?}; see `cargo xtask bench --help`"
                ))
            }
        }
    }
    Ok(opts)
}

/// `cargo xtask bench --help`.
const HELP: &str = "\
usage: cargo xtask bench [flags]

Load benchmarks over loopback: our server (axum, actix) and the Python original, a fresh
server process per run. Writes target/bench/report.md, report.png, results.json and
logs/. See docs/benchmarks.md.

flags:
  --quick                  tiny sizes (a smoke run; not comparable with full runs)
  --only, --case <c>[,…]   cases (fanout-10, memory-sqlite, restart, …; a case also
                           names its -sqlite / -postgres variants) or scenarios (fanout =
                           every fanout case with every store, memory, churn, restart
                           (restart and restart-deep), capacity, wake, create, …)
  --store <s>[,…]          only cases whose server runs these stores: memory (the cases of
                           earlier reports, and the lifecycle cases), sqlite (the -sqlite
                           variants of fanout/churn/memory, and the restart cases), postgres (the
                           -postgres variants; the bench starts a throwaway PostgreSQL)
  --targets <t>[,…]        ours-axum, ours-actix, python-original (default: all three;
                           the original runs only the in-memory replay cases and some
                           lifecycle cases)
  --runs N                 runs per cell (default 5: median, min, max)
  --python-runs N          runs per cell for the Python original (default: --runs)
  --sessions N             session count of the capacity cases
  --samples N              samples of the wake and create cases
  --merge a.json[,…]       take (case, target) cells from earlier results.json files
  -h, --help               this text

examples:
  cargo xtask bench --quick --case restart --targets ours-axum,ours-actix --runs 1
  cargo xtask bench --case fanout-10,churn,memory --store memory,sqlite,postgres --runs 1
  cargo xtask bench --store sqlite --targets ours-axum --runs 1
";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"))
}

/// The Python original's interpreter (a venv with `agent-webkit-server` 0.2.0 installed).
fn python_interpreter() -> Result<PathBuf, String> {
    crate::python_original::ensure()
}

/// How to start one target's server.
pub(crate) enum Launch {
    Ours { binary: PathBuf, framework: String },
    Python { python: PathBuf, script: PathBuf },
}

pub(crate) struct Server {
    child: Child,
    url: String,
    /// The mock Anthropic API of a real-CLI case (dropped after the server is killed).
    _mock: Option<crate::bench_lifecycle::MockApi>,
}

/// What the CLI cases need besides the server binary.
pub(crate) struct CliPaths {
    pub(crate) loadgen: PathBuf,
    fake: PathBuf,
    /// The real CLI, when a selected case needs it.
    real: Option<Result<PathBuf, String>>,
    /// Scratch directory (HOME of the real CLI, cwd of the server).
    scratch: PathBuf,
}

impl Server {
    /// SIGKILL (no shutdown path runs), and reaped.
    pub(crate) fn kill(&mut self) -> Result<(), String> {
        self.child
            .kill()
            .map_err(|e| format!("cannot kill the server: {e}"))?;
        self.child
            .wait()
            .map(|_| ())
            .map_err(|e| format!("waiting for the killed server: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh scratch dir per server: the CLI's HOME (transcripts) under `home`, and `work`, the
/// sessions' cwd (returned).
fn fresh_scratch(scratch: &Path) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(scratch);
    let work = scratch.join("work");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    Ok(work)
}

/// Starts one server for `case`; `store_args` select our server's store (see
/// [`crate::bench_stores`]).
pub(crate) fn start_server(
    launch: &Launch,
    case: &Case,
    log: &Path,
    cli: &CliPaths,
    store_args: &[String],
) -> Result<Server, String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut mock = None;
    let mut cwd = crate::root();
    let mut cmd = match launch {
        Launch::Ours { binary, framework } => {
            let mut cmd = Command::new(binary);
            cmd.args(["--framework", framework])
                .args(["--keepalive", "1"])
                // The case's store: `--store memory` for the cases of earlier reports (their
                // figures stay comparable), a fresh `--data-dir` (never the per-user one, whose
                // lock lets one server run at a time) or `--database-url` for the variants.
                .args(store_args)
                // `AGENT_WEBKIT_BENCH_LOG=agent_webkit_claude=info` shows, e.g., each CLI's
                // `ready_ms` in the server logs (a wake's start vs a fresh one's).
                .env(
                    "RUST_LOG",
                    std::env::var("AGENT_WEBKIT_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
                );
            match case.agent {
                Agent::Replay => {
                    cmd.args(["--agent", "replay"]);
                }
                Agent::FakeCli | Agent::RealCli => {
                    let claude = if case.agent == Agent::FakeCli {
                        cli.fake.clone()
                    } else {
                        match &cli.real {
                            Some(Ok(path)) => path.clone(),
                            Some(Err(e)) => return Err(format!("the real CLI: {e}")),
                            None => return Err("the real CLI was not provisioned".into()),
                        }
                    };
                    cwd = fresh_scratch(&cli.scratch)?;
                    cmd.args(["--agent", "claude", "--claude-path"])
                        .arg(claude)
                        .arg("--claude-setting-sources=")
                        .args(&case.server_args);
                    if case.agent == Agent::RealCli {
                        let m = crate::bench_lifecycle::start_mock_api(
                            &cli.loadgen,
                            &cli.scratch.join("home"),
                        )?;
                        cmd.envs(m.env.iter().map(|(k, v)| (k, v)));
                        mock = Some(m);
                    }
                }
            }
            cmd
        }
        Launch::Python { python, script } => {
            let mut cmd = Command::new(python);
            cmd.arg(script);
            if case.agent != Agent::Replay {
                // The real CLI through the original's SDK factory, against the same mock API,
                // in the same kind of scratch directory; sessions are never reaped during a
                // case (its idle reaper would otherwise end sessions idle for 300 s).
                let real = match &cli.real {
                    Some(Ok(path)) => path.clone(),
                    Some(Err(e)) => return Err(format!("the real CLI: {e}")),
                    None => return Err("the real CLI was not provisioned".into()),
                };
                cwd = fresh_scratch(&cli.scratch)?;
                cmd.arg("--cli-path")
                    .arg(real)
                    .args(["--idle-timeout", "86400"]);
                let m = crate::bench_lifecycle::start_mock_api(
                    &cli.loadgen,
                    &cli.scratch.join("home"),
                )?;
                cmd.envs(m.env.iter().map(|(k, v)| (k, v)));
                mock = Some(m);
            }
            cmd
        }
    };
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--token", TOKEN]);
    if let Some(ring) = case.ring_size {
        cmd.args(["--ring-size", &ring.to_string()]);
    }
    let mut child = cmd
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some((_, url)) = line.split_once(" listening on ") {
                let _ = tx.send(url.trim().to_owned());
                break;
            }
        }
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => Ok(Server {
            child,
            url,
            _mock: mock,
        }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "the server printed no listening line within 60 s (log: {})",
                log.display()
            ))
        }
    }
}

/// Runs the loadgen once; returns its JSON result (which may say `ok: false`).
fn run_loadgen(
    loadgen: &Path,
    case: &Case,
    args: &[String],
    server: &Server,
) -> Result<Value, String> {
    run_loadgen_as(loadgen, case.scenario, case.timeout_s, args, server)
}

/// Runs the loadgen's `scenario` once (bounded by `timeout_s`); returns its JSON result.
pub(crate) fn run_loadgen_as(
    loadgen: &Path,
    scenario: &str,
    timeout_s: u64,
    args: &[String],
    server: &Server,
) -> Result<Value, String> {
    let mut child = Command::new(loadgen)
        .arg(scenario)
        .args(args)
        .args(["--url", &server.url, "--token", TOKEN, "--json"])
        .args(["--pid", &server.child.id().to_string()])
        .args(["--timeout", &timeout_s.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the loadgen: {e}"))?;
    let stdout = child.stdout.take().ok_or("no loadgen stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text = line;
        }
        text
    });
    // The loadgen bounds itself; this is the backstop.
    let deadline = Instant::now() + Duration::from_secs(timeout_s + 60);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the loadgen overran its timeout and was killed".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = reader.join().map_err(|_| "loadgen reader panicked")?;
    serde_json::from_str(&line).map_err(|e| format!("loadgen printed no JSON ({e}): {line:?}"))
}

fn lookup(metrics: &Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(metrics, |v, key| v.get(key))
        .and_then(Value::as_f64)
}

/// The outcome of one (case, target).
pub(crate) enum Cell {
    Skipped,
    Runs {
        /// Per metric, the values of the successful runs.
        values: Vec<Vec<f64>>,
        failures: Vec<String>,
    },
}

pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

fn stats(values: &[f64]) -> Option<Stats> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

impl Cell {
    pub(crate) fn stats(&self, metric: usize) -> Option<Stats> {
        match self {
            Cell::Runs { values, .. } => values.get(metric).and_then(|v| stats(v)),
            Cell::Skipped => None,
        }
    }
}

pub(crate) fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || (v.fract() == 0.0 && a < 1e15) {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The load average (`/proc/loadavg`: 1, 5 and 15 minutes), if readable.
fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The raw entries of earlier `results.json` files, by (case, target).
fn merged_results(files: &[PathBuf]) -> Result<BTreeMap<(String, String), Vec<Value>>, String> {
    let mut out: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let entries: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a results.json ({e})", file.display()))?;
        for entry in entries {
            if let (Some(case), Some(target)) = (entry["case"].as_str(), entry["target"].as_str()) {
                out.entry((case.to_owned(), target.to_owned()))
                    .or_default()
                    .push(entry);
            }
        }
    }
    Ok(out)
}

/// The cell of `case` made of earlier runs' raw entries.
fn cell_of(case: &Case, entries: &[Value]) -> Cell {
    let mut values = vec![Vec::new(); case.metrics.len()];
    let mut failures = Vec::new();
    for entry in entries {
        let result = &entry["result"];
        if result.get("ok") == Some(&Value::Bool(true)) {
            for (i, m) in case.metrics.iter().enumerate() {
                if let Some(v) = lookup(&result["metrics"], m.path) {
                    values[i].push(v);
                }
            }
        } else {
            let why = entry["error"]
                .as_str()
                .or_else(|| result["errors"].get(0).and_then(Value::as_str))
                .unwrap_or("not ok");
            failures.push(why.to_owned());
        }
    }
    Cell::Runs { values, failures }
}

/// The replay cases at full size (for other modules' tests).
#[cfg(test)]
pub(crate) fn test_cases() -> Vec<Case> {
    cases(false)
}

/// The cases `--only` / `--case` and `--store` select.
fn select<'a>(all: &'a [Case], opts: &Options) -> Vec<&'a Case> {
    all.iter()
        .filter(|c| {
            opts.only.as_ref().is_none_or(|only| {
                only.iter().any(|o| {
                    o == &c.id
                        || o == c.scenario
                        || c.aliases.contains(&o.as_str())
                        // A case names its store variants too: `--case fanout-10 --store sqlite`.
                        || c.id.strip_suffix(c.store.name()).and_then(|b| b.strip_suffix('-'))
                            == Some(o.as_str())
                })
            })
        })
        .filter(|c| opts.stores.as_ref().is_none_or(|s| s.contains(&c.store)))
        .collect()
}

/// Runs the benchmarks.
pub fn bench(argv: &[String]) -> Result<(), String> {
    let opts = parse(argv)?;
    if opts.help {
        print!("{HELP}");
        return Ok(());
    }
    let mut all = cases(opts.quick);
    all.extend(crate::bench_stores::variants(&all));
    all.extend(crate::bench_restart::cases(opts.quick));
    all.extend(crate::bench_lifecycle::cases(opts.quick, &opts.sizes));
    let selected = select(&all, &opts);
    if selected.is_empty() {
        return Err(format!(
            "--only / --store match no case; cases: {}",
            all.iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let out_dir = target_dir().join("bench");
    let log_dir = out_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;

    let mut build = crate::cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "agent-webkit-loadgen",
        "-p",
        "agent-webkit-server",
        // The fake `claude` of the CLI cases.
        "-p",
        "agent-webkit-testkit",
    ]);
    crate::run("cargo build --release (loadgen, server)", &mut build)?;
    let release = target_dir().join("release");
    let loadgen = release.join("agent-webkit-loadgen");
    let server_bin = release.join("agent-webkit-server");
    let cli = CliPaths {
        loadgen: loadgen.clone(),
        fake: release.join("fake-claude"),
        real: selected
            .iter()
            .any(|c| c.agent == Agent::RealCli)
            .then(crate::claude_cli::ensure),
        scratch: out_dir.join("cli-scratch"),
    };

    let mut launches: BTreeMap<String, Result<Launch, String>> = BTreeMap::new();
    for target in &opts.targets {
        let launch = match target.as_str() {
            "ours-axum" | "ours-actix" => Ok(Launch::Ours {
                binary: server_bin.clone(),
                framework: target.trim_start_matches("ours-").to_owned(),
            }),
            _ => {
                eprintln!("xtask: ==> Python original (bench/python/serve.py)");
                let script = crate::python_original::serve_script();
                if script.is_file() {
                    python_interpreter().map(|python| Launch::Python { python, script })
                } else {
                    Err(format!("{} is missing", script.display()))
                }
            }
        };
        if let Err(reason) = &launch {
            eprintln!("xtask: {target} SKIPPED: {reason}");
        }
        launches.insert(target.clone(), launch);
    }

    let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
    let mut raw = Vec::new();
    let mut merged = merged_results(&opts.merge)?;
    let mut backends = Backends::default();
    let started = Instant::now();
    for case in &selected {
        for target in &opts.targets {
            let key = (case.id.clone(), target.clone());
            if let Some(entries) = merged.remove(&key) {
                eprintln!(
                    "xtask: {:<12} {:<16} {} run(s) taken from --merge",
                    case.id,
                    target,
                    entries.len()
                );
                cells.insert(key, cell_of(case, &entries));
                raw.extend(entries);
                continue;
            }
            let (launch, loadgen_args) = match launches.get(target) {
                // The Python original runs the in-memory replay cases (it has no other store),
                // and the CLI cases that say how.
                Some(Ok(Launch::Python { .. })) if case.store != Store::Memory => continue,
                Some(Ok(launch @ Launch::Python { .. })) => match (case.agent, &case.python_args) {
                    (Agent::Replay, _) => (launch, &case.args),
                    (_, Some(args)) => (launch, args),
                    (_, None) => {
                        cells.insert(key, Cell::Skipped);
                        continue;
                    }
                },
                Some(Ok(launch)) => (launch, &case.args),
                Some(Err(_)) => {
                    cells.insert(key, Cell::Skipped);
                    continue;
                }
                None => continue,
            };
            let mut values = vec![Vec::new(); case.metrics.len()];
            let mut failures = Vec::new();
            let runs = opts.runs_for(target);
            for run in 1..=runs {
                let log = log_dir.join(format!("{target}-{}-{run}.log", case.id));
                let t = Instant::now();
                let load_before = loadavg();
                let outcome = backends
                    .prepare(case.store, &format!("{target}-{}-{run}", case.id))
                    .and_then(|storage| {
                        // `storage` outlives the server (its data is removed after it).
                        if case.scenario == "restart" {
                            crate::bench_restart::run(launch, case, &storage.args, &log, &cli)
                        } else {
                            start_server(launch, case, &log, &cli, &storage.args).and_then(
                                |server| run_loadgen(&loadgen, case, loadgen_args, &server),
                            )
                        }
                    });
                let load = json!({"before": load_before, "after": loadavg()});
                eprintln!(
                    "xtask: {:<12} {:<16} run {run}/{}: load average before {} → after {}",
                    case.id, target, runs, load["before"], load["after"]
                );
                match outcome {
                    Ok(mut result) => {
                        if case.scenario == "capacity" {
                            crate::bench_lifecycle::derive(
                                &mut result,
                                crate::bench_lifecycle::full_count(case),
                            );
                        }
                        let ok = result.get("ok") == Some(&Value::Bool(true));
                        let summary = case
                            .metrics
                            .iter()
                            .filter_map(|m| {
                                lookup(&result["metrics"], m.path)
                                    .map(|v| format!("{} {}", m.label, num(v)))
                            })
                            .next()
                            .unwrap_or_default();
                        if ok {
                            for (i, m) in case.metrics.iter().enumerate() {
                                if let Some(v) = lookup(&result["metrics"], m.path) {
                                    values[i].push(v);
                                }
                            }
                            eprintln!(
                                "xtask: {:<12} {:<16} run {run}/{}: {summary} ({:.1}s)",
                                case.id,
                                target,
                                runs,
                                t.elapsed().as_secs_f64()
                            );
                        } else {
                            let first = result["errors"]
                                .get(0)
                                .and_then(Value::as_str)
                                .unwrap_or("not ok")
                                .to_owned();
                            eprintln!(
                                "xtask: {:<12} {:<16} run {run}/{}: FAILED: {first} ({} error(s))",
                                case.id, target, runs, result["error_count"]
                            );
                            failures.push(first);
                        }
                        raw.push(json!({"case": case.id, "target": target, "run": run, "load": load, "result": result}));
                    }
                    Err(e) => {
                        eprintln!(
                            "xtask: {:<12} {:<16} run {run}/{}: FAILED: {e}",
                            case.id, target, runs
                        );
                        raw.push(
                            json!({"case": case.id, "target": target, "run": run, "load": load, "error": e}),
                        );
                        failures.push(e);
                    }
                }
            }
            cells.insert(key, Cell::Runs { values, failures });
        }
    }

    let mut report = markdown(&opts, &selected, &cells, &launches, &raw, started.elapsed());
    report.push_str(&crate::bench_stores::table(
        &selected,
        &opts.targets,
        &cells,
    ));
    report.push_str(&crate::bench_stores::notes(&selected, &backends));
    println!("{report}");
    let md = out_dir.join("report.md");
    std::fs::write(&md, &report).map_err(|e| format!("{}: {e}", md.display()))?;
    let json_path = out_dir.join("results.json");
    let raw_text = serde_json::to_string_pretty(&Value::Array(raw)).unwrap_or_default();
    std::fs::write(&json_path, raw_text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let png = out_dir.join("report.png");
    match chart(&png, &opts.targets, &selected, &cells) {
        Ok(note) => eprintln!("xtask: chart: {}{note}", png.display()),
        Err(e) => eprintln!("xtask: chart not drawn: {e}"),
    }
    eprintln!(
        "xtask: report: {} (raw results: {})",
        md.display(),
        json_path.display()
    );
    let failed: usize = cells
        .values()
        .map(|c| match c {
            Cell::Runs { failures, .. } => failures.len(),
            Cell::Skipped => 0,
        })
        .sum();
    if failed > 0 {
        return Err(format!(
            "{failed} benchmark run(s) failed (see the report and target/bench/logs)"
        ));
    }
    Ok(())
}

/// `ours / python`, with two significant digits below 0.1 (a warm create is ~0.003× a cold one).
fn ratio(r: f64) -> String {
    if r.abs() >= 0.1 || r == 0.0 {
        format!("{r:.2}×")
    } else {
        let digits = (1.0 - r.abs().log10().floor()).clamp(2.0, 12.0) as usize;
        format!("{r:.digits$}×")
    }
}

fn markdown(
    opts: &Options,
    cases: &[&Case],
    cells: &BTreeMap<(String, String), Cell>,
    launches: &BTreeMap<String, Result<Launch, String>>,
    raw: &[Value],
    took: Duration,
) -> String {
    let mut s = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(s, "# agent-webkit benchmarks\n");
    let _ = writeln!(
        s,
        "{} run(s) per cell{}, each against a fresh server process; cells are `median (min–max)` of the successful runs. {}{cores} core(s) shared by the server and the load generator; loopback only. Took {:.0} s. How to read this: docs/benchmarks.md.\n",
        opts.runs,
        match opts.python_runs {
            Some(n) if n != opts.runs => format!(" ({n} for the Python original)"),
            _ => String::new(),
        },
        if opts.quick { "**--quick sizes** (not comparable with full runs). " } else { "" },
        took.as_secs_f64()
    );
    let python = opts.targets.iter().any(|t| t == PYTHON);
    let ours: Vec<&String> = opts.targets.iter().filter(|t| *t != PYTHON).collect();
    let _ = write!(s, "| case | metric |");
    for t in &opts.targets {
        let _ = write!(s, " {t} |");
    }
    if python {
        for t in &ours {
            let _ = write!(s, " {t} / python |");
        }
    }
    let _ = writeln!(s);
    let columns = 2 + opts.targets.len() + if python { ours.len() } else { 0 };
    let _ = writeln!(s, "{}", "|---".repeat(columns) + "|");
    for case in cases {
        for (i, m) in case.metrics.iter().enumerate() {
            let arrow = if m.higher_is_better { "↑" } else { "↓" };
            let _ = write!(s, "| {} | {} {arrow} |", case.id, m.label);
            for t in &opts.targets {
                let cell = cells.get(&(case.id.clone(), t.clone()));
                let text = match cell {
                    None => "–".to_owned(),
                    Some(Cell::Skipped) => "SKIPPED".to_owned(),
                    Some(c @ Cell::Runs { failures, .. }) => match c.stats(i) {
                        Some(st) => {
                            let mut text = if opts.runs_for(t) > 1 {
                                format!("{} ({}–{})", num(st.median), num(st.min), num(st.max))
                            } else {
                                num(st.median)
                            };
                            if !failures.is_empty() {
                                let _ = write!(text, " ({} run(s) FAILED)", failures.len());
                            }
                            text
                        }
                        None if !failures.is_empty() => "FAILED".to_owned(),
                        None => "n/a".to_owned(),
                    },
                };
                let _ = write!(s, " {text} |");
            }
            if python {
                let py = cells
                    .get(&(case.id.clone(), PYTHON.to_owned()))
                    .and_then(|c| c.stats(i));
                for t in &ours {
                    let ours = cells
                        .get(&(case.id.clone(), (*t).clone()))
                        .and_then(|c| c.stats(i));
                    let text = match (ours, &py) {
                        (Some(o), Some(p)) if p.median != 0.0 => ratio(o.median / p.median),
                        _ => "–".to_owned(),
                    };
                    let _ = write!(s, " {text} |");
                }
            }
            let _ = writeln!(s);
        }
    }
    let _ = writeln!(
        s,
        "\n↑ higher is better, ↓ lower is better; the ratio is ours / python either way."
    );
    let mut notes = Vec::new();
    for (target, launch) in launches {
        if let Err(reason) = launch {
            notes.push(format!("**{target} SKIPPED**: {reason}"));
        }
    }
    for ((case, target), cell) in cells {
        if let Cell::Runs { failures, .. } = cell {
            for f in failures.iter().take(3) {
                notes.push(format!("{case} / {target} FAILED: {f}"));
            }
        }
    }
    if cases.iter().any(|c| c.agent != Agent::Replay) {
        notes.extend(crate::bench_lifecycle::notes(cases));
    }
    notes.extend(crate::bench_restart::verdict(cases, &opts.targets, cells));
    let loads: Vec<String> = raw
        .iter()
        .filter_map(|r| {
            let load = r.get("load")?;
            Some(format!(
                "{} / {} run {}: {} → {}",
                r["case"].as_str()?,
                r["target"].as_str()?,
                r["run"],
                load["before"].as_str().unwrap_or("?"),
                load["after"].as_str().unwrap_or("?")
            ))
        })
        .collect();
    if !loads.is_empty() {
        notes.push(format!(
            "load average (1, 5, 15 min; `/proc/loadavg`) before → after each run — the machine may be shared, and timings are taken under that load: {}.",
            loads.join("; ")
        ));
    }
    notes.push("connections: our server runs with `--keepalive 1`; the Python original's keepalive is fixed at 15 s, so its connections are verified by the events of one echo turn per step (as ours are too) — the keepalive does not matter for the verdict.".into());
    notes.push("latency: emission lag = receipt time − emission time, per (subscriber, event), both read from this machine's wall clock: both fake agents write their clock into each message's text right before handing it to the session (scenario `stream:N:ms:bytes:ts`), the load generator reads its own as soon as it has parsed the frame. Fan-out spread and cadence lag are the older receipt-only measures, kept for comparison.".into());
    notes.push("fanout: the servers run with a ring of events+16, so no subscriber can lag out of the ring (ours would end such a stream with an `evicted` error; that would be a correctness failure here).".into());
    let _ = writeln!(s, "\nNotes:\n");
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

const COLORS: [plotters::style::RGBColor; 3] = [
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(44, 160, 44),
];

/// Loads a TrueType font for the chart's labels, if this machine has one.
fn font() -> bool {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    for path in candidates {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(
                "sans-serif",
                plotters::style::FontStyle::Normal,
                bytes,
            )
            .is_ok()
            {
                return true;
            }
        }
    }
    false
}

/// One panel per charted metric: a bar per target (its median, with a min–max whisker).
fn chart(
    path: &Path,
    targets: &[String],
    cases: &[&Case],
    cells: &BTreeMap<(String, String), Cell>,
) -> Result<String, String> {
    use plotters::prelude::*;
    let labels = font();
    let panels: Vec<(&Case, usize)> = cases
        .iter()
        .flat_map(|c| {
            c.metrics
                .iter()
                .enumerate()
                .filter(|(_, m)| m.chart)
                .map(move |(i, _)| (*c, i))
        })
        .collect();
    if panels.is_empty() {
        return Err("nothing to draw".into());
    }
    let cols = 3usize.min(panels.len());
    let rows = panels.len().div_ceil(cols);
    let (w, h) = (420 * cols as u32, 300 * rows as u32 + 40);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (legend, body) = root.split_vertically(40);
    if labels {
        for (i, t) in targets.iter().enumerate() {
            let x = 20 + 200 * i as i32;
            legend
                .draw(&Rectangle::new(
                    [(x, 12), (x + 16, 28)],
                    COLORS[i % 3].filled(),
                ))
                .map_err(|x| e(&x))?;
            legend
                .draw(&Text::new(
                    t.as_str(),
                    (x + 22, 12),
                    ("sans-serif", 16).into_font(),
                ))
                .map_err(|x| e(&x))?;
        }
    }
    let areas = body.split_evenly((rows, cols));
    for ((case, i), area) in panels.iter().zip(areas.iter()) {
        let m = &case.metrics[*i];
        let bars: Vec<(usize, Stats)> = targets
            .iter()
            .enumerate()
            .filter_map(|(ti, t)| {
                cells
                    .get(&(case.id.clone(), t.clone()))
                    .and_then(|c| c.stats(*i))
                    .map(|s| (ti, s))
            })
            .collect();
        let top = bars.iter().map(|(_, s)| s.max).fold(0.0f64, f64::max) * 1.15;
        let top = if top > 0.0 { top } else { 1.0 };
        let mut builder = ChartBuilder::on(area);
        builder.margin(10);
        if labels {
            let arrow = if m.higher_is_better {
                "higher is better"
            } else {
                "lower is better"
            };
            builder
                .caption(
                    format!("{}: {} ({arrow})", case.id, m.label),
                    ("sans-serif", 15),
                )
                .y_label_area_size(70)
                .x_label_area_size(20);
        }
        let mut chart = builder
            .build_cartesian_2d(0f64..targets.len() as f64, 0f64..top)
            .map_err(|x| e(&x))?;
        if labels {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_x_axis()
                .y_label_formatter(&|v| num(*v))
                .draw()
                .map_err(|x| e(&x))?;
        }
        for (ti, s) in &bars {
            let x0 = *ti as f64 + 0.15;
            let x1 = *ti as f64 + 0.85;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, s.median)],
                    COLORS[ti % 3].filled(),
                )))
                .map_err(|x| e(&x))?;
            let xm = *ti as f64 + 0.5;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(xm, s.min), (xm, s.max)],
                    BLACK.stroke_width(2),
                )))
                .map_err(|x| e(&x))?;
            if labels {
                chart
                    .draw_series(std::iter::once(Text::new(
                        num(s.median),
                        (x0, s.max + top * 0.07),
                        ("sans-serif", 13).into_font(),
                    )))
                    .map_err(|x| e(&x))?;
            }
        }
    }
    root.present().map_err(|x| e(&x))?;
    Ok(if labels {
        String::new()
    } else {
        " (no TrueType font found: drawn without labels)".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(argv: &[&str]) -> Vec<String> {
        let opts = parse(&args(argv)).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let mut all = cases(false);
        all.extend(crate::bench_stores::variants(&all));
        all.extend(crate::bench_restart::cases(false));
        select(&all, &opts).iter().map(|c| c.id.clone()).collect()
    }

    #[test]
    fn a_case_names_its_store_variants_and_store_filters_them() {
        assert_eq!(
            ids(&["--case", "fanout-10"]),
            ["fanout-10", "fanout-10-sqlite", "fanout-10-postgres"]
        );
        assert_eq!(
            ids(&["--case", "fanout-10,churn", "--store", "sqlite"]),
            ["fanout-10-sqlite", "churn-sqlite"]
        );
        assert_eq!(ids(&["--case", "restart"]), ["restart", "restart-deep"]);
        assert_eq!(ids(&["--case", "restart-deep"]), ["restart-deep"]);
        assert_eq!(
            ids(&["--store", "sqlite", "--case", "memory"]),
            ["memory-sqlite"]
        );
        // The plain ids keep the in-memory store of earlier reports.
        assert_eq!(ids(&["--only", "churn", "--store", "memory"]), ["churn"]);
    }

    #[test]
    fn bad_store_and_help() {
        assert!(parse(&args(&["--store", "disk"])).is_err());
        assert!(parse(&args(&["--help"])).is_ok_and(|o| o.help));
        assert!(HELP.contains("--store") && HELP.contains("--case"));
    }
}
