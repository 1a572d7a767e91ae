//! What the bridge launches: [`ClaudeOptions`] (server-wide defaults, overridden per session by
//! the core's [`SessionConfig`]) and the exact command line and environment built from them
//! (claude-cli-protocol.md §1.3, §1.4).

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_webkit_core::agent::SessionConfig;
use serde_json::{json, Map, Value};

/// The Python SDK version whose behaviour the bridge reproduces (sent to the CLI, which tests
/// for the variable's presence on some SDK-only paths).
pub const SDK_VERSION: &str = "0.2.187";

/// The entrypoint the CLI recognises as an SDK host (§1.2: unknown values change behaviour).
pub const ENTRYPOINT: &str = "sdk-py";

/// Permission modes the CLI accepts.
pub const PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "plan",
    "bypassPermissions",
    "dontAsk",
    "auto",
];

/// Default stdout line limit: far above the SDK's 1 MiB, because one line can carry a whole
/// tool result, a base64 image, or a batch of transcript entries.
pub const DEFAULT_MAX_LINE_BYTES: usize = 32 * 1024 * 1024;

/// The system prompt given to the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SystemPrompt {
    /// The SDK default: an empty custom prompt (`--system-prompt ""`).
    #[default]
    Empty,
    /// A custom prompt replacing Claude Code's.
    Custom(String),
    /// A custom prompt read from a file.
    File(PathBuf),
    /// Claude Code's own prompt, optionally with text appended.
    Preset {
        /// Text appended to the preset.
        append: Option<String>,
    },
}

/// A hook event forwarded to web clients as `hook_decision_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    /// Hook event name (`PreToolUse`, `PostToolUse`, `UserPromptSubmit`, `Stop`, ...).
    pub event: String,
    /// Tool-name matcher (`None`: every tool / not applicable).
    pub matcher: Option<String>,
    /// How long the CLI and the bridge wait for the client's decision.
    pub timeout: Duration,
}

impl HookSpec {
    /// Parses `Event` or `Event:matcher` (the server's `--claude-hook` syntax).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (event, matcher) = match spec.split_once(':') {
            Some((event, matcher)) => (event.trim(), Some(matcher.trim())),
            None => (spec.trim(), None),
        };
        if event.is_empty() || !event.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "invalid hook {spec:?}: expected Event or Event:matcher, e.g. PreToolUse:Bash"
            ));
        }
        Ok(Self {
            event: event.to_owned(),
            matcher: matcher.filter(|m| !m.is_empty()).map(str::to_owned),
            timeout: Duration::from_secs(60),
        })
    }
}

/// How long each step of the bridge may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Spawn → `initialize` answered.
    pub initialize: Duration,
    /// Any other control request (interrupt, set_model, ...).
    pub control: Duration,
    /// After stdin is closed: how long the CLI may take to finish writing and exit.
    pub graceful_exit: Duration,
    /// After SIGTERM, before SIGKILL.
    pub terminate: Duration,
    /// One `SessionStore::append` attempt of the transcript mirror.
    pub store_append: Duration,
    /// Each `SessionStore` read while materializing a resumed session (§5.5).
    pub store_load: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            initialize: Duration::from_secs(60),
            control: Duration::from_secs(60),
            graceful_exit: Duration::from_secs(5),
            terminate: Duration::from_secs(2),
            store_append: Duration::from_secs(60),
            store_load: Duration::from_secs(60),
        }
    }
}

