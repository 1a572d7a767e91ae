//! Project automation, rust-analyzer style: `cargo xtask <task>`.
//!
//! - `cargo xtask test` — everything CI runs: format check, clippy (`-D warnings`), tidy, every test.
//! - `cargo xtask tidy` — repository invariants (doc links, framework-free core, adapter size,
//!   rustdoc warnings, MSRV, module docs); see [`tidy`].
//! - `cargo xtask bench` — load benchmarks (not part of `test`).
//! - `cargo xtask claude-cli` — install the pinned real Claude CLI (if needed) and print its path.
//! - `cargo xtask js-client` — install the pinned JS client (if needed) and print its `node_modules`.
//!
//! `test` provisions the real Claude Code CLI first (see [`claude_cli`]) and hands its path to
//! the end-to-end tests as `AGENT_WEBKIT_CLAUDE_CLI`; when that fails it prints a loud banner and
//! exports `AGENT_WEBKIT_CLAUDE_CLI_SKIP=<reason>` instead (those tests then skip, loudly).
//! Likewise it installs the published JS client for the JS smoke test (see [`js_client`]) and
//! exports `AGENT_WEBKIT_JS_DEPS=<node_modules>`, or `AGENT_WEBKIT_JS_SKIP=<reason>`.
//! And it starts a throwaway PostgreSQL for the Postgres store tests (see [`postgres`]),
//! exporting `AGENT_WEBKIT_PG_DSN` (and `AGENT_WEBKIT_PG_RESTART`, a `sh -c` command line that
//! restarts that server, for the outage tests), or `AGENT_WEBKIT_PG_SKIP=<reason>`; it is stopped
//! afterwards, whatever the tests did. `cargo xtask with-postgres <cmd…>` runs one command the same way.
//! And it provides headless Chromium + chromedriver for the web console's browser tests (see
//! [`browser`]), or `AGENT_WEBKIT_BROWSER_SKIP=<reason>` (fatal under `CI`).
//! And it finds (or apt-get installs) the distribution's nginx for the reverse-proxy test (see
//! [`nginx`]), exporting `AGENT_WEBKIT_NGINX`, or `AGENT_WEBKIT_NGINX_SKIP=<reason>`.

