//! Provisioning of the published JavaScript client for the JS smoke test
//! (`crates/agent-webkit-server/tests/js_client.rs` running `tests/js/smoke.mjs`).
//!
//! `tests/js/package.json` + `package-lock.json` pin `@agent-webkit/core`; they are copied into a
//! cache folder outside the clone — `$AGENT_WEBKIT_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/agent-webkit`, else `~/.cache/agent-webkit`, subfolder
//! `js-client-<version>` — and installed there with `npm ci`. Idempotent: nothing runs when the
//! cached manifest and lockfile match the committed ones and the package is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The client version the smoke test is pinned to (must match `tests/js/package.json`).
pub const VERSION: &str = "0.2.0";

/// The npm package under test.
pub const PACKAGE: &str = "@agent-webkit/core";

/// Environment variable through which the test receives the installed `node_modules` folder.
pub const DEPS_ENV: &str = "AGENT_WEBKIT_JS_DEPS";

/// Environment variable through which the test learns why the client is unavailable.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_JS_SKIP";

/// Upper bound for `npm ci` (one small package; generous for slow CI networks).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Upper bound for `node --version`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The install folder for the pinned version.
pub fn install_dir() -> Result<PathBuf, String> {
    crate::cache_install_dir(&format!("js-client-{VERSION}"))
}

/// `tests/js` in the clone.
fn source_dir() -> PathBuf {
    crate::root().join("tests").join("js")
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Waits for `child` at most `limit`; kills it on timeout.
fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> Result<ExitStatus, String> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} timed out after {}s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// Checks that `node` runs and is at least 18 (the client's `engines`); returns its version.
fn node_version() -> Result<String, String> {
    let mut child = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run node (is Node.js installed?): {e}"))?;
    let status = wait_bounded(&mut child, PROBE_TIMEOUT, "node --version")?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("node --version: {e}"))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !status.success() {
        return Err(format!("node --version failed ({status})"));
    }
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if major >= 18 => Ok(version),
        _ => Err(format!(
            "node {version:?} is too old ({PACKAGE} needs >= 18)"
        )),
    }
}

/// Whether `dir` holds an install of exactly the committed manifest + lockfile.
fn installed(dir: &Path, manifest: &[u8], lock: &[u8]) -> bool {
    let same = |name: &str, want: &[u8]| std::fs::read(dir.join(name)).is_ok_and(|b| b == want);
    let package_json = dir
        .join("node_modules")
        .join("@agent-webkit")
        .join("core")
        .join("package.json");
    let version_ok = std::fs::read_to_string(package_json)
        .is_ok_and(|s| s.contains(&format!("\"version\": \"{VERSION}\"")));
    same("package.json", manifest) && same("package-lock.json", lock) && version_ok
}

/// Makes sure the pinned client is installed; returns its `node_modules` folder, or why not.
pub fn ensure() -> Result<PathBuf, String> {
    let src = source_dir();
    let manifest = read(&src.join("package.json"))?;
    let lock = read(&src.join("package-lock.json"))?;
    let pin = format!("\"{PACKAGE}\": \"{VERSION}\"");
    if !String::from_utf8_lossy(&manifest).contains(&pin) {
        return Err(format!(
            "{} does not pin {pin} (update xtask/src/js_client.rs VERSION too)",
            src.join("package.json").display()
        ));
    }
    let node = node_version()?;
    let dir = install_dir()?;
    let modules = dir.join("node_modules");
    if installed(&dir, &manifest, &lock) {
        return Ok(modules);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, bytes) in [("package.json", &manifest), ("package-lock.json", &lock)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    eprintln!(
        "xtask: installing {PACKAGE}@{VERSION} (node {node}): npm ci in {}",
        dir.display()
    );
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let mut child = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        // npm's output goes to our stderr; stdout would mix with cargo's.
        .stdout(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run npm (is Node.js installed?): {e}"))?;
    let status = wait_bounded(&mut child, INSTALL_TIMEOUT, "npm ci")?;
    if !status.success() {
        return Err(format!("npm ci in {} failed ({status})", dir.display()));
    }
    if installed(&dir, &manifest, &lock) {
        Ok(modules)
    } else {
        Err(format!(
            "npm ci in {} succeeded but {PACKAGE}@{VERSION} is not installed",
            dir.display()
        ))
    }
}

/// The loud line printed when the JS client smoke test cannot run.
pub fn skip_banner(reason: &str) -> String {
    let line = "=".repeat(78);
    format!("{line}\nJS CLIENT SMOKE: SKIPPED — {reason}\n{line}")
}
