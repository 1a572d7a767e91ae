//! End to end through our HTTP server: the server binary with `--agent claude` drives the **real**
//! Claude Code CLI, which talks to the in-process mock Messages API (fully offline). Each test
//! starts its own mock, temp HOME, work dir and server, and asserts on the SSE events of wire
//! protocol 1.0. Skips loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::{
    claude_children, require_real_cli, Client, ServerProcess, SseFrame, SseStream,
};
use serde_json::{json, Value};
use tokio::sync::{Semaphore, SemaphorePermit};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
/// Generous: the CLI cold-starts in ~0.5 s, but CI machines are slow and busy.
const T: Duration = Duration::from_secs(20);

/// At most two servers+CLIs at once (each CLI is a ~200 MB process; CI has few cores).
static SLOTS: Semaphore = Semaphore::const_new(2);

struct E2e {
    mock: MockAnthropicApi,
    home: TempDir,
    work: TempDir,
    server: ServerProcess,
    client: Client,
    _slot: SemaphorePermit<'static>,
}

impl E2e {
    async fn start(cli: &Path) -> Self {
        let slot = SLOTS.acquire().await.unwrap();
        let mock = MockAnthropicApi::start().await.unwrap();
        let home = TempDir::new("e2e-home").unwrap();
        let work = TempDir::new("e2e-work").unwrap();
        let env = offline_env(&mock, home.path());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let cli = cli.to_str().unwrap();
        let root = work.path().to_str().unwrap();
        // ServerProcess adds `--host 127.0.0.1 --port 0` itself.
        let args = [
            "--no-auth",
            "--agent",
            "claude",
            "--claude-path",
            cli,
            "--claude-setting-sources=",
            // Opt-in (off by default): (b) checks the streamed tool input.
            "--claude-tool-input-deltas",
            "--allowed-root",
            root,
        ];
        let server = ServerProcess::spawn_with_env(BIN, &args, &env)
            .await
            .unwrap();
        let client = server.client(None);
        Self {
            mock,
            home,
            work,
            server,
            client,
            _slot: slot,
        }
    }

    fn work(&self) -> &Path {
        self.work.path()
    }

    /// Creates a session in the work dir (plus `extra` fields), opens its stream and reads
    /// `session_ready`.
    async fn session(&self, extra: Value) -> (String, SseStream) {
        let mut body = json!({ "cwd": self.work().to_str().unwrap() });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let id = self.client.create(&body).await.unwrap();
        let mut stream = self.client.stream(&id, None).await.unwrap();
        let ready = stream.next_event_within(T).await.unwrap().unwrap();
        assert_eq!(ready.event, "session_ready", "{}", ready.raw);
        assert_eq!(ready.json()["session_id"], id.as_str());
        (id, stream)
    }

    async fn input(&self, id: &str, body: Value) {
        let response = self.client.input(id, &body).await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 204, "input {body} → {status} {text}");
    }

    async fn say(&self, id: &str, text: &str) {
        self.input(id, json!({"type": "user_message", "content": text}))
            .await;
    }
}

fn names(frames: &[SseFrame]) -> Vec<&str> {
    frames.iter().map(|f| f.event.as_str()).collect()
}

fn find(frames: &[SseFrame], event: &str) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f.event == event)
        .map(SseFrame::json)
        .collect()
}

