//! The distribution's nginx for the reverse-proxy test (`crates/agent-webkit-server/tests/nginx_proxy.rs`,
//! which runs `deploy/nginx.conf` in front of two servers): found on `PATH` or in `/usr/sbin`;
//! when missing and we are root, `apt-get install -y nginx`. Only the executable is provided
//! (`AGENT_WEBKIT_NGINX`); the test starts and stops nginx itself, in a temporary prefix.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::postgres::{is_root, run_bounded, text};

/// Environment variable through which the test receives the nginx executable.
pub const BIN_ENV: &str = "AGENT_WEBKIT_NGINX";
/// Environment variable through which the test learns why nginx is unavailable.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_NGINX_SKIP";

fn find() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|path| path.is_file())
}

fn apt_install() -> Result<(), String> {
    eprintln!("xtask: no nginx; apt-get install -y nginx");
    for args in [
        &["update"][..],
        &["install", "-y", "--no-install-recommends", "nginx"][..],
    ] {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let out = run_bounded(cmd, "apt-get", Duration::from_secs(600))?;
        if !out.status.success() {
            let all = text(&out);
            let skip = all.chars().count().saturating_sub(600);
            let tail: String = all.chars().skip(skip).collect();
            return Err(format!(
                "apt-get {} failed ({}): {tail}",
                args[0], out.status
            ));
        }
    }
    Ok(())
}

/// The nginx executable (installed first when missing and we are root), with its version.
pub fn ensure() -> Result<(PathBuf, String), String> {
    let bin = match find() {
        Some(bin) => bin,
        None if is_root() => {
            apt_install()?;
            find().ok_or("apt-get installed nginx, but it is not on PATH or in /usr/sbin")?
        }
        None => {
            return Err(
                "no nginx on PATH or in /usr/sbin (and not root, so no apt-get install)".into(),
            )
        }
    };
    let mut version = Command::new(&bin);
    version.arg("-v");
    let out = run_bounded(version, "nginx -v", Duration::from_secs(20))?;
    if !out.status.success() {
        return Err(format!("{} -v failed: {}", bin.display(), text(&out)));
    }
    Ok((bin, text(&out)))
}

/// The loud line printed when the nginx test cannot run.
pub fn skip_banner(reason: &str) -> String {
    let line = "=".repeat(78);
    format!("{line}\nNGINX REVERSE-PROXY TEST: SKIPPED — {reason}\n{line}")
}
