//! Provisioning of the Python original (`agent-webkit-server` 0.2.0, FastAPI + uvicorn) that
//! `cargo xtask bench` runs side by side with our server.
//!
//! `bench/python/requirements.txt` pins the original and its serving stack. [`ensure`] creates a
//! virtualenv in a cache folder outside the clone — `$AGENT_WEBKIT_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/agent-webkit`, else `~/.cache/agent-webkit`, subfolder
//! `python-original-0.2.0` — with `python3 -m venv` (`$AGENT_WEBKIT_PYTHON` overrides the
//! interpreter) and `pip install -r requirements.txt`, then writes a marker holding a hash of the
//! requirements and the interpreter version. Idempotent: when the marker matches, nothing runs.
//!
//! Start the original with the returned interpreter and [`serve_script`]:
//! `<python> bench/python/serve.py --host 127.0.0.1 --port 0 --token T [--ring-size N]
//! [--idle-timeout S]`; it prints `agent-webkit-python listening on http://HOST:PORT` once it
//! accepts connections. Sessions run the fake agent of `bench/python/fake_agent.py` (scenario =
//! the session's `model`: `echo`, `stream:N[:ms[:bytes]]`).
// Until `cargo xtask bench` calls it (the bench orchestration wires this module in).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The version of the original that `bench/python/requirements.txt` pins.
pub const VERSION: &str = "0.2.0";

/// Environment variable naming the interpreter used to create the virtualenv (default `python3`).
pub const PYTHON_ENV: &str = "AGENT_WEBKIT_PYTHON";

/// Upper bound for `pip install` (claude-agent-sdk bundles the CLI: a ~70 MB wheel).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// Upper bound for `python -m venv` (includes bootstrapping pip with ensurepip).
const VENV_TIMEOUT: Duration = Duration::from_secs(180);

/// Upper bound for the interpreter probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Name of the marker file written after a successful install.
const MARKER: &str = "installed.marker";

fn non_empty(key: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(key).filter(|v| !v.is_empty())
}

/// The cache folder for the pinned version.
fn install_dir() -> Result<PathBuf, String> {
    crate::cache_install_dir(&format!("python-original-{VERSION}"))
}

/// `bench/python` in the clone.
fn source_dir() -> PathBuf {
    crate::root().join("bench").join("python")
}

/// `bench/python/serve.py`: run it with the interpreter [`ensure`] returns.
pub fn serve_script() -> PathBuf {
    source_dir().join("serve.py")
}

/// The interpreter inside a virtualenv.
fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// FNV-1a, 64 bits: stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Waits for `child` at most `limit`; kills it on timeout.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> Result<ExitStatus, String> {
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

/// Runs `cmd` to completion within `limit`, its stdout and stderr going to our stderr (stdout
/// belongs to the caller's report).
fn run(cmd: &mut Command, limit: Duration, what: &str) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let status = wait_bounded(&mut child, limit, what)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// `major.minor.micro` of `python`, checked to be at least 3.10 (the original's
/// `Requires-Python`).
fn python_version(python: &Path) -> Result<String, String> {
    let what = format!("{} --version probe", python.display());
    let mut child = Command::new(python)
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {} (install Python >= 3.10, or set {PYTHON_ENV}): {e}",
                python.display()
            )
        })?;
    let status = wait_bounded(&mut child, PROBE_TIMEOUT, &what)?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !status.success() {
        return Err(format!("{what} failed ({status})"));
    }
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(3), Some(minor)) if minor >= 10 => Ok(version),
        _ => Err(format!(
            "{} is Python {version:?}; agent-webkit-server {VERSION} needs >= 3.10 (set {PYTHON_ENV})",
            python.display()
        )),
    }
}

/// Makes sure the pinned original is installed in the cached virtualenv; returns the
/// virtualenv's `python`, or why it is unavailable.
pub fn ensure() -> Result<PathBuf, String> {
    let requirements_path = source_dir().join("requirements.txt");
    let requirements = std::fs::read(&requirements_path)
        .map_err(|e| format!("cannot read {}: {e}", requirements_path.display()))?;
    let pin = format!("agent-webkit-server[fastapi]=={VERSION}");
    if !String::from_utf8_lossy(&requirements).contains(&pin) {
        return Err(format!(
            "{} does not pin {pin} (update xtask/src/python_original.rs VERSION too)",
            requirements_path.display()
        ));
    }
    let base_python = non_empty(PYTHON_ENV).map_or_else(
        || PathBuf::from(if cfg!(windows) { "python" } else { "python3" }),
        PathBuf::from,
    );
    let version = python_version(&base_python)?;
    let dir = install_dir()?;
    let venv = dir.join("venv");
    let python = venv_python(&venv);
    let marker_path = dir.join(MARKER);
    let marker = format!(
        "requirements fnv1a64 {:016x}\npython {version}\n",
        fnv1a64(&[&requirements, version.as_bytes()])
    );
    let current = std::fs::read_to_string(&marker_path).unwrap_or_default();
    if current == marker && python.is_file() {
        return Ok(python);
    }

    // Anything else in the folder is stale or half-done: start over.
    let _ = std::fs::remove_file(&marker_path);
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .map_err(|e| format!("cannot remove stale {}: {e}", venv.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    eprintln!(
        "xtask: installing agent-webkit-server {VERSION} (Python {version}) into {}",
        venv.display()
    );
    let started = Instant::now();
    run(
        Command::new(&base_python).arg("-m").arg("venv").arg(&venv),
        VENV_TIMEOUT,
        &format!(
            "{} -m venv {} (on Debian/Ubuntu: apt-get install python3-venv)",
            base_python.display(),
            venv.display()
        ),
    )?;
    if !python.is_file() {
        return Err(format!(
            "{} -m venv succeeded but {} is missing",
            base_python.display(),
            python.display()
        ));
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-q",
                "-r",
            ])
            .arg(&requirements_path)
            .env("PIP_NO_INPUT", "1"),
        INSTALL_TIMEOUT,
        &format!("pip install -r {}", requirements_path.display()),
    )?;
    // The modules serve.py needs, imported the way it imports them.
    run(
        Command::new(&python).args([
            "-c",
            "import agent_webkit_server.adapters.fastapi, agent_webkit_server.session, uvicorn",
        ]),
        PROBE_TIMEOUT,
        "import check of the installed original",
    )?;
    std::fs::write(&marker_path, marker)
        .map_err(|e| format!("cannot write {}: {e}", marker_path.display()))?;
    eprintln!(
        "xtask: agent-webkit-server {VERSION} installed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(python)
}