/// Concatenated text of the `message_delta` events (`delta: {"type":"text","text":…}`).
fn delta_text(frames: &[SseFrame]) -> String {
    find(frames, "message_delta")
        .iter()
        .filter(|d| d["delta"]["type"] == "text")
        .map(|d| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn until(stream: &mut SseStream, event: &str) -> Vec<SseFrame> {
    stream.until(event, T).await.unwrap_or_else(|e| {
        panic!("waiting for {event}: {e}");
    })
}

/// Reads until a `result`; asserts it is a success and returns every event read.
async fn until_success(stream: &mut SseStream) -> Vec<SseFrame> {
    let frames = until(stream, "result").await;
    let result = frames.last().unwrap().json();
    assert_eq!(
        result["subtype"],
        "success",
        "{result}; {:?}",
        names(&frames)
    );
    frames
}

fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The last user message of the mock's latest streaming request.
fn last_user_message(mock: &MockAnthropicApi) -> Value {
    let requests = mock.streaming_requests();
    let messages = requests.last().unwrap()["messages"].clone();
    messages
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .cloned()
        .unwrap()
}

/// The pids of the server's live `claude` children.
fn claude_pids(pid: u32) -> Vec<u32> {
    claude_children(pid)
        .into_iter()
        .map(|(child, _)| child)
        .collect()
}

// (a)
#[tokio::test]
async fn plain_text_streams_deltas_then_complete_then_result() {
    let cli = require_real_cli!("plain_text_streams_deltas_then_complete_then_result");
    let started = Instant::now();
    let e = E2e::start(&cli).await;
    let server_up = started.elapsed();
    let created = Instant::now();
    let (id, mut stream) = e.session(json!({})).await;
    let session_ready = created.elapsed();
    let sent = Instant::now();
    e.say(&id, "Hello from the e2e suite").await;
    let first = until(&mut stream, "message_delta").await;
    let first_delta = sent.elapsed();
    let mut frames = first;
    frames.extend(until_success(&mut stream).await);
    let to_result = sent.elapsed();
    eprintln!(
        "TIMING e2e: server start {server_up:?}; create+stream+session_ready {session_ready:?}; \
         user_message → first message_delta {first_delta:?}; → result {to_result:?}"
    );

    let expected = "Echo: Hello from the e2e suite";
    assert!(
        find(&frames, "message_delta").len() > 2,
        "several deltas: {:?}",
        names(&frames)
    );
    assert_eq!(delta_text(&frames), expected);
    let deltas = find(&frames, "message_delta");
    let message_id = deltas[0]["message_id"].as_str().unwrap().to_owned();
    assert!(deltas
        .iter()
        .all(|d| d["message_id"] == message_id.as_str()));

    let completes = find(&frames, "message_complete");
    assert_eq!(completes.len(), 1, "{:?}", names(&frames));
    let message = &completes[0]["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": expected}])
    );
    let complete_pos = names(&frames)
        .iter()
        .position(|n| *n == "message_complete")
        .unwrap();
    let last_delta_pos = names(&frames)
        .iter()
        .rposition(|n| *n == "message_delta")
        .unwrap();
    assert!(last_delta_pos < complete_pos, "{:?}", names(&frames));

    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success");
    assert!(result["total_cost_usd"].is_number(), "{result}");
    assert!(result["usage"].is_object(), "{result}");
    assert!(result["duration_ms"].is_number(), "{result}");
    assert!(result["num_turns"].is_number(), "{result}");
    assert!(
        result["session_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{result}"
    );
    assert!(find(&frames, "error").is_empty(), "{:?}", names(&frames));

    let streaming = e.mock.streaming_requests();
    assert_eq!(streaming.len(), 1, "{:?}", e.mock.requests());
}

