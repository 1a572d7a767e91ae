//! `agent-webkit-server`: the HTTP + SSE server for agent sessions.
//!
//! Every flag also reads an environment variable (shown by `--help`), and every setting can
//! come from a TOML file (`--config`, see [`config_file`]). Logs go to stderr,
//! filtered by `RUST_LOG` (default `info`), as text or JSON lines (`--log-format`); traces
//! are exported over OTLP when the `OTEL_*` variables ask for it ([`telemetry`]). On start it prints one line to stdout,
//! `agent-webkit-server listening on http://ADDR`, which scripts can wait for.
//!
//! The binary is `src/bin/agent-webkit-server.rs` ([`main`]). The library exposes the flags
//! ([`Cli`]) and what is built from them ([`build_config`], [`with_storage`],
//! [`bind_listener`], [`announce`], [`shutdown_signal`]) so another HTTP stack can serve the
//! same API with the same flags: `examples/hyper_server.rs` does, and runs the conformance
//! suite.

mod attachments;
mod identity;

pub use identity::{Command, MintTokenArgs};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_claude::{ClaudeAgentFactory, ClaudeOptions, HookSpec, SystemPrompt};
use agent_webkit_console::{Console, ConsoleInfo};
use agent_webkit_core::agent::AgentClientFactory;
use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_core::limits::ServerLimits;
use agent_webkit_core::policy::ClientPolicy;
use agent_webkit_core::registry::RegistryConfig;
use agent_webkit_replay::ReplayAgentFactory;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser, ValueEnum};

mod metrics_listener;
pub mod observability;
pub mod telemetry;

pub mod config_file;

/// Which agent runs behind each session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AgentKind {
    /// The Claude Code CLI, one process per session (needs the `claude` executable and an API
    /// key or Claude login).
    Claude,
    /// Scripted scenarios: the session's `model` names the scenario (offline, deterministic).
    Replay,
}

/// Where sessions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// An SQLite file in --data-dir: sessions survive a restart of this server.
    Sqlite,
    /// Process memory: sessions live and die with this process.
    Memory,
    /// PostgreSQL at --database-url: sessions survive, and any server sharing the database can
    /// take over a session whose server died.
    Postgres,
}

/// Which web framework serves HTTP (both behave identically: all behaviour lives in core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Framework {
    /// axum (hyper).
    Axum,
    /// actix-web.
    Actix,
}

