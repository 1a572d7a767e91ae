//! What the fork and rewind tests share: a server running the real CLI against the mock
//! Messages API (JWT auth, principals alice and bob), turns that return their `user_message`
//! anchor, and the user texts of a model request.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_webkit_testkit::jwt_keys::{claims, hs256, SECRET};
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::{Client, ServerProcess, SseFrame, SseStream};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
pub const T: Duration = Duration::from_secs(40);

pub struct Rig {
    pub server: ServerProcess,
    pub mock: MockAnthropicApi,
    pub work: TempDir,
    pub alice: Client,
    pub bob: Client,
    _home: TempDir,
}

/// A server on `framework` running the CLI at `cli`, with `extra` flags.
pub async fn rig(cli: &std::path::Path, framework: &str, extra: &[&str]) -> Rig {
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("anchors-home").unwrap();
    let work = TempDir::new("anchors-work").unwrap();
    let env = offline_env(&mock, home.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let root = work.path().to_str().unwrap().to_owned();
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--framework",
        framework,
        "--agent",
        "claude",
        "--claude-path",
        cli.to_str().unwrap(),
        "--claude-setting-sources=",
        "--allowed-root",
        &root,
    ];
    args.extend_from_slice(extra);
    let server = ServerProcess::spawn_with_env(BIN, &args, &env)
        .await
        .unwrap();
    let alice = server.client(Some(&hs256(&claims("alice")).unwrap()));
    let bob = server.client(Some(&hs256(&claims("bob")).unwrap()));
    Rig {
        server,
        mock,
        work,
        alice,
        bob,
        _home: home,
    }
}

/// Posts `text` and waits for its turn's successful `result`; returns the message's anchor
/// (its `user_message` event's uuid) and the turn's frames.
pub async fn turn(
    client: &Client,
    id: &str,
    stream: &mut SseStream,
    text: &str,
) -> (String, Vec<SseFrame>) {
    let r = client
        .input(id, &json!({"type": "user_message", "content": text}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let frames = stream.until("result", T).await.unwrap();
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    let announced: Vec<Value> = frames
        .iter()
        .filter(|f| f.event == "user_message")
        .map(SseFrame::json)
        .collect();
    assert_eq!(announced.len(), 1, "one user_message per turn");
    assert_eq!(announced[0]["content"], text);
    let uuid = announced[0]["uuid"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&uuid).unwrap().get_version_num(), 4);
    (uuid, frames)
}

/// The texts the user said in a model request (system reminders left out).
pub fn user_texts(request: &Value) -> Vec<String> {
    let mut texts = Vec::new();
    for message in request["body"]["messages"].as_array().unwrap() {
        if message["role"] != "user" {
            continue;
        }
        match &message["content"] {
            Value::String(text) => texts.push(text.clone()),
            Value::Array(blocks) => {
                for block in blocks {
                    if let Some(text) = block["text"].as_str() {
                        if !text.starts_with("<system-reminder>") {
                            texts.push(text.to_owned());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    texts
}

/// The user texts of the mock's latest model request.
pub fn last_user_texts(mock: &MockAnthropicApi) -> Vec<String> {
    user_texts(mock.streaming_requests().last().unwrap())
}

/// Asserts an error answer's status and code.
pub async fn refused(response: reqwest::Response, status: u16, code: Option<&str>) {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"].as_str(), code, "{body}");
}
