//! Hibernation with the **real** Claude CLI against the mock Messages API: a quiet session's
//! CLI is stopped, the next user message resumes it from the transcript store, and the model's
//! next request carries the earlier turns, with the model and permission mode set at runtime.
//! Skips loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::{claude_children, require_real_cli, ServerProcess, SseFrame, SseStream};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(30);

async fn until_success(stream: &mut SseStream) -> Vec<SseFrame> {
    let frames = stream.until("result", T).await.unwrap();
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    frames
}

#[tokio::test]
async fn a_woken_session_continues_the_conversation_with_its_runtime_settings() {
    let cli =
        require_real_cli!("a_woken_session_continues_the_conversation_with_its_runtime_settings");
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("hib-home").unwrap();
    let work = TempDir::new("hib-work").unwrap();
    let env = offline_env(&mock, home.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let root = work.path().to_str().unwrap();
    let args = [
        "--no-auth",
        "--agent",
        "claude",
        "--claude-path",
        cli.to_str().unwrap(),
        "--claude-setting-sources=",
        "--allowed-root",
        root,
        "--hibernate-after",
        "1",
    ];
    let server = ServerProcess::spawn_with_env(BIN, &args, &env)
        .await
        .unwrap();
    let server_pid = server.pid().unwrap();
    let client = server.client(None);
    let id = client.create(&json!({"cwd": root})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let input = |body: Value| {
        let (client, id) = (&client, &id);
        async move {
            let r = client.input(id, &body).await.unwrap();
            assert_eq!(r.status(), 204, "{body}");
        }
    };

    input(json!({"type": "user_message", "content": "Remember the word PELICAN"})).await;
    let mut frames = until_success(&mut stream).await;
    input(json!({"type": "set_model", "model": "claude-haiku-4-5"})).await;
    let first = claude_children(server_pid);
    assert_eq!(first.len(), 1, "{first:?}");
    agent_webkit_testkit::until_no_claude_children(server_pid, T)
        .await
        .unwrap();
    input(json!({"type": "set_permission_mode", "mode": "acceptEdits"})).await;

    let asked = Instant::now();
    input(json!({"type": "user_message", "content": "Which word was it?"})).await;
    let second = until_success(&mut stream).await;
    eprintln!("TIMING hibernate: wake → result {:?}", asked.elapsed());
    let woken = claude_children(server_pid);
    assert!(
        woken
            .iter()
            .any(|(_, cmd)| cmd.contains(&format!("--resume={id}"))
                && cmd.contains("--permission-mode=acceptEdits")),
        "{woken:?}"
    );
    let streaming = mock.streaming_requests();
    let last = streaming.last().unwrap();
    let history = last["messages"].to_string();
    assert!(
        history.contains("Remember the word PELICAN")
            && history.contains("Echo: Remember the word PELICAN")
            && history.contains("Which word was it?"),
        "{history}"
    );
    assert_eq!(last["body"]["model"], "claude-haiku-4-5");

    frames.extend(second);
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f.id).collect();
    assert_eq!(
        seqs,
        (seqs[0]..seqs[0] + seqs.len() as u64).collect::<Vec<_>>()
    );
    assert!(frames.iter().all(|f| f.event != "done"));
}
