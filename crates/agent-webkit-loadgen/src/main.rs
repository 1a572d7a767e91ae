//! `agent-webkit-loadgen`: black-box load scenarios against any agent-webkit server (this
//! project's, with either adapter, or the Python original) over loopback. The server must run
//! the replay agent (its session `model` names the scenario, e.g. `stream:1000:0:200`).
//!
//! ```text
//! agent-webkit-loadgen <fanout|latency|memory|connections|resume|churn> --url http://127.0.0.1:PORT --token T [params] --json
//! agent-webkit-loadgen <capacity|wake|create> --pid SERVER_PID ...   # server with --agent claude
//! agent-webkit-loadgen mock-api --home DIR   # the mock Anthropic API for the real CLI
//! agent-webkit-loadgen restart-fill --state F ...; (SIGKILL, restart the server) restart-resume --state F --started-at-us T
//! ```
//!
//! Prints one JSON line: `{"scenario", "ok", "error_count", "errors", "params", "metrics",
//! "notes", "loadgen"}`; exits 1 when the scenario saw any error (or timed out). Every request,
//! read and the scenario as a whole are bounded by timeouts. See `docs/benchmarks.md`.

mod http;
mod lifecycle;
mod mock_api;
mod procmem;
mod restart;
mod scenarios;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::http::Target;
use crate::scenarios::Report;

#[derive(Parser, Debug)]
#[command(
    name = "agent-webkit-loadgen",
    about = "Load scenarios for agent-webkit servers"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Server base URL (loopback only).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Bearer token.
    #[arg(
        long,
        global = true,
        env = "AGENT_WEBKIT_AUTH_TOKEN",
        default_value = ""
    )]
    token: String,
    /// Print one compact JSON line (default: pretty JSON).
    #[arg(long, global = true)]
    json: bool,
    /// Whole-scenario timeout, seconds.
    #[arg(long, global = true, default_value_t = 300.0)]
    timeout: f64,
    /// Per-request and per-read timeout, seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    request_timeout: f64,
    /// The server's process id (required by `memory`; reported by `connections`).
    #[arg(long, global = true)]
    pid: Option<u32>,
}

