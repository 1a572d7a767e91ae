//! A mock Anthropic Messages API, good enough to run the real Claude Code CLI offline.
//!
//! [`MockAnthropicApi::start`] binds `127.0.0.1:0` and serves `POST /v1/messages` (any query
//! string). Every request is recorded ([`MockAnthropicApi::requests`]). Streaming requests get a
//! reply in Anthropic's exact SSE format; the reply is decided from the request itself (no
//! script, no state), by looking at the last user message:
//!
//! - its last block (ignoring `<system-reminder>` text blocks) is a `tool_result` → text
//!   `Tool result seen: <first 80 chars of its text>`, `end_turn`;
//! - otherwise that last `text` block (or the string content) is searched for one directive:
//!   - `[[bash: CMD]]` → text "Running it." + tool_use `Bash {"command":CMD,"description":"run"}`;
//!   - `[[read: PATH]]` → tool_use `Read {"file_path":PATH}`;
//!   - `[[write: PATH | TEXT]]` → tool_use `Write {"file_path":PATH,"content":TEXT}`;
//!   - `[[ask: QUESTION | OPT1 | OPT2 …]]` → tool_use `AskUserQuestion` (header `Pick`);
//!   - `[[slow: N]]` → N text deltas about 100 ms apart;
//!   - `[[error: STATUS]]` → HTTP STATUS with an Anthropic-style error body (401
//!     `authentication_error`, 429 `rate_limit_error` with `retry-after` and the
//!     `anthropic-ratelimit-*` reset headers of [`RATE_LIMIT_RESET`], 529 `overloaded_error`,
//!     400 `invalid_request_error`, ...);
//!   - no directive → text `Echo: <text>`, split into several small deltas.
//!
//! Non-streaming requests (the CLI's side call after `set_model`) get a plain JSON message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::{Result, TestkitError};

/// Delay between the text deltas of a `[[slow: N]]` reply.
pub const SLOW_DELTA_INTERVAL: Duration = Duration::from_millis(100);

/// The reset time the mock's 429 answers announce (`anthropic-ratelimit-*-reset` headers).
pub const RATE_LIMIT_RESET: &str = "2030-01-01T00:00:00Z";

/// The text of the reply to a non-streaming request.
pub const SIDE_REPLY_TEXT: &str = "Mock side reply";

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<Value>>,
    /// The `usage` of every streamed reply, with its `model`.
    replies: Mutex<Vec<Value>>,
    notify: Notify,
    message_counter: AtomicU64,
    tool_counter: AtomicU64,
}

