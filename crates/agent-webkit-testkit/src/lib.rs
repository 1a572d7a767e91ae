//! # agent-webkit-testkit
//!
//! Black-box test helpers for agent-webkit servers:
//! - [`ServerProcess`] starts a server binary on a free port and stops it on drop;
//! - [`Client`] speaks wire protocol 1.0 over real HTTP (create, input, delete, stream);
//! - [`SseStream`] parses an SSE response into [`SseFrame`]s, keepalive comments included;
//! - [`cache_dir::cache_root`] is the folder xtask installs pinned downloads into;
//! - [`http_fuzz`] generates hostile HTTP requests (proptest) and judges the answers;
//! - [`cut_proxy`] is a TCP proxy that drops every open connection on demand;
//! - `browser` (feature `browser`) drives headless Chromium over WebDriver.
//! - [`tap`] records every response a server sends through a transparent relay.
//!
//! The scripted agent lives in `agent-webkit-replay` and is re-exported here as [`replay`].

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use agent_webkit_replay as replay;

#[cfg(feature = "browser")]
pub mod browser;
pub mod cache_dir;
pub mod conformance;
pub mod cut_proxy;
pub mod fake_claude;
pub mod fake_mcp;
pub mod http_fuzz;
pub mod jwt_keys;
pub use fake_claude::fake_claude_path;

pub mod mock_api;
pub mod real_cli;
pub mod tap;

/// Whether process `pid` is still running (Linux `/proc`; a zombie counts as gone: it has
/// exited and only waits to be reaped).
pub fn process_alive(pid: u64) -> bool {
    let zombie = |stat: &str| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A killed multi-threaded process shows its main thread as a zombie while the other
    // threads are still exiting, and its files (a lock, say) are released only by the last
    // one: it is gone once every thread is.
    match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks.flatten().any(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| !zombie(&stat))
        }),
        Err(_) => !zombie(&stat),
    }
}

/// SIGKILLs process `pid` (no shutdown path runs) and waits until it is gone (every thread:
/// see [`process_alive`]), at most `timeout`.
pub async fn kill_and_wait(pid: u32, timeout: std::time::Duration) -> Result<()> {
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await?;
    if !killed.success() {
        return Err(TestkitError::Unexpected(format!(
            "kill -KILL {pid}: {killed}"
        )));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while process_alive(u64::from(pid)) {
        if tokio::time::Instant::now() > deadline {
            return Err(TestkitError::Timeout(format!("process {pid} to die")));
        }
        // Bounded poll: a signalled process's death is no event we can await.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until process `pid` has no live `claude` child (its agent hibernated or stopped), at
/// most `timeout`. Polls `/proc`: no event says that a process is gone.
pub async fn until_no_claude_children(pid: u32, timeout: std::time::Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !claude_children(pid).is_empty() {
        if tokio::time::Instant::now() > deadline {
            return Err(TestkitError::Timeout(format!(
                "the claude children of {pid} to stop"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Live (non-zombie) children of process `pid` whose command line mentions `claude`, with
/// that command line (arguments joined by spaces). Linux `/proc`.
pub fn claude_children(pid: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let (state, ppid) = (fields.next(), fields.next());
            ppid == Some(pid.to_string().as_str()) && !matches!(state, Some("Z" | "X"))
        })
        .filter_map(|child| {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains("claude").then_some((child, cmdline))
        })
        .collect()
}

/// Test helper failures.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// HTTP failure.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// Process failure.
    #[error("process: {0}")]
    Io(#[from] std::io::Error),
    /// Unexpected response.
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// Nothing arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// Result alias.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// A server process started for a test; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The temporary `--data-dir` given to a server started without a storage flag (removed
    /// on drop, after the process).
    data_dir: Option<real_cli::TempDir>,
}

/// Flags that choose the storage; a server started without any of them gets its own temporary
/// `--data-dir` (the default SQLite store), so tests never share the per-user directory.
const STORAGE_FLAGS: &[&str] = &["--data-dir", "--store", "--database-url"];

impl ServerProcess {
    /// Starts `binary` with `args` plus `--host 127.0.0.1 --port 0`, and waits (up to 30 s) for
    /// its `listening on http://ADDR` line.
    pub async fn spawn(binary: impl AsRef<Path>, args: &[&str]) -> Result<Self> {
        Self::spawn_with_env(binary, args, &[]).await
    }

    /// [`spawn`](Self::spawn) with extra environment variables. Without a storage flag
    /// (`--data-dir`, `--store`, `--database-url`) the server gets a fresh temporary
    /// `--data-dir`.
    pub async fn spawn_with_env(
        binary: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut command = Command::new(binary.as_ref());
        let chooses_storage = args.iter().any(|a| {
            STORAGE_FLAGS
                .iter()
                .any(|f| a.split('=').next() == Some(*f))
        });
        let data_dir = if chooses_storage {
            None
        } else {
            let dir = real_cli::TempDir::new("data")?;
            command.arg("--data-dir").arg(dir.path());
            Some(dir)
        };
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env_remove("AGENT_WEBKIT_AUTH_TOKEN")
            .env_remove("AGENT_WEBKIT_TOKEN")
            .env_remove("AGENT_WEBKIT_NO_AUTH")
            .env_remove("AGENT_WEBKIT_DATA_DIR")
            .env_remove("AGENT_WEBKIT_STORE")
            .env_remove("AGENT_WEBKIT_DATABASE_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| TestkitError::Unexpected("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.split("listening on ").nth(1) {
                    return Ok(url.trim().to_owned());
                }
            }
            Err(TestkitError::Unexpected(
                "server exited before listening".into(),
            ))
        };
        let base_url = tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .map_err(|_| TestkitError::Timeout("server start".into()))??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            base_url,
            data_dir,
        })
    }

    /// The temporary data directory this server was given, if it chose no storage itself.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(real_cli::TempDir::path)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the process to exit; returns its status.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        if let Some(pid) = self.child.id() {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
            if !status.success() {
                return Err(TestkitError::Unexpected("kill -TERM failed".into()));
            }
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => Ok(None),
        }
    }

    /// A client for this server.
    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.base_url, token)
    }
}

