//! A recording tap: a TCP relay in front of a server that passes every byte through unchanged
//! (one upstream connection per client connection, FIN and close propagated) and parses a
//! copy of both directions as HTTP/1.x, so a test can check every response the server sent —
//! status, headers, body, SSE frames — whatever client code produced it (reqwest or raw TCP).
//!
//! [`Target::with_recording`](crate::conformance::Target::with_recording) puts one in front of
//! every server a conformance check starts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::{Result, SseFrame};

/// One response the server sent, with the request it answered.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request method (`?` when the request head never completed).
    pub method: String,
    /// The request path without the query (`?` when unknown).
    pub path: String,
    /// The response status.
    pub status: u16,
    /// Response headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The response body (de-chunked).
    pub body: Vec<u8>,
    /// Whether the body was complete (false: the connection ended first, e.g. an SSE stream the
    /// client dropped).
    pub complete: bool,
}

impl Exchange {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type of the body (`content-type` without parameters).
    pub fn media_type(&self) -> Option<&str> {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap_or(v).trim())
    }

    /// The complete SSE frames of the body (comments included).
    pub fn sse_frames(&self) -> Vec<SseFrame> {
        let text = String::from_utf8_lossy(&self.body);
        let mut frames = Vec::new();
        let mut rest: &str = &text;
        while let Some(end) = rest.find("\n\n") {
            frames.push(crate::parse_frame(&rest[..end + 2]));
            rest = &rest[end + 2..];
        }
        frames
    }
}

/// What a tap recorded; shared by every tap of a test.
#[derive(Debug, Default)]
pub struct Recording {
    exchanges: Mutex<Vec<Exchange>>,
}

impl Recording {
    /// A new, empty recording.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn push(&self, exchange: Exchange) {
        if let Ok(mut all) = self.exchanges.lock() {
            all.push(exchange);
        }
    }

    /// Everything recorded so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges
            .lock()
            .map(|all| all.clone())
            .unwrap_or_default()
    }
}

/// A running tap; stops (and drops its connections) on drop.
#[derive(Debug)]
pub struct Tap {
    /// `http://127.0.0.1:PORT` of the tap.
    pub base_url: String,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Tap {
    /// Starts a tap relaying to `upstream` (`http://host:port`), recording into `recording`.
    pub async fn start(upstream: &str, recording: Arc<Recording>) -> Result<Self> {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let accept = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        relays.spawn(relay(client, upstream.clone(), Arc::clone(&recording)));
                    }
                    Some(_) = relays.join_next(), if !relays.is_empty() => {}
                }
            }
        });
        Ok(Self { base_url, accept })
    }
}

type Requests = Arc<Mutex<VecDeque<(String, String)>>>;

async fn relay(client: TcpStream, upstream: String, recording: Arc<Recording>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests: Requests = Arc::default();
    let pending = Arc::clone(&requests);
    let up = async move {
        let mut parser = RequestParser::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                server_write.shutdown().await?;
                return Ok::<_, std::io::Error>(());
            }
            for request in parser.feed(&buf[..n]) {
                if let Ok(mut queue) = pending.lock() {
                    queue.push_back(request);
                }
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let down = async move {
        // Records the response in progress however this ends (also when the tap is dropped).
        let mut parser = Recorder {
            parser: ResponseParser::default(),
            recording,
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = client_write.shutdown().await;
                return;
            }
            for exchange in parser.parser.feed(&buf[..n], &requests) {
                parser.recording.push(exchange);
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut down => {}
        sent = &mut up => {
            if sent.is_ok() {
                down.await;
            }
        }
    }
}

/// The response parser of one connection; records the response in progress when dropped.
struct Recorder {
    parser: ResponseParser,
    recording: Arc<Recording>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(exchange) = self.parser.finish() {
            self.recording.push(exchange);
        }
    }
}

/// How a message body is delimited.
#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Removes and returns a complete head (up to the blank line), if the buffer holds one.
fn take_head(buf: &mut Vec<u8>) -> Option<String> {
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..at]).into_owned();
    buf.drain(..at + 4);
    Some(head)
}

fn headers_of(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

fn framing(headers: &[(String, String)], default: Framing) -> Framing {
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked
    } else if let Some(len) = get("content-length").and_then(|v| v.parse().ok()) {
        Framing::Length(len)
    } else {
        default
    }
}

/// Decodes as much of a chunked body as `buf` holds into `out`; `true` once the last chunk
/// (and trailers) went by.
fn dechunk(buf: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    loop {
        let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            // Trailers end with an empty line.
            let Some(end) = buf[line_end..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| line_end + p + 4)
            else {
                return false;
            };
            buf.drain(..end);
            return true;
        }
        let start = line_end + 2;
        if buf.len() < start + size + 2 {
            return false;
        }
        out.extend_from_slice(&buf[start..start + size]);
        buf.drain(..start + size + 2);
    }
}