impl Shared {
    fn record(&self, entry: Value) {
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(entry);
        }
        self.notify.notify_waiters();
    }

    fn next_message_id(&self) -> String {
        format!(
            "msg_mock_{}",
            self.message_counter.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    fn next_tool_id(&self) -> String {
        format!(
            "toolu_mock_{}",
            self.tool_counter.fetch_add(1, Ordering::SeqCst) + 1
        )
    }
}

/// A running mock Messages API; the server task stops when this is dropped.
#[derive(Debug)]
pub struct MockAnthropicApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockAnthropicApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockAnthropicApi {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash) — the value for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received, in order: `{"method", "path", "body", "stream", "messages"}`
    /// (`path` includes the query string; `body` is the parsed JSON body or `null`;
    /// `messages` is `body.messages` or `[]`; `stream` is `body.stream == true`).
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The usage every streamed reply reported (`{"model", "input_tokens", "output_tokens",
    /// "cache_read_input_tokens", "cache_creation_input_tokens"}`), in order.
    pub fn reply_usage(&self) -> Vec<Value> {
        self.shared
            .replies
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Only the streaming `POST /v1/messages` requests (the model turns), in order.
    pub fn streaming_requests(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["stream"] == true)
            .collect()
    }

    /// The `messages` list of every request, in order.
    pub fn messages(&self) -> Vec<Vec<Value>> {
        self.requests()
            .iter()
            .map(|r| r["messages"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until at least `n` requests have arrived; returns them all.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        self.wait_until(timeout, &format!("{n} mock API requests"), |r| r.len() >= n)
            .await
    }

    /// Waits until at least `n` streaming requests have arrived; returns those.
    pub async fn wait_for_streaming_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let all = self
            .wait_until(timeout, &format!("{n} streaming mock API requests"), |r| {
                r.iter().filter(|x| x["stream"] == true).count() >= n
            })
            .await?;
        Ok(all.into_iter().filter(|r| r["stream"] == true).collect())
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let wait = async {
            loop {
                let notified = self.shared.notify.notified();
                let requests = self.requests();
                if done(&requests) {
                    return requests;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| TestkitError::Timeout(format!("{what} (have {})", self.requests().len())))
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = parsed["stream"] == true;
    shared.record(json!({
        "method": method.as_str(),
        "path": uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path()),
        "body": parsed,
        "stream": stream,
        "messages": parsed["messages"].as_array().cloned().unwrap_or_default(),
    }));
    if method != Method::POST || uri.path() != "/v1/messages" {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found_error",
            &format!("mock: no route for {method} {}", uri.path()),
        );
    }
    if parsed.is_null() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "mock: body is not JSON",
        );
    }
    let model = parsed["model"].as_str().unwrap_or("claude-mock").to_owned();
    if !stream {
        return json_response(
            StatusCode::OK,
            &json!({
                "id": shared.next_message_id(),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": SIDE_REPLY_TEXT}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 1, "output_tokens": 1,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }),
        );
    }
    match plan_reply(&parsed) {
        Plan::Error(status) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error_response(
                code,
                error_type(status),
                &format!("mock: scripted error {status}"),
            );
            if code == StatusCode::TOO_MANY_REQUESTS {
                let headers = response.headers_mut();
                let reset = axum::http::HeaderValue::from_static(RATE_LIMIT_RESET);
                headers.insert("retry-after", axum::http::HeaderValue::from_static("1"));
                for name in [
                    "anthropic-ratelimit-requests-reset",
                    "anthropic-ratelimit-tokens-reset",
                    "anthropic-ratelimit-input-tokens-reset",
                ] {
                    headers.insert(name, reset.clone());
                }
                headers.insert(
                    "anthropic-ratelimit-requests-remaining",
                    axum::http::HeaderValue::from_static("0"),
                );
            }
            response
        }
        Plan::Blocks(blocks) => stream_response(&shared, &model, blocks),
    }
}

/// One content block of a planned reply.
#[derive(Debug, Clone, PartialEq)]
enum PlannedBlock {
    /// Text, streamed as these chunks, with this delay before each chunk.
    Text(Vec<String>, Duration),
    /// A tool call.
    ToolUse(String, Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Plan {
    Blocks(Vec<PlannedBlock>),
    Error(u16),
}

fn text_block(text: &str) -> PlannedBlock {
    PlannedBlock::Text(chunks(text, 8), Duration::ZERO)
}

/// Splits `text` into pieces of at most `size` characters.
fn chunks(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// The text of a block list or string (`tool_result` content).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn plan_reply(body: &Value) -> Plan {
    let empty = Vec::new();
    let messages = body["messages"].as_array().unwrap_or(&empty);
    // The CLI also puts `system`-role entries into `messages`; only user/assistant count.
    let conversational: Vec<&Value> = messages
        .iter()
        .filter(|m| m["role"] == "user" || m["role"] == "assistant")
        .collect();
    let Some(last) = conversational.last() else {
        return Plan::Blocks(vec![text_block("Echo: ")]);
    };
    if last["role"] != "user" {
        return Plan::Blocks(vec![text_block("Echo: ")]);
    }
    // The last block that is not a `<system-reminder>` decides: a tool result, or the text.
    let blocks = match &last["content"] {
        Value::String(s) => return plan_for_text(s),
        Value::Array(blocks) => blocks,
        _ => return plan_for_text(""),
    };
    let decisive = blocks.iter().rev().find(|b| {
        b["type"] == "tool_result"
            || (b["type"] == "text"
                && !b["text"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start()
                    .starts_with("<system-reminder>"))
    });
    match decisive {
        Some(b) if b["type"] == "tool_result" => {
            let text: String = content_text(&b["content"]).chars().take(80).collect();
            Plan::Blocks(vec![text_block(&format!("Tool result seen: {text}"))])
        }
        Some(b) => plan_for_text(b["text"].as_str().unwrap_or_default()),
        None => plan_for_text(""),
    }
}

/// Finds `[[name: args]]` in `text`.
fn directive(text: &str) -> Option<(String, String)> {
    let start = text.find("[[")?;
    let rest = &text[start + 2..];
    let end = rest.find("]]")?;
    let inner = &rest[..end];
    let (name, args) = inner.split_once(':')?;
    Some((name.trim().to_ascii_lowercase(), args.trim().to_owned()))
}

fn plan_for_text(text: &str) -> Plan {
    let Some((name, args)) = directive(text) else {
        return Plan::Blocks(vec![text_block(&format!("Echo: {text}"))]);
    };
    let parts: Vec<String> = args.split('|').map(|p| p.trim().to_owned()).collect();
    match name.as_str() {
        "bash" => Plan::Blocks(vec![
            text_block("Running it."),
            PlannedBlock::ToolUse(
                "Bash".into(),
                json!({"command": args, "description": "run"}),
            ),
        ]),
        "read" => Plan::Blocks(vec![PlannedBlock::ToolUse(
            "Read".into(),
            json!({"file_path": args}),
        )]),
        "write" => {
            let path = parts.first().cloned().unwrap_or_default();
            let content = parts.get(1..).map(|p| p.join(" | ")).unwrap_or_default();
            Plan::Blocks(vec![PlannedBlock::ToolUse(
                "Write".into(),
                json!({"file_path": path, "content": content}),
            )])
        }
        "ask" => {
            let question = parts.first().cloned().unwrap_or_default();
            let options: Vec<Value> = parts
                .iter()
                .skip(1)
                .map(|label| json!({"label": label, "description": format!("Option {label}")}))
                .collect();
            Plan::Blocks(vec![PlannedBlock::ToolUse(
                "AskUserQuestion".into(),
                json!({"questions": [{
                    "question": question,
                    "header": "Pick",
                    "options": options,
                    "multiSelect": false,
                }]}),
            )])
        }
        "slow" => {
            let n: usize = args.parse().unwrap_or(10);
            let pieces = (1..=n).map(|i| format!("slow {i}. ")).collect();
            Plan::Blocks(vec![PlannedBlock::Text(pieces, SLOW_DELTA_INTERVAL)])
        }
        "error" => Plan::Error(args.parse().unwrap_or(500)),
        _ => Plan::Blocks(vec![text_block(&format!("Echo: {text}"))]),
    }
}

fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        "request-id",
        axum::http::HeaderValue::from_static("req_mock"),
    );
    response
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// One SSE frame in Anthropic's format.
fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The full event list of a streamed reply, each with the delay to wait before sending it.
fn reply_events(shared: &Shared, model: &str, blocks: Vec<PlannedBlock>) -> Vec<(Duration, Bytes)> {
    let mut out = Vec::new();
    let mut output_tokens = 0u64;
    let mut stop_reason = "end_turn";
    out.push((
        Duration::ZERO,
        sse(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": shared.next_message_id(),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }}),
        ),
    ));
    out.push((Duration::ZERO, sse("ping", &json!({"type": "ping"}))));
    for (index, block) in blocks.into_iter().enumerate() {
        match block {
            PlannedBlock::Text(pieces, delay) => {
                out.push((
                    Duration::ZERO,
                    sse(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index,
                                "content_block": {"type": "text", "text": ""}}),
                    ),
                ));
                for piece in pieces {
                    output_tokens += 1;
                    out.push((
                        delay,
                        sse(
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": index,
                                    "delta": {"type": "text_delta", "text": piece}}),
                        ),
                    ));
                }
            }
            PlannedBlock::ToolUse(name, input) => {
                stop_reason = "tool_use";
                out.push((
                    Duration::ZERO,
                    sse(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index,
                                "content_block": {"type": "tool_use", "id": shared.next_tool_id(),
                                                  "name": name, "input": {}}}),
                    ),
                ));
                for piece in chunks(&input.to_string(), 12) {
                    output_tokens += 1;
                    out.push((
                        Duration::ZERO,
                        sse(
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": index,
                                    "delta": {"type": "input_json_delta", "partial_json": piece}}),
                        ),
                    ));
                }
            }
        }
        out.push((
            Duration::ZERO,
            sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ),
        ));
    }
    out.push((
        Duration::ZERO,
        sse(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens.max(1)}}),
        ),
    ));
    out.push((
        Duration::ZERO,
        sse("message_stop", &json!({"type": "message_stop"})),
    ));
    if let Ok(mut replies) = shared.replies.lock() {
        replies.push(json!({"model": model, "input_tokens": 10,
                            "output_tokens": output_tokens.max(1),
                            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}));
    }
    out
}