// (b)
#[tokio::test]
async fn bash_permission_allow_runs_the_tool() {
    let cli = require_real_cli!("bash_permission_allow_runs_the_tool");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({"permission_mode": "default"})).await;
    e.say(&id, "[[bash: touch made-by-bash]]").await;
    let frames = until(&mut stream, "permission_request").await;
    let tool_uses = find(&frames, "tool_use");
    assert_eq!(tool_uses.len(), 1, "{:?}", names(&frames));
    assert_eq!(tool_uses[0]["tool_name"], "Bash");
    assert_eq!(tool_uses[0]["input"]["command"], "touch made-by-bash");
    let tool_use_id = tool_uses[0]["tool_use_id"].as_str().unwrap().to_owned();
    // The tool input streamed token by token, under the tool_use id and name.
    let partial: String = find(&frames, "message_delta")
        .iter()
        .filter(|d| d["delta"]["type"] == "input_json_delta")
        .map(|d| {
            assert_eq!(d["delta"]["tool_use_id"], tool_use_id.as_str(), "{d}");
            assert_eq!(d["delta"]["name"], "Bash", "{d}");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    let streamed_input: Value = serde_json::from_str(&partial).unwrap();
    assert_eq!(streamed_input["command"], "touch made-by-bash");
    // The CLI sends one assistant frame per block; the bridge coalesces them into one
    // message_complete carrying both (text, then tool_use), each with its type.
    let completes = find(&frames, "message_complete");
    assert_eq!(completes.len(), 1, "{:?}", names(&frames));
    let last = &completes.last().unwrap()["message"]["content"];
    assert_eq!(last.as_array().unwrap().len(), 2, "{last}");
    assert_eq!(last[0]["type"], "text");
    assert_eq!(last[1]["type"], "tool_use");
    let order = names(&frames);
    let tool_use_pos = order.iter().position(|n| *n == "tool_use").unwrap();
    let complete_pos = order
        .iter()
        .rposition(|n| *n == "message_complete")
        .unwrap();
    assert!(complete_pos < tool_use_pos, "{order:?}");
    let request = frames.last().unwrap().json();
    assert_eq!(request["correlation_id"], tool_use_id.as_str(), "{request}");
    assert_eq!(request["tool_name"], "Bash");
    assert_eq!(request["input"]["command"], "touch made-by-bash");
    assert!(!e.work().join("made-by-bash").exists());

    e.input(
        &id,
        json!({"type": "permission_response", "correlation_id": tool_use_id, "behavior": "allow"}),
    )
    .await;
    let frames = until_success(&mut stream).await;
    let results = find(&frames, "tool_result");
    assert_eq!(results.len(), 1, "{:?}", names(&frames));
    assert_eq!(results[0]["tool_use_id"], tool_use_id.as_str());
    assert_eq!(results[0]["is_error"], false, "{}", results[0]);
    assert!(e.work().join("made-by-bash").exists());
    assert!(delta_text(&frames).starts_with("Tool result seen:"));
    // A second answer to the same prompt is a conflict.
    let late = e
        .client
        .input(
            &id,
            &json!({"type": "permission_response", "correlation_id": tool_use_id, "behavior": "allow"}),
        )
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
}

// (c)
#[tokio::test]
async fn bash_permission_deny_with_message_continues_the_turn() {
    let cli = require_real_cli!("bash_permission_deny_with_message_continues_the_turn");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({"permission_mode": "default"})).await;
    e.say(&id, "[[bash: touch denied-file]]").await;
    let frames = until(&mut stream, "permission_request").await;
    let request = frames.last().unwrap().json();
    let correlation_id = request["correlation_id"].as_str().unwrap().to_owned();
    e.input(
        &id,
        json!({"type": "permission_response", "correlation_id": correlation_id,
               "behavior": "deny", "message": "Not in this repo, thanks"}),
    )
    .await;
    let frames = until_success(&mut stream).await;
    let results = find(&frames, "tool_result");
    assert_eq!(results.len(), 1, "{:?}", names(&frames));
    assert_eq!(results[0]["tool_use_id"], correlation_id.as_str());
    assert_eq!(results[0]["is_error"], true, "{}", results[0]);
    assert!(
        stringify(&results[0]["output"]).contains("Not in this repo, thanks"),
        "{}",
        results[0]
    );
    assert!(!e.work().join("denied-file").exists());
    // The model saw the denial as the tool result and answered; the turn went on.
    assert!(delta_text(&frames).starts_with("Tool result seen: Not in this repo"));
    assert_eq!(e.mock.streaming_requests().len(), 2);
}

