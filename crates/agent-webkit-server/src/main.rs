//! `agent-webkit-server`: the HTTP + SSE server for agent sessions.
//!
//! Every flag also reads an environment variable (shown by `--help`). Logs go to stderr,
//! filtered by `RUST_LOG` (default `info`). On start it prints one line to stdout,
//! `agent-webkit-server listening on http://ADDR`, which scripts can wait for.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::{AgentClientFactory, Api, AppConfig, AuthConfig, RegistryConfig};
use agent_webkit_replay::ReplayAgentFactory;
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Which agent runs behind each session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AgentKind {
    /// Scripted scenarios: the session's `model` names the scenario (offline, deterministic).
    Replay,
    /// The Claude Code CLI (not available yet: arrives with the CLI bridge).
    Claude,
}

/// Serve Claude Code agent sessions over HTTP + Server-Sent Events (wire protocol 1.0).
#[derive(Debug, Parser)]
#[command(name = "agent-webkit-server", version, about)]
struct Cli {
    /// Address to bind.
    #[arg(long, env = "AGENT_WEBKIT_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 = any free port).
    #[arg(long, env = "AGENT_WEBKIT_PORT", default_value_t = 8000)]
    port: u16,
    /// Bearer token required on every request (also read from AGENT_WEBKIT_TOKEN).
    #[arg(long, env = "AGENT_WEBKIT_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Disable auth (development only).
    #[arg(long, env = "AGENT_WEBKIT_NO_AUTH")]
    no_auth: bool,
    /// Seconds without input (and without a subscriber) before a session is evicted.
    #[arg(long, env = "AGENT_WEBKIT_IDLE_TIMEOUT", default_value_t = 300.0)]
    idle_timeout: f64,
    /// Most live sessions (further creates get 503); unlimited when absent.
    #[arg(long, env = "AGENT_WEBKIT_MAX_SESSIONS")]
    max_sessions: Option<usize>,
    /// Events kept per session for Last-Event-ID resume.
    #[arg(long, env = "AGENT_WEBKIT_RING_SIZE", default_value_t = 1000)]
    ring_size: usize,
    /// Seconds between SSE keepalive comments.
    #[arg(long, env = "AGENT_WEBKIT_KEEPALIVE", default_value_t = 15.0)]
    keepalive: f64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "AGENT_WEBKIT_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Directory a session's `cwd` must resolve inside (repeatable; default: the current
    /// directory).
    #[arg(
        long = "allowed-root",
        env = "AGENT_WEBKIT_ALLOWED_ROOTS",
        value_delimiter = ','
    )]
    allowed_roots: Vec<PathBuf>,
    /// The agent behind each session.
    #[arg(long, env = "AGENT_WEBKIT_AGENT", value_enum, default_value_t = AgentKind::Replay)]
    agent: AgentKind,
    /// Extra replay scenario scripts (`*.jsonl`, name = file stem).
    #[arg(long, env = "AGENT_WEBKIT_REPLAY_DIR")]
    replay_dir: Option<PathBuf>,
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{flag} must be a non-negative number of seconds"))
}

fn build_config(cli: &Cli) -> Result<AppConfig, String> {
    let factory: Arc<dyn AgentClientFactory> = match cli.agent {
        AgentKind::Replay => {
            let factory = match &cli.replay_dir {
                Some(dir) => ReplayAgentFactory::with_dir(dir).map_err(|e| e.to_string())?,
                None => ReplayAgentFactory::new(),
            };
            Arc::new(factory)
        }
        AgentKind::Claude => {
            return Err(
                "--agent claude is not available in this build yet; use --agent replay".into(),
            )
        }
    };
    let auth = if cli.no_auth {
        AuthConfig::disabled()
    } else {
        match &cli.token {
            Some(token) if !token.is_empty() => AuthConfig::with_token(token.clone()),
            _ => AuthConfig::from_env(),
        }
    };
    let mut config = AppConfig::new(factory).with_auth(auth);
    config.registry = RegistryConfig {
        idle_timeout: seconds(cli.idle_timeout, "idle-timeout")?,
        max_sessions: cli.max_sessions,
        ring_size: cli.ring_size.max(1),
        ..RegistryConfig::default()
    };
    config.keepalive = seconds(cli.keepalive, "keepalive")?.max(Duration::from_millis(10));
    config.max_body_bytes = cli.max_body_bytes;
    config.allowed_roots.clone_from(&cli.allowed_roots);
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; closing sessions");
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = build_config(&cli)?;
    let auth_mode = if config.auth.disabled {
        "disabled"
    } else {
        "bearer token"
    };
    let api = Api::new(config).map_err(|e| e.to_string())?;
    let addr = format!("{}:{}", cli.host, cli.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%local, agent = ?cli.agent, auth = auth_mode, "listening");
    println!("agent-webkit-server listening on http://{local}");
    agent_webkit_axum::serve(listener, api, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
