//! What the bridge launches: [`ClaudeOptions`] (server-wide defaults, overridden per session by
//! the core's [`SessionConfig`]) and the exact command line and environment built from them
//! (docs/claude-cli-protocol.md §1.3, §1.4).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_webkit_core::agent::SessionConfig;
use serde_json::{json, Map, Value};

use crate::env::{inherited, Inheritance, Secrets};

/// The Python SDK version whose behaviour the bridge reproduces (sent to the CLI, which tests
/// for the variable's presence on some SDK-only paths).
pub const SDK_VERSION: &str = "0.2.187";

/// The entrypoint the CLI recognises as an SDK host (unknown values change behaviour,
/// docs/claude-cli-protocol.md §1.2).
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
    /// Each `SessionStore` read while materializing a resumed session
    /// (docs/claude-cli-protocol.md §5.5).
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
    /// Extra environment for the CLI (may override `CLAUDE_CODE_ENTRYPOINT`). A value
    /// containing one of [`secrets`](Self::secrets) is dropped.
    pub env: Vec<(String, String)>,
    /// Start the CLI from an empty environment: only `PATH`, `HOME`, [`pass_env`](Self::pass_env)
    /// and [`env`](Self::env) reach it (plus the variables the bridge sets). Otherwise it
    /// inherits the server's environment minus `AGENT_WEBKIT_*` and secret values.
    pub clean_env: bool,
    /// Names of server variables passed through a [`clean_env`](Self::clean_env) (e.g.
    /// `ANTHROPIC_API_KEY`). `AGENT_WEBKIT_*` names are never passed.
    pub pass_env: Vec<String>,
    /// Values that never reach the CLI (a variable containing one is not passed) and are
    /// redacted from CLI output written to the log: the server's bearer token, database URL...
    pub secrets: Secrets,
    /// Hook events forwarded to clients.
    pub hooks: Vec<HookSpec>,
    /// Forward thinking deltas as `message_delta` (off: the published reducer would add a block
    /// per chunk).
    pub thinking_deltas: bool,
    /// Forward tool-input (`input_json_delta`) deltas as `message_delta` (off: the published
    /// React reducer would add a block per chunk until `message_complete`).
    pub tool_input_deltas: bool,
    /// Largest stdout line accepted (0: [`DEFAULT_MAX_LINE_BYTES`]).
    pub max_line_bytes: usize,
    /// Do not mirror the transcript into the configured `SessionStore`. By default every
    /// session with a store runs with `--session-mirror` (docs/claude-cli-protocol.md §5.2).
    pub disable_mirror: bool,
    /// Step timeouts.
    pub timeouts: Timeouts,
    /// Launch sessions without file checkpointing unless their create asks for it (`rewind`
    /// of files; default: on, `CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING=1`).
    pub no_file_checkpointing: bool,
}

impl ClaudeOptions {
    /// Whether a session with these settings runs with file checkpointing.
    pub fn file_checkpointing(&self, session: &SessionConfig) -> bool {
        session
            .file_checkpointing
            .unwrap_or(!self.no_file_checkpointing)
    }
}

impl ClaudeOptions {
    /// What the CLI inherits from `server_env` (see [`crate::env::inherited`]).
    pub fn inherited_env<I>(&self, server_env: I) -> BTreeMap<OsString, OsString>
    where
        I: IntoIterator<Item = (OsString, OsString)>,
    {
        inherited(
            server_env,
            Inheritance {
                clean: self.clean_env,
                pass: &self.pass_env,
                secrets: &self.secrets,
            },
        )
    }