// (d)
#[tokio::test]
async fn deny_with_interrupt_ends_the_turn_and_the_session_goes_on() {
    let cli = require_real_cli!("deny_with_interrupt_ends_the_turn_and_the_session_goes_on");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({"permission_mode": "default"})).await;
    e.say(&id, "[[bash: touch never-made]]").await;
    let frames = until(&mut stream, "permission_request").await;
    let correlation_id = frames.last().unwrap().json()["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    e.input(
        &id,
        json!({"type": "permission_response", "correlation_id": correlation_id,
               "behavior": "deny", "message": "stop", "interrupt": true}),
    )
    .await;
    let frames = until(&mut stream, "result").await;
    let result = frames.last().unwrap().json();
    assert_eq!(result["is_error"], true, "{result}");
    assert_ne!(result["subtype"], "success", "{result}");
    assert!(!e.work().join("never-made").exists());
    let requests_before = e.mock.streaming_requests().len();
    assert_eq!(
        requests_before, 1,
        "the interrupted turn made no second call"
    );

    e.say(&id, "Still there?").await;
    let frames = until_success(&mut stream).await;
    assert_eq!(delta_text(&frames), "Echo: Still there?");
    assert!(find(&frames, "error").is_empty(), "{:?}", names(&frames));
}

// (e)
#[tokio::test]
async fn read_inside_cwd_is_silent_read_outside_prompts() {
    let cli = require_real_cli!("read_inside_cwd_is_silent_read_outside_prompts");
    let e = E2e::start(&cli).await;
    let inside = e.work().join("inside.txt");
    std::fs::write(&inside, "inside the work dir\n").unwrap();
    let outside_dir = e.home.path().join("elsewhere");
    std::fs::create_dir_all(&outside_dir).unwrap();
    let outside = outside_dir.join("outside.txt");
    std::fs::write(&outside, "outside the work dir\n").unwrap();
    let (id, mut stream) = e.session(json!({"permission_mode": "default"})).await;

    e.say(&id, &format!("[[read: {}]]", inside.display())).await;
    let frames = until_success(&mut stream).await;
    assert!(
        find(&frames, "permission_request").is_empty(),
        "{:?}",
        names(&frames)
    );
    let results = find(&frames, "tool_result");
    assert_eq!(results.len(), 1, "{:?}", names(&frames));
    assert_eq!(results[0]["is_error"], false);
    assert!(stringify(&results[0]["output"]).contains("inside the work dir"));

    e.say(&id, &format!("[[read: {}]]", outside.display()))
        .await;
    let frames = until(&mut stream, "permission_request").await;
    let request = frames.last().unwrap().json();
    assert_eq!(request["tool_name"], "Read", "{request}");
    assert_eq!(
        request["input"]["file_path"],
        outside.to_str().unwrap(),
        "{request}"
    );
    e.input(
        &id,
        json!({"type": "permission_response", "correlation_id": request["correlation_id"],
               "behavior": "allow"}),
    )
    .await;
    let frames = until_success(&mut stream).await;
    let results = find(&frames, "tool_result");
    assert_eq!(results.len(), 1, "{:?}", names(&frames));
    assert_eq!(results[0]["is_error"], false, "{}", results[0]);
    assert!(stringify(&results[0]["output"]).contains("outside the work dir"));
}

// (f)
#[tokio::test]
async fn ask_user_question_round_trip() {
    let cli = require_real_cli!("ask_user_question_round_trip");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({})).await;
    e.say(&id, "[[ask: Which color should it be? | Red | Blue]]")
        .await;
    let frames = until(&mut stream, "ask_user_question").await;
    assert!(
        find(&frames, "permission_request").is_empty(),
        "AskUserQuestion is a question, not a permission prompt: {:?}",
        names(&frames)
    );
    let ask = frames.last().unwrap().json();
    let correlation_id = ask["correlation_id"].as_str().unwrap().to_owned();
    let tool_uses = find(&frames, "tool_use");
    assert_eq!(tool_uses.len(), 1);
    assert_eq!(tool_uses[0]["tool_name"], "AskUserQuestion");
    assert_eq!(tool_uses[0]["tool_use_id"], correlation_id.as_str());
    let questions = ask["questions"].to_string();
    assert!(
        questions.contains("Which color should it be?") && questions.contains("Blue"),
        "{ask}"
    );

    e.input(
        &id,
        json!({"type": "question_response", "correlation_id": correlation_id,
               "answers": {"Which color should it be?": "Blue"}}),
    )
    .await;
    let frames = until_success(&mut stream).await;
    let results = find(&frames, "tool_result");
    assert_eq!(results.len(), 1, "{:?}", names(&frames));
    assert_eq!(results[0]["is_error"], false, "{}", results[0]);
    let user = last_user_message(&e.mock);
    let block = &user["content"][0];
    assert_eq!(block["type"], "tool_result", "{user}");
    assert_eq!(block["tool_use_id"], correlation_id.as_str());
    let text = stringify(&block["content"]);
    assert!(
        text.contains("Which color should it be?") && text.contains("Blue"),
        "{text}"
    );
}

