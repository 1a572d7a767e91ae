//! Project automation, rust-analyzer style: `cargo xtask <task>`.
//!
//! - `cargo xtask test` — everything CI runs: format check, clippy (`-D warnings`), every test.
//! - `cargo xtask bench` — load benchmarks (not part of `test`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => Err("benchmarks are not implemented yet (tracked as issue 6)".into()),
        Some("help") | Some("--help") | Some("-h") | None => {
            println!("usage: cargo xtask <test|bench>\n\n  test   fmt check, clippy -D warnings, all tests (what CI runs)\n         --no-lint  skip fmt and clippy\n  bench  load benchmarks");
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

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, mut cmd: Command) -> Result<(), String> {
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
        run("cargo fmt --check", fmt)?;
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run("cargo clippy -D warnings", clippy)?;
    }
    let mut tests = cargo();
    tests.args(["test", "--workspace", "--all-targets"]);
    run("cargo test (unit, integration, property, HTTP)", tests)?;
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    run("cargo test --doc", doc)?;
    eprintln!(
        "xtask: all checks passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