    /// The configured [`env`](Self::env) entries that hold a secret (and are therefore not
    /// passed).
    pub fn secret_env_names(&self) -> Vec<&str> {
        self.env
            .iter()
            .filter(|(_, v)| self.secrets.found_in(v.as_ref()))
            .map(|(k, _)| k.as_str())
            .collect()
    }

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
    /// The child's complete environment (it inherits nothing else).
    pub env: BTreeMap<OsString, OsString>,
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
    /// materialized directory of a store-backed resume, docs/claude-cli-protocol.md §5.5).
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
/// the environment it inherits from the server, else `$HOME/.claude`
/// (docs/claude-cli-protocol.md §5.3).
pub fn inherited_config_dir(options: &ClaudeOptions) -> PathBuf {
    config_dir_in(options, &options.inherited_env(std::env::vars_os()))
}

fn config_dir_in(options: &ClaudeOptions, inherited: &BTreeMap<OsString, OsString>) -> PathBuf {
    let get = |name: &str| {
        options
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| OsString::from(v))
            .or_else(|| inherited.get(&OsString::from(name)).cloned())
    };
    get("CLAUDE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| get("HOME").map(|h| Path::new(&h).join(".claude")))
        .unwrap_or_else(|| PathBuf::from(".claude"))
}

/// The CLI's switch for file checkpoints (`rewind_files`).
pub const FILE_CHECKPOINTING_ENV: &str = "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING";

/// Builds the command line and environment (docs/claude-cli-protocol.md §1.3, §1.4) from the
/// server's environment.
pub fn launch_spec(
    options: &ClaudeOptions,
    program: PathBuf,
    inputs: &LaunchInputs<'_>,
) -> LaunchSpec {
    launch_spec_in(options, program, inputs, std::env::vars_os())
}

/// [`launch_spec`] with the server's environment given. User-controlled values always use the
/// `--flag=value` form so a value starting with `-` can never become a flag.
pub fn launch_spec_in<I>(
    options: &ClaudeOptions,
    program: PathBuf,
    inputs: &LaunchInputs<'_>,
    server_env: I,
) -> LaunchSpec
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
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
    if let Some(dir) = &inputs.session.attachments_dir {
        // The session's attachments: readable without a prompt, and named in the system
        // prompt's working directories (the CLI ignores a directory that does not exist).
        flag(&mut args, "add-dir", &dir.to_string_lossy());
    }
    args.push("--input-format".into());
    args.push("stream-json".into());

    let cwd = session_cwd(options, inputs.session);

    let inherited = options.inherited_env(server_env);
    let config_dir = match inputs.config_dir {
        Some(dir) => dir.to_path_buf(),
        None => config_dir_in(options, &inherited),
    };
    let mut env = inherited;
    let mut set = |key: &str, value: &str| {
        env.insert(key.into(), value.into());
    };
    set("CLAUDE_CODE_ENTRYPOINT", ENTRYPOINT);
    for (key, value) in &options.env {
        if options.secrets.found_in(value.as_ref()) {
            continue;
        }
        set(key, value);
    }
    set("CLAUDE_AGENT_SDK_VERSION", SDK_VERSION);
    set(
        "CLAUDE_AGENT_SDK_CLIENT_APP",
        &format!("agent-webkit/{}", env!("CARGO_PKG_VERSION")),
    );
    let reads_state_set = env.keys().any(|k| {
        k.to_string_lossy()
            .eq_ignore_ascii_case("CLAUDE_CODE_SDK_READS_SESSION_STATE")
    });
    if !reads_state_set {
        env.insert("CLAUDE_CODE_SDK_READS_SESSION_STATE".into(), "1".into());
    }
    env.insert("PWD".into(), cwd.clone().into_os_string());
    if options.file_checkpointing(inputs.session) {
        env.insert(FILE_CHECKPOINTING_ENV.into(), "1".into());
    } else {
        env.remove(std::ffi::OsStr::new(FILE_CHECKPOINTING_ENV));
    }
    if let Some(dir) = inputs.config_dir {
        env.insert("CLAUDE_CONFIG_DIR".into(), dir.as_os_str().to_owned());
    }

    LaunchSpec {
        program,
        args,
        cwd,
        env,
        config_dir,
    }
}

