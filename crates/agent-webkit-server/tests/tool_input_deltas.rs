//! The `tool_input_deltas` create option, on both adapters, with the fake `claude` executable
//! (which streams a tool call's input as an `input_json_delta`): a session created with
//! `"tool_input_deltas": true` gets its tool input as `message_delta` events, one created
//! without it (or with `false`) does not, unless the server default (`--claude-tool-input-deltas`)
//! is on — then `false` turns them off for that session. A value that is not a boolean is a 400.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_webkit_testkit::fake_claude::fake_claude_server;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(15);

async fn server(framework: &str, dir: &TempDir, extra: &[&str]) -> (ServerProcess, Client, String) {
    let (server, work) =
        fake_claude_server(BIN, framework, dir.path(), extra, &[("RUST_LOG", "warn")])
            .await
            .unwrap();
    let client = server.client(None);
    (server, client, work)
}

/// Runs a tool turn in a session created with `option` (`None`: field absent) and returns
/// whether its tool input was streamed as a `message_delta`.
async fn streams_tool_input(client: &Client, work: &str, option: Option<bool>) -> bool {
    let mut body = json!({"cwd": work});
    if let Some(on) = option {
        body["tool_input_deltas"] = json!(on);
    }
    let id = client.create(&body).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let r = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "[[bash: echo hi]]"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let frames = stream.until("permission_request", T).await.unwrap();
    assert!(
        frames.iter().any(|f| f.event == "tool_use"),
        "a tool turn: {frames:?}"
    );
    let streamed = frames.iter().any(|f| {
        let data: Value = f.json();
        f.event == "message_delta" && data["delta"]["type"] == "input_json_delta"
    });
    assert_eq!(client.delete(&id).await.unwrap(), 204);
    streamed
}

async fn create_option(framework: &str) {
    let dir = TempDir::new("tool-input-deltas").unwrap();
    let (_server, client, work) = server(framework, &dir, &[]).await;
    assert!(
        !streams_tool_input(&client, &work, None).await,
        "off by default"
    );
    assert!(!streams_tool_input(&client, &work, Some(false)).await);
    assert!(
        streams_tool_input(&client, &work, Some(true)).await,
        "on for a session created with it"
    );
    for bad in [json!("yes"), json!(1), json!({})] {
        let r = client
            .create_raw(&json!({"cwd": work, "tool_input_deltas": bad}))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["detail"], "Invalid field tool_input_deltas: expected a boolean",
            "{bad}: {body}"
        );
    }
}

async fn overrides_server_default(framework: &str) {
    let dir = TempDir::new("tool-input-deltas-default").unwrap();
    let (_server, client, work) = server(framework, &dir, &["--claude-tool-input-deltas"]).await;
    assert!(
        streams_tool_input(&client, &work, None).await,
        "the server default"
    );
    assert!(
        !streams_tool_input(&client, &work, Some(false)).await,
        "off for a session created with false"
    );
}

#[tokio::test]
async fn create_option_axum() {
    create_option("axum").await;
}

#[tokio::test]
async fn create_option_actix() {
    create_option("actix").await;
}

#[tokio::test]
async fn overrides_server_default_axum() {
    overrides_server_default("axum").await;
}

#[tokio::test]
async fn overrides_server_default_actix() {
    overrides_server_default("actix").await;
}