/// A wire-protocol client over real HTTP.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL, no trailing slash.
    pub base_url: String,
    token: Option<String>,
}

impl Client {
    /// A client for `base_url`, sending `Authorization: Bearer <token>` when given.
    pub fn new(base_url: &str, token: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap_or_default(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
        }
    }

    /// The same client with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    /// The underlying reqwest client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request builder for `path` with the auth header set.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// `POST /sessions` with a JSON body; returns the raw response.
    pub async fn create_raw(&self, body: &Value) -> Result<reqwest::Response> {
        Ok(self
            .request(reqwest::Method::POST, "/sessions")
            .json(body)
            .send()
            .await?)
    }

    /// `POST /sessions` and return the new session id (fails unless 200).
    pub async fn create(&self, body: &Value) -> Result<String> {
        let response = self.create_raw(body).await?;
        let status = response.status();
        let text = response.text().await?;
        if status != 200 {
            return Err(TestkitError::Unexpected(format!("create: {status} {text}")));
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| TestkitError::Unexpected(format!("create body {text}: {e}")))?;
        value["session_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| TestkitError::Unexpected(format!("no session_id in {text}")))
    }

    /// `POST /sessions/{id}/input` with a JSON body.
    pub async fn input(&self, id: &str, body: &Value) -> Result<reqwest::Response> {
        Ok(self
            .request(reqwest::Method::POST, &format!("/sessions/{id}/input"))
            .json(body)
            .send()
            .await?)
    }

    /// `POST /sessions/{id}/input` with a raw body.
    pub async fn input_raw(
        &self,
        id: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<reqwest::Response> {
        Ok(self
            .request(reqwest::Method::POST, &format!("/sessions/{id}/input"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?)
    }

    /// `DELETE /sessions/{id}`; returns the status.
    pub async fn delete(&self, id: &str) -> Result<u16> {
        Ok(self
            .request(reqwest::Method::DELETE, &format!("/sessions/{id}"))
            .send()
            .await?
            .status()
            .as_u16())
    }

    /// `GET /sessions/{id}/stream`, optionally with `Last-Event-ID`; returns the raw response.
    pub async fn stream_raw(
        &self,
        id: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut builder = self
            .request(reqwest::Method::GET, &format!("/sessions/{id}/stream"))
            .header("accept", "text/event-stream");
        if let Some(last) = last_event_id {
            builder = builder.header("last-event-id", last);
        }
        Ok(builder.send().await?)
    }

    /// Opens a stream (fails unless 200).
    pub async fn stream(&self, id: &str, last_event_id: Option<&str>) -> Result<SseStream> {
        let response = self.stream_raw(id, last_event_id).await?;
        if response.status() != 200 {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(TestkitError::Unexpected(format!("stream: {status} {text}")));
        }
        Ok(SseStream::new(response))
    }
}

/// One SSE frame (an event, or a comment such as the keepalive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// `id:` as a number, if present.
    pub id: Option<u64>,
    /// `event:` name (empty for comments).
    pub event: String,
    /// `data:` lines joined by `\n`.
    pub data: String,
    /// The comment text, for comment-only frames.
    pub comment: Option<String>,
    /// The exact bytes of the frame, including the blank line.
    pub raw: String,
}

impl SseFrame {
    /// The data parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// Whether this is a comment-only frame (keepalive).
    pub fn is_comment(&self) -> bool {
        self.comment.is_some() && self.event.is_empty() && self.data.is_empty()
    }
}

/// Parses frames out of an SSE response body.
pub struct SseStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buf: BytesMut,
    ended: bool,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("ended", &self.ended)
            .finish()
    }
}

impl SseStream {
    /// Wraps a streaming response.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buf: BytesMut::new(),
            ended: false,
        }
    }

    /// The next frame (comments included); `None` when the server closed the stream.
    pub async fn next_frame(&mut self) -> Result<Option<SseFrame>> {
        loop {
            if let Some(pos) = find_frame_end(&self.buf) {
                let raw = self.buf.split_to(pos + 2);
                return Ok(Some(parse_frame(&String::from_utf8_lossy(&raw))));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(err)) => return Err(err.into()),
                None => self.ended = true,
            }
        }
    }

    /// The next event frame, skipping comments; `None` at end of stream.
    pub async fn next_event(&mut self) -> Result<Option<SseFrame>> {
        while let Some(frame) = self.next_frame().await? {
            if !frame.is_comment() {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    /// [`next_event`](Self::next_event) with a timeout (an error when it expires).
    pub async fn next_event_within(&mut self, timeout: Duration) -> Result<Option<SseFrame>> {
        tokio::time::timeout(timeout, self.next_event())
            .await
            .map_err(|_| TestkitError::Timeout("next SSE event".into()))?
    }

    /// Reads the next `n` events (an error when the stream ends first, or each waits longer
    /// than `timeout`).
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Result<Vec<SseFrame>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_event_within(timeout).await? {
                Some(frame) => out.push(frame),
                None => {
                    return Err(TestkitError::Unexpected(format!(
                        "stream ended after {} of {n} events",
                        out.len()
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Reads events until one named `event` arrives (inclusive); returns all read.
    pub async fn until(&mut self, event: &str, timeout: Duration) -> Result<Vec<SseFrame>> {
        let mut out = Vec::new();
        let wait = async {
            while let Some(frame) = self.next_event().await? {
                let hit = frame.event == event;
                out.push(frame);
                if hit {
                    return Ok(());
                }
            }
            Err(TestkitError::Unexpected(format!(
                "stream ended before {event}"
            )))
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| TestkitError::Timeout(format!("event {event}")))??;
        Ok(out)
    }

    /// Reads every remaining event until the server closes the stream.
    pub async fn collect_to_end(&mut self, timeout: Duration) -> Result<Vec<SseFrame>> {
        let mut out = Vec::new();
        let wait = async {
            while let Some(frame) = self.next_event().await? {
                out.push(frame);
            }
            Ok::<_, TestkitError>(())
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| TestkitError::Timeout("end of stream".into()))??;
        Ok(out)
    }
}

fn find_frame_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

pub(crate) fn parse_frame(raw: &str) -> SseFrame {
    let mut frame = SseFrame {
        id: None,
        event: String::new(),
        data: String::new(),
        comment: None,
        raw: raw.to_owned(),
    };
    let mut data_lines: Vec<&str> = Vec::new();
    for line in raw.split('\n').filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comment = Some(comment.trim().to_owned());
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => frame.id = value.parse().ok(),
            "event" => frame.event = value.to_owned(),
            "data" => data_lines.push(value),
            _ => {}
        }
    }
    frame.data = data_lines.join("\n");
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_and_comments() {
        let f = parse_frame("id: 3\nevent: result\ndata: {\"a\":1}\n\n");
        assert_eq!(f.id, Some(3));
        assert_eq!(f.event, "result");
        assert_eq!(f.json()["a"], 1);
        let k = parse_frame(": keepalive\n\n");
        assert!(k.is_comment());
        assert_eq!(k.comment.as_deref(), Some("keepalive"));
        assert_eq!(find_frame_end(b"a\n\nb"), Some(1));
    }
}