mod bench;
mod bench_lifecycle;
mod bench_restart;
mod bench_stores;
mod browser;
// One definition of the cache folder, shared with the testkit without depending on it.
#[path = "../../crates/agent-webkit-testkit/src/cache_dir.rs"]
mod cache_dir;
mod claude_cli;
mod js_client;
mod nginx;
mod postgres;
mod python_original;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("tidy") => tidy::tidy(&root()),
        Some("claude-cli") => claude_cli::ensure().map(|path| println!("{}", path.display())),
        Some("js-client") => js_client::ensure().map(|path| println!("{}", path.display())),
        Some("with-postgres") => with_postgres(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("help") | Some("--help") | Some("-h") | None => {
            println!("usage: cargo xtask <test|tidy|bench|claude-cli|js-client>\n\n  test        fmt check, clippy -D warnings, tidy, all tests (what CI runs)\n              --no-lint  skip fmt, clippy and tidy\n  tidy        doc links, framework-free core, adapter line budget, cargo doc -D warnings,\n              MSRV, module docs\n  bench       load benchmarks (cargo xtask bench --help)\n  claude-cli  install the pinned real Claude CLI (if needed) and print its path\n  js-client   install the pinned JS client (if needed) and print its node_modules path\n  with-postgres <cmd…>  run a command with a throwaway PostgreSQL (AGENT_WEBKIT_PG_DSN,\n                        AGENT_WEBKIT_PG_RESTART)");
            Ok(())
        }
        Some(other) => Err(format!("unknown task {other:?}; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `<cache folder>/<name>`, the install folder of one pinned download (see [`cache_dir`]).
fn cache_install_dir(name: &str) -> Result<PathBuf, String> {
    cache_dir::cache_root()
        .map(|root| root.join(name))
        .ok_or_else(|| "no cache folder: set AGENT_WEBKIT_CACHE_DIR (HOME is not set)".into())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Provisions the real CLI and puts its path (or the reason it is missing) into `tests`' env;
/// returns the skip reason, if any. Never fails the run.
fn provide_real_cli(tests: &mut Command) -> Option<String> {
    let preset = std::env::var_os(claude_cli::CLI_ENV).filter(|v| !v.is_empty());
    let found = match preset {
        Some(path) if Path::new(&path).is_file() => Ok(PathBuf::from(path)),
        Some(path) => Err(format!(
            "{}={} is not a file",
            claude_cli::CLI_ENV,
            Path::new(&path).display()
        )),
        None => {
            eprintln!("xtask: ==> real Claude CLI {}", claude_cli::VERSION);
            claude_cli::ensure()
        }
    };
    match found {
        Ok(path) => {
            eprintln!("xtask: real Claude CLI: {}", path.display());
            tests
                .env(claude_cli::CLI_ENV, &path)
                .env_remove(claude_cli::SKIP_ENV);
            None
        }
        Err(reason) => {
            eprintln!("{}", claude_cli::skip_banner(&reason));
            tests
                .env(claude_cli::SKIP_ENV, &reason)
                .env_remove(claude_cli::CLI_ENV);
            Some(reason)
        }
    }
}

/// Installs the pinned JS client and puts its `node_modules` (or the reason it is missing) into
/// `tests`' env; returns the skip reason, if any. Never fails the run.
fn provide_js_client(tests: &mut Command) -> Option<String> {
    eprintln!(
        "xtask: ==> JS client {}@{}",
        js_client::PACKAGE,
        js_client::VERSION
    );
    match js_client::ensure() {
        Ok(modules) => {
            eprintln!("xtask: JS client: {}", modules.display());
            tests
                .env(js_client::DEPS_ENV, &modules)
                .env_remove(js_client::SKIP_ENV);
            // The published React reducer comes with the same install (tests/js/package.json).
            let reducer = modules.join("@agent-webkit/react/dist/reducer.js");
            if reducer.is_file() {
                tests.env("AGENT_WEBKIT_REACT_REDUCER", reducer);
            }
            None
        }
        Err(reason) => {
            eprintln!("{}", js_client::skip_banner(&reason));
            tests
                .env(js_client::SKIP_ENV, &reason)
                .env_remove(js_client::DEPS_ENV);
            Some(reason)
        }
    }
}

/// Provides headless Chromium and chromedriver (apt-get when missing) and puts their paths (or
/// the reason they are missing) into `tests`' env; returns the skip reason, if any.
fn provide_browser(tests: &mut Command) -> Option<String> {
    eprintln!("xtask: ==> headless Chromium (chromium, chromium-driver)");
    match browser::ensure() {
        Ok((chromium, driver)) => {
            tests
                .env(browser::CHROMIUM_ENV, chromium)
                .env(browser::CHROMEDRIVER_ENV, driver)
                .env_remove(browser::SKIP_ENV);
            None
        }
        Err(reason) => {
            eprintln!("{}", browser::skip_banner(&reason));
            tests
                .env(browser::SKIP_ENV, &reason)
                .env_remove(browser::CHROMIUM_ENV)
                .env_remove(browser::CHROMEDRIVER_ENV);
            Some(reason)
        }
    }
}

/// Starts a throwaway PostgreSQL (unless `AGENT_WEBKIT_PG_DSN` is already set) and puts its
/// DSN and restart command (or the reason it is missing) into `tests`' env. With a preset DSN,
/// a preset `AGENT_WEBKIT_PG_RESTART` is passed on as is (xtask cannot restart that server). Returns the handle that stops it on
/// drop, and the skip reason, if any. Never fails the run.
fn provide_postgres(tests: &mut Command) -> (Option<postgres::PgHandle>, Option<String>) {
    if std::env::var_os(postgres::DSN_ENV).is_some_and(|v| !v.is_empty()) {
        eprintln!("xtask: PostgreSQL: using the preset {}", postgres::DSN_ENV);
        tests.env_remove(postgres::SKIP_ENV);
        return (None, None);
    }
    eprintln!("xtask: ==> throwaway PostgreSQL");
    let started = Instant::now();
    match postgres::start() {
        Ok(handle) => {
            eprintln!(
                "xtask: PostgreSQL ({}) up in {:.1}s",
                handle.version(),
                started.elapsed().as_secs_f64()
            );
            tests
                .env(postgres::DSN_ENV, handle.dsn())
                .env(postgres::RESTART_ENV, handle.restart_command())
                .env_remove(postgres::SKIP_ENV);
            (Some(handle), None)
        }
        Err(reason) => {
            eprintln!("{}", postgres::skip_banner(&reason));
            tests
                .env(postgres::SKIP_ENV, &reason)
                .env_remove(postgres::DSN_ENV)
                .env_remove(postgres::RESTART_ENV);
            (None, Some(reason))
        }
    }
}

/// Finds (or installs) nginx and puts its path (or the reason it is missing) into `tests`' env;
/// returns the skip reason, if any. Never fails the run (the test itself fails in CI).
fn provide_nginx(tests: &mut Command) -> Option<String> {
    eprintln!("xtask: ==> nginx (reverse-proxy test)");
    match nginx::ensure() {
        Ok((bin, version)) => {
            eprintln!("xtask: nginx: {} ({version})", bin.display());
            tests.env(nginx::BIN_ENV, &bin).env_remove(nginx::SKIP_ENV);
            None
        }
        Err(reason) => {
            eprintln!("{}", nginx::skip_banner(&reason));
            tests
                .env(nginx::SKIP_ENV, &reason)
                .env_remove(nginx::BIN_ENV);
            Some(reason)
        }
    }
}

fn stop_postgres(handle: Option<postgres::PgHandle>) {
    if let Some(mut handle) = handle {
        let started = Instant::now();
        match handle.stop() {
            Ok(()) => eprintln!(
                "xtask: PostgreSQL stopped in {:.1}s",
                started.elapsed().as_secs_f64()
            ),
            Err(e) => eprintln!("xtask: stopping PostgreSQL: {e}"),
        }
    }
}

fn with_postgres(args: &[String]) -> Result<(), String> {
    let (program, rest) = args
        .split_first()
        .ok_or("usage: cargo xtask with-postgres <command> [args…]")?;
    let mut cmd = Command::new(program);
    cmd.args(rest);
    let (pg, skipped) = provide_postgres(&mut cmd);
    let outcome = run(program, &mut cmd);
    stop_postgres(pg);
    if let Some(reason) = &skipped {
        eprintln!("{}", postgres::skip_banner(reason));
    }
    outcome
}

fn run(step: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: ==> {step}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: cannot start: {e}"))?;
    eprintln!(
        "xtask: <== {step}: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn test(args: &[String]) -> Result<(), String> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    let started = Instant::now();
    if lint {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        run("cargo fmt --check", &mut fmt)?;
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run("cargo clippy -D warnings", &mut clippy)?;
        eprintln!("xtask: ==> tidy");
        let tidy_started = Instant::now();
        tidy::tidy(&root())?;
        eprintln!(
            "xtask: <== tidy: ok in {:.1}s",
            tidy_started.elapsed().as_secs_f64()
        );
    }
    let mut tests = cargo();
    // Every failing binary is reported, not only the first.
    tests.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    let skipped = provide_real_cli(&mut tests);
    let js_skipped = provide_js_client(&mut tests);
    let browser_skipped = provide_browser(&mut tests);
    if browser_skipped.is_some() && std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        return Err("CI is set and headless Chromium could not be provided".into());
    }
    let (pg, pg_skipped) = provide_postgres(&mut tests);
    let nginx_skipped = provide_nginx(&mut tests);
    let outcome = run("cargo test (unit, integration, property, HTTP)", &mut tests);
    // Stopped whatever the outcome (and on drop, should anything above panic).
    stop_postgres(pg);
    if let Some(reason) = &skipped {
        // Again at the end, where it cannot scroll away unnoticed.
        eprintln!("{}", claude_cli::skip_banner(reason));
    }
    if let Some(reason) = &js_skipped {
        eprintln!("{}", js_client::skip_banner(reason));
    }
    if let Some(reason) = &pg_skipped {
        eprintln!("{}", postgres::skip_banner(reason));
    }
    if let Some(reason) = &browser_skipped {
        eprintln!("{}", browser::skip_banner(reason));
    }
    if let Some(reason) = &nginx_skipped {
        eprintln!("{}", nginx::skip_banner(reason));
    }
    outcome?;
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    run("cargo test --doc", &mut doc)?;
    eprintln!(
        "xtask: all checks passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