/// Serve Claude Code agent sessions over HTTP + Server-Sent Events (wire protocol 1.0).
#[derive(Debug, Parser)]
#[command(name = "agent-webkit-server", version, about)]
pub struct Cli {
    /// TOML file of settings: keys are the flag names with `_` (`idle_timeout = 60`,
    /// `allowed_models = ["sonnet"]`); flags and environment variables override it.
    #[arg(long, env = "AGENT_WEBKIT_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (TOML, secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Address to bind.
    #[arg(long, env = "AGENT_WEBKIT_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0 = any free port).
    #[arg(long, env = "AGENT_WEBKIT_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Bearer token required on every request (also read from AGENT_WEBKIT_TOKEN).
    #[arg(long, env = "AGENT_WEBKIT_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Disable auth (development only; anyone who can connect runs agents).
    #[arg(long, env = "AGENT_WEBKIT_NO_AUTH", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_auth: bool,
    /// Seconds without input (and without a subscriber) before a session is evicted.
    #[arg(long, env = "AGENT_WEBKIT_IDLE_TIMEOUT", default_value_t = 300.0)]
    idle_timeout: f64,
    /// Most live sessions (further creates get 503); unlimited when absent.
    #[arg(long, env = "AGENT_WEBKIT_MAX_SESSIONS")]
    max_sessions: Option<usize>,
    /// Seconds a session's agent may stay quiet (no turn, prompt or queued message) before it
    /// is hibernated: stopped, and resumed from the transcript store on the next user message
    /// (0: never on idleness; capacity pressure still hibernates).
    #[arg(long, env = "AGENT_WEBKIT_HIBERNATE_AFTER", default_value_t = 60.0)]
    hibernate_after: f64,
    /// Most live agent processes; a session that needs one when all are taken hibernates the
    /// least recently active one first (default: total memory / 512 MiB, at least 4).
    #[arg(long, env = "AGENT_WEBKIT_MAX_LIVE_AGENTS")]
    max_live_agents: Option<usize>,
    /// Seconds a hibernated session's user message waits for a free agent slot before the
    /// client gets `error {code: "at_capacity"}`.
    #[arg(long, env = "AGENT_WEBKIT_CAPACITY_WAIT", default_value_t = 30.0)]
    capacity_wait: f64,
    /// Seconds a session whose agent exited or failed on its own stays readable (its stream
    /// replays to `error` + `done`; inputs get 409 `session_ended`) before it leaves (0: at
    /// once). Such sessions hold no agent and do not count toward --max-sessions.
    #[arg(long, env = "AGENT_WEBKIT_ENDED_RETENTION", default_value_t = 300.0)]
    ended_retention: f64,
    /// Events kept per session for Last-Event-ID resume.
    #[arg(long, env = "AGENT_WEBKIT_RING_SIZE", default_value_t = 1000)]
    ring_size: usize,
    /// Bytes of events kept per session beyond the ring for connected subscribers that have
    /// not read them yet (default 16 MiB), so a reader that keeps up is never cut by a burst;
    /// one further behind gets `error {code: "evicted"}`. Held only while a reader lags.
    #[arg(long, env = "AGENT_WEBKIT_LAG_BUDGET_BYTES", default_value_t = agent_webkit_core::event_log::DEFAULT_LAG_BUDGET)]
    lag_budget_bytes: usize,
    /// Seconds a session's event log must be quiet before its ring is compressed (0: never).
    #[arg(long, env = "AGENT_WEBKIT_COMPACT_AFTER", default_value_t = 1.0)]
    compact_after: f64,
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
    /// The web framework serving HTTP.
    #[arg(long, env = "AGENT_WEBKIT_FRAMEWORK", value_enum, default_value_t = Framework::Axum)]
    framework: Framework,
    /// The agent behind each session.
    #[arg(long, env = "AGENT_WEBKIT_AGENT", value_enum, default_value_t = AgentKind::Claude)]
    agent: AgentKind,
    /// Extra replay scenario scripts (`*.jsonl`, name = file stem).
    #[arg(long, env = "AGENT_WEBKIT_REPLAY_DIR")]
    replay_dir: Option<PathBuf>,
    /// Do not serve the web console at `/` (its paths then answer 404).
    #[arg(long, env = "AGENT_WEBKIT_NO_CONSOLE", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_console: bool,
    /// Where sessions, transcripts and event logs are kept (default: `postgres` with
    /// --database-url, else `sqlite`).
    #[arg(long, env = "AGENT_WEBKIT_STORE", value_enum)]
    store: Option<StoreKind>,
    /// Directory of the SQLite store: sessions.db, a lock file (one server per directory) and
    /// this server's host id (created 0700, files 0600). Default: $XDG_DATA_HOME/agent-webkit,
    /// else ~/.local/share/agent-webkit.
    #[arg(long, env = "AGENT_WEBKIT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL: transcripts go to Postgres, and sessions are persisted so any server
    /// sharing this database can take over a session whose host died (failover). Default: an
    /// SQLite file in --data-dir (sessions survive a restart of this server).
    #[arg(long, env = "AGENT_WEBKIT_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// This server's identity in session leases (default: with SQLite the id kept in
    /// --data-dir, so a restarted server takes its sessions back at once; with PostgreSQL a
    /// fresh UUID per process).
    #[arg(long, env = "AGENT_WEBKIT_HOST_ID")]
    host_id: Option<String>,
    /// Seconds a server owns a session without renewing; a crashed server's sessions move to
    /// another after at most this long.
    #[arg(long, env = "AGENT_WEBKIT_LEASE", default_value_t = 10.0)]
    lease: f64,
    /// Days audit rows are kept in PostgreSQL (table agent_webkit_audit, with --database-url;
    /// older rows are deleted at start and hourly). 0: kept forever. Audit events also go to
    /// the log under the target agent_webkit::audit.
    #[arg(long, env = "AGENT_WEBKIT_AUDIT_RETENTION_DAYS", default_value_t = 90)]
    audit_retention_days: u64,
    #[command(flatten)]
    attachments: attachments::AttachmentArgs,
    #[command(flatten)]
    identity: identity::IdentityArgs,
    #[command(flatten)]
    hardening: HardeningArgs,
    #[command(flatten)]
    observability: observability::ObservabilityArgs,
    #[command(flatten)]
    claude: ClaudeArgs,
    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What clients may choose, and limits against slow or greedy clients.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Client policy and limits")]
struct HardeningArgs {
    /// Permission mode clients may request (repeatable; replaces the default list
    /// `default,acceptEdits,plan`). `--claude-permission-mode` is always allowed.
    #[arg(
        long = "allow-permission-mode",
        env = "AGENT_WEBKIT_ALLOWED_PERMISSION_MODES",
        value_delimiter = ','
    )]
    allowed_permission_modes: Vec<String>,
    /// Model clients may request (repeatable; default: any).
    #[arg(
        long = "allow-model",
        env = "AGENT_WEBKIT_ALLOWED_MODELS",
        value_delimiter = ','
    )]
    allowed_models: Vec<String>,
    /// Let clients' `updated_permissions` write rules to settings files (`userSettings`,
    /// `projectSettings`, `localSettings`); default: `session` rules only.
    #[arg(long, env = "AGENT_WEBKIT_ALLOW_SETTINGS_PERMISSION_RULES", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    allow_settings_permission_rules: bool,
    /// Program clients may name as the command of their own stdio MCP servers (create option
    /// `mcp_servers`, inbound `mcp_set_servers`): an absolute path, compared exactly
    /// (repeatable; default: none). Arguments and environment are the client's, except
    /// `${...}` and variables that change what runs (`PATH`, `LD_*`, `NODE_OPTIONS`, ...).
    #[arg(
        long = "client-mcp-command",
        env = "AGENT_WEBKIT_CLIENT_MCP_COMMANDS",
        value_delimiter = ',',
        value_parser = parse_mcp_command
    )]
    client_mcp_commands: Vec<String>,
    /// URL prefix of the http/sse MCP servers clients may add (`scheme://host[:port]/...`;
    /// repeatable; default: none).
    #[arg(
        long = "client-mcp-url-prefix",
        env = "AGENT_WEBKIT_CLIENT_MCP_URL_PREFIXES",
        value_delimiter = ',',
        value_parser = parse_mcp_url_prefix
    )]
    client_mcp_url_prefixes: Vec<String>,
    /// Browser origin allowed to call the API, exact `scheme://host[:port]` (repeatable;
    /// default: none, no CORS headers).
    #[arg(
        long = "cors-origin",
        env = "AGENT_WEBKIT_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Seconds a connection may take to send a request's headers before it is closed.
    #[arg(long, env = "AGENT_WEBKIT_HEADER_READ_TIMEOUT", default_value_t = 10.0)]
    header_read_timeout: f64,
    /// Seconds a client may take to send a request body (then 408 `body_timeout`).
    #[arg(long, env = "AGENT_WEBKIT_BODY_READ_TIMEOUT", default_value_t = 30.0)]
    body_read_timeout: f64,
    /// Most open connections (SSE streams included); further ones wait to be accepted.
    #[arg(long, env = "AGENT_WEBKIT_MAX_CONNECTIONS", default_value_t = agent_webkit_core::limits::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds graceful shutdown waits for open connections before dropping them.
    #[arg(long, env = "AGENT_WEBKIT_SHUTDOWN_DRAIN", default_value_t = 10.0)]
    shutdown_drain: f64,
    /// Most subscribers of one session (more: 429 `subscriber_limit`).
    #[arg(long, env = "AGENT_WEBKIT_MAX_SUBSCRIBERS_PER_SESSION", default_value_t = agent_webkit_core::limits::DEFAULT_MAX_SUBSCRIBERS_PER_SESSION)]
    max_subscribers_per_session: usize,
    /// Most subscribers in total (more: 503 `subscriber_capacity`).
    #[arg(long, env = "AGENT_WEBKIT_MAX_SUBSCRIBERS", default_value_t = agent_webkit_core::limits::DEFAULT_MAX_SUBSCRIBERS)]
    max_subscribers: usize,
    /// Most bytes of queued user messages per session (more: 503 `backpressure_bytes`).
    #[arg(long, env = "AGENT_WEBKIT_MAX_INBOUND_BYTES", default_value_t = agent_webkit_core::limits::DEFAULT_INBOUND_MAX_BYTES)]
    max_inbound_bytes: usize,
}

