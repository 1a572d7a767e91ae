//! A minimal HTTP/1.1 client (hyper 1, one connection per stream) and an SSE frame parser that
//! reads only what the scenarios need (`id`, `event`; `data` of rare events, and — only when a
//! scenario asks, see [`Sse::read_stamps`] — the emission stamp in `message_complete` data) —
//! cheap enough to count millions of events on the machine that also runs the server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Where the server is and how to talk to it.
#[derive(Clone, Debug)]
pub struct Target {
    addr: SocketAddr,
    host: String,
    auth: String,
    /// Per-request (and per-read) timeout.
    pub timeout: Duration,
}

impl Target {
    /// Parses `http://HOST:PORT[/]`; refuses anything that is not a loopback address.
    pub fn parse(url: &str, token: &str, request_timeout: Duration) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url {url:?}: only http:// URLs are supported"))?;
        let host = rest.split('/').next().unwrap_or_default().to_owned();
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("--url {url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("--url {url:?}: no address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "--url {url:?}: {addr} is not a loopback address; the load generator only targets this machine"
            ));
        }
        Ok(Self {
            addr,
            host,
            auth: format!("Bearer {token}"),
            timeout: request_timeout,
        })
    }

    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host)
            .header(AUTHORIZATION, &self.auth)
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Sender, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Control requests (JSON in, JSON out) over one kept-alive connection.
pub struct Control {
    target: Target,
    sender: Option<Sender>,
}

impl Control {
    /// A client with no connection yet.
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            sender: None,
        }
    }

    /// One request, bounded by the target's timeout.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), String> {
        let what = format!("{method} {path}");
        match timeout(self.target.timeout, self.call_inner(method, path, body)).await {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(e)) => {
                self.sender = None;
                Err(format!("{what}: {e}"))
            }
            Err(_) => {
                self.sender = None;
                Err(format!("{what}: timed out after {:?}", self.target.timeout))
            }
        }
    }

    async fn call_inner(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), String> {
        let reused = match self.sender.take() {
            Some(mut s) => s.ready().await.ok().map(|()| s),
            None => None,
        };
        let mut sender = match reused {
            Some(s) => s,
            None => connect(&self.target).await?,
        };
        let builder = self.target.request(method, path);
        let request = match body {
            Some(v) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(v.to_string()))),
            None => builder.body(Full::new(Bytes::new())),
        }
        .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        self.sender = Some(sender);
        Ok((status, body))
    }

    /// `POST /sessions {"model": model}` → the session id.
    pub async fn create_session(&mut self, model: &str) -> Result<String, String> {
        self.create_with(&json!({ "model": model })).await
    }

    /// `POST /sessions` with `body` → the session id.
    pub async fn create_with(&mut self, body: &Value) -> Result<String, String> {
        let (status, body) = self.call(Method::POST, "/sessions", Some(body)).await?;
        if !status.is_success() {
            return Err(format!(
                "POST /sessions: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| format!("POST /sessions: bad JSON: {e}"))?;
        v.get("session_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("POST /sessions: no session_id in {v}"))
    }

    /// One `user_message`.
    pub async fn send_message(&mut self, session: &str, text: &str) -> Result<(), String> {
        let path = format!("/sessions/{session}/input");
        let (status, body) = self
            .call(
                Method::POST,
                &path,
                Some(&json!({"type": "user_message", "content": text})),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "POST {path}: {status} {}",
                String::from_utf8_lossy(&body)
            ))
        }
    }

    /// `DELETE /sessions/{id}`.
    pub async fn delete(&mut self, session: &str) -> Result<(), String> {
        let path = format!("/sessions/{session}");
        let (status, body) = self.call(Method::DELETE, &path, None).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "DELETE {path}: {status} {}",
                String::from_utf8_lossy(&body)
            ))
        }
    }
}

/// The events the scenarios tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `session_ready`
    SessionReady,
    /// `message_complete`
    MessageComplete,
    /// `message_delta`
    MessageDelta,
    /// `result`
    Result,
    /// `error`
    Error,
    /// `done`
    Done,
    /// anything else
    Other,
}

impl Kind {
    fn of(name: &[u8]) -> Self {
        match name {
            b"message_complete" => Self::MessageComplete,
            b"message_delta" => Self::MessageDelta,
            b"session_ready" => Self::SessionReady,
            b"result" => Self::Result,
            b"error" => Self::Error,
            b"done" => Self::Done,
            _ => Self::Other,
        }
    }
}

/// When a `message_complete` was emitted and received (see [`Sse::read_stamps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The agent's emission time (`t=` in the message text, Unix µs); `None` when the text
    /// carries no well-formed stamp.
    pub emitted_us: Option<u64>,
    /// This process's wall clock (Unix µs) when the frame had been parsed.
    pub received_us: u64,
}