/// Server-wide settings of the Claude bridge. Per-session values (`model`, `permission_mode`,
/// `cwd` from `POST /sessions`) override the matching defaults here.
#[derive(Debug, Clone, Default)]
pub struct ClaudeOptions {
    /// The `claude` executable; else `PATH`, else the SDK's fallback locations.
    pub cli_path: Option<PathBuf>,
    /// Default model.
    pub model: Option<String>,
    /// Default permission mode.
    pub permission_mode: Option<String>,
    /// Default working directory (else the server's).
    pub cwd: Option<PathBuf>,
    /// System prompt.
    pub system_prompt: SystemPrompt,
    /// Tools allowed without asking.
    pub allowed_tools: Vec<String>,
    /// Tools never allowed.
    pub disallowed_tools: Vec<String>,
    /// Most agentic turns per user message.
    pub max_turns: Option<u32>,
    /// MCP servers: inline JSON (`{"mcpServers":{...}}`) or a path.
    pub mcp_config: Option<String>,
    /// Settings: inline JSON or a path.
    pub settings: Option<String>,
    /// Which settings files the CLI loads (`Some(vec![])`: none — isolation mode).
    pub setting_sources: Option<Vec<String>>,
    /// Extra CLI flags: `("flag", None)` → `--flag`, `("flag", Some(v))` → `--flag=v`.
    pub extra_args: Vec<(String, Option<String>)>,
    /// Extra environment for the CLI (may override `CLAUDE_CODE_ENTRYPOINT`).
    pub env: Vec<(String, String)>,
    /// Hook events forwarded to clients.
    pub hooks: Vec<HookSpec>,
    /// Forward thinking deltas as `message_delta` (off: the published reducer would add a block
    /// per chunk).
    pub thinking_deltas: bool,
    /// Largest stdout line accepted (0: [`DEFAULT_MAX_LINE_BYTES`]).
    pub max_line_bytes: usize,
    /// Do not mirror the transcript into the configured `SessionStore`. By default every
    /// session with a store runs with `--session-mirror` (§5.2).
    pub disable_mirror: bool,
    /// Step timeouts.
    pub timeouts: Timeouts,
}

impl ClaudeOptions {
    /// The effective stdout line limit.
    pub fn line_limit(&self) -> usize {
        if self.max_line_bytes == 0 {
            DEFAULT_MAX_LINE_BYTES
        } else {
            self.max_line_bytes
        }
    }
}

/// A fully resolved launch: what to run, where, with which arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The executable.
    pub program: PathBuf,
    /// Arguments, in the SDK's order.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<String>,
    /// Variables set on top of the inherited environment, in order.
    pub env: Vec<(String, String)>,
    /// `CLAUDE_CONFIG_DIR` as the child will see it (for mapping mirror paths to store keys).
    pub config_dir: PathBuf,
}

/// Per-launch inputs that are not options.
#[derive(Debug, Clone)]
pub struct LaunchInputs<'a> {
    /// The CLI session id (`--session-id=`); ignored when `resume` is set.
    pub session_id: &'a str,
    /// Continue this CLI session (`--resume=<id>` **instead of** `--session-id`: the CLI
    /// refuses both together without `--fork-session`).
    pub resume: Option<&'a str>,
    /// `CLAUDE_CONFIG_DIR` for the child, overriding the configured/inherited one (the
    /// materialized directory of a store-backed resume, §5.5).
    pub config_dir: Option<&'a Path>,
    /// The session's settings.
    pub session: &'a SessionConfig,
    /// Whether `--session-mirror` is passed.
    pub mirror: bool,
}

fn flag(args: &mut Vec<String>, name: &str, value: &str) {
    args.push(format!("--{name}={value}"));
}

