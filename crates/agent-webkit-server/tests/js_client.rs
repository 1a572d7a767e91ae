//! The published JavaScript client `@agent-webkit/core` 0.2.0 against the server binary, once per
//! web framework (`node --test tests/js/<script>.mjs`):
//! - `smoke.mjs` against `--agent replay`: create, stream, permission round trip, forced
//!   disconnect and `Last-Event-ID` resume, second turn, DELETE → `done`; and the same with a
//!   JWT as the client's token, against a server that accepts only JWTs (`--jwt-secret`);
//! - `burst.mjs` against `--agent replay --ring-size 1000` (and a second server with ring 100 and
//!   a 1 MiB lag budget): bursts of 2 000 and 20 000 events reach a raw SSE reader and the
//!   client whole; a client that stops reading is cut with `evicted`, its reconnect is 412;
//! - `retry.mjs` against the real Claude CLI on the mock API answering 401: the client sees
//!   `api_retry` and `error {code:"authentication_failed"}` within a second of the mock's first
//!   failed call (skips loudly without the CLI, like every real-CLI test).
//!
//! The client is installed outside the clone by `cargo xtask test` (`xtask/src/js_client.rs`),
//! which exports `AGENT_WEBKIT_JS_DEPS=<cache>/js-client-0.2.0/node_modules`; without it an
//! existing install in that cache folder is used. ESM ignores `NODE_PATH`, so the test copies
//! the script into a temp folder next to a `node_modules` symlink to the install.
//!
//! When node or the install is unavailable the test prints `SKIPPED (JS client smoke): <reason>`
//! and passes — except in CI (`CI` set) without `AGENT_WEBKIT_JS_SKIP` (xtask's report of a failed
//! install), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::offline_env;
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

