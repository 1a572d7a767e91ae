//! Request fuzzing: proptest strategies for hostile HTTP requests, and the verdict every answer
//! must pass — used in-process against `Api::handle`
//! (`crates/agent-webkit-core/tests/http_fuzz.rs`) and over raw TCP against both adapters
//! (`crates/agent-webkit-server/tests/http_fuzz_tcp.rs`).
//!
//! A [`FuzzRequest`] is a method, a path, headers, a body and how the body is framed. Paths may
//! name [`SESSION`], replaced at run time by a live session's id, so most requests reach real
//! routes. The invariants ([`check_status`]): no 500, no 5xx but the documented ones
//! (501 `unsupported`, 502/503/504 from the agent or the registry), an answer within
//! [`ANSWER_TIMEOUT`].

use std::fmt::Write as _;
use std::time::Duration;

/// The proptest this module's strategies are built with (so tests need no own dependency).
pub use proptest;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bearer token the fuzzed server is started with.
pub const TOKEN: &str = "fuzz-token";
/// The body limit the fuzzed server is started with (small, so bodies cross it often).
pub const MAX_BODY: usize = 64 * 1024;
/// Placeholder in a generated path for a live session's id.
pub const SESSION: &str = "{session}";
/// Longest time one step of a request may make no progress: the connect, each written piece,
/// and the answer (or close) after the last byte.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The 5xx statuses the protocol documents (docs/protocol-extensions.md): 501 `unsupported`,
/// 502 `agent_start_failed` / `agent_error`, 503 (unavailable, caps, queue full, owned
/// elsewhere), 504 `agent_timeout`.
pub const DOCUMENTED_5XX: &[u16] = &[501, 502, 503, 504];

/// How the body travels.
#[derive(Debug, Clone)]
pub enum Framing {
    /// No body headers (the body, if any, is not sent over TCP).
    None,
    /// A correct `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, in chunks of these sizes (cycled).
    Chunked(Vec<usize>),
    /// Framing headers that lie or conflict; over TCP the client then closes its write side.
    Broken(BrokenFraming),
}

/// Framing a server must survive but need not make sense of.
#[derive(Debug, Clone)]
pub enum BrokenFraming {
    /// `Content-Length` larger than the body sent.
    Truncated,
    /// `Content-Length` smaller than the body sent (the rest looks like a next request).
    Overlong,
    /// An unparsable `Content-Length` value.
    BadLength(String),
    /// Two `Content-Length` headers that disagree.
    DuplicateLength,
    /// `Content-Length` and `Transfer-Encoding: chunked` together.
    LengthAndChunked,
    /// A transfer coding other than `chunked`, with the body sent raw.
    OtherCoding(String),
    /// A chunked body with an invalid chunk-size line.
    BadChunk,
}

/// One generated request (its `Debug` shows header values and the body as text).
#[derive(Clone)]
pub struct FuzzRequest {
    /// The method token.
    pub method: String,
    /// The path; [`SESSION`] stands for a live session's id.
    pub path: String,
    /// Headers other than the framing ones, in order (duplicates allowed).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body bytes (before any chunked encoding).
    pub body: Vec<u8>,
    /// How the body is framed.
    pub framing: Framing,
    /// Over TCP: the request is written in pieces of these sizes (cycled), flushed each.
    pub writes: Vec<usize>,
}

impl std::fmt::Debug for FuzzRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let shown = &self.body[..self.body.len().min(200)];
        f.debug_struct("FuzzRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .field("body_start", &String::from_utf8_lossy(shown))
            .field("framing", &self.framing)
            .field("writes", &self.writes)
            .finish()
    }
}

impl FuzzRequest {
    /// The path with [`SESSION`] replaced.
    pub fn path_for(&self, session: &str) -> String {
        self.path.replace(SESSION, session)
    }

    /// Whether answering `status` to this request ended the live session it names (a DELETE
    /// of [`SESSION`]): the runner then starts another one for the next requests.
    pub fn ends_session(&self, status: u16) -> bool {
        self.method == "DELETE" && status == 204 && self.path.contains(SESSION)
    }