/// The session's working directory: the session's, else the configured default, else the
/// server's.
pub fn session_cwd(options: &ClaudeOptions, session: &SessionConfig) -> PathBuf {
    session
        .cwd
        .clone()
        .or_else(|| options.cwd.clone())
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `CLAUDE_CONFIG_DIR` the CLI gets without a resume override: from `options.env`, else
/// the server's environment, else `~/.claude` (§5.3).
pub fn inherited_config_dir(options: &ClaudeOptions) -> PathBuf {
    options
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "CLAUDE_CONFIG_DIR")
        .map(|(_, v)| PathBuf::from(v))
        .or_else(|| std::env::var_os("CLAUDE_CONFIG_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".claude")))
        .unwrap_or_else(|| PathBuf::from(".claude"))
}

/// Builds the command line and environment (§1.3, §1.4). User-controlled values always use the
/// `--flag=value` form so a value starting with `-` can never become a flag.
pub fn launch_spec(
    options: &ClaudeOptions,
    program: PathBuf,
    inputs: &LaunchInputs<'_>,
) -> LaunchSpec {
    let mut args: Vec<String> = vec![
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
    ];
    match &options.system_prompt {
        SystemPrompt::Empty => flag(&mut args, "system-prompt", ""),
        SystemPrompt::Custom(text) => flag(&mut args, "system-prompt", text),
        SystemPrompt::File(path) => flag(&mut args, "system-prompt-file", &path.to_string_lossy()),
        SystemPrompt::Preset { append: Some(text) } => {
            flag(&mut args, "append-system-prompt", text)
        }
        SystemPrompt::Preset { append: None } => {}
    }
    if !options.allowed_tools.is_empty() {
        flag(&mut args, "allowedTools", &options.allowed_tools.join(","));
    }
    if let Some(n) = options.max_turns.filter(|n| *n > 0) {
        flag(&mut args, "max-turns", &n.to_string());
    }
    if !options.disallowed_tools.is_empty() {
        flag(
            &mut args,
            "disallowedTools",
            &options.disallowed_tools.join(","),
        );
    }
    if let Some(model) = inputs.session.model.as_ref().or(options.model.as_ref()) {
        flag(&mut args, "model", model);
    }
    flag(&mut args, "permission-prompt-tool", "stdio");
    if let Some(mode) = inputs
        .session
        .permission_mode
        .as_ref()
        .or(options.permission_mode.as_ref())
    {
        flag(&mut args, "permission-mode", mode);
    }
    match inputs.resume {
        Some(id) => flag(&mut args, "resume", id),
        None => flag(&mut args, "session-id", inputs.session_id),
    }
    if let Some(settings) = &options.settings {
        flag(&mut args, "settings", settings);
    }
    if let Some(mcp) = &options.mcp_config {
        flag(&mut args, "mcp-config", mcp);
    }
    args.push("--include-partial-messages".into());
    if inputs.mirror {
        args.push("--session-mirror".into());
    }
    if let Some(sources) = &options.setting_sources {
        flag(&mut args, "setting-sources", &sources.join(","));
    }
    for (name, value) in &options.extra_args {
        let name = name.trim_start_matches('-');
        match value {
            Some(value) => flag(&mut args, name, value),
            None => args.push(format!("--{name}")),
        }
    }
    args.push("--input-format".into());
    args.push("stream-json".into());

    let cwd = session_cwd(options, inputs.session);

    let mut env: Vec<(String, String)> = vec![("CLAUDE_CODE_ENTRYPOINT".into(), ENTRYPOINT.into())];
    env.extend(options.env.iter().cloned());
    env.push(("CLAUDE_AGENT_SDK_VERSION".into(), SDK_VERSION.into()));
    env.push((
        "CLAUDE_AGENT_SDK_CLIENT_APP".into(),
        format!("agent-webkit/{}", env!("CARGO_PKG_VERSION")),
    ));
    let reads_state_set = options
        .env
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("CLAUDE_CODE_SDK_READS_SESSION_STATE"))
        || std::env::vars_os().any(|(k, _)| {
            k.to_string_lossy()
                .eq_ignore_ascii_case("CLAUDE_CODE_SDK_READS_SESSION_STATE")
        });
    if !reads_state_set {
        env.push(("CLAUDE_CODE_SDK_READS_SESSION_STATE".into(), "1".into()));
    }
    env.push(("PWD".into(), cwd.to_string_lossy().into_owned()));

    let config_dir = match inputs.config_dir {
        Some(dir) => {
            env.push((
                "CLAUDE_CONFIG_DIR".into(),
                dir.to_string_lossy().into_owned(),
            ));
            dir.to_path_buf()
        }
        None => inherited_config_dir(options),
    };

    LaunchSpec {
        program,
        args,
        cwd,
        env_remove: vec![
            "CLAUDECODE".into(),
            "CLAUDE_AGENT_SDK_DERIVED_CLIENT_APP".into(),
        ],
        env,
        config_dir,
    }
}

/// The `initialize` request (§3.2.1) and the callback id → hook map it declares.
pub fn initialize_request(hooks: &[HookSpec]) -> (Value, Vec<HookSpec>) {
    if hooks.is_empty() {
        return (json!({"subtype": "initialize", "hooks": null}), Vec::new());
    }
    let mut by_event: Map<String, Value> = Map::new();
    let mut ids = Vec::new();
    for (n, hook) in hooks.iter().enumerate() {
        let matcher = json!({
            "matcher": hook.matcher,
            "hookCallbackIds": [format!("hook_{n}")],
            "timeout": hook.timeout.as_secs().max(1),
        });
        match by_event
            .entry(hook.event.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(list) => list.push(matcher),
            other => *other = Value::Array(vec![matcher]),
        }
        ids.push(hook.clone());
    }
    (
        json!({"subtype": "initialize", "hooks": Value::Object(by_event)}),
        ids,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn command_line_follows_the_sdk_and_uses_equals_form() {
        let options = ClaudeOptions {
            allowed_tools: vec!["Read".into(), "Grep".into()],
            max_turns: Some(3),
            model: Some("default-model".into()),
            setting_sources: Some(vec![]),
            extra_args: vec![
                ("debug".into(), None),
                ("effort".into(), Some("-high".into())),
            ],
            ..ClaudeOptions::default()
        };
        let session = SessionConfig {
            model: Some("-evil".into()),
            permission_mode: Some("plan".into()),
            cwd: Some(PathBuf::from("/tmp")),
        };
        let spec = launch_spec(
            &options,
            PathBuf::from("/bin/claude"),
            &LaunchInputs {
                session_id: "3f1c",
                resume: None,
                config_dir: None,
                session: &session,
                mirror: true,
            },
        );
        assert_eq!(
            spec.args,
            [
                "--output-format",
                "stream-json",
                "--verbose",
                "--system-prompt=",
                "--allowedTools=Read,Grep",
                "--max-turns=3",
                "--model=-evil",
                "--permission-prompt-tool=stdio",
                "--permission-mode=plan",
                "--session-id=3f1c",
                "--include-partial-messages",
                "--session-mirror",
                "--setting-sources=",
                "--debug",
                "--effort=-high",
                "--input-format",
                "stream-json",
            ]
        );
        assert_eq!(spec.cwd, PathBuf::from("/tmp"));
        assert_eq!(
            spec.env[0],
            ("CLAUDE_CODE_ENTRYPOINT".into(), "sdk-py".into())
        );
        assert!(spec
            .env
            .contains(&("CLAUDE_AGENT_SDK_VERSION".into(), SDK_VERSION.into())));
        assert!(spec.env.contains(&("PWD".into(), "/tmp".into())));
        assert!(spec.env_remove.contains(&"CLAUDECODE".to_owned()));
    }

    #[test]
    fn resume_replaces_session_id_and_may_override_the_config_dir() {
        let options = ClaudeOptions {
            env: vec![("CLAUDE_CONFIG_DIR".into(), "/home/u/.claude".into())],
            ..ClaudeOptions::default()
        };
        let session = SessionConfig {
            cwd: Some(PathBuf::from("/tmp")),
            ..SessionConfig::default()
        };
        let inputs = LaunchInputs {
            session_id: "ignored",
            resume: Some("-r1"),
            config_dir: Some(Path::new("/tmp/claude-resume-x")),
            session: &session,
            mirror: true,
        };
        let spec = launch_spec(&options, PathBuf::from("/bin/claude"), &inputs);
        let pos = |a: &str| spec.args.iter().position(|x| x == a).unwrap();
        assert!(spec.args.contains(&"--resume=-r1".to_owned()));
        assert!(!spec.args.iter().any(|a| a.starts_with("--session-id")));
        assert!(pos("--permission-prompt-tool=stdio") < pos("--resume=-r1"));
        assert!(pos("--resume=-r1") < pos("--include-partial-messages"));
        assert_eq!(spec.config_dir, PathBuf::from("/tmp/claude-resume-x"));
        // Set after the configured env, so it wins.
        let last = spec
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "CLAUDE_CONFIG_DIR")
            .unwrap();
        assert_eq!(last.1, "/tmp/claude-resume-x");

        let spec = launch_spec(
            &options,
            PathBuf::from("/bin/claude"),
            &LaunchInputs {
                resume: None,
                config_dir: None,
                ..inputs
            },
        );
        assert!(spec.args.contains(&"--session-id=ignored".to_owned()));
        assert_eq!(spec.config_dir, PathBuf::from("/home/u/.claude"));
    }

    #[test]
    fn hooks_get_sequential_callback_ids() {
        let hooks = vec![
            HookSpec::parse("PreToolUse:Bash").unwrap(),
            HookSpec::parse("Stop").unwrap(),
            HookSpec::parse("PreToolUse").unwrap(),
        ];
        let (req, ids) = initialize_request(&hooks);
        assert_eq!(ids.len(), 3);
        assert_eq!(
            req["hooks"]["PreToolUse"][1]["hookCallbackIds"],
            json!(["hook_2"])
        );
        assert_eq!(req["hooks"]["Stop"][0]["matcher"], Value::Null);
        assert!(HookSpec::parse("Pre Tool").is_err());
        assert_eq!(
            initialize_request(&[]).0,
            json!({"subtype":"initialize","hooks":null})
        );
    }
}
