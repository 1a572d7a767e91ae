//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an in-process OTLP receiver (a tiny
//! HTTP/1.1 server decoding the protobuf `ExportTraceServiceRequest`), a create carrying a W3C
//! `traceparent` is exported as a span of that trace, a child of the caller's span, carrying
//! the session id; the turn gets its own span with the session id; and the CLI (the fake
//! `claude`, which records its environment) gets `TRACEPARENT` in the same trace. Without
//! export, the incoming `traceparent` is passed to the CLI as is, and the server's own
//! `TRACEPARENT` (and OTLP headers) never are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use agent_webkit_testkit::fake_claude::{fake_claude_server, RECORD_DIR_ENV};
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::Client;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(30);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TURN_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

/// An OTLP/HTTP receiver on a free port: every span of every export request goes to the
/// returned channel.
async fn receiver() -> (String, Spans) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                // One request after another on a kept-alive connection.
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push(line);
                    }
                    assert!(
                        head[0].starts_with("POST /v1/traces "),
                        "unexpected request {head:?}"
                    );
                    let length: usize = head
                        .iter()
                        .find_map(|h| {
                            let (name, value) = h.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .expect("a content-length");
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    let request = ExportTraceServiceRequest::decode(body.as_slice())
                        .expect("a protobuf ExportTraceServiceRequest");
                    for span in request
                        .resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans)
                    {
                        let _ = tx.send(span);
                    }
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (
        endpoint,
        Spans {
            rx,
            seen: Vec::new(),
        },
    )
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Spans received so far, and the channel bringing more.
struct Spans {
    rx: mpsc::UnboundedReceiver<Span>,
    seen: Vec<Span>,
}

impl Spans {
    /// The first span named `name` (received already or within `T`).
    async fn named(&mut self, name: &str) -> Span {
        if let Some(span) = self.seen.iter().find(|s| s.name == name) {
            return span.clone();
        }
        tokio::time::timeout(T, async {
            loop {
                let span = self.rx.recv().await.expect("receiver running");
                self.seen.push(span.clone());
                if span.name == name {
                    return span;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no span {name} exported"))
    }
}

/// The environment the (only) fake CLI process started with.
fn cli_env(record_dir: &Path) -> BTreeMap<String, String> {
    let entries: Vec<_> = std::fs::read_dir(record_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "one CLI process: {entries:?}");
    let record: Value = serde_json::from_slice(&std::fs::read(&entries[0]).unwrap()).unwrap();
    serde_json::from_value(record["env"].clone()).unwrap()
}

#[tokio::test]
async fn a_trace_reaches_the_otlp_receiver_and_the_cli() {
    let (endpoint, mut spans) = receiver().await;
    let dir = TempDir::new("otlp").unwrap();
    let record = dir.path().join("record");
    std::fs::create_dir_all(&record).unwrap();
    let record_arg = record.display().to_string();
    let (server, work) = fake_claude_server(
        BIN,
        "axum",
        dir.path(),
        &["--claude-warm-spares", "0", "--store", "memory"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "aw-otlp-test"),
            (RECORD_DIR_ENV, record_arg.as_str()),
        ],
    )
    .await
    .unwrap();
    let client = server.client(None);
    let response = create_traced(&client, &work).await;
    assert_eq!(response.status(), 200);
    let id = response.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let create = spans.named("POST /sessions").await;
    assert_eq!(hex(&create.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&create.parent_span_id),
        PARENT_ID,
        "a child of the caller's span"
    );
    assert_eq!(
        attribute(&create, "session_id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        attribute(&create, "http.route").as_deref(),
        Some("/sessions")
    );

    // The CLI runs in the same trace, under a span of this server.
    let env = cli_env(&record);
    let passed = env.get("TRACEPARENT").expect("TRACEPARENT reaches the CLI");
    let parts: Vec<&str> = passed.split('-').collect();
    assert_eq!(parts[1], TRACE_ID, "{passed}");
    assert_ne!(
        parts[2], PARENT_ID,
        "the server's own span is the CLI's parent: {passed}"
    );

    // A turn: its span carries the session id, a child of the request that sent the message
    // (here in another trace).
    let mut stream = client.stream(&id, None).await.unwrap();
    let sent = client
        .request(reqwest::Method::POST, &format!("/sessions/{id}/input"))
        .header("traceparent", format!("00-{TURN_TRACE_ID}-{PARENT_ID}-01"))
        .json(&json!({"type": "user_message", "content": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);
    stream.until("result", T).await.unwrap();
    let input = spans.named("POST /sessions/{id}/input").await;
    assert_eq!(hex(&input.trace_id), TURN_TRACE_ID);
    assert_eq!(
        attribute(&input, "session_id").as_deref(),
        Some(id.as_str())
    );
    let turn = spans.named("turn").await;
    assert_eq!(attribute(&turn, "session_id").as_deref(), Some(id.as_str()));
    assert_eq!(hex(&turn.trace_id), TURN_TRACE_ID);
    assert_eq!(turn.parent_span_id, input.span_id);
}

#[tokio::test]
async fn without_export_the_incoming_traceparent_is_passed_as_is() {
    let dir = TempDir::new("traceparent").unwrap();
    let record = dir.path().join("record");
    std::fs::create_dir_all(&record).unwrap();
    let record_arg = record.display().to_string();
    let stale = "00-11111111111111111111111111111111-2222222222222222-01";
    let (server, work) = fake_claude_server(
        BIN,
        "actix",
        dir.path(),
        &["--claude-warm-spares", "0", "--store", "memory"],
        &[
            (RECORD_DIR_ENV, record_arg.as_str()),
            ("TRACEPARENT", stale),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer collector-secret",
            ),
        ],
    )
    .await
    .unwrap();
    let client = server.client(None);
    let response = create_traced(&client, &work).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        cli_env(&record).get("TRACEPARENT"),
        Some(&traceparent()),
        "the caller's traceparent, not the server's own"
    );
    assert_eq!(
        cli_env(&record).get("OTEL_EXPORTER_OTLP_HEADERS"),
        None,
        "the collector's credentials stay with the server"
    );
    let id = response.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(client.delete(&id).await.unwrap(), 204);
    for entry in std::fs::read_dir(&record).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    // No traceparent on the request: none reaches the CLI (not even the server's own).
    client.create(&json!({"cwd": work})).await.unwrap();
    assert_eq!(cli_env(&record).get("TRACEPARENT"), None);
}

/// `POST /sessions` in `work` under the test's incoming `traceparent`.
async fn create_traced(client: &Client, work: &str) -> reqwest::Response {
    client
        .request(reqwest::Method::POST, "/sessions")
        .header("traceparent", traceparent())
        .json(&json!({ "cwd": work }))
        .send()
        .await
        .unwrap()
}