fn parse_mcp_command(value: &str) -> Result<String, String> {
    if std::path::Path::new(value).is_absolute() {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not an absolute path"))
    }
}

fn parse_mcp_url_prefix(value: &str) -> Result<String, String> {
    agent_webkit_core::mcp::policy::check_url_prefix(value).map(|()| value.to_owned())
}

impl HardeningArgs {
    /// The client policy; `server_mode` (the configured default permission mode) is always
    /// allowed.
    fn policy(&self, server_mode: Option<&str>) -> ClientPolicy {
        let mut policy = ClientPolicy::default();
        let modes: Vec<String> = self
            .allowed_permission_modes
            .iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        if !modes.is_empty() {
            policy.permission_modes = modes;
        }
        if let Some(mode) = server_mode.filter(|m| !m.is_empty()) {
            policy = policy.allowing_mode(mode);
        }
        let models: Vec<String> = self
            .allowed_models
            .iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        policy.models = (!models.is_empty()).then_some(models);
        policy.allow_settings_rules = self.allow_settings_permission_rules;
        policy.mcp = agent_webkit_core::mcp::policy::McpPolicy {
            url_prefixes: self.client_mcp_url_prefixes.clone(),
            commands: self.client_mcp_commands.clone(),
        };
        policy
    }

    fn limits(&self) -> Result<ServerLimits, String> {
        let at_least = |d: Duration| d.max(Duration::from_millis(10));
        Ok(ServerLimits {
            header_read_timeout: at_least(seconds(
                self.header_read_timeout,
                "header-read-timeout",
            )?),
            body_read_timeout: at_least(seconds(self.body_read_timeout, "body-read-timeout")?),
            max_connections: self.max_connections.max(1),
            shutdown_drain: seconds(self.shutdown_drain, "shutdown-drain")?,
            max_subscribers_per_session: self.max_subscribers_per_session.max(1),
            max_subscribers: self.max_subscribers.max(1),
        })
    }
}

