//! The real Claude Code CLI, driven directly over stdin/stdout (no server), against the in-process
//! mock Messages API. Proves the mock is good enough for the CLI, and measures the CLI's own
//! latency (the baseline for the bridge's overhead). Skips loudly when the CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, summarize, CliProcess, TempDir};
use agent_webkit_testkit::require_real_cli;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

struct Setup {
    mock: MockAnthropicApi,
    _home: TempDir,
    work: TempDir,
    cli: CliProcess,
}

async fn setup(cli: &std::path::Path, extra_args: &[&str]) -> Setup {
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("cli-home").unwrap();
    let work = TempDir::new("cli-work").unwrap();
    let env = offline_env(&mock, home.path());
    let cli = CliProcess::spawn(cli, extra_args, &env, work.path()).unwrap();
    Setup {
        mock,
        _home: home,
        work,
        cli,
    }
}

fn is_control_response(frame: &Value, id: &str) -> bool {
    frame["type"] == "control_response" && frame["response"]["request_id"] == id
}

fn text_delta(frame: &Value) -> Option<&str> {
    if frame["type"] == "stream_event"
        && frame["event"]["type"] == "content_block_delta"
        && frame["event"]["delta"]["type"] == "text_delta"
    {
        frame["event"]["delta"]["text"].as_str()
    } else {
        None
    }
}

async fn initialize(cli: &mut CliProcess) -> (Value, Duration) {
    let started = Instant::now();
    let id = cli
        .control(json!({"subtype": "initialize", "hooks": null}))
        .await
        .unwrap();
    let frames = cli
        .until(T, "initialize response", |f| is_control_response(f, &id))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let response = frames.last().unwrap()["response"].clone();
    assert_eq!(response["subtype"], "success", "{response}");
    (response["response"].clone(), elapsed)
}

#[tokio::test]
async fn plain_text_turn_streams_deltas_and_a_result() {
    let cli_path = require_real_cli!("plain_text_turn_streams_deltas_and_a_result");
    let spawned = Instant::now();
    let mut s = setup(&cli_path, &[]).await;
    let (init, init_elapsed) = initialize(&mut s.cli).await;
    let spawn_to_init = spawned.elapsed();
    assert_eq!(init["claude_code_version"], "2.1.330", "{init}");
    assert!(init["pid"].is_u64(), "{init}");

    let sent = Instant::now();
    s.cli.user("Say hello please").await.unwrap();
    let mut frames = s
        .cli
        .until(T, "first text delta", |f| text_delta(f).is_some())
        .await
        .unwrap();
    let turn1_first_delta = sent.elapsed();
    frames.extend(
        s.cli
            .until(T, "result", |f| f["type"] == "result")
            .await
            .unwrap(),
    );
    let text: String = frames.iter().filter_map(text_delta).collect();
    let result = frames.last().unwrap();
    assert_eq!(text, "Echo: Say hello please");
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["result"], "Echo: Say hello please", "{result}");
    let turn1 = sent.elapsed();

    // Second turn (warm).
    let sent = Instant::now();
    s.cli.user("And again").await.unwrap();
    let before_delta = s
        .cli
        .until(T, "first text delta", |f| text_delta(f).is_some())
        .await
        .unwrap();
    let to_first_delta = sent.elapsed();
    let rest = s
        .cli
        .until(T, "result", |f| f["type"] == "result")
        .await
        .unwrap();
    let to_result = sent.elapsed();
    assert!(before_delta.len() + rest.len() > 2);

    let streaming = s.mock.streaming_requests();
    assert_eq!(streaming.len(), 2, "{:?}", s.mock.requests());
    assert!(streaming[0]["path"]
        .as_str()
        .unwrap()
        .starts_with("/v1/messages"));
    assert!(streaming[0]["body"]["tools"].as_array().unwrap().len() > 3);
    // The second request carries the first turn's history.
    let history = streaming[1]["messages"].to_string();
    assert!(history.contains("Say hello please") && history.contains("Echo: Say hello please"));

    eprintln!(
        "TIMING real CLI alone: spawn→initialize response {:?} (request→response {:?}); \
         turn 1 user→first text delta {:?}, user→result {:?}; turn 2 user→first text delta {:?}, user→result {:?}",
        spawn_to_init,
        init_elapsed,
        turn1_first_delta,
        turn1,
        to_first_delta,
        to_result
    );

    s.cli.close_stdin();
    let status = s.cli.wait(T).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[tokio::test]