// (g)
#[tokio::test]
async fn interrupt_mid_stream_then_next_turn_works() {
    let cli = require_real_cli!("interrupt_mid_stream_then_next_turn_works");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({})).await;
    e.say(&id, "[[slow: 60]]").await;
    until(&mut stream, "message_delta").await;
    let interrupted = Instant::now();
    e.input(&id, json!({"type": "interrupt"})).await;
    let frames = until(&mut stream, "result").await;
    let took = interrupted.elapsed();
    eprintln!("TIMING e2e: interrupt → result {took:?}");
    let deltas = find(&frames, "message_delta").len();
    assert!(
        deltas < 59,
        "the reply was cut short ({deltas} more deltas)"
    );
    assert!(
        took < Duration::from_secs(5),
        "result {took:?} after interrupt"
    );
    let result = frames.last().unwrap().json();
    assert_eq!(result["is_error"], true, "{result}");

    e.say(&id, "After the interrupt").await;
    let frames = until_success(&mut stream).await;
    assert_eq!(delta_text(&frames), "Echo: After the interrupt");
}

/// An interrupt sent right after the message, before the CLI has started the turn: the session
/// hands it over after the message (never before, when the idle CLI would forget it), the CLI
/// answers with the message `still_queued` and aborts the turn as it starts; the next turn runs.
#[tokio::test]
async fn interrupt_before_the_turn_starts_ends_it() {
    let cli = require_real_cli!("interrupt_before_the_turn_starts_ends_it");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({})).await;
    e.say(&id, "[[slow: 60]]").await;
    e.input(&id, json!({"type": "interrupt"})).await;
    let frames = until(&mut stream, "result").await;
    let deltas = find(&frames, "message_delta").len();
    assert!(deltas < 59, "the turn was cut short ({deltas} deltas)");
    let result = frames.last().unwrap().json();
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["subtype"], "error_during_execution", "{result}");

    e.say(&id, "After the interrupt").await;
    let frames = until_success(&mut stream).await;
    assert_eq!(delta_text(&frames), "Echo: After the interrupt");
}

// (h)
#[tokio::test]
async fn set_model_changes_the_model_of_the_next_turn() {
    let cli = require_real_cli!("set_model_changes_the_model_of_the_next_turn");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({})).await;
    e.say(&id, "first").await;
    until_success(&mut stream).await;
    let first_model = e.mock.streaming_requests()[0]["body"]["model"].clone();
    assert_ne!(first_model, "claude-haiku-4-5");

    e.input(
        &id,
        json!({"type": "set_model", "model": "claude-haiku-4-5"}),
    )
    .await;
    e.say(&id, "second").await;
    let frames = until_success(&mut stream).await;
    assert_eq!(delta_text(&frames), "Echo: second");
    let streaming = e.mock.streaming_requests();
    assert_eq!(streaming.len(), 2, "{:?}", e.mock.requests());
    assert_eq!(streaming[1]["body"]["model"], "claude-haiku-4-5");
    let complete = find(&frames, "message_complete");
    assert_eq!(complete[0]["message"]["model"], "claude-haiku-4-5");
    // The CLI also makes a non-streaming side call (`max_tokens: 1`) after set_model; the mock
    // answers it without it counting as a turn.
    let side: Vec<Value> = e
        .mock
        .requests()
        .into_iter()
        .filter(|r| r["stream"] == false)
        .map(|r| json!({"model": r["body"]["model"], "max_tokens": r["body"]["max_tokens"]}))
        .collect();
    eprintln!("set_model side calls: {side:?}");
}