/// Splits the client's bytes into requests: `(method, path)` per complete head.
#[derive(Debug, Default)]
struct RequestParser {
    buf: Vec<u8>,
    body: Option<Framing>,
    sink: Vec<u8>,
}

impl RequestParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match self.body.take() {
                None => {
                    let Some(head) = take_head(&mut self.buf) else {
                        return out;
                    };
                    let mut words = head.lines().next().unwrap_or("").split_whitespace();
                    let method = words.next().unwrap_or("?").to_owned();
                    let target = words.next().unwrap_or("?");
                    let path = target.split('?').next().unwrap_or(target).to_owned();
                    out.push((method, path));
                    match framing(&headers_of(&head), Framing::Length(0)) {
                        Framing::Length(0) => {}
                        other => self.body = Some(other),
                    }
                }
                Some(Framing::Length(n)) => {
                    let take = n.min(self.buf.len());
                    self.buf.drain(..take);
                    if take < n {
                        self.body = Some(Framing::Length(n - take));
                        return out;
                    }
                }
                Some(Framing::Chunked) => {
                    if !dechunk(&mut self.buf, &mut self.sink) {
                        self.body = Some(Framing::Chunked);
                        return out;
                    }
                    self.sink.clear();
                }
                Some(Framing::UntilClose) => {
                    self.buf.clear();
                    self.body = Some(Framing::UntilClose);
                    return out;
                }
            }
        }
    }
}

/// Splits the server's bytes into responses, paired in order with the requests.
#[derive(Debug, Default)]
struct ResponseParser {
    buf: Vec<u8>,
    current: Option<(Exchange, Framing)>,
}

impl ResponseParser {
    fn feed(&mut self, bytes: &[u8], requests: &Requests) -> Vec<Exchange> {
        self.buf.extend_from_slice(bytes);
        let mut done = Vec::new();
        loop {
            let Some((mut exchange, framing)) = self.current.take() else {
                let Some(head) = take_head(&mut self.buf) else {
                    return done;
                };
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if (100..200).contains(&status) {
                    continue;
                }
                let (method, path) = requests
                    .lock()
                    .ok()
                    .and_then(|mut q| q.pop_front())
                    .unwrap_or_else(|| ("?".into(), "?".into()));
                let headers = headers_of(&head);
                let no_body = method == "HEAD" || status == 204 || status == 304;
                let framing = if no_body {
                    Framing::Length(0)
                } else {
                    framing(&headers, Framing::UntilClose)
                };
                let exchange = Exchange {
                    method,
                    path,
                    status,
                    headers,
                    body: Vec::new(),
                    complete: false,
                };
                self.current = Some((exchange, framing));
                continue;
            };
            match framing {
                Framing::Length(n) => {
                    let take = n.min(self.buf.len());
                    exchange.body.extend(self.buf.drain(..take));
                    if take < n {
                        self.current = Some((exchange, Framing::Length(n - take)));
                        return done;
                    }
                    exchange.complete = true;
                    done.push(exchange);
                }
                Framing::Chunked => {
                    if !dechunk(&mut self.buf, &mut exchange.body) {
                        self.current = Some((exchange, Framing::Chunked));
                        return done;
                    }
                    exchange.complete = true;
                    done.push(exchange);
                }
                Framing::UntilClose => {
                    exchange.body.append(&mut self.buf);
                    self.current = Some((exchange, Framing::UntilClose));
                    return done;
                }
            }
        }
    }

    /// The connection ended: the response in progress, if any (complete when it was delimited
    /// by the close).
    fn finish(&mut self) -> Option<Exchange> {
        let (mut exchange, framing) = self.current.take()?;
        exchange.complete = matches!(framing, Framing::UntilClose);
        Some(exchange)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pairs_pipelined_requests_with_chunked_and_sized_responses() {
        let requests: Requests = Arc::default();
        let mut req = RequestParser::default();
        let got = req.feed(b"POST /sessions?x=1 HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}GET /sessions/a/stream HTTP/1.1\r\n\r\n");
        assert_eq!(got.len(), 2);
        requests.lock().unwrap().extend(got);
        let mut resp = ResponseParser::default();
        let out = resp.feed(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            &requests,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].method.as_str(), out[0].path.as_str()),
            ("POST", "/sessions")
        );
        assert_eq!(out[0].body, b"{\"a\":1}");
        let frame = b"id: 1\nevent: done\ndata: {}\n\n";
        let mut chunk = format!("{:x}\r\n", frame.len()).into_bytes();
        chunk.extend_from_slice(frame);
        chunk.extend_from_slice(b"\r\n0\r\n\r\n");
        let out = resp.feed(&chunk, &requests);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "/sessions/a/stream");
        assert!(out[0].complete);
        let frames = out[0].sse_frames();
        assert_eq!(frames[0].event, "done");
        assert_eq!(frames[0].id, Some(1));
    }
}