    /// Whether the request is valid HTTP/1.1 framing with header values free of control bytes:
    /// a server must answer it with a status (closing without one means it failed).
    pub fn well_formed(&self) -> bool {
        !matches!(self.framing, Framing::Broken(_))
            && self.headers.iter().all(|(_, v)| {
                v.iter()
                    .all(|b| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80)
            })
    }

    /// The headers `Api::handle` sees: [`headers`](Self::headers) plus the framing ones, with
    /// the body the core reads (as received; a truncated body is what arrived).
    pub fn framing_headers(&self) -> Vec<(String, Vec<u8>)> {
        let len = self.body.len();
        let pair = |k: &str, v: String| (k.to_owned(), v.into_bytes());
        match &self.framing {
            Framing::None => vec![],
            Framing::Length => vec![pair("content-length", len.to_string())],
            Framing::Chunked(_) | Framing::Broken(BrokenFraming::BadChunk) => {
                vec![pair("transfer-encoding", "chunked".into())]
            }
            Framing::Broken(BrokenFraming::Truncated) => {
                vec![pair("content-length", (len + 7).to_string())]
            }
            Framing::Broken(BrokenFraming::Overlong) => {
                vec![pair("content-length", (len / 2).to_string())]
            }
            Framing::Broken(BrokenFraming::BadLength(v)) => {
                vec![pair("content-length", v.clone())]
            }
            Framing::Broken(BrokenFraming::DuplicateLength) => vec![
                pair("content-length", len.to_string()),
                pair("content-length", (len + 1).to_string()),
            ],
            Framing::Broken(BrokenFraming::LengthAndChunked) => vec![
                pair("content-length", len.to_string()),
                pair("transfer-encoding", "chunked".into()),
            ],
            Framing::Broken(BrokenFraming::OtherCoding(coding)) => {
                vec![pair("transfer-encoding", coding.clone())]
            }
        }
    }

