//! MCP servers at runtime with the **real** Claude CLI against the mock Messages API and a real
//! stdio MCP server process (the testkit's `fake-mcp`), on both adapters: a server given at
//! create connects and is listed with its tool; toggled off and on, reconnected (the process
//! is started again each time), replaced by another set (the old one gone, the new one
//! connected, `mcp_status_change` events for each); the model calls the new server's tool and
//! gets the server's answer; and the operator's policy refuses what it does not allow.
//! Skips loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use agent_webkit_testkit::fake_mcp::fake_mcp_path;
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::{require_real_cli, Client, ServerProcess, SseStream};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(60);
/// A value only the client's MCP config holds: it must never come back in a listing.
const CLIENT_SECRET: &str = "client-secret-5f0e2a";

/// A server running the real CLI with an operator MCP server `ops`, plus `extra` flags.
async fn server(
    cli: &Path,
    framework: &str,
    mock: &MockAnthropicApi,
    home: &Path,
    work: &Path,
    extra: &[&str],
) -> ServerProcess {
    let fake = fake_mcp_path().unwrap();
    let operator = json!({"mcpServers": {"ops": {
        "type": "stdio", "command": fake, "args": ["--tool", "optool"],
    }}})
    .to_string();
    let env = offline_env(mock, home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut args = vec![
        "--no-auth",
        "--framework",
        framework,
        "--agent",
        "claude",
        "--claude-path",
        cli.to_str().unwrap(),
        "--claude-setting-sources=",
        "--claude-mcp-config",
        &operator,
        "--allowed-root",
        work.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ServerProcess::spawn_with_env(BIN, &args, &env)
        .await
        .unwrap()
}

async fn get_mcp(client: &Client, id: &str) -> (u16, Value) {
    let r = client
        .request(reqwest::Method::GET, &format!("/sessions/{id}/mcp"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(CLIENT_SECRET) && !text.contains("\"env\"") && !text.contains("args"),
        "the listing shows a config: {text}"
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn server_named<'a>(listing: &'a Value, name: &str) -> Option<&'a Value> {
    listing["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

/// Reads events until an `mcp_status_change` for `name` with `status` (earlier ones are
/// returned too).
async fn until_status(stream: &mut SseStream, name: &str, status: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let wait = async {
        while let Some(frame) = stream.next_event().await.unwrap() {
            if frame.event == "mcp_status_change" {
                let data = frame.json();
                seen.push(data.clone());
                if data["server_name"] == name && data["status"] == status {
                    return;
                }
            }
        }
        panic!("stream ended before {name} → {status}; saw {seen:?}");
    };
    if tokio::time::timeout(T, wait).await.is_err() {
        panic!("no mcp_status_change {name} → {status} within {T:?}; saw {seen:?}");
    }
    seen
}

/// A session in `work` created with one client server, `alpha` (`fake_mcp`), and its stream
/// read until `alpha` is connected.
async fn alpha_session(client: &Client, work: &Path, fake_mcp: &str) -> (String, SseStream) {
    let id = client
        .create(&json!({"cwd": work, "mcp_servers": {"alpha": {"command": fake_mcp}}}))
        .await
        .unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    until_status(&mut stream, "alpha", "connected").await;
    (id, stream)
}

/// The status of server `name` in the session's listing (`GET /sessions/{id}/mcp`).
async fn status_of(client: &Client, id: &str, name: &str) -> Value {
    let (_, listing) = get_mcp(client, id).await;
    match server_named(&listing, name) {
        Some(server) => server["status"].clone(),
        None => panic!("no {name} in {listing}"),
    }
}

/// Sends a user message to the (hibernated) session and waits for its turn's success.
async fn wake(client: &Client, id: &str, stream: &mut SseStream) {
    let (status, body) = input(
        client,
        id,
        json!({"type": "user_message", "content": "wake up"}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let frames = stream.until("result", T).await.unwrap();
    assert_eq!(frames.last().unwrap().json()["subtype"], "success");
}

async fn input(client: &Client, id: &str, body: Value) -> (u16, Value) {
    let r = client.input(id, &body).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn starts(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn runtime_mcp(framework: &str) {
    let test = format!("runtime_mcp_{framework}");
    let cli = require_real_cli!(&test);
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("mcp-home").unwrap();
    let work = TempDir::new("mcp-work").unwrap();
    let fake = fake_mcp_path().unwrap();
    let fake_str = fake.to_str().unwrap();
    let server = server(
        &cli,
        framework,
        &mock,
        home.path(),
        work.path(),
        &[
            "--client-mcp-command",
            fake_str,
            "--client-mcp-url-prefix",
            "http://127.0.0.1:9/allowed/",
        ],
    )
    .await;
    let client = server.client(None);
    let alpha_starts = home.path().join("alpha.starts");

    // Create with a server the policy allows: it connects, its status is an event.
    let id = client
        .create(&json!({
            "cwd": work.path(),
            "mcp_servers": {"alpha": {
                "type": "stdio",
                "command": fake_str,
                "args": ["--tool", "hello", "--starts-file", alpha_starts],
                "env": {"FAKE_MCP_GREETING": CLIENT_SECRET},
            }},
        }))
        .await
        .unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    until_status(&mut stream, "alpha", "connected").await;
    let (status, listing) = get_mcp(&client, &id).await;
    assert_eq!(status, 200, "{listing}");
    let alpha = server_named(&listing, "alpha").expect("alpha listed");
    assert_eq!(alpha["status"], "connected", "{listing}");
    assert_eq!(alpha["tools"], json!(["hello"]), "{listing}");
    assert!(server_named(&listing, "ops").is_some(), "{listing}");
    assert_eq!(starts(&alpha_starts), 1);

    // Toggle off and on: each change is an event; enabling starts the process again.
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_toggle", "server_name": "alpha", "enabled": false}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    until_status(&mut stream, "alpha", "disabled").await;
    let (_, listing) = get_mcp(&client, &id).await;
    assert_eq!(
        server_named(&listing, "alpha").unwrap()["status"],
        "disabled"
    );
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_toggle", "server_name": "alpha", "enabled": true}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    until_status(&mut stream, "alpha", "connected").await;
    assert_eq!(starts(&alpha_starts), 2);

    // Reconnect: a new process.
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_reconnect", "server_name": "alpha"}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(starts(&alpha_starts), 3);
    let (_, listing) = get_mcp(&client, &id).await;
    assert_eq!(
        server_named(&listing, "alpha").unwrap()["status"],
        "connected"
    );

    // Replace the client's set: alpha goes, beta connects, the operator's ops stays.
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_set_servers", "servers": {"beta": {
            "command": fake_str, "args": ["--tool", "bye", "--reply", "beta answers"],
        }}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"], json!(["beta"]), "{body}");
    assert_eq!(body["removed"], json!(["alpha"]), "{body}");
    assert_eq!(body["errors"], json!({}), "{body}");
    let seen = until_status(&mut stream, "alpha", "removed").await;
    assert!(
        seen.iter()
            .any(|e| e["server_name"] == "beta" && e["status"] == "connected"),
        "{seen:?}"
    );
    let (_, listing) = get_mcp(&client, &id).await;
    assert!(server_named(&listing, "alpha").is_none(), "{listing}");
    assert_eq!(
        server_named(&listing, "beta").unwrap()["tools"],
        json!(["bye"])
    );
    assert_eq!(
        server_named(&listing, "ops").unwrap()["status"],
        "connected"
    );

    // Refusals leave the set as it is.
    for (body, want, code) in [
        (
            json!({"type": "mcp_set_servers", "servers": {"x": {"command": "/bin/sh", "args": ["-c", "id"]}}}),
            403,
            "mcp_forbidden",
        ),
        (
            json!({"type": "mcp_set_servers", "servers": {"x": {"command": fake_str, "env": {"LD_PRELOAD": "/tmp/x.so"}}}}),
            403,
            "mcp_forbidden",
        ),
        (
            json!({"type": "mcp_set_servers", "servers": {"x": {"command": fake_str, "env": {"K": "${ANTHROPIC_API_KEY}"}}}}),
            403,
            "mcp_forbidden",
        ),
        (
            json!({"type": "mcp_set_servers", "servers": {"x": {"type": "http", "url": "http://127.0.0.1:9/other/mcp"}}}),
            403,
            "mcp_forbidden",
        ),
        (
            json!({"type": "mcp_set_servers", "servers": {"x": {"type": "stdio"}}}),
            400,
            "invalid_mcp_config",
        ),
        (
            json!({"type": "mcp_set_servers", "servers": {"bad name": {"command": fake_str}}}),
            400,
            "invalid_mcp_config",
        ),
        (
            json!({"type": "mcp_toggle", "server_name": "nope", "enabled": true}),
            404,
            "unknown_mcp_server",
        ),
        (
            json!({"type": "mcp_reconnect", "server_name": "alpha"}),
            404,
            "unknown_mcp_server",
        ),
    ] {
        let (status, answer) = input(&client, &id, body.clone()).await;
        assert_eq!(status, want, "{body} → {answer}");
        assert_eq!(answer["code"], code, "{body} → {answer}");
    }
    let (status, answer) = input(
        &client,
        &id,
        json!({"type": "mcp_set_servers", "servers": []}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let refused = client
        .create_raw(&json!({"cwd": work.path(), "mcp_servers": {"x": {"command": "/usr/bin/env"}}}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["code"], "mcp_forbidden", "{refused}");
    let (_, listing) = get_mcp(&client, &id).await;
    let names: Vec<&str> = listing["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{listing}");
    assert!(
        names.contains(&"ops") && names.contains(&"beta"),
        "{listing}"
    );

    // The model calls the new server's tool; the tool result is the server's answer.
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "user_message", "content": "[[tool: mcp__beta__bye | {\"text\": \"ping\"}]]"}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let frames = stream.until("permission_request", T).await.unwrap();
    let request = frames.last().unwrap().json();
    assert_eq!(request["tool_name"], "mcp__beta__bye", "{request}");
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "permission_response", "correlation_id": request["correlation_id"], "behavior": "allow"}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let frames = stream.until("result", T).await.unwrap();
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    let tool_result = frames
        .iter()
        .find(|f| f.event == "tool_result")
        .map(|f| f.json())
        .expect("a tool_result event");
    assert!(
        tool_result
            .to_string()
            .contains("beta answers: {\\\"text\\\":\\\"ping\\\"}"),
        "{tool_result}"
    );
    let sent_back = mock
        .messages()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array().cloned())
        .flatten()
        .find(|b| b["type"] == "tool_result")
        .expect("the tool result reached the model");
    assert!(
        sent_back.to_string().contains("beta answers"),
        "{sent_back}"
    );
    assert_eq!(client.delete(&id).await.unwrap(), 204);
}

#[tokio::test]
async fn runtime_mcp_axum() {
    runtime_mcp("axum").await;
}

#[tokio::test]
async fn runtime_mcp_actix() {
    runtime_mcp("actix").await;
}

/// Without the operator's opt-in, clients add nothing, but may toggle the operator's servers.
async fn default_policy(framework: &str) {
    let test = format!("default_policy_{framework}");
    let cli = require_real_cli!(&test);
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("mcp-home").unwrap();
    let work = TempDir::new("mcp-work").unwrap();
    let fake = fake_mcp_path().unwrap();
    let server = server(&cli, framework, &mock, home.path(), work.path(), &[]).await;
    let client = server.client(None);
    let refused = client
        .create_raw(&json!({"cwd": work.path(), "mcp_servers": {"x": {"command": fake}}}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["code"], "mcp_forbidden", "{refused}");
    let id = client.create(&json!({"cwd": work.path()})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_set_servers", "servers": {"x": {"command": fake}}}),
    )
    .await;
    assert_eq!(
        (status, &body["code"]),
        (403, &json!("mcp_forbidden")),
        "{body}"
    );
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_toggle", "server_name": "ops", "enabled": false}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    until_status(&mut stream, "ops", "disabled").await;
    let (status, listing) = get_mcp(&client, &id).await;
    assert_eq!(status, 200);
    assert_eq!(server_named(&listing, "ops").unwrap()["status"], "disabled");
    let (status, _) = get_mcp(&client, "no-such-session").await;
    assert_eq!(status, 404);
    assert_eq!(client.delete(&id).await.unwrap(), 204);
}

#[tokio::test]
async fn default_policy_axum() {
    default_policy("axum").await;
}

#[tokio::test]
async fn default_policy_actix() {
    default_policy("actix").await;
}

/// A set replaced while the agent is hibernated is recorded, and the woken agent starts with it.
async fn hibernated(framework: &str) {
    let test = format!("hibernated_{framework}");
    let cli = require_real_cli!(&test);
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("mcp-home").unwrap();
    let work = TempDir::new("mcp-work").unwrap();
    let fake = fake_mcp_path().unwrap();
    let fake_str = fake.to_str().unwrap();
    let server = server(
        &cli,
        framework,
        &mock,
        home.path(),
        work.path(),
        &["--client-mcp-command", fake_str, "--hibernate-after", "1"],
    )
    .await;
    let server_pid = server.pid().unwrap();
    let client = server.client(None);
    let (id, mut stream) = alpha_session(&client, work.path(), fake_str).await;
    agent_webkit_testkit::until_no_claude_children(server_pid, T)
        .await
        .unwrap();
    let (status, body) = get_mcp(&client, &id).await;
    assert_eq!(
        (status, &body["code"]),
        (409, &json!("session_hibernated")),
        "{body}"
    );
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_set_servers", "servers": {"beta": {"command": fake_str, "args": ["--tool", "bye"]}}}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "user_message", "content": "wake up"}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    until_status(&mut stream, "beta", "connected").await;
    let frames = stream.until("result", T).await.unwrap();
    assert_eq!(frames.last().unwrap().json()["subtype"], "success");
    let (status, listing) = get_mcp(&client, &id).await;
    assert_eq!(status, 200, "{listing}");
    assert!(server_named(&listing, "alpha").is_none(), "{listing}");
    assert_eq!(
        server_named(&listing, "beta").unwrap()["tools"],
        json!(["bye"])
    );
    assert_eq!(client.delete(&id).await.unwrap(), 204);
}

#[tokio::test]
async fn hibernated_axum() {
    hibernated("axum").await;
}

#[tokio::test]
async fn hibernated_actix() {
    hibernated("actix").await;
}

/// The client's MCP settings outlive the agent: a server turned off stays off in the agent
/// woken after hibernation, and a set replaced at runtime (and the server still off) is what
/// the session has after a SIGKILLed server is started again on its data directory.
#[tokio::test]
async fn mcp_settings_survive_hibernation_and_restart() {
    let cli = require_real_cli!("mcp_settings_survive_hibernation_and_restart");
    let mock = MockAnthropicApi::start().await.unwrap();
    let (home, home_2) = (
        TempDir::new("mcp-home").unwrap(),
        TempDir::new("mcp-home").unwrap(),
    );
    let (work, data) = (
        TempDir::new("mcp-work").unwrap(),
        TempDir::new("mcp-data").unwrap(),
    );
    let fake = fake_mcp_path().unwrap();
    let fake_str = fake.to_str().unwrap();
    let data_str = data.path().to_str().unwrap();
    let flags = [
        "--client-mcp-command",
        fake_str,
        "--hibernate-after",
        "1",
        "--data-dir",
        data_str,
    ];
    let a = server(&cli, "axum", &mock, home.path(), work.path(), &flags).await;
    let client = a.client(None);
    let (id, mut stream) = alpha_session(&client, work.path(), fake_str).await;
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_set_servers", "servers": {"beta": {"command": fake_str, "args": ["--tool", "bye"]}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until_status(&mut stream, "beta", "connected").await;
    let (status, body) = input(
        &client,
        &id,
        json!({"type": "mcp_toggle", "server_name": "beta", "enabled": false}),
    )
    .await;
    assert!(status < 300, "{status} {body}");
    until_status(&mut stream, "beta", "disabled").await;

    // Hibernation, then a wake.
    agent_webkit_testkit::until_no_claude_children(a.pid().unwrap(), T)
        .await
        .unwrap();
    wake(&client, &id, &mut stream).await;
    assert_eq!(status_of(&client, &id, "beta").await, "disabled");

    // SIGKILL, then a new server on the same data directory (and a fresh CLI home).
    agent_webkit_testkit::kill_and_wait(a.pid().unwrap(), T)
        .await
        .unwrap();
    drop(stream);
    drop(a);
    let b = server(&cli, "axum", &mock, home_2.path(), work.path(), &flags).await;
    let client = b.client(None);
    let (status, listing) = get_mcp(&client, &id).await;
    assert_eq!(status, 200, "{listing}");
    assert!(
        server_named(&listing, "alpha").is_none(),
        "the set from create came back: {listing}"
    );
    assert_eq!(
        server_named(&listing, "beta").unwrap()["status"],
        "disabled",
        "{listing}"
    );
    assert_eq!(
        server_named(&listing, "ops").unwrap()["status"],
        "connected",
        "{listing}"
    );

    // A server the client's set drops is no longer recorded as turned off: added again, it
    // runs, in this agent and in the next one.
    for servers in [
        json!({}),
        json!({"beta": {"command": fake_str, "args": ["--tool", "bye"]}}),
    ] {
        let (status, body) = input(
            &client,
            &id,
            json!({"type": "mcp_set_servers", "servers": servers}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    agent_webkit_testkit::until_no_claude_children(b.pid().unwrap(), T)
        .await
        .unwrap();
    let detail: Value = client
        .request(reqwest::Method::GET, &format!("/sessions/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last_seq = detail["last_seq"].to_string();
    let mut stream = client.stream(&id, Some(&last_seq)).await.unwrap();
    wake(&client, &id, &mut stream).await;
    assert_eq!(status_of(&client, &id, "beta").await, "connected");
}
