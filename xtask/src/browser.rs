//! Headless Chromium for the web console's browser tests: Debian's `chromium` and
//! `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`), installed with
//! `apt-get install -y chromium chromium-driver` when missing and we are root. The paths go to
//! the tests as `AGENT_WEBKIT_CHROMIUM` / `AGENT_WEBKIT_CHROMEDRIVER`; when they cannot be had,
//! `AGENT_WEBKIT_BROWSER_SKIP=<reason>` (the tests then skip loudly; under `CI` they fail
//! unless this reason is set, and xtask itself fails the run under `CI`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::postgres::{is_root, run_bounded, text};

/// Environment variable holding the Chromium binary for the tests.
pub const CHROMIUM_ENV: &str = "AGENT_WEBKIT_CHROMIUM";
/// Environment variable holding the chromedriver binary for the tests.
pub const CHROMEDRIVER_ENV: &str = "AGENT_WEBKIT_CHROMEDRIVER";
/// Environment variable through which the tests learn why the browser is unavailable.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_BROWSER_SKIP";

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn present() -> bool {
    PathBuf::from(CHROMIUM).is_file() && PathBuf::from(CHROMEDRIVER).is_file()
}

/// `(chromium, chromedriver)`, installing the packages first when missing.
pub fn ensure() -> Result<(PathBuf, PathBuf), String> {
    if !present() {
        if !is_root() {
            return Err(format!(
                "{CHROMIUM} or {CHROMEDRIVER} missing (and not root, so no apt-get install; \
                 run `apt-get install chromium chromium-driver`)"
            ));
        }
        eprintln!("xtask: no headless Chromium; apt-get install -y chromium chromium-driver");
        for args in [
            &["update"][..],
            &[
                "install",
                "-y",
                "--no-install-recommends",
                "chromium",
                "chromium-driver",
            ][..],
        ] {
            let mut cmd = Command::new("apt-get");
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            let out = run_bounded(cmd, "apt-get", Duration::from_secs(900))?;
            if !out.status.success() {
                let all = text(&out);
                let tail: String = all
                    .chars()
                    .skip(all.chars().count().saturating_sub(600))
                    .collect();
                return Err(format!(
                    "apt-get {} failed ({}): {tail}",
                    args[0], out.status
                ));
            }
        }
        if !present() {
            return Err(format!(
                "apt-get ran, but {CHROMIUM} / {CHROMEDRIVER} are still missing"
            ));
        }
    }
    let mut version = Command::new(CHROMEDRIVER);
    version.arg("--version");
    let out = run_bounded(version, "chromedriver --version", Duration::from_secs(20))?;
    if !out.status.success() {
        return Err(format!("{CHROMEDRIVER} --version failed: {}", text(&out)));
    }
    eprintln!("xtask: {}", String::from_utf8_lossy(&out.stdout).trim());
    Ok((PathBuf::from(CHROMIUM), PathBuf::from(CHROMEDRIVER)))
}

/// The banner printed when the browser tests are skipped.
pub fn skip_banner(reason: &str) -> String {
    let line = "=".repeat(78);
    format!("{line}\nBROWSER (CONSOLE) TESTS: SKIPPED — {reason}\n{line}")
}
