//! A black-box conformance suite for wire protocol 1.0 (`docs/wire-protocol.md`) and our
//! extensions (`docs/protocol-extensions.md`), run against a server binary over real HTTP.
//!
//! One definition serves every web framework adapter (`--framework axum|actix`) and both
//! scripted agents (the replay agent and the fake `claude` executable): each check is a plain
//! `pub async fn check_xxx(target: &Target) -> Result<()>`, and agent differences are hidden
//! behind an agent-neutral vocabulary of turns ([`Target::echo_turn`],
//! [`Target::permission_turn`], [`Target::question_turn`], [`Target::long_turn`],
//! [`Target::crash_turn`], ...). A check that only makes sense for one agent returns `Ok` after
//! printing `SKIPPED <check> (<agent>): <reason>`.
//!
//! [`transcript`] records one scripted exchange with byte-level detail (status codes, the
//! headers that matter, SSE frames), so two adapters can be compared for identical answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::real_cli::TempDir;
use crate::tap::{Recording, Tap};
use crate::{Client, Result, ServerProcess, SseFrame, SseStream, TestkitError};

/// Returns `Err(TestkitError::Unexpected)` with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::TestkitError::Unexpected(format!($($fmt)+)));
        }
    };
}

/// Returns `Err(TestkitError::Unexpected)` unless `left == right`, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err($crate::TestkitError::Unexpected(format!(
                        "{}\n  left: {:?}\n right: {:?}",
                        format!($($fmt)+),
                        left,
                        right
                    )));
                }
            }
        }
    };
    ($left:expr, $right:expr $(,)?) => {
        ensure_eq!($left, $right, "{} == {}", stringify!($left), stringify!($right))
    };
}

mod burst;
mod checks;
pub use checks::error_chain;
mod context_cost;
mod create;
mod hardening;
mod identity;
mod input;
mod lifecycle;
mod listing;
mod session_id;
mod stream;
mod transcript;

pub use burst::*;
pub use context_cost::*;
pub use create::*;
pub use hardening::*;
pub use identity::*;
pub use input::*;
pub use lifecycle::*;
pub use listing::*;
pub use session_id::*;
pub use stream::*;
pub use transcript::transcript;

/// How long any single expected event may take.
pub const T: Duration = Duration::from_secs(10);
/// The bearer token every conformance server is started with.
pub const TOKEN: &str = "conformance-token";

/// The agent behind the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// `--agent replay` (scripted scenarios chosen by the session's `model`).
    Replay,
    /// `--agent claude` over the fake `claude` executable (directives in user messages).
    FakeClaude,
}

impl Agent {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Agent::Replay => "replay",
            Agent::FakeClaude => "fake_claude",
        }
    }
}

/// How to start a server under test: binary, web framework, agent, extra arguments.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server binary.
    pub binary: PathBuf,
    /// `axum` or `actix` (passed as `--framework`).
    pub framework: String,
    /// The agent to run.
    pub agent: Agent,
    /// Extra arguments for every server this target starts.
    pub extra_args: Vec<String>,
    /// When set, every server is reached through a [`Tap`] recording into it.
    pub recording: Option<Arc<Recording>>,
}

/// One user message, plus the session configuration it needs (the replay agent picks its
/// scenario from the session's `model`; the fake CLI reads directives from the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The session `model`, if the turn needs one.
    pub model: Option<String>,
    /// The user message text.
    pub content: String,
}

impl Turn {
    fn new(model: Option<&str>, content: impl Into<String>) -> Self {
        Self {
            model: model.map(str::to_owned),
            content: content.into(),
        }
    }

    /// The `user_message` body for this turn.
    pub fn message(&self) -> Value {
        json!({"type": "user_message", "content": self.content})
    }
}

impl Target {
    /// A target for `binary` with `framework` (`axum`/`actix`) and `agent`.
    pub fn new(binary: impl Into<PathBuf>, framework: &str, agent: Agent) -> Self {
        Self {
            binary: binary.into(),
            framework: framework.to_owned(),
            agent,
            extra_args: Vec::new(),
            recording: None,
        }
    }

    /// The same target with every server behind a recording [`Tap`] (its `base_url` is the
    /// tap's, so raw-TCP checks go through it too).
    pub fn with_recording(mut self, recording: Arc<Recording>) -> Self {
        self.recording = Some(recording);
        self
    }

    /// The same target with extra arguments for every server.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// `framework+agent`, for messages.
    pub fn label(&self) -> String {
        format!("{}+{}", self.framework, self.agent.name())
    }