async fn bash_directive_asks_permission_then_runs() {
    let cli_path = require_real_cli!("bash_directive_asks_permission_then_runs");
    let mut s = setup(&cli_path, &["--permission-mode", "default"]).await;
    initialize(&mut s.cli).await;
    s.cli.user("[[bash: touch made-by-bash]]").await.unwrap();
    let frames = s
        .cli
        .until(T, "can_use_tool", |f| {
            f["type"] == "control_request" && f["request"]["subtype"] == "can_use_tool"
        })
        .await
        .unwrap();
    let ask = frames.last().unwrap().clone();
    let request = &ask["request"];
    assert_eq!(request["tool_name"], "Bash", "{ask}");
    assert_eq!(request["input"]["command"], "touch made-by-bash", "{ask}");
    let tool_use_id = request["tool_use_id"].as_str().unwrap().to_owned();
    assert!(tool_use_id.starts_with("toolu_mock_"), "{tool_use_id}");
    // The assistant frame with the tool_use came before the request.
    assert!(frames.iter().any(|f| f["type"] == "assistant"
        && f["message"]["content"][0]["type"] == "tool_use"
        && f["message"]["content"][0]["id"] == tool_use_id));
    assert!(!s.work.path().join("made-by-bash").exists());

    s.cli
        .respond(
            ask["request_id"].as_str().unwrap(),
            json!({"behavior": "allow", "updatedInput": request["input"].clone()}),
        )
        .await
        .unwrap();
    let frames = s
        .cli
        .until(T, "result", |f| f["type"] == "result")
        .await
        .unwrap();
    let tool_result = frames
        .iter()
        .find(|f| f["type"] == "user" && f["message"]["content"][0]["type"] == "tool_result")
        .unwrap_or_else(|| panic!("no tool_result: {}", summarize(&frames)));
    let block = &tool_result["message"]["content"][0];
    assert_eq!(block["tool_use_id"], tool_use_id.as_str());
    assert_eq!(block["is_error"], false, "{tool_result}");
    assert!(s.work.path().join("made-by-bash").exists());
    let result = frames.last().unwrap();
    assert_eq!(result["subtype"], "success", "{result}");
    assert!(result["result"]
        .as_str()
        .unwrap()
        .starts_with("Tool result seen:"));

    let streaming = s.mock.streaming_requests();
    assert_eq!(streaming.len(), 2);
    let second = &streaming[1]["messages"];
    let last_user = second
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap();
    assert_eq!(
        last_user["content"][0]["type"], "tool_result",
        "{last_user}"
    );
    assert_eq!(last_user["content"][0]["tool_use_id"], tool_use_id.as_str());
    s.cli.close_stdin();
    s.cli.wait(T).await.unwrap();
}

/// Observed with 2.1.330: `acceptEdits` auto-allows file-changing shell commands in the cwd
/// (`touch`, `mkdir`, redirections, `rm -f` — all probed), not only Write/Edit.
#[tokio::test]
async fn accept_edits_auto_allows_touch_in_cwd() {
    let cli_path = require_real_cli!("accept_edits_auto_allows_touch_in_cwd");
    let mut s = setup(&cli_path, &["--permission-mode", "acceptEdits"]).await;
    initialize(&mut s.cli).await;
    s.cli
        .user("[[bash: touch made-in-accept-edits]]")
        .await
        .unwrap();
    let frames = s
        .cli
        .until(T, "result", |f| f["type"] == "result")
        .await
        .unwrap();
    assert!(
        !frames.iter().any(|f| f["type"] == "control_request"),
        "{}",
        summarize(&frames)
    );
    assert_eq!(frames.last().unwrap()["subtype"], "success");
    assert!(s.work.path().join("made-in-accept-edits").exists());
}