/// The warning for a server running without auth: `Some((loud, text))`, louder when the
/// address is reachable from other machines.
fn no_auth_warning(auth_disabled: bool, ip: std::net::IpAddr) -> Option<(bool, String)> {
    if !auth_disabled {
        return None;
    }
    if ip.is_loopback() {
        Some((
            false,
            "AUTH IS DISABLED (--no-auth): any local process can create sessions and run agents with this server's privileges".to_owned(),
        ))
    } else {
        Some((
            true,
            format!("AUTH IS DISABLED (--no-auth) ON A NON-LOOPBACK ADDRESS ({ip}): ANYONE WHO CAN REACH THIS PORT CAN RUN AGENTS (shell commands, file edits) WITH THIS SERVER'S PRIVILEGES. Use a token unless this network is fully trusted."),
        ))
    }
}

/// Settings of the Claude CLI bridge (`--agent claude`).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Claude CLI")]
struct ClaudeArgs {
    /// The `claude` executable (default: PATH, then the SDK's fallback locations).
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_PATH")]
    claude_path: Option<PathBuf>,
    /// Default model (a session's `model` overrides it).
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_MODEL")]
    claude_model: Option<String>,
    /// Default permission mode (a session's `permission_mode` overrides it).
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_PERMISSION_MODE")]
    claude_permission_mode: Option<String>,
    /// Custom system prompt replacing Claude Code's (default: empty, like the SDK).
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_SYSTEM_PROMPT", conflicts_with_all = ["claude_append_system_prompt", "claude_preset_prompt"])]
    claude_system_prompt: Option<String>,
    /// Use Claude Code's own system prompt, with this text appended.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_APPEND_SYSTEM_PROMPT")]
    claude_append_system_prompt: Option<String>,
    /// Use Claude Code's own system prompt unchanged.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_PRESET_PROMPT", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    claude_preset_prompt: bool,
    /// Tools allowed without asking (comma-separated).
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_ALLOWED_TOOLS", value_delimiter = ',')]
    claude_allowed_tools: Vec<String>,
    /// Tools never allowed (comma-separated).
    #[arg(
        long,
        env = "AGENT_WEBKIT_CLAUDE_DISALLOWED_TOOLS",
        value_delimiter = ','
    )]
    claude_disallowed_tools: Vec<String>,
    /// Most agentic turns per user message.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_MAX_TURNS")]
    claude_max_turns: Option<u32>,
    /// MCP servers: inline JSON (`{"mcpServers":{...}}`) or a file path.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_MCP_CONFIG")]
    claude_mcp_config: Option<String>,
    /// Settings: inline JSON or a file path.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_SETTINGS")]
    claude_settings: Option<String>,
    /// Settings files the CLI loads: comma-separated of user,project,local; an empty value
    /// loads none (isolation). Default: the CLI's own default (all).
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_SETTING_SOURCES")]
    claude_setting_sources: Option<String>,
    /// Extra CLI flag, `name` or `name=value` (repeatable).
    #[arg(
        long = "claude-extra-arg",
        env = "AGENT_WEBKIT_CLAUDE_EXTRA_ARGS",
        value_delimiter = ' '
    )]
    claude_extra_args: Vec<String>,
    /// Extra environment variable for the CLI, `KEY=VALUE` (repeatable).
    #[arg(long = "claude-env")]
    claude_env: Vec<String>,
    /// Start the CLI from an empty environment: it gets only PATH, HOME, the variables named
    /// by --claude-pass-env, those set by --claude-env, and the bridge's own CLAUDE_* settings.
    /// Without it the CLI inherits the server's environment minus every AGENT_WEBKIT_* variable.
    /// Either way, no variable holding the bearer token or the database URL reaches it.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_CLEAN_ENV")]
    claude_clean_env: bool,
    /// Server variable passed to the CLI under --claude-clean-env, e.g. ANTHROPIC_API_KEY
    /// (repeatable; AGENT_WEBKIT_* variables never are).
    #[arg(
        long = "claude-pass-env",
        env = "AGENT_WEBKIT_CLAUDE_PASS_ENV",
        value_delimiter = ','
    )]
    claude_pass_env: Vec<String>,
    /// Hook event forwarded to clients as `hook_decision_request`: `Event` or
    /// `Event:matcher`, e.g. `PreToolUse:Bash` (repeatable).
    #[arg(
        long = "claude-hook",
        env = "AGENT_WEBKIT_CLAUDE_HOOKS",
        value_delimiter = ','
    )]
    claude_hooks: Vec<String>,
    /// Forward thinking deltas as `message_delta` events.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_THINKING_DELTAS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    claude_thinking_deltas: bool,
    /// Forward tool-input deltas (`input_json_delta`) as `message_delta` events; off by default
    /// because the published React reducer renders each one as a block until the message ends.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_TOOL_INPUT_DELTAS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    claude_tool_input_deltas: bool,
    /// File checkpointing of Claude sessions (`on`|`off`), so `rewind` can restore the files the
    /// agent edited; a create's `file_checkpointing` overrides it per session.
    #[arg(long, env = "AGENT_WEBKIT_FILE_CHECKPOINTING", value_parser = BoolishValueParser::new(), action = ArgAction::Set, default_value = "on", value_name = "on|off")]
    file_checkpointing: bool,
    /// Largest accepted line of CLI output, in bytes.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_MAX_LINE_BYTES", default_value_t = agent_webkit_claude::options::DEFAULT_MAX_LINE_BYTES)]
    claude_max_line_bytes: usize,
    /// Do not mirror CLI transcripts into the session store.
    #[arg(long, env = "AGENT_WEBKIT_CLAUDE_NO_MIRROR", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    claude_no_mirror: bool,
    /// Claude CLIs kept started and initialized for new sessions in the default working
    /// directory (a session takes one and skips the CLI's start-up). Each is a live CLI
    /// process (~160 MB). 0 = none.
    #[arg(
        long,
        visible_alias = "warm-spares",
        env = "AGENT_WEBKIT_CLAUDE_WARM_SPARES",
        default_value_t = 0
    )]
    claude_warm_spares: usize,
}

