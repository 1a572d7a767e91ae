//! Hardening of the server binary and of take-over: boolean environment variables, the
//! no-auth warning, and a host refusing to take over a session its own policy or allowed
//! roots would not have let a client create. (HTTP behaviour shared by both adapters is in
//! the conformance suite, `conformance/hardening.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_core::persist::{InMemoryPersistence, SessionPersistence};
use agent_webkit_core::policy::ClientPolicy;
use agent_webkit_core::registry::RegistryConfig;
use agent_webkit_replay::ReplayAgentFactory;
use agent_webkit_testkit::{Client, ServerProcess};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(10);

async fn create_status(client: &Client) -> u16 {
    client
        .create_raw(&json!({}))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `AGENT_WEBKIT_NO_AUTH` (and every boolean variable) accepts 1/0/true/false/yes/no; a
/// value that is none of them refuses to start instead of guessing.
#[tokio::test]
async fn boolean_environment_variables_accept_the_usual_spellings() {
    for value in ["1", "true", "yes", "TRUE"] {
        let server = ServerProcess::spawn_with_env(
            BIN,
            &["--agent", "replay"],
            &[("AGENT_WEBKIT_NO_AUTH", value)],
        )
        .await
        .unwrap_or_else(|e| panic!("AGENT_WEBKIT_NO_AUTH={value}: {e}"));
        assert_eq!(create_status(&server.client(None)).await, 200, "{value}");
    }
    for value in ["0", "false", "no"] {
        let server = ServerProcess::spawn_with_env(
            BIN,
            &["--agent", "replay"],
            &[
                ("AGENT_WEBKIT_NO_AUTH", value),
                ("AGENT_WEBKIT_AUTH_TOKEN", "tok"),
                ("AGENT_WEBKIT_CLAUDE_NO_MIRROR", value),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("AGENT_WEBKIT_NO_AUTH={value}: {e}"));
        assert_eq!(create_status(&server.client(None)).await, 401, "{value}");
        assert_eq!(create_status(&server.client(Some("tok"))).await, 200);
    }
    let output = tokio::process::Command::new(BIN)
        .args(["--port", "0", "--agent", "replay"])
        .env("AGENT_WEBKIT_NO_AUTH", "maybe")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
}

/// Starts the binary with `args`, waits for it to listen, stops it, and returns its stderr.
async fn startup_stderr(args: &[&str]) -> String {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--port", "0", "--agent", "replay"])
        .args(args)
        .env_remove("AGENT_WEBKIT_AUTH_TOKEN")
        .env_remove("AGENT_WEBKIT_TOKEN")
        .env_remove("AGENT_WEBKIT_NO_AUTH")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("listening on") {
                return;
            }
        }
        panic!("exited before listening");
    })
    .await
    .unwrap();
    child.start_kill().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    stderr
}

/// Auth off is announced at startup; on a non-loopback address, loudly.
#[tokio::test]
async fn no_auth_is_announced_louder_off_loopback() {
    let quiet = startup_stderr(&["--host", "127.0.0.1", "--token", "t"]).await;
    assert!(!quiet.contains("AUTH IS DISABLED"), "{quiet}");
    let local = startup_stderr(&["--host", "127.0.0.1", "--no-auth"]).await;
    assert!(local.contains("AUTH IS DISABLED"), "{local}");
    assert!(!local.contains("NON-LOOPBACK"), "{local}");
    let open = startup_stderr(&["--host", "0.0.0.0", "--no-auth"]).await;
    assert!(open.contains("AUTH IS DISABLED"), "{open}");
    assert!(open.contains("NON-LOOPBACK"), "{open}");
    assert!(open.contains("!!! WARNING !!!"), "{open}");
}

/// One host of a shared persistence, served over HTTP.
async fn host(
    name: &str,
    persistence: &Arc<dyn SessionPersistence>,
    edit: impl FnOnce(&mut AppConfig),
) -> (Api, Client) {
    let mut config = AppConfig::new(Arc::new(ReplayAgentFactory::new()))
        .with_auth(AuthConfig::disabled())
        .with_registry(RegistryConfig {
            lease: Duration::from_millis(600),
            ..RegistryConfig::default()
        })
        .with_failover(Arc::clone(persistence), name);
    edit(&mut config);
    let api = Api::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = api.clone();
    tokio::spawn(async move {
        let _ = agent_webkit_axum::serve(listener, serving, std::future::pending()).await;
    });
    (api, Client::new(&url, None))
}

async fn stream_status(client: &Client, id: &str) -> (u16, Value) {
    let response = client.stream_raw(id, None).await.unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        return (status, Value::Null);
    }
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aw-takeover-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// A host does not take over a session whose stored permission mode or cwd its own policy
/// and roots refuse: 403 `take_over_refused`, no agent launched, the session left for a host
/// that may run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_checks_the_stored_session_against_this_hosts_policy() {
    let persistence: Arc<dyn SessionPersistence> = Arc::new(InMemoryPersistence::new(1000));
    let (shared, other) = (temp_dir("shared"), temp_dir("other"));
    let permissive = {
        let (shared, other) = (shared.clone(), other.clone());
        move |c: &mut AppConfig| {
            c.policy = ClientPolicy::default().allowing_mode("bypassPermissions");
            c.allowed_roots = vec![shared, other];
        }
    };
    let (a, a_client) = host("a", &persistence, permissive.clone()).await;
    let bypass = a_client
        .create(&json!({"model": "echo", "permission_mode": "bypassPermissions", "cwd": shared}))
        .await
        .unwrap();
    let elsewhere = a_client
        .create(&json!({"model": "echo", "cwd": other}))
        .await
        .unwrap();
    a.shutdown().await; // hands both sessions off

    let roots = vec![shared.clone()];
    let (_b, b_client) = host("b", &persistence, move |c| c.allowed_roots = roots).await;
    for id in [&bypass, &elsewhere] {
        let (status, body) = stream_status(&b_client, id).await;
        assert_eq!(status, 403, "{id}: {body}");
        assert_eq!(body["code"], "take_over_refused", "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(!detail.contains(&*other.to_string_lossy()), "{detail}");
    }

    // A host whose policy and roots allow them takes them over.
    let (_c, c_client) = host("c", &persistence, permissive).await;
    for id in [&bypass, &elsewhere] {
        let (status, body) = stream_status(&c_client, id).await;
        assert_eq!(status, 200, "{id}: {body}");
    }
    let _ = std::fs::remove_dir_all(shared);
    let _ = std::fs::remove_dir_all(other);
}
