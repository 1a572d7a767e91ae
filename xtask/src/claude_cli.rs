//! Provisioning of the real Claude Code CLI for the end-to-end tests.
//!
//! The pinned version is installed with npm into a cache folder outside the clone (it is about
//! 360 MB): `$AGENT_WEBKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/agent-webkit`, else
//! `~/.cache/agent-webkit`, subfolder `claude-code-<version>`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The CLI version the end-to-end tests are pinned to.
pub const VERSION: &str = "2.1.330";

/// Environment variable through which the tests receive the CLI path.
pub const CLI_ENV: &str = "AGENT_WEBKIT_CLAUDE_CLI";

/// Environment variable through which the tests learn why the CLI is unavailable.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_CLAUDE_CLI_SKIP";

/// The install folder for the pinned version.
pub fn install_dir() -> Result<PathBuf, String> {
    crate::cache_install_dir(&format!("claude-code-{VERSION}"))
}

/// npm's name for this platform's native package suffix, e.g. `linux-x64`.
fn platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    };
    let musl = cfg!(target_env = "musl") || Path::new("/etc/alpine-release").exists();
    format!("{os}-{arch}{}", if musl { "-musl" } else { "" })
}

/// The binaries to try, in order.
fn candidates(dir: &Path) -> Vec<PathBuf> {
    let exe = if cfg!(windows) {
        "claude.exe"
    } else {
        "claude"
    };
    let modules = dir.join("node_modules");
    vec![
        modules.join(".bin").join(exe),
        modules
            .join("@anthropic-ai")
            .join(format!("claude-code-{}", platform()))
            .join(exe),
    ]
}

/// Runs `binary --version` (bounded to 60 s); returns its stdout.
fn version_of(binary: &Path) -> Result<String, String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > Duration::from_secs(60) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} --version timed out", binary.display()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{}: {e}", binary.display())),
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} --version failed ({}): {stdout} {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The first candidate whose `--version` prints the pinned version.
fn working_binary(dir: &Path) -> Result<PathBuf, String> {
    let mut problems = Vec::new();
    for candidate in candidates(dir) {
        if !candidate.is_file() {
            problems.push(format!("{} does not exist", candidate.display()));
            continue;
        }
        match version_of(&candidate) {
            Ok(version) if version.split_whitespace().next() == Some(VERSION) => {
                return Ok(candidate)
            }
            Ok(version) => problems.push(format!(
                "{} --version printed {version:?}, want {VERSION}",
                candidate.display()
            )),
            Err(e) => problems.push(e),
        }
    }
    Err(problems.join("; "))
}

/// Makes sure the pinned CLI is installed; returns the path of a working binary, or why not.
pub fn ensure() -> Result<PathBuf, String> {
    let dir = install_dir()?;
    if let Ok(binary) = working_binary(&dir) {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let manifest = dir.join("package.json");
    if !manifest.exists() {
        std::fs::write(&manifest, "{\"name\":\"cc-cache\",\"private\":true}\n")
            .map_err(|e| format!("cannot write {}: {e}", manifest.display()))?;
    }
    let package = format!("@anthropic-ai/claude-code@{VERSION}");
    eprintln!(
        "xtask: installing the real Claude CLI: npm install {package} in {}",
        dir.display()
    );
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let status = Command::new(npm)
        .args(["install", "--no-audit", "--no-fund", &package])
        .current_dir(&dir)
        .stdin(Stdio::null())
        // npm's progress goes to our stderr; stdout would mix with cargo's.
        .stdout(Stdio::inherit())
        .status()
        .map_err(|e| format!("cannot run npm (is Node.js installed?): {e}"))?;
    if !status.success() {
        return Err(format!("npm install {package} failed ({status})"));
    }
    working_binary(&dir)
        .map_err(|e| format!("npm install {package} succeeded but no working binary: {e}"))
}

/// The loud line printed when the real-CLI tests cannot run.
pub fn skip_banner(reason: &str) -> String {
    let line = "=".repeat(78);
    format!("{line}\nREAL CLAUDE CLI E2E: SKIPPED — {reason}\n{line}")
}