// (i)
#[tokio::test]
async fn accept_edits_mode_writes_without_asking() {
    let cli = require_real_cli!("accept_edits_mode_writes_without_asking");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({"permission_mode": "default"})).await;
    let a = e.work().join("a.txt");
    e.say(
        &id,
        &format!("[[write: {} | written in default mode]]", a.display()),
    )
    .await;
    let frames = until(&mut stream, "permission_request").await;
    let request = frames.last().unwrap().json();
    assert_eq!(request["tool_name"], "Write", "{request}");
    e.input(
        &id,
        json!({"type": "permission_response", "correlation_id": request["correlation_id"],
               "behavior": "allow"}),
    )
    .await;
    until_success(&mut stream).await;
    assert_eq!(
        std::fs::read_to_string(&a).unwrap(),
        "written in default mode"
    );

    e.input(
        &id,
        json!({"type": "set_permission_mode", "mode": "acceptEdits"}),
    )
    .await;
    let b = e.work().join("b.txt");
    e.say(
        &id,
        &format!("[[write: {} | written in acceptEdits]]", b.display()),
    )
    .await;
    let frames = until_success(&mut stream).await;
    assert!(
        find(&frames, "permission_request").is_empty(),
        "{:?}",
        names(&frames)
    );
    let results = find(&frames, "tool_result");
    assert_eq!(results.len(), 1, "{:?}", names(&frames));
    assert_eq!(results[0]["is_error"], false, "{}", results[0]);
    assert_eq!(
        std::fs::read_to_string(&b).unwrap(),
        "written in acceptEdits"
    );
    // acceptEdits also auto-allows file-changing shell commands inside the cwd (CLI 2.1.330).
    e.say(&id, "[[bash: touch c.txt]]").await;
    let frames = until_success(&mut stream).await;
    assert!(
        find(&frames, "permission_request").is_empty(),
        "{:?}",
        names(&frames)
    );
    assert!(e.work().join("c.txt").exists());
}

// (j)
#[tokio::test]
async fn second_turn_carries_the_first_turns_history() {
    let cli = require_real_cli!("second_turn_carries_the_first_turns_history");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({})).await;
    e.say(&id, "Remember the word PELICAN").await;
    until_success(&mut stream).await;
    e.say(&id, "Which word was it?").await;
    let frames = until_success(&mut stream).await;
    assert_eq!(delta_text(&frames), "Echo: Which word was it?");
    let streaming = e.mock.streaming_requests();
    assert_eq!(streaming.len(), 2);
    let history = streaming[1]["messages"].to_string();
    assert!(
        history.contains("Remember the word PELICAN")
            && history.contains("Echo: Remember the word PELICAN")
            && history.contains("Which word was it?"),
        "{history}"
    );
    let roles: Vec<&str> = streaming[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .filter(|r| *r != "system")
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
}