impl ClaudeArgs {
    fn options(&self) -> Result<ClaudeOptions, String> {
        let system_prompt = if let Some(text) = &self.claude_system_prompt {
            SystemPrompt::Custom(text.clone())
        } else if let Some(text) = &self.claude_append_system_prompt {
            SystemPrompt::Preset {
                append: Some(text.clone()),
            }
        } else if self.claude_preset_prompt {
            SystemPrompt::Preset { append: None }
        } else {
            SystemPrompt::Empty
        };
        let env = self
            .claude_env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err(format!("--claude-env {kv:?}: expected KEY=VALUE")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let extra_args = self
            .claude_extra_args
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| match a.trim_start_matches('-').split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (a.trim_start_matches('-').to_owned(), None),
            })
            .collect();
        let hooks = self
            .claude_hooks
            .iter()
            .filter(|h| !h.is_empty())
            .map(|h| HookSpec::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        let list = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Ok(ClaudeOptions {
            cli_path: self.claude_path.clone(),
            model: self.claude_model.clone(),
            permission_mode: self.claude_permission_mode.clone(),
            system_prompt,
            allowed_tools: list(&self.claude_allowed_tools),
            disallowed_tools: list(&self.claude_disallowed_tools),
            max_turns: self.claude_max_turns,
            mcp_config: self.claude_mcp_config.clone(),
            settings: self.claude_settings.clone(),
            setting_sources: self.claude_setting_sources.as_ref().map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            }),
            extra_args,
            env,
            hooks,
            thinking_deltas: self.claude_thinking_deltas,
            tool_input_deltas: self.claude_tool_input_deltas,
            max_line_bytes: self.claude_max_line_bytes,
            disable_mirror: self.claude_no_mirror,
            no_file_checkpointing: !self.file_checkpointing,
            clean_env: self.claude_clean_env,
            pass_env: list(&self.claude_pass_env),
            ..ClaudeOptions::default()
        })
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{flag} must be a non-negative number of seconds"))
}

