//! Running the real Claude Code CLI offline against [`MockAnthropicApi`].
//!
//! `cargo xtask test` installs the pinned CLI into a cache folder and exports
//! `AGENT_WEBKIT_CLAUDE_CLI=<path>` (or `AGENT_WEBKIT_CLAUDE_CLI_SKIP=<reason>` when the install
//! failed). Tests call [`require_real_cli!`](crate::require_real_cli) to get the path or skip
//! loudly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::mock_api::MockAnthropicApi;
use crate::{Result, TestkitError};

/// The pinned CLI version the real-CLI tests run against.
pub const CLAUDE_CLI_VERSION: &str = "2.1.330";

/// Environment variable holding the path of the real CLI.
pub const CLI_ENV: &str = "AGENT_WEBKIT_CLAUDE_CLI";

/// Environment variable holding the reason the real CLI could not be provisioned.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_CLAUDE_CLI_SKIP";

/// The folder xtask installs the pinned CLI into: `claude-code-<version>` in the
/// [cache folder](crate::cache_dir::cache_root).
pub fn cache_install_dir() -> Option<PathBuf> {
    Some(crate::cache_dir::cache_root()?.join(format!("claude-code-{CLAUDE_CLI_VERSION}")))
}

/// The real CLI: `$AGENT_WEBKIT_CLAUDE_CLI`; failing that, an existing binary in the xtask cache
/// folder (so a plain `cargo test` works after one `cargo xtask test`). `Err` carries the reason
/// it is unavailable.
pub fn real_cli_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(CLI_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{CLI_ENV}={} is not a file", path.display()))
        };
    }
    if let Some(reason) = std::env::var(SKIP_ENV).ok().filter(|v| !v.is_empty()) {
        return Err(reason);
    }
    if let Some(dir) = cache_install_dir() {
        for candidate in [
            dir.join("node_modules/.bin/claude"),
            dir.join("node_modules/@anthropic-ai/claude-code-linux-x64/claude"),
        ] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "{CLI_ENV} is not set and no cached CLI was found (run `cargo xtask test`, or export \
         {CLI_ENV}=/path/to/claude {CLAUDE_CLI_VERSION})"
    ))
}

/// The real CLI path, or `None` after printing `SKIPPED (real CLI unavailable): <reason>`.
///
/// Panics (fails the test) instead of skipping when `CI` is set and xtask did not report an
/// install failure through `AGENT_WEBKIT_CLAUDE_CLI_SKIP`: in CI a missing CLI is a bug.
#[allow(clippy::panic)]
pub fn real_cli_or_skip(test: &str) -> Option<PathBuf> {
    match real_cli_path() {
        Ok(path) => Some(path),
        Err(reason) => {
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            let reported = std::env::var_os(SKIP_ENV).is_some_and(|v| !v.is_empty());
            if ci && !reported {
                panic!("{test}: real Claude CLI unavailable in CI: {reason}");
            }
            // Straight to the stderr handle: libtest captures `eprintln!` of passing tests,
            // which would make the skip silent.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** {test}: SKIPPED (real CLI unavailable): {reason} ***\n"
            );
            None
        }
    }
}

/// `let cli = require_real_cli!();` — the real CLI path, or print the loud SKIPPED line and
/// `return` from the enclosing test (a failure instead when running in CI, see
/// [`real_cli_or_skip`](crate::real_cli::real_cli_or_skip)).
#[macro_export]
macro_rules! require_real_cli {
    () => {
        $crate::require_real_cli!(module_path!())
    };
    ($test:expr) => {
        match $crate::real_cli::real_cli_or_skip($test) {
            Some(path) => path,
            None => return,
        }
    };
}