// (k)
#[tokio::test]
async fn delete_ends_the_stream_and_the_cli_process() {
    let cli = require_real_cli!("delete_ends_the_stream_and_the_cli_process");
    let e = E2e::start(&cli).await;
    let server_pid = e.server.pid().unwrap();
    let (id, mut stream) = e.session(json!({})).await;
    e.say(&id, "hi").await;
    until_success(&mut stream).await;
    let before = claude_pids(server_pid);
    assert_eq!(before.len(), 1, "one CLI child of the server: {before:?}");

    let deleted = Instant::now();
    assert_eq!(e.client.delete(&id).await.unwrap(), 204);
    let frames = until(&mut stream, "done").await;
    assert_eq!(frames.last().unwrap().json(), json!({}));
    assert!(
        stream.next_event_within(T).await.unwrap().is_none(),
        "stream ends after done"
    );
    // Poll /proc (there is no event for "a process is gone") with a deadline.
    let deadline = Instant::now() + T;
    while claude_pids(server_pid)
        .iter()
        .any(|pid| before.contains(pid))
    {
        assert!(
            Instant::now() < deadline,
            "CLI {before:?} still alive after DELETE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("TIMING e2e: DELETE → CLI gone {:?}", deleted.elapsed());
}

// (l) API error path.
#[tokio::test]
async fn api_error_ends_the_turn_with_an_error_result() {
    let cli = require_real_cli!("api_error_ends_the_turn_with_an_error_result");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({})).await;
    let sent = Instant::now();
    e.say(&id, "[[error: 400]]").await;
    let frames = until(&mut stream, "result").await;
    eprintln!(
        "TIMING e2e: API 400 → result {:?}; events {:?}",
        sent.elapsed(),
        names(&frames)
    );
    let result = frames.last().unwrap().json();
    assert_eq!(result["is_error"], true, "{result}");
    // CLI 2.1.330: subtype stays "success"; the status and the API's message are carried along.
    assert_eq!(result["api_error_status"], 400, "{result}");
    assert!(
        stringify(&result["result"]).contains("mock: scripted error 400"),
        "{result}"
    );
    // The CLI retries even a 400 a few times (6 requests observed), without backoff delays.
    let tools: Vec<usize> = e
        .mock
        .streaming_requests()
        .iter()
        .map(|r| r["body"]["tools"].as_array().map_or(0, Vec::len))
        .collect();
    eprintln!("API 400: streaming requests (tool counts) {tools:?}");

    e.say(&id, "after the error").await;
    let frames = until_success(&mut stream).await;
    assert_eq!(delta_text(&frames), "Echo: after the error");
}

// (m) An interrupt while a permission prompt is pending: the CLI withdraws it with
// `control_cancel_request`, and clients see it resolved as `permission_cancelled`.
#[tokio::test]
async fn interrupt_withdraws_a_pending_prompt() {
    let cli = require_real_cli!("interrupt_withdraws_a_pending_prompt");
    let e = E2e::start(&cli).await;
    let (id, mut stream) = e.session(json!({"permission_mode": "default"})).await;
    e.say(&id, "[[bash: touch never-made]]").await;
    let frames = until(&mut stream, "permission_request").await;
    let correlation = frames.last().unwrap().json()["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    e.input(&id, json!({"type": "interrupt"})).await;
    let frames = until(&mut stream, "result").await;
    let cancelled: Vec<Value> = find(&frames, "error")
        .into_iter()
        .filter(|e| e["code"] == "permission_cancelled")
        .collect();
    assert_eq!(cancelled.len(), 1, "{:?}", names(&frames));
    assert_eq!(cancelled[0]["correlation_id"], correlation.as_str());
    assert_eq!(frames.last().unwrap().json()["is_error"], true);
    let late = e
        .client
        .input(
            &id,
            &json!({"type": "permission_response", "correlation_id": correlation, "behavior": "allow"}),
        )
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
    assert!(!e.work().join("never-made").exists());
    e.say(&id, "and now?").await;
    until_success(&mut stream).await;
}

// (n) The CLI dies mid-session: `error {agent_exited}` with its exit status, then `done`; the
// ended session then answers input with 409 `session_ended`.
#[tokio::test]
async fn a_killed_cli_ends_the_session_with_agent_exited() {
    let cli = require_real_cli!("a_killed_cli_ends_the_session_with_agent_exited");
    let e = E2e::start(&cli).await;
    let server_pid = e.server.pid().unwrap();
    let (id, mut stream) = e.session(json!({})).await;
    e.say(&id, "[[slow: 100]]").await;
    until(&mut stream, "message_delta").await;
    let children = claude_pids(server_pid);
    assert_eq!(children.len(), 1, "{children:?}");
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &children[0].to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let frames = until(&mut stream, "done").await;
    let errors = find(&frames, "error");
    assert_eq!(errors.len(), 1, "{:?}", names(&frames));
    assert_eq!(errors[0]["code"], "agent_exited");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("signal: 9"),
        "{}",
        errors[0]
    );
    let ended = e
        .client
        .input(&id, &json!({"type": "user_message", "content": "x"}))
        .await
        .unwrap();
    assert_eq!(ended.status(), 409, "kept readable, takes no input");
    let body: serde_json::Value = ended.json().await.unwrap();
    assert_eq!(body["code"], "session_ended", "{body}");
}