/// One SSE frame.
#[derive(Debug)]
pub enum Frame {
    /// An event; `data` is kept for `error` events only.
    Event {
        /// The `id:` field (the server's seq).
        id: Option<u64>,
        /// The `event:` field.
        kind: Kind,
        /// The `data:` of an `error` event.
        data: Option<String>,
        /// For `message_complete` events of a stream reading stamps.
        stamp: Option<Stamp>,
    },
    /// A comment frame (keepalive).
    Comment,
}

/// One event as the scenarios see it.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// The `id:` field (the server's seq).
    pub id: Option<u64>,
    /// The `event:` field.
    pub kind: Kind,
    /// For `message_complete` events of a stream reading stamps.
    pub stamp: Option<Stamp>,
}

#[derive(Default)]
struct Pending {
    id: Option<u64>,
    kind: Option<Kind>,
    data: Option<String>,
    emitted_us: Option<u64>,
    has_data: bool,
    comment: bool,
}

/// The SSE frame parser: bytes in, frames out.
struct Parser {
    buf: Vec<u8>,
    pos: usize,
    pending: Pending,
    /// Whether `message_complete` frames get a [`Stamp`].
    stamps: bool,
}

/// An open SSE stream.
pub struct Sse {
    body: Incoming,
    parser: Parser,
    /// Bytes received so far.
    pub bytes: u64,
}

/// Wall-clock time in microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The emission stamp in a `message_complete`'s data: the digits after the first ` t=` (the
/// replay agent's and the Python fake's `chunk <i> t=<unix µs>` text prefix, in a `ts`
/// scenario). `None` when there is none, or it is not a u64.
pub fn find_stamp(data: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(data, b" t=")? + 3;
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    std::str::from_utf8(&data[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// `GET /sessions/{id}/stream` (with `Last-Event-ID` if given); fails unless the answer is 200.
pub async fn subscribe(
    target: &Target,
    session: &str,
    last_event_id: Option<u64>,
) -> Result<Sse, String> {
    let path = format!("/sessions/{session}/stream");
    let open = async {
        let mut sender = connect(target).await?;
        let mut builder = target
            .request(Method::GET, &path)
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id.to_string());
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
        }
        // Dropping the sender lets the connection close once this response ends.
        Ok(Sse {
            body: response.into_body(),
            parser: Parser::new(),
            bytes: 0,
        })
    };
    match timeout(target.timeout, open).await {
        Ok(Ok(sse)) => Ok(sse),
        Ok(Err(e)) => Err(format!("GET {path}: {e}")),
        Err(_) => Err(format!("GET {path}: timed out after {:?}", target.timeout)),
    }
}

impl Sse {
    /// From now on, every `message_complete` frame carries a [`Stamp`]: the emission time found
    /// in its data (` t=<digits>`, see [`find_stamp`]) and the receipt time, taken as soon as the
    /// frame has been parsed. Other streams never look into `message_complete` data.
    pub fn read_stamps(&mut self) {
        self.parser.stamps = true;
    }

    /// The next frame; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<Frame>, String> {
        loop {
            if let Some(frame) = self.parser.parse_one() {
                return Ok(Some(frame));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("stream read: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.bytes += data.len() as u64;
                        self.parser.push(&data);
                    }
                }
            }
        }
    }

    /// The next frame within `limit`; an ended stream or a timeout is an error.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Frame, String> {
        match timeout(limit, self.next()).await {
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err("stream ended early".into()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no frame within {limit:?}")),
        }
    }

    /// The next event (comments skipped) within `limit` per frame.
    pub async fn next_event(&mut self, limit: Duration) -> Result<(Option<u64>, Kind), String> {
        self.next_stamped(limit).await.map(|e| (e.id, e.kind))
    }

    /// The next event (comments skipped) within `limit` per frame, with its stamp.
    pub async fn next_stamped(&mut self, limit: Duration) -> Result<Event, String> {
        loop {
            if let Frame::Event {
                id,
                kind,
                data,
                stamp,
            } = self.next_within(limit).await?
            {
                if kind == Kind::Error {
                    return Err(format!(
                        "error event (id {id:?}): {}",
                        data.unwrap_or_default()
                    ));
                }
                return Ok(Event { id, kind, stamp });
            }
        }
    }
}

