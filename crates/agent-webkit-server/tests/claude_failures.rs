//! CLI-reported failures over HTTP, on both adapters (`--framework axum|actix`), with the fake
//! `claude` executable: a rejected key's `api_retry` frames reach the client as `api_retry`
//! events, the first one followed at once by `error {code: "authentication_failed"}`, and the
//! turn is interrupted (its `result` follows in well under the CLI's minutes of retries); a
//! refused request gets `error {code: "api_error"}` before its unchanged `result`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use agent_webkit_testkit::fake_claude::fake_claude_server;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(15);

async fn server(framework: &str, dir: &TempDir) -> (ServerProcess, Client, String) {
    let (server, work) = fake_claude_server(BIN, framework, dir.path(), &[], &[])
        .await
        .unwrap();
    let client = server.client(None);
    (server, client, work)
}

async fn rejected_key(framework: &str) {
    let dir = TempDir::new("claude-failures").unwrap();
    let (_server, client, work) = server(framework, &dir).await;
    let id = client.create(&json!({"cwd": work})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let sent = Instant::now();
    let r = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "[[auth_retry]]"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let frames = stream.until("error", T).await.unwrap();
    let reported = sent.elapsed();
    let retry = frames
        .iter()
        .find(|f| f.event == "api_retry")
        .unwrap_or_else(|| panic!("{framework}: no api_retry before the error"));
    let retry = retry.json();
    assert_eq!(retry["attempt"], 1);
    assert_eq!(retry["max_retries"], 10);
    assert_eq!(retry["error_status"], 401);
    assert_eq!(retry["error"], "authentication_failed");
    assert!(retry["retry_delay_ms"].as_u64().unwrap() > 0);
    let error = frames.last().unwrap().json();
    assert_eq!(error["code"], "authentication_failed", "{error}");
    // The second retry would come 0.6 s after the first: the error is in before it.
    assert!(
        reported < Duration::from_secs(1),
        "{framework}: {reported:?}"
    );
    let rest = stream.until("result", T).await.unwrap();
    let ended = sent.elapsed();
    eprintln!("{framework}: authentication_failed after {reported:?}, turn ended after {ended:?}");
    assert!(
        rest.iter().all(|f| f.event != "error"),
        "{framework}: reported twice"
    );
    assert_eq!(
        rest.last().unwrap().json()["subtype"],
        "error_during_execution"
    );
    assert!(ended < Duration::from_secs(5), "{framework}: {ended:?}");
}

async fn refused_request(framework: &str) {
    let dir = TempDir::new("claude-failures").unwrap();
    let (_server, client, work) = server(framework, &dir).await;
    let id = client.create(&json!({"cwd": work})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    client
        .input(
            &id,
            &json!({"type": "user_message", "content": "[[api_error]]"}),
        )
        .await
        .unwrap();
    let frames = stream.until("result", T).await.unwrap();
    let n = frames.len();
    assert_eq!(frames[n - 2].event, "error", "{framework}");
    let error = frames[n - 2].json();
    assert_eq!(error["code"], "api_error");
    assert!(
        error["message"].as_str().unwrap().contains("HTTP 400"),
        "{error}"
    );
    let result = frames[n - 1].json();
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], true);
    assert_eq!(result["api_error_status"], 400);
}

#[tokio::test]
async fn rejected_key_axum() {
    rejected_key("axum").await;
}

#[tokio::test]
async fn rejected_key_actix() {
    rejected_key("actix").await;
}

#[tokio::test]
async fn refused_request_axum() {
    refused_request("axum").await;
}

#[tokio::test]
async fn refused_request_actix() {
    refused_request("actix").await;
}