    /// Prints why `check` does not apply to this target (the check then returns `Ok`).
    pub fn skip(&self, check: &str, reason: &str) -> Result<()> {
        eprintln!("SKIPPED {check} ({}): {reason}", self.label());
        Ok(())
    }

    /// Starts a server with `--token`, `--framework`, `--agent`, the agent's arguments, the
    /// target's extra arguments and `args`. Sessions are confined to a fresh temporary
    /// directory (`--allowed-root`).
    pub async fn start(&self, args: &[&str]) -> Result<Server> {
        let dir = TempDir::new(&format!("conformance-{}", self.label()))?;
        let work = dir.path().join("work");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&work)?;
        std::fs::create_dir_all(&config)?;
        let root = dir.path().display().to_string();
        let mut all: Vec<String> = vec![
            "--token".into(),
            TOKEN.into(),
            "--framework".into(),
            self.framework.clone(),
            "--allowed-root".into(),
            root,
        ];
        match self.agent {
            Agent::Replay => all.extend(["--agent".into(), "replay".into()]),
            Agent::FakeClaude => {
                let fake = crate::fake_claude_path();
                all.extend([
                    "--agent".into(),
                    "claude".into(),
                    "--claude-path".into(),
                    fake.display().to_string(),
                    "--claude-env".into(),
                    format!("CLAUDE_CONFIG_DIR={}", config.display()),
                ]);
            }
        }
        all.extend(self.extra_args.iter().cloned());
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        // Quiet servers unless the developer asks for logs.
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let mut process =
            ServerProcess::spawn_with_env(&self.binary, &refs, &[("RUST_LOG", &log)]).await?;
        let tap = match &self.recording {
            Some(recording) => {
                let tap = Tap::start(&process.base_url, Arc::clone(recording)).await?;
                process.base_url.clone_from(&tap.base_url);
                Some(tap)
            }
            None => None,
        };
        let client = process.client(Some(TOKEN));
        Ok(Server {
            client,
            process,
            agent: self.agent,
            work: work.display().to_string(),
            _dir: dir,
            _tap: tap,
        })
    }

    /// A turn answered with one plain reply ([`echo_reply`](Self::echo_reply)).
    pub fn echo_turn(&self, text: &str) -> Turn {
        match self.agent {
            Agent::Replay => Turn::new(Some("echo"), text),
            Agent::FakeClaude => Turn::new(None, text),
        }
    }

    /// The text of the reply to [`echo_turn`](Self::echo_turn)`(text)`.
    pub fn echo_reply(&self, text: &str) -> String {
        match self.agent {
            Agent::Replay => text.to_owned(),
            Agent::FakeClaude => format!("echo: {text}"),
        }
    }

    /// A turn that asks for one tool permission (`permission_request`) and waits.
    pub fn permission_turn(&self) -> Turn {
        match self.agent {
            Agent::Replay => Turn::new(Some("read_allow"), "first line?"),
            Agent::FakeClaude => Turn::new(None, "[[bash: ls]]"),
        }
    }

    /// A turn that asks for a permission the client will deny with `interrupt: true`.
    pub fn deny_interrupt_turn(&self) -> Turn {
        match self.agent {
            Agent::Replay => Turn::new(Some("deny_with_interrupt"), "rm"),
            Agent::FakeClaude => Turn::new(None, "[[bash: rm -rf build]]"),
        }
    }

    /// A turn that asks one question (`ask_user_question`) and waits.
    pub fn question_turn(&self) -> Turn {
        match self.agent {
            Agent::Replay => Turn::new(Some("ask_user_question"), "ask me"),
            Agent::FakeClaude => Turn::new(None, "[[ask: Which color? | Red | Blue]]"),
        }
    }

    /// A turn that streams for far longer than any check waits (ended by an interrupt).
    pub fn long_turn(&self) -> Turn {
        match self.agent {
            Agent::Replay => Turn::new(Some("stream:100000:5"), "go"),
            Agent::FakeClaude => Turn::new(None, "[[slow: 1000]]"),
        }
    }

    /// A turn that emits roughly 10–20 events a few tens of milliseconds apart.
    pub fn paced_turn(&self) -> Turn {
        match self.agent {
            Agent::Replay => Turn::new(Some("stream:20:20"), "go"),
            Agent::FakeClaude => Turn::new(None, "[[slow: 10]]"),
        }
    }

    /// A turn that emits a few dozen events as fast as the agent can.
    pub fn burst_turn(&self) -> Turn {
        match self.agent {
            Agent::Replay => Turn::new(Some("stream:50"), "go"),
            Agent::FakeClaude => Turn::new(None, "[[huge: 30]]".repeat(10)),
        }
    }

    /// A turn during which the agent process dies.
    pub fn crash_turn(&self) -> Turn {
        match self.agent {
            Agent::Replay => Turn::new(Some("crash"), "boom"),
            Agent::FakeClaude => Turn::new(None, "[[crash]]"),
        }
    }

    /// The `result.subtype` of a turn ended by an interrupt.
    pub fn interrupted_subtype(&self) -> &'static str {
        match self.agent {
            Agent::Replay => "interrupted",
            Agent::FakeClaude => "error_during_execution",
        }
    }
}