impl Parser {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
            pending: Pending::default(),
            stamps: false,
        }
    }

    /// Appends received bytes (dropping what was already parsed).
    fn push(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn parse_one(&mut self) -> Option<Frame> {
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
            let start = self.pos;
            let mut end = start + nl;
            self.pos = end + 1;
            if end > start && self.buf[end - 1] == b'\r' {
                end -= 1;
            }
            let line = &self.buf[start..end];
            if line.is_empty() {
                let p = std::mem::take(&mut self.pending);
                if p.kind.is_some() || p.has_data || p.id.is_some() {
                    let kind = p.kind.unwrap_or(Kind::Other);
                    let stamp = (self.stamps && kind == Kind::MessageComplete).then(|| Stamp {
                        emitted_us: p.emitted_us,
                        received_us: unix_micros(),
                    });
                    return Some(Frame::Event {
                        id: p.id,
                        kind,
                        data: p.data,
                        stamp,
                    });
                }
                if p.comment {
                    return Some(Frame::Comment);
                }
                continue;
            }
            if line[0] == b':' {
                self.pending.comment = true;
                continue;
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &[][..]),
            };
            match field {
                b"id" => {
                    self.pending.id = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok())
                }
                b"event" => self.pending.kind = Some(Kind::of(value)),
                b"data" => {
                    self.pending.has_data = true;
                    match self.pending.kind {
                        Some(Kind::Error) => {
                            self.pending.data = Some(String::from_utf8_lossy(value).into_owned());
                        }
                        // Only streams reading stamps look into data (`event:` may come after
                        // `data:`; then every data line is searched); the first stamp counts.
                        Some(Kind::MessageComplete) | None
                            if self.stamps && self.pending.emitted_us.is_none() =>
                        {
                            self.pending.emitted_us = find_stamp(value);
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn stamps_in_data() {
        let data = br#"{"message_id":"msg_stream_1_5","message":{"content":[{"type":"text","text":"chunk 5 t=1700000000123456 lorem ipsum"}],"model":"stream:10:1:200:ts"}}"#;
        assert_eq!(find_stamp(data), Some(1_700_000_000_123_456));
        assert_eq!(find_stamp(br#"{"text":"chunk 5 t=42"}"#), Some(42));
        assert_eq!(find_stamp(br#"{"text":"chunk 5 lorem ipsum"}"#), None);
        assert_eq!(find_stamp(br#"{"text":"chunk 5 t=x1"}"#), None);
        assert_eq!(find_stamp(br#"{"text":"chunk 5 t="}"#), None);
        assert_eq!(
            find_stamp(br#"{"text":"chunk 5 t=99999999999999999999999"}"#),
            None
        );
    }

    fn frames(parser: &mut Parser, input: &[u8]) -> Vec<Frame> {
        // Byte by byte: frames split anywhere must parse the same.
        let mut out = Vec::new();
        for b in input {
            parser.push(std::slice::from_ref(b));
            while let Some(frame) = parser.parse_one() {
                out.push(frame);
            }
        }
        out
    }

    const STREAM: &[u8] =
        b"id: 2\nevent: message_complete\ndata: {\"text\":\"chunk 1 t=1000 a\"}\n\n\
        : keepalive\n\n\
        event: message_complete\r\nid: 3\r\ndata: {\"text\":\"chunk 2 lorem\"}\r\n\r\n\
        data: {\"text\":\"chunk 3 t=3000\"}\nevent: message_complete\nid: 4\n\n\
        id: 5\nevent: result\ndata: {\"x\":\" t=9\"}\n\n\
        id: 6\nevent: error\ndata: {\"code\":\"evicted\"}\n\n";

    #[test]
    fn frames_without_stamps() {
        let mut parser = Parser::new();
        let frames = frames(&mut parser, STREAM);
        assert_eq!(frames.len(), 6, "{frames:?}");
        assert!(matches!(frames[1], Frame::Comment));
        for frame in &frames {
            if let Frame::Event { stamp, kind, .. } = frame {
                assert_eq!(*stamp, None, "{kind:?}");
            }
        }
        let Frame::Event { id, kind, data, .. } = &frames[5] else {
            panic!("{frames:?}")
        };
        assert_eq!((*id, *kind), (Some(6), Kind::Error));
        assert_eq!(data.as_deref(), Some(r#"{"code":"evicted"}"#));
    }

    #[test]
    fn frames_with_stamps() {
        let mut parser = Parser::new();
        parser.stamps = true;
        let before = unix_micros();
        let frames = frames(&mut parser, STREAM);
        let events: Vec<(Option<u64>, Kind, Option<Option<u64>>)> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Event {
                    id, kind, stamp, ..
                } => Some((*id, *kind, stamp.map(|s| s.emitted_us))),
                Frame::Comment => None,
            })
            .collect();
        assert_eq!(
            events,
            [
                (Some(2), Kind::MessageComplete, Some(Some(1000))),
                (Some(3), Kind::MessageComplete, Some(None)),
                (Some(4), Kind::MessageComplete, Some(Some(3000))),
                (Some(5), Kind::Result, None),
                (Some(6), Kind::Error, None),
            ]
        );
        let Frame::Event {
            stamp: Some(stamp), ..
        } = frames[0]
        else {
            panic!()
        };
        assert!(stamp.received_us >= before && stamp.received_us <= unix_micros());
    }
}