/// Runs `node --test tests/js/<script>` against servers already started, with `env` (the
/// servers' URLs and whatever the script reads); returns node's stdout. Panics with node's
/// output unless every test passed.
async fn node_test(
    test: &str,
    deps: &Path,
    node: &str,
    script: &str,
    env: &[(&str, &str)],
) -> String {
    let root = workspace_root();
    let run_dir = TempDir::new(&format!(
        "agent-webkit-js-{}",
        script.trim_end_matches(".mjs")
    ));
    symlink_dir(deps, &run_dir.0.join("node_modules")).unwrap();
    let copy = run_dir.0.join(script);
    std::fs::copy(root.join("tests/js").join(script), &copy).unwrap();
    let started = Instant::now();
    let mut command = Command::new("node");
    command
        .arg("--test")
        .arg(&copy)
        .current_dir(&root)
        .env(DEPS_ENV, deps)
        .env("NODE_PATH", deps)
        .env_remove("NODE_OPTIONS")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(NODE_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{test}: node --test did not finish within {NODE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{test}: cannot run node: {e}"));
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "{test}: node {node} --test tests/js/{script} ({env:?}): {} in {:.1}s\n--- node stdout \
         ---\n{stdout}\n--- node stderr ---\n{stderr}",
        output.status,
        elapsed.as_secs_f64()
    );
    assert!(output.status.success(), "{report}");
    assert!(
        stdout.contains("# fail 0") && !stdout.contains("# pass 0"),
        "{test}: unexpected node summary\n{report}"
    );
    println!("{report}");
    stdout
}

async fn replay_server(test: &str, framework: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec![
        "--agent",
        "replay",
        "--token",
        TOKEN,
        "--framework",
        framework,
    ];
    args.extend_from_slice(extra);
    ServerProcess::spawn(BIN, &args).await.unwrap_or_else(|e| {
        panic!("{test}: server with --framework {framework} did not start: {e}")
    })
}

async fn smoke(framework: &str) {
    let test = format!("js_client::{framework}");
    let Some((deps, node)) = deps_or_skip(&test).await else {
        return;
    };
    let server = replay_server(&test, framework, &[]).await;
    node_test(
        &test,
        &deps,
        &node,
        "smoke.mjs",
        &[
            ("AGENT_WEBKIT_URL", &server.base_url),
            ("AGENT_WEBKIT_TOKEN", TOKEN),
            ("AGENT_WEBKIT_FRAMEWORK", framework),
        ],
    )
    .await;
}

/// `tests/js/burst.mjs`: bursts of 2 000 and 20 000 events (ring 1 000) reach a raw reader and
/// the published client whole; a client that stops reading is cut with `evicted` past the lag
/// budget, and its reconnect is 412.
async fn burst(framework: &str) {
    let test = format!("js_client::burst_{framework}");
    let Some((deps, node)) = deps_or_skip(&test).await else {
        return;
    };
    let server = replay_server(&test, framework, &["--ring-size", "1000"]).await;
    let tight = replay_server(
        &test,
        framework,
        &["--ring-size", "100", "--lag-budget-bytes", "1048576"],
    )
    .await;
    node_test(
        &test,
        &deps,
        &node,
        "burst.mjs",
        &[
            ("AGENT_WEBKIT_URL", &server.base_url),
            ("AGENT_WEBKIT_TIGHT_URL", &tight.base_url),
            ("AGENT_WEBKIT_TOKEN", TOKEN),
        ],
    )
    .await;
}

/// `tests/js/retry.mjs`: the real CLI against the mock API answering 401; the published client
/// sees `api_retry` and `error {code:"authentication_failed"}` within a second of the mock's
/// first failed call.
async fn rejected_key(framework: &str) {
    let test = format!("js_client::rejected_key_{framework}");
    let cli = agent_webkit_testkit::require_real_cli!(&test);
    let Some((deps, node)) = deps_or_skip(&test).await else {
        return;
    };
    let mock = std::sync::Arc::new(MockAnthropicApi::start().await.unwrap());
    let home = agent_webkit_testkit::real_cli::TempDir::new("js-retry-home").unwrap();
    let work = agent_webkit_testkit::real_cli::TempDir::new("js-retry-work").unwrap();
    let env = offline_env(&mock, home.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let root = work.path().to_str().unwrap();
    let args = [
        "--token",
        TOKEN,
        "--framework",
        framework,
        "--agent",
        "claude",
        "--claude-path",
        cli.to_str().unwrap(),
        "--claude-setting-sources=",
        "--allowed-root",
        root,
    ];
    let server = ServerProcess::spawn_with_env(BIN, &args, &env)
        .await
        .unwrap_or_else(|e| panic!("{test}: server did not start: {e}"));
    // When the mock gets the first (failing) call, in epoch ms.
    let first_call = {
        let mock = std::sync::Arc::clone(&mock);
        tokio::spawn(async move {
            mock.wait_for_streaming_requests(1, NODE_TIMEOUT)
                .await
                .unwrap();
            epoch_ms()
        })
    };
    let stdout = node_test(
        &test,
        &deps,
        &node,
        "retry.mjs",
        &[
            ("AGENT_WEBKIT_URL", &server.base_url),
            ("AGENT_WEBKIT_TOKEN", TOKEN),
            ("AGENT_WEBKIT_CWD", root),
        ],
    )
    .await;
    let first_call = first_call.await.unwrap();
    let stamp = |key: &str| -> u128 {
        stdout
            .lines()
            // node --test prints a test's console output as `# ` comments.
            .find_map(|line| line.trim().trim_start_matches("# ").strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{test}: no {key} in node's output:\n{stdout}"))
    };
    let error_at = stamp("ERROR_AT=");
    let latency = error_at.saturating_sub(first_call);
    eprintln!(
        "{test}: authentication_failed reached the client {latency} ms after the first failed call"
    );
    assert!(
        latency < 1000,
        "{test}: {latency} ms after the first failed call"
    );
}

fn epoch_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// `smoke.mjs` with a JWT minted for one user as the client's token (docs/auth.md), against a
/// server with no shared token.
async fn smoke_with_jwt(framework: &str) {
    use agent_webkit_testkit::jwt_keys;
    let test = format!("js_client::jwt_{framework}");
    let Some((deps, node)) = deps_or_skip(&test).await else {
        return;
    };
    let args = [
        "--agent",
        "replay",
        "--jwt-secret",
        jwt_keys::SECRET,
        "--framework",
        framework,
    ];
    let server = ServerProcess::spawn(BIN, &args)
        .await
        .unwrap_or_else(|e| panic!("{test}: server did not start: {e}"));
    let token = jwt_keys::hs256(&jwt_keys::claims("js-user")).unwrap();
    node_test(
        &test,
        &deps,
        &node,
        "smoke.mjs",
        &[
            ("AGENT_WEBKIT_URL", &server.base_url),
            ("AGENT_WEBKIT_TOKEN", &token),
            ("AGENT_WEBKIT_FRAMEWORK", framework),
        ],
    )
    .await;
}

#[tokio::test]
async fn jwt_axum() {
    smoke_with_jwt("axum").await;
}

#[tokio::test]
async fn jwt_actix() {
    smoke_with_jwt("actix").await;
}

#[tokio::test]
async fn axum() {
    smoke("axum").await;
}

#[tokio::test]
async fn actix() {
    smoke("actix").await;
}

#[tokio::test]
async fn burst_axum() {
    burst("axum").await;
}

#[tokio::test]
async fn burst_actix() {
    burst("actix").await;
}

#[tokio::test]
async fn rejected_key_axum() {
    rejected_key("axum").await;
}

#[tokio::test]
async fn rejected_key_actix() {
    rejected_key("actix").await;
}