/// The configuration the flags describe (agent, auth, limits, policy), storage aside.
pub fn build_config(cli: &Cli) -> Result<AppConfig, String> {
    let mut console = ConsoleInfo::default();
    let factory: Arc<dyn AgentClientFactory> = match cli.agent {
        AgentKind::Replay => {
            let factory = match &cli.replay_dir {
                Some(dir) => ReplayAgentFactory::with_dir(dir).map_err(|e| e.to_string())?,
                None => ReplayAgentFactory::new(),
            };
            console.agent = "replay".into();
            console.scenarios = factory.scenario_names();
            Arc::new(factory)
        }
        AgentKind::Claude => {
            let mut options = cli.claude.options()?;
            // Never passed to the CLI, redacted from what it prints into our log.
            options.secrets = agent_webkit_claude::Secrets::new(
                [
                    &cli.token,
                    &std::env::var("AGENT_WEBKIT_TOKEN").ok(),
                    &cli.database_url,
                    &cli.identity.jwt_secret,
                ]
                .into_iter()
                .flatten()
                .cloned(),
            );
            if let Err(err) = agent_webkit_claude::find_cli(options.cli_path.as_deref()) {
                // Not fatal: sessions fail with a clear 503 until the CLI is installed.
                tracing::warn!("{err}");
            }
            console.agent = "claude".into();
            Arc::new(
                ClaudeAgentFactory::new(options).with_warm_spares(cli.claude.claude_warm_spares),
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
    let auth = cli.identity.apply(auth)?;
    let mut config = AppConfig::new(factory).with_auth(auth);
    config.registry = RegistryConfig {
        idle_timeout: seconds(cli.idle_timeout, "idle-timeout")?,
        max_sessions: cli.max_sessions,
        ring_size: cli.ring_size.max(1),
        lag_budget: cli.lag_budget_bytes,
        lease: seconds(cli.lease, "lease")?.max(Duration::from_millis(100)),
        compact_after: Some(seconds(cli.compact_after, "compact-after")?).filter(|d| !d.is_zero()),
        hibernate_after: Some(seconds(cli.hibernate_after, "hibernate-after")?)
            .filter(|d| !d.is_zero()),
        // Only processes are bounded by default: replay agents are tasks of this server.
        max_live_agents: match cli.agent {
            AgentKind::Claude => Some(cli.max_live_agents.unwrap_or_else(default_max_live_agents)),
            AgentKind::Replay => cli.max_live_agents,
        }
        .map(|n| n.max(1)),
        capacity_wait: seconds(cli.capacity_wait, "capacity-wait")?,
        ended_retention: seconds(cli.ended_retention, "ended-retention")?,
        ..RegistryConfig::default()
    };
    config.keepalive = seconds(cli.keepalive, "keepalive")?.max(Duration::from_millis(10));
    config.max_body_bytes = cli.max_body_bytes;
    config.allowed_roots.clone_from(&cli.allowed_roots);
    config.registry.inbound_max_bytes = cli.hardening.max_inbound_bytes.max(1);
    config.policy = cli
        .hardening
        .policy(cli.claude.claude_permission_mode.as_deref());
    config.limits = cli.hardening.limits()?;
    config.cors_origins.clone_from(&cli.hardening.cors_origins);
    if !cli.no_console {
        config.site = Some(Arc::new(Console::new(&console)));
    }
    Ok(config)
}

/// Memory budgeted per live agent process for the default `--max-live-agents`.
const MEMORY_PER_AGENT: u64 = 512 * 1024 * 1024;
/// Fewest live agents by default.
const MIN_LIVE_AGENTS: usize = 4;

/// Total memory / [`MEMORY_PER_AGENT`], at least [`MIN_LIVE_AGENTS`] (that minimum when the
/// total cannot be read).
fn default_max_live_agents() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib.saturating_mul(1024));
    usize::try_from(total / MEMORY_PER_AGENT)
        .unwrap_or(usize::MAX)
        .max(MIN_LIVE_AGENTS)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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

/// How requests are authenticated, for [`announce`].
pub fn auth_mode(config: &AppConfig) -> &'static str {
    let auth = &config.auth;
    match (auth.disabled, auth.token.is_some(), auth.jwt.is_some()) {
        (true, _, _) => "disabled",
        (false, true, true) => "bearer token + JWT",
        (false, false, true) => "JWT",
        _ => "bearer token",
    }
}

/// Logs the start (and a missing-auth warning), and prints the `listening on` line.
pub fn announce(local: SocketAddr, cli: &Cli, auth: &str) {
    match no_auth_warning(auth == "disabled", local.ip()) {
        Some((true, text)) => {
            tracing::error!("{text}");
            eprintln!("\n!!! WARNING !!! {text}\n");
        }
        Some((false, text)) => tracing::warn!("{text}"),
        None => {}
    }
    tracing::info!(%local, agent = ?cli.agent, framework = ?cli.framework, auth, "listening");
    println!("agent-webkit-server listening on http://{local}");
    if !cli.no_console {
        let mut page = local;
        if page.ip().is_unspecified() {
            page.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        println!("agent-webkit-server console: open http://{page}/ in a browser");
    }
}

/// The storage the flags select: SQLite in the data directory (the default), memory, or
/// PostgreSQL. The returned [`DataDir`](agent_webkit_sqlite::DataDir) holds the directory's
/// lock: keep it until the server stops.
pub async fn with_storage(
    cli: &Cli,
    config: AppConfig,
) -> Result<(AppConfig, Option<agent_webkit_sqlite::DataDir>), String> {
    let kind = match (cli.store, &cli.database_url) {
        (None | Some(StoreKind::Postgres), Some(_)) => StoreKind::Postgres,
        (Some(StoreKind::Postgres), None) => {
            return Err("--store postgres needs --database-url".into())
        }
        (Some(kind), Some(_)) => {
            return Err(format!(
                "--database-url selects PostgreSQL; it cannot be combined with --store {}",
                if kind == StoreKind::Memory {
                    "memory"
                } else {
                    "sqlite"
                }
            ))
        }
        (None, None) => StoreKind::Sqlite,
        (Some(kind), None) => kind,
    };
    let config =
        attachments::configure(&cli.attachments, config, kind == StoreKind::Memory, || {
            cli.data_dir.clone().map_or_else(default_data_dir, Ok)
        })?;
    match kind {
        StoreKind::Memory => {
            tracing::info!("sessions are kept in memory (lost when the server stops)");
            Ok((config, None))
        }
        StoreKind::Postgres => Ok((with_database(cli, config).await?, None)),
        StoreKind::Sqlite => {
            let dir = match &cli.data_dir {
                Some(dir) => dir.clone(),
                None => default_data_dir()?,
            };
            let data = agent_webkit_sqlite::DataDir::open(&dir, Default::default())
                .map_err(|e| e.to_string())?;
            warn_if_agents_can_reach(data.path(), &config.allowed_roots);
            let persistence = data.store().persistence().with_max_events(
                cli.ring_size
                    .max(1)
                    .max(agent_webkit_sqlite::DEFAULT_MAX_EVENTS),
            );
            let host = cli
                .host_id
                .clone()
                .unwrap_or_else(|| data.host_id().to_owned());
            let db = data.store().path().display().to_string();
            tracing::info!(database = %db, host_id = %host, "sessions are kept in SQLite");
            println!("agent-webkit-server keeps sessions in {db}");
            let config = config
                .with_store(Arc::new(data.store().clone()))
                .with_failover(Arc::new(persistence), host);
            Ok((config, Some(data)))
        }
    }
}

/// Agents work inside the allowed roots (default: the current directory); a data directory in
/// one of them is readable by every session's agent.
fn warn_if_agents_can_reach(data_dir: &std::path::Path, roots: &[PathBuf]) {
    let data = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_owned());
    let cwd = std::env::current_dir().ok();
    let roots = if roots.is_empty() {
        cwd.as_slice()
    } else {
        roots
    };
    for root in roots {
        let root = root.canonicalize().unwrap_or_else(|_| root.clone());
        if data.starts_with(&root) {
            tracing::warn!(
                data_dir = %data.display(),
                allowed_root = %root.display(),
                "the data directory is inside an allowed root: agents can read every session's transcript; choose a --data-dir outside it"
            );
        }
    }
}

/// `$XDG_DATA_HOME/agent-webkit`, else `$HOME/.local/share/agent-webkit`.
fn default_data_dir() -> Result<PathBuf, String> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = absolute("XDG_DATA_HOME") {
        return Ok(xdg.join("agent-webkit"));
    }
    absolute("HOME")
        .map(|home| home.join(".local/share/agent-webkit"))
        .ok_or_else(|| "no data directory: set --data-dir (or HOME), or use --store memory".into())
}

