//! A fake `claude` executable (binary `fake-claude`) that speaks the stream-json control
//! protocol of Claude Code CLI 2.1.330, for fast offline tests of the bridge and the server.
//!
//! Behaviour is chosen by directives inside user messages (`[[bash: CMD]]`, `[[read: PATH]]`,
//! `[[ask: Q | A | B]]`, `[[slow: N]]`, `[[cancel]]`, `[[self_turn]]`, `[[unknown_request]]`,
//! `[[crash]]`, `[[garbage]]`, `[[huge: N]]`, `[[blocks: N]]` (one message of N text blocks),
//! `[[stderr: N]]`, `[[hang]]`, `[[api_error]]`, `[[auth_retry]]` (`api_retry` frames for a 401,
//! with backoff, until interrupted), `[[background: ID]]` / `[[background_done: ID]]` (a
//! background task that outlives the turn: `task_started`, then its `task_notification`));
//! a message without directives is answered `echo: <text>`. `--model recording:<name>`
//! replays `fixtures/cli/<name>.annotated.jsonl` instead (override the directory with
//! `FAKE_CLAUDE_FIXTURES`). `--resume=<id>` reads `$CLAUDE_CONFIG_DIR/projects/<project key of
//! the cwd>/<id>.jsonl` (refused like the real CLI when missing) and echo replies then say
//! `(resumed: N earlier messages)`. With `FAKE_CLAUDE_RECORD_DIR` set, every process writes
//! `<dir>/<pid>.json` (`pid`, `argv`, `cwd`, its whole `env`) on start.
//!
//! Use [`fake_claude_path`] to find (and if needed build) the executable from a test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use serde_json::json;

mod args;
mod config;
mod directives;
mod interactive;
mod out;
mod recording;
mod turn;

/// Name of the environment variable that makes the fake record its argv/env/cwd.
pub const RECORD_DIR_ENV: &str = "FAKE_CLAUDE_RECORD_DIR";
/// Name of the environment variable overriding the recordings directory.
pub const FIXTURES_ENV: &str = "FAKE_CLAUDE_FIXTURES";

/// Directory of the real CLI recordings shipped with the testkit.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/cli"))
}

/// Path of the `fake-claude` executable in the cargo target directory of the running test
/// (`target/<profile>/fake-claude`). Builds it once (`cargo build -p agent-webkit-testkit
/// --bin fake-claude`, same profile) when it is missing. Panics with a clear message when
/// that fails (test code).
pub fn fake_claude_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(locate_or_build).clone()
}

/// A server (`binary`, `--framework framework`) whose sessions run the fake `claude` with its
/// own `CLAUDE_CONFIG_DIR` under `dir`, sessions allowed in `dir/work` (returned as a string),
/// no auth, plus `extra` flags and `env`.
pub async fn fake_claude_server(
    binary: impl AsRef<Path>,
    framework: &str,
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> crate::Result<(crate::ServerProcess, String)> {
    let work = dir.join("work");
    let config = dir.join("config");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&config)?;
    let fake = fake_claude_path();
    let config = format!("CLAUDE_CONFIG_DIR={}", config.display());
    let work = work.display().to_string();
    let fake = fake.display().to_string();
    let mut args = vec![
        "--no-auth",
        "--framework",
        framework,
        "--agent",
        "claude",
        "--claude-path",
        &fake,
        "--claude-env",
        &config,
        "--allowed-root",
        &work,
    ];
    args.extend_from_slice(extra);
    let server = crate::ServerProcess::spawn_with_env(binary, &args, env).await?;
    Ok((server, work))
}

fn locate_or_build() -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("fake_claude_path: cannot find the current executable: {e}"));
    let mut dir = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("fake_claude_path: {} has no parent", exe.display()));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let bin = dir.join(format!("fake-claude{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        return bin;
    }
    let profile = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "debug".into());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "agent-webkit-testkit",
        "--bin",
        "fake-claude",
    ]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("fake_claude_path: could not run cargo to build fake-claude: {e}")
    });
    assert!(
        status.success() && bin.is_file(),
        "fake_claude_path: `cargo build -p agent-webkit-testkit --bin fake-claude` ({status}) \
         did not produce {}",
        bin.display()
    );
    bin
}

/// Entry point of the `fake-claude` binary; returns the process exit code.
pub fn run() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(dir) = std::env::var_os(RECORD_DIR_ENV) {
        if let Err(e) = write_record(Path::new(&dir), &argv) {
            eprintln!("fake-claude: cannot write record into {dir:?}: {e}");
        }
    }
    let args = args::Args::parse(argv.get(1..).unwrap_or_default());
    if let Some(error) = args.startup_error() {
        eprintln!("{error}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-claude: cannot start runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(main_async(args));
    runtime.shutdown_background();
    code
}

fn write_record(dir: &Path, argv: &[String]) -> std::io::Result<()> {
    let pid = std::process::id();
    // All of it: tests check what the bridge keeps out of the CLI's environment.
    let env: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let record = json!({"pid": pid, "argv": argv, "cwd": cwd, "env": env});
    let tmp = dir.join(format!(".{pid}.json.tmp"));
    std::fs::write(&tmp, record.to_string())?;
    std::fs::rename(&tmp, dir.join(format!("{pid}.json")))
}

async fn main_async(args: args::Args) -> i32 {
    let out = out::Out::spawn();
    let cfg = config::Config::new(args);
    let recording = cfg
        .args
        .model
        .as_deref()
        .and_then(|m| m.strip_prefix("recording:"))
        .map(str::to_owned);
    if let Some(name) = recording {
        tokio::spawn(on_sigterm(None));
        return recording::run(&cfg, out, &name).await;
    }
    if let config::Resume::Missing(id) = &cfg.resume {
        return refuse_resume(&cfg, &out, id).await;
    }
    let fake = interactive::Fake::new(cfg, out);
    tokio::spawn(on_sigterm(Some(fake.clone())));
    tokio::spawn(fake.clone().read_stdin());
    fake.run_turns().await;
    0
}

/// `--resume=<id>` of a conversation that is not on disk: like CLI 2.1.330, an error `result`
/// is written instead of the initialize response (once the host has written something), the
/// reason goes to stderr too, and the process exits 1.
async fn refuse_resume(cfg: &config::Config, out: &out::Out, id: &str) -> i32 {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line.trim().is_empty() => continue,
            _ => break,
        }
    }
    let error = format!("No conversation found with session ID: {id}");
    out.send(
        &json!({"type": "result", "subtype": "error_during_execution",
        "duration_ms": 0, "duration_api_ms": 0, "is_error": true, "num_turns": 0,
        "stop_reason": null, "session_id": cfg.session_id, "total_cost_usd": 0,
        "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 0},
        "modelUsage": {}, "permission_denials": [], "uuid": out::new_uuid(),
        "errors": [error]}),
    );
    out::eprint(&error).await;
    out.flush().await;
    1
}

/// Exits 143 on SIGTERM, unless `[[hang]]` asked to ignore it.
async fn on_sigterm(fake: Option<Arc<interactive::Fake>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    while term.recv().await.is_some() {
        if !fake.as_ref().is_some_and(|f| f.hang.load(Ordering::SeqCst)) {
            std::process::exit(143);
        }
    }
}