/// The `initialize` request (docs/claude-cli-protocol.md §3.2.1) and the callback id → hook map
/// it declares.
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
    use std::ffi::OsStr;

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
            tool_input_deltas: None,
            owner: None,
            attachments_dir: Some(PathBuf::from("/data/attachments/3f1c")),
            ..SessionConfig::default()
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
                "--add-dir=/data/attachments/3f1c",
                "--input-format",
                "stream-json",
            ]
        );
        assert_eq!(spec.cwd, PathBuf::from("/tmp"));
        let env = |k: &str| spec.env.get(OsStr::new(k)).map(|v| v.to_str().unwrap());
        assert_eq!(env("CLAUDE_CODE_ENTRYPOINT"), Some("sdk-py"));
        assert_eq!(env("CLAUDE_AGENT_SDK_VERSION"), Some(SDK_VERSION));
        assert_eq!(env("CLAUDE_CODE_SDK_READS_SESSION_STATE"), Some("1"));
        assert_eq!(env("PWD"), Some("/tmp"));
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn the_environment_is_built_on_purpose() {
        let server = vars(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/home/op"),
            ("AGENT_WEBKIT_AUTH_TOKEN", "s3cret-token"),
            ("CLAUDECODE", "1"),
            ("OTHER", "x"),
            ("ANTHROPIC_API_KEY", "sk"),
            ("CLAUDE_CODE_SDK_READS_SESSION_STATE", "0"),
        ]);
        let session = SessionConfig::default();
        let inputs = LaunchInputs {
            session_id: "s",
            resume: None,
            config_dir: None,
            session: &session,
            mirror: false,
        };
        let mut options = ClaudeOptions {
            cwd: Some(PathBuf::from("/tmp")),
            env: vec![
                ("LEAK".into(), "Bearer s3cret-token".into()),
                ("CLAUDE_CODE_ENTRYPOINT".into(), "custom".into()),
            ],
            secrets: Secrets::new(["s3cret-token"]),
            ..ClaudeOptions::default()
        };
        assert_eq!(options.secret_env_names(), ["LEAK"]);
        let keys = |spec: &LaunchSpec| {
            spec.env
                .keys()
                .map(|k| k.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let spec = launch_spec_in(&options, "/bin/claude".into(), &inputs, server.clone());
        let bridge = [
            "CLAUDE_AGENT_SDK_CLIENT_APP",
            "CLAUDE_AGENT_SDK_VERSION",
            // File checkpointing is on by default.
            "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING",
            "CLAUDE_CODE_ENTRYPOINT",
        ];
        let mut expected = vec!["ANTHROPIC_API_KEY"];
        expected.extend(bridge);
        expected.extend([
            "CLAUDE_CODE_SDK_READS_SESSION_STATE",
            "HOME",
            "OTHER",
            "PATH",
            "PWD",
        ]);
        assert_eq!(keys(&spec), expected);
        assert_eq!(spec.env[OsStr::new("CLAUDE_CODE_ENTRYPOINT")], "custom");
        assert_eq!(
            spec.env[OsStr::new("CLAUDE_CODE_SDK_READS_SESSION_STATE")],
            "0"
        );
        assert_eq!(spec.config_dir, PathBuf::from("/home/op/.claude"));

        options.clean_env = true;
        options.pass_env = vec!["ANTHROPIC_API_KEY".into()];
        let spec = launch_spec_in(&options, "/bin/claude".into(), &inputs, server);
        let mut expected = vec!["ANTHROPIC_API_KEY"];
        expected.extend(bridge);
        expected.extend(["CLAUDE_CODE_SDK_READS_SESSION_STATE", "HOME", "PATH", "PWD"]);
        assert_eq!(keys(&spec), expected);
        assert_eq!(
            spec.env[OsStr::new("CLAUDE_CODE_SDK_READS_SESSION_STATE")],
            "1"
        );
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
        assert_eq!(
            spec.env[std::ffi::OsStr::new("CLAUDE_CONFIG_DIR")],
            "/tmp/claude-resume-x"
        );

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