/// A running server under test (killed, and its temporary directory removed, on drop).
#[derive(Debug)]
pub struct Server {
    /// A client sending the right bearer token.
    pub client: Client,
    /// The server process.
    pub process: ServerProcess,
    agent: Agent,
    work: String,
    _dir: TempDir,
    _tap: Option<Tap>,
}

impl Server {
    /// The same client without a token.
    pub fn anonymous(&self) -> Client {
        self.client.with_token(None)
    }

    /// The working directory sessions are created in (inside the allowed root).
    pub fn work_dir(&self) -> &str {
        &self.work
    }

    /// The `POST /sessions` body for a session that will run `turn`.
    pub fn session_body(&self, turn: &Turn) -> Value {
        let mut body = json!({"cwd": self.work});
        if let (Agent::Replay, Some(model)) = (self.agent, &turn.model) {
            body["model"] = json!(model);
        }
        body
    }

    /// Creates a session for `turn`.
    pub async fn create(&self, turn: &Turn) -> Result<String> {
        self.client.create(&self.session_body(turn)).await
    }

    /// Creates a session for `turn` and subscribes to it.
    pub async fn open(&self, turn: &Turn) -> Result<(String, SseStream)> {
        let id = self.create(turn).await?;
        let stream = self.client.stream(&id, None).await?;
        Ok((id, stream))
    }

    /// Sends `turn`'s user message (fails unless 204).
    pub async fn send(&self, id: &str, turn: &Turn) -> Result<()> {
        let reply = Reply::read(self.client.input(id, &turn.message()).await?).await?;
        ensure_eq!(reply.status, 204, "user message: {}", reply.body);
        Ok(())
    }

    /// Sends an inbound message and returns the reply.
    pub async fn input(&self, id: &str, body: &Value) -> Result<Reply> {
        Reply::read(self.client.input(id, body).await?).await
    }

    /// Creates a session for `turn`, subscribes, and sends the message.
    pub async fn start_turn(&self, turn: &Turn) -> Result<(String, SseStream)> {
        let (id, stream) = self.open(turn).await?;
        self.send(&id, turn).await?;
        Ok((id, stream))
    }