/// The environment that runs the CLI offline against `mock`, with `home` as HOME/config/TMPDIR
/// (creates `home/.claude` and `home/tmp`).
pub fn offline_env(mock: &MockAnthropicApi, home: &Path) -> Vec<(String, String)> {
    let config = home.join(".claude");
    let tmp = home.join("tmp");
    let _ = std::fs::create_dir_all(&config);
    let _ = std::fs::create_dir_all(&tmp);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    [
        ("ANTHROPIC_API_KEY", "test-key".to_owned()),
        ("ANTHROPIC_BASE_URL", mock.base_url()),
        ("CLAUDE_CONFIG_DIR", s(&config)),
        ("HOME", s(home)),
        ("TMPDIR", s(&tmp)),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
        ("DISABLE_AUTOUPDATER", "1".to_owned()),
        ("DISABLE_TELEMETRY", "1".to_owned()),
        ("DISABLE_ERROR_REPORTING", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A fresh temporary directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/agent-webkit-<prefix>-<pid>-<nanos>-<n>`.
    pub fn new(prefix: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "agent-webkit-{prefix}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path)?;
        // The CLI reports symlink-resolved paths; use the canonical one everywhere.
        let path = path.canonicalize()?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The SDK-mode arguments the bridge uses (`stream-json` both ways, stdio permission prompts,
/// partial messages, empty system prompt, no settings files).
pub const SDK_ARGS: &[&str] = &[
    "--output-format",
    "stream-json",
    "--verbose",
    "--input-format",
    "stream-json",
    "--permission-prompt-tool",
    "stdio",
    "--include-partial-messages",
    "--system-prompt",
    "",
    "--setting-sources=",
];

/// A real CLI process in SDK mode, driven directly over stdin/stdout (no server).
#[derive(Debug)]
pub struct CliProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Every frame read so far.
    pub frames: Vec<Value>,
    counter: u64,
}

impl CliProcess {
    /// Spawns `cli` with [`SDK_ARGS`] plus `extra_args`, `env` on top of the inherited
    /// environment plus the SDK variables (`CLAUDE_CODE_ENTRYPOINT=sdk-py`, …), in `cwd`.
    pub fn spawn(
        cli: &Path,
        extra_args: &[&str],
        env: &[(String, String)],
        cwd: &Path,
    ) -> Result<Self> {
        let mut command = Command::new(cli);
        command
            .args(SDK_ARGS)
            .args(extra_args)
            .env_remove("CLAUDECODE")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CLAUDE_CODE_ENTRYPOINT", "sdk-py")
            .env("CLAUDE_AGENT_SDK_VERSION", "0.2.187")
            .env("CLAUDE_CODE_SDK_READS_SESSION_STATE", "1")
            .env("PWD", cwd)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| TestkitError::Unexpected("no stdout".into()))?;
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            frames: Vec::new(),
            counter: 0,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Writes one JSON line to stdin.
    pub async fn send(&mut self, value: &Value) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| TestkitError::Unexpected("stdin closed".into()))?;
        let mut line = value.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Sends a host control request; returns its `request_id`.
    pub async fn control(&mut self, request: Value) -> Result<String> {
        self.counter += 1;
        let id = format!("req_{}_test", self.counter);
        self.send(&serde_json::json!({
            "type": "control_request", "request_id": id, "request": request,
        }))
        .await?;
        Ok(id)
    }

    /// Sends a user message with a fresh uuid-like id.
    pub async fn user(&mut self, text: &str) -> Result<()> {
        self.counter += 1;
        let uuid = format!("00000000-0000-4000-8000-{:012x}", self.counter);
        self.send(&serde_json::json!({
            "type": "user",
            "message": {"role": "user", "content": text},
            "parent_tool_use_id": null,
            "session_id": "default",
            "uuid": uuid,
        }))
        .await
    }

    /// Answers a CLI control request with a success payload.
    pub async fn respond(&mut self, request_id: &str, response: Value) -> Result<()> {
        self.send(&serde_json::json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response},
        }))
        .await
    }

    /// Closes stdin (the CLI finishes its turn and exits).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next JSON frame from stdout (non-JSON lines skipped); `None` at EOF.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<Option<Value>> {
        let read = async {
            while let Some(line) = self.stdout.next_line().await? {
                let line = line.trim();
                if !line.starts_with('{') {
                    continue;
                }
                let value: Value = serde_json::from_str(line)
                    .map_err(|e| TestkitError::Unexpected(format!("bad frame {line}: {e}")))?;
                return Ok(Some(value));
            }
            Ok::<_, TestkitError>(None)
        };
        let frame = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| TestkitError::Timeout("CLI frame".into()))??;
        if let Some(frame) = &frame {
            self.frames.push(frame.clone());
        }
        Ok(frame)
    }

    /// Reads frames until `pred` matches (inclusive); returns the frames read by this call.
    pub async fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await {
                Ok(Some(frame)) => {
                    let hit = pred(&frame);
                    out.push(frame);
                    if hit {
                        return Ok(out);
                    }
                }
                Ok(None) => {
                    return Err(TestkitError::Unexpected(format!(
                        "CLI exited before {what}; frames: {}",
                        summarize(&out)
                    )))
                }
                Err(TestkitError::Timeout(_)) => {
                    return Err(TestkitError::Timeout(format!(
                        "{what}; frames: {}",
                        summarize(&out)
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits (up to `timeout`) for the process to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => Ok(None),
        }
    }
}

/// `type/subtype` of each frame, for error messages.
pub fn summarize(frames: &[Value]) -> String {
    frames
        .iter()
        .map(|f| {
            let t = f["type"].as_str().unwrap_or("?");
            match f["subtype"]
                .as_str()
                .or(f["request"]["subtype"].as_str())
                .or(f["event"]["type"].as_str())
            {
                Some(s) => format!("{t}/{s}"),
                None => t.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