/// With `--database-url`: Postgres transcripts and failover persistence.
pub async fn with_database(cli: &Cli, config: AppConfig) -> Result<AppConfig, String> {
    let Some(url) = &cli.database_url else {
        return Ok(config);
    };
    let store = agent_webkit_postgres::PgSessionStore::connect(
        url,
        agent_webkit_postgres::PoolOptions::default(),
    )
    .await
    .map_err(|e| format!("cannot use --database-url: {e}"))?;
    let persistence = store.persistence().with_max_events(
        cli.ring_size
            .max(1)
            .max(agent_webkit_postgres::DEFAULT_MAX_EVENTS),
    );
    let host = cli
        .host_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    tracing::info!(host_id = %host, "failover enabled (PostgreSQL)");
    let audit = agent_webkit_postgres::PgAuditSink::start(
        store.pool().clone(),
        agent_webkit_postgres::AuditOptions {
            retention: (cli.audit_retention_days > 0)
                .then(|| Duration::from_secs(cli.audit_retention_days.saturating_mul(86_400))),
            host_id: Some(host.clone()),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| format!("cannot use --database-url for the audit log: {e}"))?;
    let mut config = config;
    config.audit_sinks.push(Arc::new(audit));
    Ok(config
        .with_store(Arc::new(store))
        .with_failover(Arc::new(persistence), host))
}

/// Listen backlog: bursts of (re)connecting clients must not overflow the accept queue (a
/// dropped SYN costs the client a 1 s retransmission). actix-web uses 2048; the kernel caps it
/// at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` (`host:port`) with a large backlog.
pub async fn bind_listener(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for candidate in tokio::net::lookup_host(addr).await? {
        let socket = if candidate.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(candidate) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to bind")))
}

async fn run_axum(cli: Cli) -> Result<(), String> {
    let (config, data_dir) = with_storage(&cli, build_config(&cli)?).await?;
    let auth = auth_mode(&config);
    let api = Api::new(config).map_err(|e| e.to_string())?;
    let addr = format!("{}:{}", cli.host, cli.port);
    let listener = bind_listener(&addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    announce(local, &cli, auth);
    cli.observability.start_metrics_listener(&api).await?;
    let shutdown = cli.observability.drain_after(&api, shutdown_signal())?;
    agent_webkit_axum::serve(listener, api, shutdown)
        .await
        .map_err(|e| format!("server error: {e}"))?;
    checkpoint_on_stop(data_dir.as_ref()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn run_actix(cli: Cli) -> Result<(), String> {
    let (config, data_dir) = with_storage(&cli, build_config(&cli)?).await?;
    let auth = auth_mode(&config);
    let api = Api::new(config).map_err(|e| e.to_string())?;
    let addr = format!("{}:{}", cli.host, cli.port);
    let listener =
        std::net::TcpListener::bind(&addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    announce(local, &cli, auth);
    cli.observability.start_metrics_listener(&api).await?;
    let shutdown = cli.observability.drain_after(&api, shutdown_signal())?;
    agent_webkit_actix::serve(listener, api, shutdown)
        .await
        .map_err(|e| format!("server error: {e}"))?;
    checkpoint_on_stop(data_dir.as_ref()).await;
    tracing::info!("stopped");
    Ok(())
}

/// At a clean stop, empties the SQLite WAL into the database file so the next start does not
/// read it.
async fn checkpoint_on_stop(data_dir: Option<&agent_webkit_sqlite::DataDir>) {
    if let Some(data) = data_dir {
        if let Err(err) = data.store().checkpoint().await {
            tracing::warn!(error = %err, "sqlite: final checkpoint failed");
        }
    }
}

/// The server: parses the flags and serves until SIGINT / SIGTERM.
pub fn main() -> ExitCode {
    let loaded = match config_file::load() {
        Ok(loaded) => loaded,
        Err(config_file::ConfigError::Flags(err)) => err.exit(),
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if loaded.cli.print_config {
        print!("{}", loaded.effective_toml());
        return ExitCode::SUCCESS;
    }
    let cli = loaded.cli;
    if let Some(Command::MintToken(args)) = &cli.command {
        return match args.mint() {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    // Before any runtime: the OTLP exporter's HTTP client runs on its own thread.
    let telemetry = telemetry::init(cli.observability.log_format);
    let outcome = match cli.framework {
        Framework::Axum => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run_axum(cli)),
            Err(err) => Err(format!("cannot start the async runtime: {err}")),
        },
        Framework::Actix => actix_web::rt::System::new().block_on(run_actix(cli)),
    };
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