    /// Polls (bounded by `within`) until the session no longer exists. The probe is an input
    /// with an invalid body: 404 once the session is gone, 400 while it exists, and it counts
    /// as neither input nor a subscriber, so it does not keep the session alive.
    pub async fn wait_gone(&self, id: &str, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.client.input_raw(id, "{").await?.status().as_u16();
            match status {
                404 => return Ok(()),
                400 => {}
                other => {
                    return Err(TestkitError::Unexpected(format!(
                        "probe of session {id}: status {other}"
                    )))
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TestkitError::Timeout(format!("session {id} to go away")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A complete (non-streaming) HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// Reads the whole response.
    pub async fn read(response: reqwest::Response) -> Result<Self> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    /// A header value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Checks an error response: `status`, `content-type: application/json`, and a body that
    /// is byte for byte the compact serialisation of `expected`.
    pub fn expect_error(&self, status: u16, expected: &Value) -> Result<()> {
        ensure_eq!(self.status, status, "status (body {})", self.body);
        ensure_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error content-type"
        );
        ensure_eq!(self.body, expected.to_string(), "error body");
        Ok(())
    }

    /// Checks an error response whose `detail` is not pinned: `status`, JSON content type, a
    /// string `detail`, and `code` when given. Returns the detail.
    pub fn expect_error_code(&self, status: u16, code: Option<&str>) -> Result<String> {
        ensure_eq!(self.status, status, "status (body {})", self.body);
        ensure_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error content-type"
        );
        let body = self.json();
        let detail = body["detail"].as_str().map(str::to_owned);
        ensure!(detail.is_some(), "error body without detail: {}", self.body);
        ensure_eq!(body["code"].as_str(), code, "error code in {}", self.body);
        Ok(detail.unwrap_or_default())
    }
}

/// The event names of `frames`.
pub fn events(frames: &[SseFrame]) -> Vec<&str> {
    frames.iter().map(|f| f.event.as_str()).collect()
}

/// Checks that `frames` carry the seqs `first, first+1, ...` with no gap.
pub fn ensure_dense(frames: &[SseFrame], first: u64) -> Result<()> {
    let ids: Vec<Option<u64>> = frames.iter().map(|f| f.id).collect();
    let expected: Vec<Option<u64>> = (first..first + ids.len() as u64).map(Some).collect();
    ensure_eq!(ids, expected, "seqs are dense and ordered from {first}");
    Ok(())
}

/// The exact bytes of `session_ready` for session `id`.
pub fn session_ready_frame(id: &str) -> String {
    format!(
        "id: 1\nevent: session_ready\ndata: {{\"session_id\":\"{id}\",\"protocol_version\":\"1.0\"}}\n\n"
    )
}

/// Reads the first event of a fresh subscription and checks it is `session_ready` (seq 1).
pub async fn expect_session_ready(stream: &mut SseStream, id: &str) -> Result<SseFrame> {
    let frame = next_event(stream).await?;
    ensure_eq!(frame.raw, session_ready_frame(id), "first frame");
    Ok(frame)
}

/// The next event (comments skipped) within [`T`]; an error at end of stream.
pub async fn next_event(stream: &mut SseStream) -> Result<SseFrame> {
    stream
        .next_event_within(T)
        .await?
        .ok_or_else(|| TestkitError::Unexpected("stream ended".into()))
}

/// The next event that comes from the agent: `user_message` (the session's announcement of a
/// message it hands to an agent with anchors, made before the agent has read it) is skipped.
pub async fn agent_output(stream: &mut SseStream) -> Result<SseFrame> {
    loop {
        let frame = next_event(stream).await?;
        if frame.event != "user_message" {
            return Ok(frame);
        }
    }
}

/// The text of the first text block of a `message_complete` frame.
pub fn complete_text(frame: &SseFrame) -> Option<String> {
    frame.json()["message"]["content"]
        .as_array()?
        .iter()
        .find(|b| b["type"] == "text")?["text"]
        .as_str()
        .map(str::to_owned)
}

/// A response read from a raw TCP connection (see [`raw_exchange`]).
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// The response head (status line and headers), lower-cased.
    pub head: String,
    /// The body (as delimited by `content-length`).
    pub body: String,
}

impl RawResponse {
    /// A header value (lower-cased), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }
}

async fn read_response(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Result<RawResponse> {
    use tokio::io::AsyncReadExt;
    let wait = async {
        loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= at + 4 + len {
                    let body = String::from_utf8_lossy(&buf[at + 4..at + 4 + len]).into_owned();
                    buf.drain(..at + 4 + len);
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    return Ok(RawResponse { status, head, body });
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Err(TestkitError::Unexpected(
                    "connection closed before a complete response".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(T, wait)
        .await
        .map_err(|_| TestkitError::Timeout("raw HTTP response".into()))?
}

/// Sends `head` + `body` on a fresh connection to `base_url` exactly as given (a failed write
/// is ignored: the server may answer before reading the whole body), reads one response, then
/// reports what the connection does next: `"reused"` (a follow-up `GET /healthz` on it gets
/// 200), `"announced close"` (the response said `connection: close` and the server closed),
/// or `"closed"` / `"closed: <error>"` (closed without announcing it, or the response was
/// lost).
pub async fn raw_exchange(
    base_url: &str,
    head: &str,
    body: &[u8],
) -> Result<(RawResponse, String)> {
    use tokio::io::AsyncWriteExt;
    let addr = base_url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut request = head.as_bytes().to_vec();
    request.extend_from_slice(body);
    let _ = tcp.write_all(&request).await;
    let mut buf = Vec::new();
    let response = read_response(&mut tcp, &mut buf).await?;
    let announced = response.header("connection") == Some("close");
    let follow = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let written = tcp.write_all(follow.as_bytes()).await;
    let next = match written {
        Ok(()) => read_response(&mut tcp, &mut buf).await,
        Err(err) => Err(err.into()),
    };
    let outcome = match (next, announced) {
        (Ok(r), false) if r.status == 200 => "reused".to_owned(),
        (Ok(r), _) => format!("unexpected follow-up {}", r.status),
        (Err(_), true) => "announced close".to_owned(),
        (Err(TestkitError::Unexpected(_)), false) => "closed".to_owned(),
        (Err(err), false) => format!("closed: {err}"),
    };
    Ok((response, outcome))
}