    /// The request as HTTP/1.1 bytes on the wire.
    pub fn render(&self, session: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(
            format!(
                "{} {} HTTP/1.1\r\nhost: 127.0.0.1\r\n",
                self.method,
                self.path_for(session)
            )
            .as_bytes(),
        );
        for (name, value) in self.headers.iter().chain(self.framing_headers().iter()) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        match &self.framing {
            Framing::None => {}
            Framing::Chunked(sizes) => {
                let mut rest = self.body.as_slice();
                let mut sizes = sizes.iter().cycle();
                while !rest.is_empty() {
                    let size = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
                    let (chunk, tail) = rest.split_at(size);
                    let mut head = String::new();
                    let _ = write!(head, "{size:x}\r\n");
                    out.extend_from_slice(head.as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                    rest = tail;
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Framing::Broken(BrokenFraming::BadChunk) => {
                out.extend_from_slice(b"zz\r\n");
                out.extend_from_slice(&self.body);
                out.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            Framing::Length | Framing::Broken(_) => out.extend_from_slice(&self.body),
        }
        out
    }
}

/// What a server did with one request over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A status line arrived.
    Status(u16),
    /// The connection closed (or was reset) without a status line.
    Closed(String),
    /// The server closed the connection while the request was still being written, and no
    /// status line could be read (a server may answer early and close, the reset then
    /// discarding its answer).
    ClosedEarly(String),
}

/// Whether `status` is allowed: not 500, and any other 5xx only a documented one.
pub fn check_status(status: u16) -> Result<(), String> {
    if !(100..600).contains(&status) {
        return Err(format!("status {status} is not an HTTP status"));
    }
    if status >= 500 && !DOCUMENTED_5XX.contains(&status) {
        return Err(format!(
            "status {status}: not a documented 5xx ({DOCUMENTED_5XX:?})"
        ));
    }
    Ok(())
}

/// Sends `request` on a fresh connection to `addr` (piece by piece, per
/// [`FuzzRequest::writes`], each its own TCP segment); for broken framing then closes the
/// write side. Reads up to the end of the response head. `Err` only for a hang: a step that
/// made no progress within [`ANSWER_TIMEOUT`] — the connect, one piece's write (the server
/// neither read nor closed), or the answer after the last byte.
///
/// The deadline is per step, not for the whole exchange: a 128 KB body chunked in 1-byte chunks
/// and written in 1-byte pieces is some 800,000 segments, which take longer than any fixed
/// budget on a loaded machine while the server keeps up with every one.
pub async fn send_raw(addr: &str, request: &FuzzRequest, session: &str) -> Result<Answer, String> {
    exchange(addr, request, session, ANSWER_TIMEOUT).await
}

/// [`send_raw`] with `step` as the deadline of each step.
async fn exchange(
    addr: &str,
    request: &FuzzRequest,
    session: &str,
    step: Duration,
) -> Result<Answer, String> {
    let bytes = request.render(session);
    let hang = |what: &str| format!("{what}: no progress within {step:?}");
    let mut stream = match tokio::time::timeout(step, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Ok(Answer::Closed(format!("connect: {e}"))),
        Err(_) => return Err(hang("connect")),
    };
    // Each piece its own segment, so the server sees the request arrive in pieces.
    let _ = stream.set_nodelay(true);
    let mut rest = bytes.as_slice();
    let mut sizes = request.writes.iter().cycle();
    while !rest.is_empty() {
        let size = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        let written = tokio::time::timeout(step, stream.write_all(piece))
            .await
            .map_err(|_| hang(&format!("writing at byte {}", bytes.len() - rest.len())))?;
        if let Err(e) = written {
            // The server may answer before the body is in (a refused or unneeded body) and
            // close: its response, if still readable, is the answer.
            let answer = tokio::time::timeout(step, read_status(&mut stream))
                .await
                .map_err(|_| hang("the answer after a failed write"))?;
            return Ok(match answer {
                Answer::Status(status) => Answer::Status(status),
                Answer::Closed(_) | Answer::ClosedEarly(_) => {
                    Answer::ClosedEarly(format!("write: {e}"))
                }
            });
        }
        rest = tail;
    }
    if matches!(request.framing, Framing::Broken(_)) {
        let _ = stream.shutdown().await;
    }
    tokio::time::timeout(step, read_status(&mut stream))
        .await
        .map_err(|_| hang("the answer"))
}

/// Reads response heads until a final (non-1xx) status line; `100 Continue` and other interim
/// responses are skipped.
async fn read_status(stream: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..end].to_vec();
            buf.drain(..end + 4);
            match status_of(&head) {
                Some(status) if (100..200).contains(&status) => continue,
                Some(status) => return Answer::Status(status),
                None => return not_http(&head),
            }
        }
        if buf.len() > 64 * 1024 {
            return not_http(&buf);
        }
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return Answer::Closed(format!("read: {e}")),
            Err(_) => break,
        }
    }
    match status_of(&buf) {
        Some(status) if !(100..200).contains(&status) => Answer::Status(status),
        _ if buf.is_empty() => Answer::Closed("closed without a response".into()),
        _ => not_http(&buf),
    }
}

/// The status code of a response head (`HTTP/1.x NNN ...`).
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse()
        .ok()
}

fn not_http(head: &[u8]) -> Answer {
    Answer::Closed(format!(
        "not an HTTP response: {:?}",
        String::from_utf8_lossy(&head[..head.len().min(80)])
    ))
}

// ---- strategies ---------------------------------------------------------------------------

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["GET", "POST", "DELETE"]).prop_map(str::to_owned),
        2 => prop::sample::select(vec!["PUT", "PATCH", "HEAD", "OPTIONS", "get", "post", "TRACE"])
            .prop_map(str::to_owned),
        1 => "[A-Z][A-Z_-]{0,15}",
    ]
}

fn session_id() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just(SESSION.to_owned()),
        1 => "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        1 => prop::sample::select(vec![
            "..", ".", "%2e%2e", "%2E%2E%2F", "%2F", "%00", "%", "%zz", "~", "sessions",
            "{session}%20", "{session}/..", "..%2f..%2fetc%2fpasswd", "\u{e9}", "%C3%A9",
        ])
        .prop_map(str::to_owned),
        1 => "[!-~&&[^/?#]]{1,40}",
        1 => (1usize..20_000).prop_map(|n| "a".repeat(n)),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let suffix = prop::sample::select(vec![
        "",
        "/stream",
        "/input",
        "/stream/",
        "/input/",
        "/",
        "/stream/x",
        "/events",
        "//input",
    ]);
    prop_oneof![
        2 => Just("/healthz".to_owned()),
        3 => Just("/sessions".to_owned()),
        12 => (session_id(), suffix).prop_map(|(id, s)| format!("/sessions/{id}{s}")),
        1 => prop::sample::select(vec![
            "/", "*", "//sessions", "/sessions/", "/sessions/../healthz", "/SESSIONS",
            "/healthz/", "/healthz?x=1", "/sessions?x=1", "/./sessions", "/%73essions",
            "http://127.0.0.1/sessions", "/sessions/{session}/stream?after=1",
        ])
        .prop_map(str::to_owned),
        1 => "/[!-~]{0,64}",
    ]
}

