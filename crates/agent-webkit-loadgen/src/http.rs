//! A minimal HTTP/1.1 client (hyper 1, one connection per stream) and an SSE frame parser that
//! reads only what the scenarios need (`id`, `event`; `data` of rare events) — cheap enough to
//! count millions of events on the machine that also runs the server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

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
        let (status, body) = self
            .call(Method::POST, "/sessions", Some(&json!({ "model": model })))
            .await?;
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
            b"session_ready" => Self::SessionReady,
            b"result" => Self::Result,
            b"error" => Self::Error,
            b"done" => Self::Done,
            _ => Self::Other,
        }
    }
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
    },
    /// A comment frame (keepalive).
    Comment,
}

#[derive(Default)]
struct Pending {
    id: Option<u64>,
    kind: Option<Kind>,
    data: Option<String>,
    has_data: bool,
    comment: bool,
}

/// An open SSE stream.
pub struct Sse {
    body: Incoming,
    buf: Vec<u8>,
    pos: usize,
    pending: Pending,
    /// Bytes received so far.
    pub bytes: u64,
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
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
            pending: Pending::default(),
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
    /// The next frame; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<Frame>, String> {
        loop {
            if let Some(frame) = self.parse_one() {
                return Ok(Some(frame));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("stream read: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if self.pos > 0 {
                            self.buf.drain(..self.pos);
                            self.pos = 0;
                        }
                        self.bytes += data.len() as u64;
                        self.buf.extend_from_slice(&data);
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
        loop {
            if let Frame::Event { id, kind, data } = self.next_within(limit).await? {
                if kind == Kind::Error {
                    return Err(format!(
                        "error event (id {id:?}): {}",
                        data.unwrap_or_default()
                    ));
                }
                return Ok((id, kind));
            }
        }
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
                    return Some(Frame::Event {
                        id: p.id,
                        kind: p.kind.unwrap_or(Kind::Other),
                        data: p.data,
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
                    if self.pending.kind == Some(Kind::Error) {
                        self.pending.data = Some(String::from_utf8_lossy(value).into_owned());
                    }
                }
                _ => {}
            }
        }
        None
    }
}
