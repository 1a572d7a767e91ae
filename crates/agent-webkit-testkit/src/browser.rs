//! Headless Chromium driven over WebDriver (feature `browser`), for the web console's tests.
//!
//! [`browser_or_skip`] finds Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`, or `AGENT_WEBKIT_CHROMIUM` / `AGENT_WEBKIT_CHROMEDRIVER`), which
//! `cargo xtask test` installs with apt-get when missing; without them it prints a loud
//! SKIPPED line, or panics when `CI` is set and xtask did not say why
//! (`AGENT_WEBKIT_BROWSER_SKIP`). [`Browser::start`] runs chromedriver in its own process
//! group with a fresh profile directory and opens one WebDriver session; dropping the
//! [`Browser`] kills the group (chromedriver and every Chromium process), so no browser
//! outlives a failed test. Waits poll a condition in the page ([`Browser::wait_js`]), never a
//! fixed sleep.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::real_cli::TempDir;
use crate::{Result, TestkitError};

/// Environment variable overriding the Chromium binary.
pub const CHROMIUM_ENV: &str = "AGENT_WEBKIT_CHROMIUM";
/// Environment variable overriding the chromedriver binary.
pub const CHROMEDRIVER_ENV: &str = "AGENT_WEBKIT_CHROMEDRIVER";
/// Environment variable through which xtask reports why the browser is unavailable.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_BROWSER_SKIP";

/// Chromium flags for a closed network: headless, no sandbox (root in containers), and none of
/// the background connections (component updates, sync, QUIC probes) that are refused here.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1280,900",
];

fn binary(env: &str, default: &str) -> std::result::Result<PathBuf, String> {
    let path = std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found (apt-get install chromium chromium-driver, or set {env})",
            path.display()
        ))
    }
}

/// `(chromium, chromedriver)`, or `None` after printing `<test>: SKIPPED (browser): <reason>`.
/// Panics in CI unless xtask reported why the browser is missing.
#[allow(clippy::panic)]
pub fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found = binary(CHROMIUM_ENV, "/usr/bin/chromium")
        .and_then(|chromium| Ok((chromium, binary(CHROMEDRIVER_ENV, "/usr/bin/chromedriver")?)));
    match found {
        Ok(pair) => Some(pair),
        Err(reason) => {
            let reason = std::env::var(SKIP_ENV)
                .ok()
                .filter(|v| !v.is_empty())
                .map_or(reason.clone(), |why| format!("{why} ({reason})"));
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            let reported = std::env::var_os(SKIP_ENV).is_some_and(|v| !v.is_empty());
            if ci && !reported {
                panic!("{test}: headless Chromium unavailable in CI: {reason}");
            }
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** {test}: SKIPPED (browser): {reason} ***\n"
            );
            None
        }
    }
}

/// One headless Chromium behind chromedriver, with one WebDriver session.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver (own process group, free port) and a Chromium session with
    /// [`CHROMIUM_ARGS`] and a fresh `--user-data-dir`.
    pub async fn start(chromium: &Path, chromedriver: &Path) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = driver
            .stdout
            .take()
            .ok_or_else(|| TestkitError::Unexpected("chromedriver: no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("started successfully") {
                    return Ok(());
                }
            }
            Err(TestkitError::Unexpected(
                "chromedriver exited before it was ready".into(),
            ))
        };
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .map_err(|_| TestkitError::Timeout("chromedriver start".into()))??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = TempDir::new("chromium-profile")?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| TestkitError::Unexpected(format!("WebDriver session: {e}")))?;
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Evaluates `script` (a function body: `return …`) with `args`.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(script, args)
            .await
            .map_err(|e| TestkitError::Unexpected(format!("script failed: {e}\n{script}")))
    }

    /// Polls the page until `script` (a function body) returns something truthy; returns it.
    /// Fails after `timeout` with `what` and the last value.
    pub async fn wait_js(&self, what: &str, script: &str, timeout: Duration) -> Result<Value> {
        let started = Instant::now();
        loop {
            let value = self.js(script, Vec::new()).await?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if started.elapsed() > timeout {
                return Err(TestkitError::Timeout(format!("{what} (last: {value})")));
            }
            // The page updates on its own events; this is only the polling period.
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    /// Waits (up to `timeout`) for the element `css` to exist.
    async fn element(&self, css: &str, timeout: Duration) -> Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| TestkitError::Timeout(format!("element {css}: {e}")))
    }

    /// Waits for the element `css` to exist, then clicks it.
    pub async fn click(&self, css: &str, timeout: Duration) -> Result<()> {
        let element = self.element(css, timeout).await?;
        element
            .click()
            .await
            .map_err(|e| TestkitError::Unexpected(format!("click {css}: {e}")))
    }

    /// Waits for the element `css`, clears it and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str, timeout: Duration) -> Result<()> {
        let element = self.element(css, timeout).await?;
        element
            .clear()
            .await
            .map_err(|e| TestkitError::Unexpected(format!("clear {css}: {e}")))?;
        element
            .send_keys(text)
            .await
            .map_err(|e| TestkitError::Unexpected(format!("type into {css}: {e}")))
    }

    /// Emulates `prefers-color-scheme: dark` (or light) through chromedriver's DevTools
    /// endpoint (`Emulation.setEmulatedMedia`).
    pub async fn prefer_dark(&self, dark: bool) -> Result<()> {
        let scheme = if dark { "dark" } else { "light" };
        let command = Cdp {
            cmd: "Emulation.setEmulatedMedia",
            params: json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        };
        self.client
            .issue_cmd(command)
            .await
            .map(drop)
            .map_err(|e| TestkitError::Unexpected(format!("emulate {scheme}: {e}")))
    }

    /// Saves a PNG screenshot of the page to `path` (creating its folder).
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| TestkitError::Unexpected(format!("screenshot: {e}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Ends the WebDriver session (Chromium exits), then chromedriver.
    pub async fn close(mut self) -> Result<()> {
        let closed = self.client.clone().close().await;
        self.kill_group();
        let _ = self.driver.wait().await;
        closed.map_err(|e| TestkitError::Unexpected(format!("closing the session: {e}")))
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.driver.id() {
            // The whole group: chromedriver and the Chromium processes it started.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A Chrome DevTools Protocol call through chromedriver (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> std::result::Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}