fn stream_response(shared: &Shared, model: &str, blocks: Vec<PlannedBlock>) -> Response {
    let events = reply_events(shared, model, blocks);
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        for (delay, bytes) in events {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(bytes).await.is_err() {
                return; // the client went away (e.g. an interrupt)
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        "request-id",
        axum::http::HeaderValue::from_static("req_mock"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(content: Value) -> Value {
        json!({"messages": [{"role": "user", "content": content},
                            {"role": "system", "content": "env"}]})
    }

    #[test]
    fn plans_from_the_last_user_text() {
        let body = user(json!([
            {"type": "text", "text": "<system-reminder>\n[[bash: no]]</system-reminder>"},
            {"type": "text", "text": "please [[bash: touch x]] now"},
        ]));
        let Plan::Blocks(blocks) = plan_reply(&body) else {
            panic!("blocks")
        };
        assert_eq!(
            blocks[1],
            PlannedBlock::ToolUse(
                "Bash".into(),
                json!({"command": "touch x", "description": "run"})
            )
        );
        assert_eq!(plan_reply(&user(json!("[[error: 529]]"))), Plan::Error(529));
        let Plan::Blocks(blocks) = plan_reply(&user(json!("hello there world"))) else {
            panic!("blocks")
        };
        let PlannedBlock::Text(pieces, _) = &blocks[0] else {
            panic!("text")
        };
        assert!(pieces.len() > 2);
        assert_eq!(pieces.concat(), "Echo: hello there world");
    }

    #[test]
    fn tool_results_win() {
        let body = json!({"messages": [
            {"role": "user", "content": "[[bash: ls]]"},
            {"role": "assistant", "content": []},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                           "content": [{"type": "text", "text": "ok"}]}]},
        ]});
        let Plan::Blocks(blocks) = plan_reply(&body) else {
            panic!("blocks")
        };
        let PlannedBlock::Text(pieces, _) = &blocks[0] else {
            panic!("text")
        };
        assert_eq!(pieces.concat(), "Tool result seen: ok");
    }

    #[test]
    fn ask_directive() {
        let Plan::Blocks(blocks) = plan_for_text("[[ask: Which? | Red | Blue]]") else {
            panic!("blocks")
        };
        let PlannedBlock::ToolUse(name, input) = &blocks[0] else {
            panic!("tool")
        };
        assert_eq!(name, "AskUserQuestion");
        assert_eq!(input["questions"][0]["question"], "Which?");
        assert_eq!(input["questions"][0]["options"][1]["label"], "Blue");
    }
}
