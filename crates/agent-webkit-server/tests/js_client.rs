//! The published JavaScript client `@agent-webkit/core` 0.2.0 against the server binary, once per
//! web framework: starts `agent-webkit-server --agent replay --token <t> --framework <fw>` and runs
//! `node --test tests/js/smoke.mjs` (create, stream, permission round trip, forced disconnect and
//! `Last-Event-ID` resume, second turn, DELETE → `done`) against it.
//!
//! The client is installed outside the clone by `cargo xtask test` (`xtask/src/js_client.rs`),
//! which exports `AGENT_WEBKIT_JS_DEPS=<cache>/js-client-0.2.0/node_modules`; without it an
//! existing install in that cache folder is used. ESM ignores `NODE_PATH`, so the test copies
//! `smoke.mjs` into a temp folder next to a `node_modules` symlink to the install.
//!
//! When node or the install is unavailable the test prints `SKIPPED (JS client smoke): <reason>`
//! and passes — except in CI (`CI` set) without `AGENT_WEBKIT_JS_SKIP` (xtask's report of a failed
//! install), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_webkit_testkit::{cache_dir, ServerProcess};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const TOKEN: &str = "js-smoke-token";
const DEPS_ENV: &str = "AGENT_WEBKIT_JS_DEPS";
const SKIP_ENV: &str = "AGENT_WEBKIT_JS_SKIP";
const CLIENT_VERSION: &str = "0.2.0";
/// The whole `node --test` run (a few seconds normally; each wait inside is bounded by 10 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(180);

fn non_empty(key: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(key).filter(|v| !v.is_empty())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn has_client(modules: &Path) -> bool {
    modules
        .join("@agent-webkit/core/package.json")
        .metadata()
        .is_ok_and(|m| m.is_file())
}

/// xtask's cache folder (`$AGENT_WEBKIT_CACHE_DIR`, `$XDG_CACHE_HOME/agent-webkit`,
/// `~/.cache/agent-webkit`) plus `js-client-<version>`.
fn cache_install_dir() -> Option<PathBuf> {
    Some(cache_dir::cache_root()?.join(format!("js-client-{CLIENT_VERSION}")))
}

/// The installed `node_modules`, or why it is unavailable.
fn js_deps() -> Result<PathBuf, String> {
    if let Some(dir) = non_empty(DEPS_ENV) {
        let dir = PathBuf::from(dir);
        return if has_client(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "{DEPS_ENV}={} holds no @agent-webkit/core",
                dir.display()
            ))
        };
    }
    if let Some(reason) = std::env::var(SKIP_ENV).ok().filter(|v| !v.is_empty()) {
        return Err(reason);
    }
    if let Some(dir) = cache_install_dir() {
        // Only an install of exactly the committed lockfile counts.
        let committed = std::fs::read(workspace_root().join("tests/js/package-lock.json"));
        let cached = std::fs::read(dir.join("package-lock.json"));
        let modules = dir.join("node_modules");
        if matches!((committed, cached), (Ok(a), Ok(b)) if a == b) && has_client(&modules) {
            return Ok(modules);
        }
    }
    Err(format!(
        "{DEPS_ENV} is not set and no current install was found in the cache folder (run \
         `cargo xtask test`, or `npm ci` a copy of tests/js/package*.json and export {DEPS_ENV})"
    ))
}

/// `node --version`, or why node cannot run.
async fn node_version() -> Result<String, String> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new("node")
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "node --version timed out".to_owned())?
    .map_err(|e| format!("cannot run node (is Node.js installed?): {e}"))?;
    if !output.status.success() {
        return Err(format!("node --version failed ({})", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The deps and node version, or `None` after printing the loud SKIPPED line (a failure in CI
/// unless xtask reported why the install is missing).
async fn deps_or_skip(test: &str) -> Option<(PathBuf, String)> {
    let found = match js_deps() {
        Ok(deps) => node_version().await.map(|node| (deps, node)),
        Err(reason) => Err(reason),
    };
    match found {
        Ok(found) => Some(found),
        Err(reason) => {
            let ci = non_empty("CI").is_some();
            let reported = non_empty(SKIP_ENV).is_some();
            assert!(
                !ci || reported,
                "{test}: JS client smoke unavailable in CI: {reason}"
            );
            // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** {test}: SKIPPED (JS client smoke): {reason} ***\n"
            );
            None
        }
    }
}

/// A temp folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(target, link)
}

async fn smoke(framework: &str) {
    let test = format!("js_client::{framework}");
    let Some((deps, node)) = deps_or_skip(&test).await else {
        return;
    };
    let root = workspace_root();
    let run_dir = TempDir::new(&format!("agent-webkit-js-smoke-{framework}"));
    symlink_dir(&deps, &run_dir.0.join("node_modules")).unwrap();
    let script = run_dir.0.join("smoke.mjs");
    std::fs::copy(root.join("tests/js/smoke.mjs"), &script).unwrap();

    let server = ServerProcess::spawn(
        BIN,
        &[
            "--agent",
            "replay",
            "--token",
            TOKEN,
            "--framework",
            framework,
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{test}: server with --framework {framework} did not start: {e}"));

    let started = Instant::now();
    let run = Command::new("node")
        .arg("--test")
        .arg(&script)
        .current_dir(&root)
        .env("AGENT_WEBKIT_URL", &server.base_url)
        .env("AGENT_WEBKIT_TOKEN", TOKEN)
        .env("AGENT_WEBKIT_FRAMEWORK", framework)
        .env(DEPS_ENV, &deps)
        .env("NODE_PATH", &deps)
        .env_remove("NODE_OPTIONS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(NODE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{test}: node --test did not finish within {NODE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{test}: cannot run node: {e}"));
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "{test}: node {node} --test tests/js/smoke.mjs against {} (--framework {framework}): {} \
         in {:.1}s\n--- node stdout ---\n{stdout}\n--- node stderr ---\n{stderr}",
        server.base_url,
        output.status,
        elapsed.as_secs_f64()
    );
    assert!(output.status.success(), "{report}");
    assert!(
        stdout.contains("# fail 0") && !stdout.contains("# pass 0"),
        "{test}: unexpected node summary\n{report}"
    );
    println!("{report}");
}

#[tokio::test]
async fn axum() {
    smoke("axum").await;
}

#[tokio::test]
async fn actix() {
    smoke("actix").await;
}
