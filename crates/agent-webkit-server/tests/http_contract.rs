//! What is specific to the server binary rather than to wire protocol 1.0: startup
//! configuration (tokens, auth, default allowed root) and process lifetime (SIGTERM). The
//! protocol itself is checked by `conformance.rs` (every adapter, both scripted agents).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_webkit_testkit::ServerProcess;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn auth_enabled_without_token_refuses_to_start() {
    let output = tokio::process::Command::new(BIN)
        .args(["--port", "0"])
        .env_remove("AGENT_WEBKIT_AUTH_TOKEN")
        .env_remove("AGENT_WEBKIT_TOKEN")
        .env_remove("AGENT_WEBKIT_NO_AUTH")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AGENT_WEBKIT_AUTH_TOKEN"), "{stderr}");
}

#[tokio::test]
async fn tokens_from_the_environment_and_no_auth() {
    for (var, token) in [
        ("AGENT_WEBKIT_AUTH_TOKEN", "new"),
        ("AGENT_WEBKIT_TOKEN", "old"),
    ] {
        let server = ServerProcess::spawn_with_env(BIN, &["--agent", "replay"], &[(var, token)])
            .await
            .unwrap();
        let status = |client: agent_webkit_testkit::Client| async move {
            client
                .create_raw(&json!({}))
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(status(server.client(Some(token))).await, 200, "{var}");
        assert_eq!(status(server.client(None)).await, 401, "{var}");
    }
    let open = ServerProcess::spawn(BIN, &["--agent", "replay", "--no-auth"])
        .await
        .unwrap();
    let response = open.client(None).create_raw(&json!({})).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Without `--allowed-root`, sessions may use the server's working directory (and below).
#[tokio::test]
async fn the_default_allowed_root_is_the_working_directory() {
    let server = ServerProcess::spawn(BIN, &["--agent", "replay", "--no-auth"])
        .await
        .unwrap();
    let client = server.client(None);
    for cwd in [".", "tests"] {
        let response = client.create_raw(&json!({ "cwd": cwd })).await.unwrap();
        assert_eq!(response.status(), 200, "{cwd}");
    }
    let response = client.create_raw(&json!({"cwd": ".."})).await.unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn sigterm_ends_streams_with_done_and_exits_cleanly() {
    for framework in ["axum", "actix"] {
        let mut server = ServerProcess::spawn(
            BIN,
            // In memory, SIGTERM ends sessions; the default store hands them off to the next
            // start instead (tests/restart.rs).
            &[
                "--agent",
                "replay",
                "--no-auth",
                "--framework",
                framework,
                "--store",
                "memory",
            ],
        )
        .await
        .unwrap();
        let client = server.client(None);
        let id = client.create(&json!({})).await.unwrap();
        let mut stream = client.stream(&id, None).await.unwrap();
        stream.next_event_within(T).await.unwrap();
        let status = server.terminate(T).await.unwrap().expect("exited in time");
        let rest = stream.collect_to_end(T).await.unwrap();
        let names: Vec<&str> = rest.iter().map(|f| f.event.as_str()).collect();
        assert_eq!(names, ["done"], "{framework}");
        assert!(status.success(), "{framework}: {status:?}");
    }
}