#[derive(Subcommand, Debug, Clone)]
enum Scenario {
    /// One `stream:N:0:bytes` turn fanned out to S subscribers: events/s delivered.
    Fanout {
        /// Events in the turn.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Concurrent subscribers.
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        /// Text bytes per event.
        #[arg(long, default_value_t = 200)]
        bytes: usize,
    },
    /// A paced, timestamped turn (`stream:N:ms:bytes:ts`) to S subscribers: emission → receipt
    /// latency percentiles (plus fan-out spread and cadence lag).
    Latency {
        /// Events per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of events.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent subscribers.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Text bytes per event.
        #[arg(long, default_value_t = 200)]
        bytes: usize,
    },
    /// N sessions with full rings and an idle subscriber each: server RSS per session.
    Memory {
        /// Sessions.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Events per session (start the server with this ring size).
        #[arg(long, default_value_t = 1000)]
        ring: u64,
        /// Text bytes per event.
        #[arg(long, default_value_t = 200)]
        bytes: usize,
        /// Sessions filled concurrently.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds the sessions sit idle before the RSS is read (a first reading is taken
        /// 0.5 s after the fill).
        #[arg(long, default_value_t = 20.0)]
        settle: f64,
    },
    /// SSE connections opened in steps until an error or the max: the most held.
    Connections {
        /// Stop at this many connections.
        #[arg(long, default_value_t = 10_000)]
        max: usize,
        /// Connections added per step.
        #[arg(long, default_value_t = 1000)]
        step: usize,
        /// Sessions the connections are spread over.
        #[arg(long, default_value_t = 10)]
        sessions: usize,
        /// Seconds each connection has to show a frame after a step.
        #[arg(long, default_value_t = 20.0)]
        verify_timeout: f64,
    },
    /// Many clients resuming with Last-Event-ID: reconnects/s.
    Resume {
        /// Reconnecting clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Events each client reads back.
        #[arg(long, default_value_t = 500)]
        back: u64,
        /// Messages in the session's turn; with `session_ready` and `result` the turn should
        /// fit the server's ring, or the setup reader can lag out of it (998 for a ring of
        /// 1 000).
        #[arg(long, default_value_t = 998)]
        events: u64,
        /// Text bytes per event.
        #[arg(long, default_value_t = 200)]
        bytes: usize,
        /// Clients in flight.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Create → stream → echo turn → result → DELETE, back to back: sessions/s.
    Churn {
        /// How long to run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrent workers.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// N sessions (CLI agent), each given one turn and left idle with a subscriber: server RSS
    /// + agents' PSS, marginal memory per (hibernated) session. Needs --pid.
    Capacity {
        /// Sessions.
        #[arg(long, default_value_t = 200)]
        sessions: usize,
        /// Sessions opened concurrently.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds to wait before each memory reading.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// Hibernated session's user_message → first message_delta, vs a fresh session's create
    /// → first delta (start the server with a short --hibernate-after). Needs --pid.
    Wake {
        /// Sessions (each woken once).
        #[arg(long, default_value_t = 20)]
        wakes: usize,
        /// Live children the server keeps when every session is hibernated (its warm spares).
        #[arg(long, default_value_t = 0)]
        spares: u64,
        /// Seconds to wait for every session to hibernate.
        #[arg(long, default_value_t = 60.0)]
        hibernate_timeout: f64,
    },
    /// POST /sessions → session_ready, and → first text of the first reply, one at a time.
    Create {
        /// Sessions created.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Seconds between creates (lets a warm spare be replaced).
        #[arg(long, default_value_t = 2.0)]
        gap: f64,
    },
    /// Before a restart: N sessions, each with one turn that fills the ring, read to its
    /// result; writes them (id, last seq) to --state.
    RestartFill {
        /// Sessions.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Messages per turn (998 + session_ready + result = a ring of 1 000).
        #[arg(long, default_value_t = 998)]
        events: u64,
        /// Text bytes per event.
        #[arg(long, default_value_t = 200)]
        bytes: usize,
        /// Sessions filled concurrently.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Where to write the sessions (JSON).
        #[arg(long)]
        state: std::path::PathBuf,
    },
    /// After a restart: every session of --state reconnects with Last-Event-ID (must read
    /// exactly the --back events after it), timed from --started-at-us; then --turns sessions
    /// get a turn each (user_message → first event).
    RestartResume {
        /// The state file restart-fill wrote.
        #[arg(long)]
        state: std::path::PathBuf,
        /// When the server was started (Unix microseconds).
        #[arg(long)]
        started_at_us: u64,
        /// Events each reconnecting client reads back.
        #[arg(long, default_value_t = 10)]
        back: u64,
        /// Clients in flight.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Sessions given a resumed turn, one after another.
        #[arg(long, default_value_t = 5)]
        turns: usize,
    },
    /// Serves the mock Anthropic API (for the real CLI) until killed; prints one JSON line:
    /// `{"base_url", "env"}` (the environment to give the server so its CLIs run offline).
    MockApi {
        /// HOME / CLAUDE_CONFIG_DIR of the CLIs (created).
        #[arg(long)]
        home: std::path::PathBuf,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Self::Fanout { .. } => "fanout",
            Self::Latency { .. } => "latency",
            Self::Memory { .. } => "memory",
            Self::Connections { .. } => "connections",
            Self::Resume { .. } => "resume",
            Self::Churn { .. } => "churn",
            Self::Capacity { .. } => "capacity",
            Self::Wake { .. } => "wake",
            Self::Create { .. } => "create",
            Self::RestartFill { .. } => "restart-fill",
            Self::RestartResume { .. } => "restart-resume",
            Self::MockApi { .. } => "mock-api",
        }
    }

    fn params(&self) -> Value {
        match self.clone() {
            Self::Fanout {
                events,
                subscribers,
                bytes,
            } => json!({"events": events, "subscribers": subscribers, "bytes": bytes}),
            Self::Latency {
                rate,
                seconds,
                subscribers,
                bytes,
            } => {
                json!({"rate": rate, "seconds": seconds, "subscribers": subscribers, "bytes": bytes})
            }
            Self::Memory {
                sessions,
                ring,
                bytes,
                concurrency,
                settle,
            } => {
                json!({"sessions": sessions, "ring": ring, "bytes": bytes, "concurrency": concurrency, "settle_s": settle})
            }
            Self::Connections {
                max,
                step,
                sessions,
                verify_timeout,
            } => {
                json!({"max": max, "step": step, "sessions": sessions, "verify_timeout": verify_timeout})
            }
            Self::Resume {
                clients,
                back,
                events,
                bytes,
                concurrency,
            } => {
                json!({"clients": clients, "back": back, "events": events, "bytes": bytes, "concurrency": concurrency})
            }
            Self::Churn {
                seconds,
                concurrency,
            } => json!({"seconds": seconds, "concurrency": concurrency}),
            Self::Capacity {
                sessions,
                concurrency,
                settle,
            } => json!({"sessions": sessions, "concurrency": concurrency, "settle_s": settle}),
            Self::Wake {
                wakes,
                spares,
                hibernate_timeout,
            } => {
                json!({"wakes": wakes, "spares": spares, "hibernate_timeout_s": hibernate_timeout})
            }
            Self::Create { count, gap } => json!({"count": count, "gap_s": gap}),
            Self::RestartFill {
                sessions,
                events,
                bytes,
                concurrency,
                state,
            } => {
                json!({"sessions": sessions, "events": events, "bytes": bytes, "concurrency": concurrency, "state": state})
            }
            Self::RestartResume {
                state,
                started_at_us,
                back,
                concurrency,
                turns,
            } => {
                json!({"state": state, "started_at_us": started_at_us, "back": back, "concurrency": concurrency, "turns": turns})
            }
            Self::MockApi { home } => json!({"home": home}),
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit; returns (soft, hard).
fn raise_nofile() -> Option<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).ok()
}

async fn run(cli: &Cli, target: &Target) -> Result<Report, String> {
    use scenarios as s;
    match cli.scenario.clone() {
        Scenario::Fanout {
            events,
            subscribers,
            bytes,
        } => s::fanout(target, events, subscribers, bytes).await,
        Scenario::Latency {
            rate,
            seconds,
            subscribers,
            bytes,
        } => s::latency(target, rate, seconds, subscribers, bytes).await,
        Scenario::Memory {
            sessions,
            ring,
            bytes,
            concurrency,
            settle,
        } => {
            let pid = cli
                .pid
                .ok_or("memory needs --pid <server pid> (it reads /proc/<pid>/status)")?;
            let settle = Duration::try_from_secs_f64(settle)
                .map_err(|_| "--settle must be a non-negative number of seconds")?;
            s::memory(target, pid, sessions, ring, bytes, concurrency, settle).await
        }
        Scenario::Connections {
            max,
            step,
            sessions,
            verify_timeout,
        } => {
            s::connections(
                target,
                max,
                step,
                sessions,
                Duration::from_secs_f64(verify_timeout),
            )
            .await
        }
        Scenario::Resume {
            clients,
            back,
            events,
            bytes,
            concurrency,
        } => s::resume(target, clients, back, events, bytes, concurrency).await,
        Scenario::Churn {
            seconds,
            concurrency,
        } => s::churn(target, seconds, concurrency).await,
        Scenario::Capacity {
            sessions,
            concurrency,
            settle,
        } => {
            let pid = cli.pid.ok_or("capacity needs --pid <server pid>")?;
            lifecycle::capacity(target, pid, sessions, concurrency, seconds(settle)?).await
        }
        Scenario::Wake {
            wakes,
            spares,
            hibernate_timeout,
        } => {
            let pid = cli.pid.ok_or("wake needs --pid <server pid>")?;
            lifecycle::wake(target, pid, wakes, spares, seconds(hibernate_timeout)?).await
        }
        Scenario::Create { count, gap } => lifecycle::create(target, count, seconds(gap)?).await,
        Scenario::RestartFill {
            sessions,
            events,
            bytes,
            concurrency,
            state,
        } => {
            let report = restart::fill(target, sessions, events, bytes, concurrency, &state).await;
            with_server_rss(report, cli.pid)
        }
        Scenario::RestartResume {
            state,
            started_at_us,
            back,
            concurrency,
            turns,
        } => {
            let report =
                restart::resume(target, &state, started_at_us, back, concurrency, turns).await;
            with_server_rss(report, cli.pid)
        }
        Scenario::MockApi { .. } => Err("mock-api is not a scenario".into()),
    }
}

/// `report` with the server's RSS now (`server_rss_mb`), when its pid is known.
fn with_server_rss(report: Result<Report, String>, pid: Option<u32>) -> Result<Report, String> {
    let mut report = report?;
    if let Some(pid) = pid {
        report.metric("server_rss_mb", scenarios::rss_bytes(pid)? as f64 / 1e6);
    }
    Ok(report)
}

fn seconds(value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("{value}: not a number of seconds"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Scenario::MockApi { home } = &cli.scenario {
        return mock_api::serve(home).await;
    }
    let nofile = raise_nofile();
    let mut out = json!({
        "scenario": cli.scenario.name(),
        "params": cli.scenario.params(),
        "loadgen": {
            "nofile_soft": nofile.map(|n| n.0),
            "nofile_hard": nofile.map(|n| n.1),
            "server_nofile": cli.pid.and_then(scenarios::nofile_of),
        },
    });
    let outcome = match Target::parse(
        &cli.url,
        &cli.token,
        Duration::from_secs_f64(cli.request_timeout),
    ) {
        Err(e) => Err(e),
        Ok(target) => {
            let limit = Duration::from_secs_f64(cli.timeout);
            match tokio::time::timeout(limit, run(&cli, &target)).await {
                Ok(result) => result,
                Err(_) => Err(format!("scenario timed out after {limit:?}")),
            }
        }
    };
    let ok = match outcome {
        Ok(report) => {
            let errors = report.errors.count();
            out["ok"] = json!(errors == 0);
            out["error_count"] = json!(errors);
            out["errors"] = json!(report.errors.list());
            out["metrics"] = Value::Object(report.metrics);
            out["notes"] = json!(report.notes);
            errors == 0
        }
        Err(e) => {
            out["ok"] = json!(false);
            out["error_count"] = json!(1);
            out["errors"] = json!([e]);
            false
        }
    };
    if cli.json {
        println!("{out}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