/// Header values: printable mostly, with tabs, obs-text and (rarely) control bytes.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => vec(
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff, 1 => 0u8..0x20],
            0..40
        )
        .prop_map(|mut v| {
            v.retain(|b| *b != b'\r' && *b != b'\n');
            v
        }),
    ]
}

fn authorization() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => Just(format!("Bearer {TOKEN}").into_bytes()),
        1 => prop::sample::select(vec![
            format!("bearer {TOKEN}"),
            format!("BEARER {TOKEN}"),
            format!("Bearer  {TOKEN}"),
            format!("Bearer {TOKEN} "),
            format!("Bearer {TOKEN}x"),
            format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
            format!("Token {TOKEN}"),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            "Basic Zm9vOmJhcg==".to_owned(),
            String::new(),
        ])
        .prop_map(String::into_bytes),
        1 => header_bytes(),
    ]
}

fn last_event_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0u64..40).prop_map(|n| n.to_string().into_bytes()),
        2 => prop::sample::select(vec![
            "-1", "+1", " 2", "2 ", "1.5", "0x10", "1e3", "", "abc", "18446744073709551615",
            "18446744073709551616", "99999999999999999999999999", "00000000000000000001", "٣",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => header_bytes(),
    ]
}

fn extra_header() -> impl Strategy<Value = (String, Vec<u8>)> {
    prop_oneof![
        3 => authorization().prop_map(|v| ("authorization".to_owned(), v)),
        3 => last_event_id().prop_map(|v| ("last-event-id".to_owned(), v)),
        2 => prop::sample::select(vec!["application/json", "text/plain", "application/json; charset=latin1", ""])
            .prop_map(|v| ("content-type".to_owned(), v.as_bytes().to_vec())),
        1 => Just(("accept".to_owned(), b"text/event-stream".to_vec())),
        1 => Just(("expect".to_owned(), b"100-continue".to_vec())),
        1 => prop::sample::select(vec!["close", "keep-alive", "upgrade", "Close, TE"])
            .prop_map(|v| ("connection".to_owned(), v.as_bytes().to_vec())),
        1 => Just(("origin".to_owned(), b"https://evil.example".to_vec())),
        2 => ("x-[a-z0-9-]{1,20}", header_bytes()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    (
        prop::option::weighted(0.9, authorization()),
        vec(extra_header(), 0..5),
    )
        .prop_map(|(auth, mut extra)| {
            if let Some(auth) = auth {
                extra.insert(0, ("authorization".to_owned(), auth));
            }
            extra
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn inbound_message() -> impl Strategy<Value = Value> {
    let text = prop_oneof![".{0,40}", Just(String::new())];
    prop_oneof![
        3 => text.clone().prop_map(|t| json!({"type": "user_message", "content": t})),
        1 => json_value().prop_map(|c| json!({"type": "user_message", "content": c})),
        1 => text.clone().prop_map(|t| json!({"type": "user_message", "content": [{"type": "text", "text": t}]})),
        1 => Just(json!({"type": "interrupt"})),
        1 => (text.clone(), prop::sample::select(vec!["allow", "deny", "ALLOW", ""]), json_value())
            .prop_map(|(id, b, u)| json!({"type": "permission_response", "correlation_id": id, "behavior": b, "updated_input": u, "updated_permissions": [{"type": "addRules", "destination": "userSettings"}]})),
        1 => (text.clone(), json_value()).prop_map(|(id, a)| json!({"type": "question_response", "correlation_id": id, "answers": a})),
        1 => prop::sample::select(vec!["default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto", "nope"])
            .prop_map(|m| json!({"type": "set_permission_mode", "mode": m})),
        1 => json_value().prop_map(|m| json!({"type": "set_model", "model": m})),
        1 => text.clone().prop_map(|t| json!({"type": "stop_task", "task_id": t})),
        1 => (text.clone(), json_value()).prop_map(|(id, d)| json!({"type": "hook_decision_response", "correlation_id": id, "decision": d})),
        1 => json_value().prop_map(|t| json!({"type": t})),
    ]
}

fn create_body() -> impl Strategy<Value = Value> {
    let model = prop_oneof![
        4 => prop::sample::select(vec!["plain_qa", "read_allow", "multi_turn", "ask_user_question", "streaming_long", "stream:3:1", "stream:0:0", "stream:99999999:1"])
            .prop_map(|m| Value::from(m.to_owned())),
        1 => json_value(),
    ];
    let cwd = prop_oneof![
        prop::sample::select(vec![
            ".",
            "..",
            "/",
            "/etc",
            "../../..",
            "",
            "/nonexistent/x",
            "./crates",
            "\u{0}"
        ])
        .prop_map(|c| Value::from(c.to_owned())),
        json_value(),
    ];
    (
        prop::option::of(model),
        prop::option::weighted(0.2, cwd),
        prop::option::weighted(0.2, json_value()),
    )
        .prop_map(|(model, cwd, mode)| {
            let mut body = serde_json::Map::new();
            for (key, value) in [("model", model), ("cwd", cwd), ("permission_mode", mode)] {
                if let Some(value) = value {
                    body.insert(key.to_owned(), value);
                }
            }
            Value::Object(body)
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let json = |s: BoxedStrategy<Value>| s.prop_map(|v| v.to_string().into_bytes());
    prop_oneof![
        3 => Just(Vec::new()),
        6 => json(inbound_message().boxed()),
        3 => json(create_body().boxed()),
        1 => json(json_value().boxed()),
        1 => (1usize..20_000, any::<bool>()).prop_map(|(depth, object)| {
            let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
            format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
        }),
        1 => (MAX_BODY - 64..MAX_BODY * 2).prop_map(|n| {
            json!({"type": "user_message", "content": "x".repeat(n)}).to_string().into_bytes()
        }),
        1 => Just(b"{\"type\":\"user_message\",\"content\":\"\xff\xfe\xc3\x28\"}".to_vec()),
        1 => vec(any::<u8>(), 0..256),
    ]
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        8 => Just(Framing::Length),
        3 => vec(1usize..512, 1..6).prop_map(Framing::Chunked),
        1 => Just(Framing::None),
        2 => prop_oneof![
            Just(BrokenFraming::Truncated),
            Just(BrokenFraming::Overlong),
            prop::sample::select(vec!["-1", "abc", "1e3", " 5", "+5", "0x10", "18446744073709551616", ""])
                .prop_map(|v| BrokenFraming::BadLength(v.to_owned())),
            Just(BrokenFraming::DuplicateLength),
            Just(BrokenFraming::LengthAndChunked),
            prop::sample::select(vec!["gzip", "chunked, identity", "identity", "chunked, gzip", "Chunked"])
                .prop_map(|v| BrokenFraming::OtherCoding(v.to_owned())),
            Just(BrokenFraming::BadChunk),
        ]
        .prop_map(Framing::Broken),
    ]
}

/// A method and a path: mostly a route that exists with its method (so requests get past
/// routing into auth, body parsing and the session), otherwise anything.
fn target() -> impl Strategy<Value = (String, String)> {
    let routed = |method: &'static str, path: &'static str| {
        Just((method.to_owned(), path.replace("{id}", SESSION)))
    };
    prop_oneof![
        1 => routed("GET", "/healthz"),
        3 => routed("POST", "/sessions"),
        2 => routed("GET", "/sessions/{id}/stream"),
        1 => routed("GET", "/sessions"),
        1 => routed("GET", "/sessions/{id}"),
        6 => routed("POST", "/sessions/{id}/input"),
        1 => routed("DELETE", "/sessions/{id}"),
        4 => (method(), path()),
    ]
}

/// Any [`FuzzRequest`].
pub fn request() -> impl Strategy<Value = FuzzRequest> {
    (
        target(),
        headers(),
        body(),
        framing(),
        prop_oneof![3 => Just(vec![usize::MAX]), 1 => vec(1usize..64, 1..8)],
    )
        .prop_map(
            |((method, path), headers, body, framing, writes)| FuzzRequest {
                method,
                path,
                headers,
                body,
                framing,
                writes,
            },
        )
}

/// A proptest configuration for `cases` cases (`PROPTEST_CASES` overrides), no regression
/// files (the failing input is printed instead), and shrinking bounded in time: a hang costs
/// [`ANSWER_TIMEOUT`] per attempt.
pub fn config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        max_shrink_time: 30_000,
        ..proptest::test_runner::Config::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn request(framing: Framing, body: &[u8]) -> FuzzRequest {
        FuzzRequest {
            method: "POST".into(),
            path: format!("/sessions/{SESSION}/input"),
            headers: vec![("authorization".into(), b"Bearer t".to_vec())],
            body: body.to_vec(),
            framing,
            writes: vec![usize::MAX],
        }
    }

    /// A listener on a free port whose one connection `serve` handles.
    async fn peer<F, Fut>(serve: F) -> String
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            if let Ok((stream, _)) = listener.accept().await {
                serve(stream).await;
            }
        });
        addr
    }

    /// Reads until the end of `request` as rendered, so the peer has all of it.
    async fn read_exactly(stream: &mut TcpStream, request: &FuzzRequest) {
        let mut rest = request.render("s").len();
        let mut buf = [0u8; 65536];
        while rest > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => rest = rest.saturating_sub(n),
            }
        }
    }

    const STEP: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_a_hang_at_the_write() {
        // Far more than the loopback socket buffers hold.
        let big = request(Framing::Length, &vec![b'x'; 64 << 20]);
        let addr = peer(|stream| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        })
        .await;
        let outcome = exchange(&addr, &big, "s", STEP).await;
        let why = outcome.expect_err("a stalled write is a hang");
        assert!(why.starts_with("writing at byte"), "{why}");
    }

    #[tokio::test]
    async fn a_peer_that_reads_all_and_never_answers_is_a_hang_at_the_answer() {
        let small = request(Framing::Length, b"{}");
        let expected = small.clone();
        let addr = peer(|mut stream| async move {
            read_exactly(&mut stream, &expected).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let why = exchange(&addr, &small, "s", STEP)
            .await
            .expect_err("no answer is a hang");
        assert!(why.starts_with("the answer:"), "{why}");
    }

    #[tokio::test]
    async fn a_slow_request_the_peer_keeps_up_with_is_answered() {
        // 1-byte chunks in 1-byte pieces: thousands of segments, no step anywhere near STEP.
        let mut slow = request(Framing::Chunked(vec![1]), &[b'x'; 4096]);
        slow.writes = vec![1];
        let expected = slow.clone();
        let addr = peer(|mut stream| async move {
            read_exactly(&mut stream, &expected).await;
            let _ = stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
                .await;
        })
        .await;
        let answer = exchange(&addr, &slow, "s", STEP).await;
        assert_eq!(answer, Ok(Answer::Status(413)));
    }

    #[test]
    fn renders_length_and_chunked_framing() {
        let plain = request(Framing::Length, b"hello");
        assert_eq!(
            plain.render("abc"),
            b"POST /sessions/abc/input HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer t\r\ncontent-length: 5\r\n\r\nhello"
        );
        let chunked = request(Framing::Chunked(vec![2, 20]), b"hello");
        let text = String::from_utf8(chunked.render("abc")).unwrap_or_default();
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
            "{text:?}"
        );
        assert!(chunked.well_formed());
        assert!(!request(Framing::Broken(BrokenFraming::Truncated), b"x").well_formed());
    }

    #[test]
    fn documented_statuses_only() {
        assert!(check_status(200).is_ok());
        assert!(check_status(503).is_ok());
        assert!(check_status(500).is_err());
        assert!(check_status(505).is_err());
        assert!(check_status(42).is_err());
    }
}
