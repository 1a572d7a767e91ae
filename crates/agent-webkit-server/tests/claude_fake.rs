//! The server binary with `--agent claude` over the fake `claude` executable: process lifetime
//! (DELETE, idle eviction, shutdown, either side crashing) and the HTTP mapping of the bridge's
//! extensions. The real CLI runs in `claude_e2e.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::process_alive as alive;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess, SseStream};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(15);

struct Fixture {
    dir: TempDir,
    server: ServerProcess,
    client: Client,
}

async fn start(extra: &[&str]) -> Fixture {
    start_with_env(extra, &[]).await
}

/// [`start`] with extra variables in the server's environment.
async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Fixture {
    let dir = TempDir::new("claude-fake").unwrap();
    for sub in ["records", "config", "work"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let fake = fake_claude_path();
    let record = format!(
        "FAKE_CLAUDE_RECORD_DIR={}",
        dir.path().join("records").display()
    );
    let config = format!("CLAUDE_CONFIG_DIR={}", dir.path().join("config").display());
    let work = dir.path().join("work").display().to_string();
    let mut args = vec![
        "--no-auth",
        "--agent",
        "claude",
        "--claude-path",
        fake.to_str().unwrap(),
        "--claude-env",
        &record,
        "--claude-env",
        &config,
        "--allowed-root",
        &work,
    ];
    args.extend_from_slice(extra);
    let server = ServerProcess::spawn_with_env(BIN, &args, env)
        .await
        .unwrap();
    let client = server.client(None);
    Fixture {
        dir,
        server,
        client,
    }
}

impl Fixture {
    fn work(&self) -> String {
        self.dir.path().join("work").display().to_string()
    }

    async fn session(&self) -> (String, SseStream) {
        let id = self
            .client
            .create(&json!({"cwd": self.work()}))
            .await
            .unwrap();
        let stream = self.client.stream(&id, None).await.unwrap();
        (id, stream)
    }

    async fn say(&self, id: &str, text: &str) {
        let r = self
            .client
            .input(id, &json!({"type": "user_message", "content": text}))
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    /// Every process's record (`pid`, `argv`, `cwd`, `env`).
    fn records(&self) -> Vec<Value> {
        std::fs::read_dir(self.dir.path().join("records"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect()
    }

    fn pids(&self) -> Vec<u64> {
        std::fs::read_dir(self.dir.path().join("records"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| {
                let v: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                v["pid"].as_u64().unwrap()
            })
            .collect()
    }
}

/// Waits (bounded) for processes that are not our children to exit: no event exists for that.
async fn wait_gone(pids: &[u64], within: Duration) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes still alive: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names(frames: &[agent_webkit_testkit::SseFrame]) -> Vec<&str> {
    frames.iter().map(|f| f.event.as_str()).collect()
}

#[tokio::test]
async fn delete_ends_the_stream_and_the_process() {
    let f = start(&[]).await;
    let (id, mut stream) = f.session().await;
    f.say(&id, "hello").await;
    let frames = stream.until("result", T).await.unwrap();
    assert!(names(&frames).contains(&"message_delta"));
    let pids = f.pids();
    assert_eq!(pids.len(), 1);
    assert!(alive(pids[0]));
    assert_eq!(f.client.delete(&id).await.unwrap(), 204);
    let rest = stream.collect_to_end(T).await.unwrap();
    assert_eq!(names(&rest).last(), Some(&"done"));
    // DELETE returns after the CLI was reaped.
    assert!(!alive(pids[0]));
    assert_eq!(f.client.delete(&id).await.unwrap(), 204, "idempotent");
}

#[tokio::test]
async fn delete_during_a_running_turn_is_prompt() {
    let f = start(&[]).await;
    let (id, mut stream) = f.session().await;
    f.say(&id, "[[slow: 1000]]").await;
    stream.until("message_delta", T).await.unwrap();
    let started = Instant::now();
    assert_eq!(f.client.delete(&id).await.unwrap(), 204);
    // The turn is interrupted first, so the CLI exits at once instead of finishing 50 s of output.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let rest = stream.collect_to_end(T).await.unwrap();
    assert_eq!(names(&rest).last(), Some(&"done"));
    assert!(!alive(f.pids()[0]));
}

#[tokio::test]
async fn idle_eviction_ends_the_process() {
    let f = start(&["--idle-timeout", "0.3"]).await;
    let id = f.client.create(&json!({"cwd": f.work()})).await.unwrap();
    let pids = f.pids();
    assert_eq!(pids.len(), 1);
    // No subscriber and no input: evicted, and the CLI with it.
    wait_gone(&pids, T).await;
    let r = f.client.stream_raw(&id, None).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn server_shutdown_ends_every_stream_and_every_process() {
    // In memory, a shutdown ends sessions (`done`); with the default store it hands them off
    // to the next start instead (tests/restart.rs). Either way no CLI outlives the server.
    let mut f = start(&["--store", "memory"]).await;
    let (a, mut sa) = f.session().await;
    let (_b, mut sb) = f.session().await;
    f.say(&a, "[[slow: 1000]]").await;
    sa.until("message_delta", T).await.unwrap();
    let pids = f.pids();
    assert_eq!(pids.len(), 2);
    let status = f.server.terminate(T).await.unwrap().expect("exited");
    assert!(status.success(), "{status:?}");
    for stream in [&mut sa, &mut sb] {
        let rest = stream.collect_to_end(T).await.unwrap();
        assert_eq!(names(&rest).last(), Some(&"done"));
    }
    wait_gone(&pids, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_killed_server_leaves_no_orphan_cli() {
    let f = start(&[]).await;
    let (_id, _stream) = f.session().await;
    let pids = f.pids();
    let server_pid = f.server.pid().unwrap();
    agent_webkit_testkit::kill_and_wait(server_pid, T)
        .await
        .unwrap();
    // The CLI sees EOF on stdin and exits by itself.
    wait_gone(&pids, T).await;
}

/// A CLI that keeps running after stdin EOF (as the real one does in the middle of a turn,
/// tools and all; `[[hang]]` makes the fake do that): the server's watchdog kills it when the
/// server itself is SIGKILLed and cleans nothing up.
#[tokio::test]
async fn a_killed_server_leaves_no_busy_cli() {
    let f = start(&[]).await;
    let (id, mut stream) = f.session().await;
    f.say(&id, "[[hang]] hi").await;
    stream.until("result", T).await.unwrap();
    let pids = f.pids();
    assert_eq!(pids.len(), 1);
    assert!(alive(pids[0]));
    let server_pid = f.server.pid().unwrap();
    agent_webkit_testkit::kill_and_wait(server_pid, T)
        .await
        .unwrap();
    wait_gone(&pids, T).await;
}

#[tokio::test]
async fn a_crashed_cli_ends_the_session_without_its_stderr() {
    let f = start(&[]).await;
    let (id, mut stream) = f.session().await;
    f.say(&id, "[[crash]]").await;
    let frames = stream.collect_to_end(T).await.unwrap();
    let error = frames.iter().find(|f| f.event == "error").unwrap().json();
    assert_eq!(error["code"], "agent_exited");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(!message.contains("simulated crash"), "{message}");
    assert_eq!(names(&frames).last(), Some(&"done"));
    assert!(!alive(f.pids()[0]));
    let r = f
        .client
        .input(&id, &json!({"type": "user_message", "content": "x"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "the session has ended (kept readable)");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "session_ended", "{body}");
}

#[tokio::test]
async fn hook_decisions_and_control_errors_over_http() {
    let f = start(&["--claude-hook", "PreToolUse:Bash"]).await;
    let (id, mut stream) = f.session().await;
    // Control errors map to clear statuses.
    let r = f
        .client
        .input(&id, &json!({"type": "set_model", "model": "bad-model"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("bad-model"));
    let r = f
        .client
        .input(&id, &json!({"type": "set_permission_mode", "mode": "yolo"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for ok in [
        json!({"type": "set_model", "model": "claude-x"}),
        json!({"type": "set_permission_mode", "mode": "acceptEdits"}),
        json!({"type": "stop_task", "task_id": "t1"}),
        json!({"type": "interrupt"}),
    ] {
        assert_eq!(
            f.client.input(&id, &ok).await.unwrap().status(),
            204,
            "{ok}"
        );
    }

    f.say(&id, "[[bash: ls]]").await;
    let frames = stream.until("hook_decision_request", T).await.unwrap();
    let req = frames.last().unwrap().json();
    let corr = req["correlation_id"].as_str().unwrap();
    assert_eq!(req["hook_event"], "PreToolUse");
    let bad = f
        .client
        .input(
            &id,
            &json!({"type": "hook_decision_response", "correlation_id": corr, "decision": "yes"}),
        )
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let allow = json!({"type": "hook_decision_response", "correlation_id": corr,
        "decision": {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow"}}});
    assert_eq!(f.client.input(&id, &allow).await.unwrap().status(), 204);
    assert_eq!(f.client.input(&id, &allow).await.unwrap().status(), 409);
    let frames = stream.until("result", T).await.unwrap();
    assert!(
        !names(&frames).contains(&"permission_request"),
        "{:?}",
        names(&frames)
    );
    let tr = frames
        .iter()
        .find(|f| f.event == "tool_result")
        .unwrap()
        .json();
    assert_eq!(tr["output"], "ran: ls");
}

#[tokio::test]
async fn a_missing_cli_is_a_503_with_the_install_hint() {
    let dir = TempDir::new("no-cli").unwrap();
    let missing = dir.path().join("claude");
    let server = ServerProcess::spawn(
        BIN,
        &[
            "--no-auth",
            "--agent",
            "claude",
            "--claude-path",
            missing.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let r = server.client(None).create_raw(&json!({})).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("npm install -g @anthropic-ai/claude-code"));
    assert!(Path::new(&missing).parent().is_some());
}

const TOKEN: &str = "tok-4f9a7c1e-not-for-the-agent";

/// The CLI's environment (as the fake recorded it) for a server started with `extra` flags and
/// a few variables of its own, among them a bearer token and a copy of it under another name.
async fn cli_env(extra: &[&str]) -> serde_json::Map<String, Value> {
    let copy = format!("Bearer {TOKEN}");
    let f = start_with_env(
        extra,
        &[
            ("AGENT_WEBKIT_AUTH_TOKEN", TOKEN),
            ("AGENT_WEBKIT_SOMETHING_ELSE", "server-only"),
            ("COPY_OF_THE_TOKEN", &copy),
            ("PLAIN_VAR", "visible"),
            ("OTHER_VAR", "also-visible"),
        ],
    )
    .await;
    let (_id, _stream) = f.session().await;
    let records = f.records();
    assert_eq!(records.len(), 1);
    let env = records[0]["env"].as_object().unwrap().clone();
    for (name, value) in &env {
        assert!(!name.starts_with("AGENT_WEBKIT_"), "{name} reached the CLI");
        assert!(
            !value.as_str().unwrap().contains(TOKEN),
            "{name} carries the token"
        );
    }
    env
}

#[tokio::test]
async fn the_cli_inherits_the_environment_minus_the_servers_variables_and_secrets() {
    let env = cli_env(&[]).await;
    assert_eq!(env["PLAIN_VAR"], "visible");
    assert_eq!(env["OTHER_VAR"], "also-visible");
    assert!(env.contains_key("PATH"));
    assert!(!env.contains_key("COPY_OF_THE_TOKEN"));
}

#[tokio::test]
async fn a_clean_environment_holds_only_what_the_operator_passed() {
    let env = cli_env(&["--claude-clean-env", "--claude-pass-env", "PLAIN_VAR"]).await;
    let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = vec![
        "CLAUDE_AGENT_SDK_CLIENT_APP",
        "CLAUDE_AGENT_SDK_VERSION",
        // File checkpointing is on by default (`--file-checkpointing`).
        "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING",
        "CLAUDE_CODE_ENTRYPOINT",
        "CLAUDE_CODE_SDK_READS_SESSION_STATE",
        "CLAUDE_CONFIG_DIR",
        "FAKE_CLAUDE_RECORD_DIR",
        "PATH",
        "PLAIN_VAR",
        "PWD",
    ];
    if std::env::var_os("HOME").is_some() {
        expected.push("HOME");
    }
    expected.sort_unstable();
    assert_eq!(names, expected);
}

/// Runs a `[[blocks: n]]` turn; returns the SSE bytes it cost.
async fn many_blocks_turn(f: &Fixture, id: &str, stream: &mut SseStream, n: usize) -> usize {
    f.say(id, &format!("[[blocks: {n}]]")).await;
    let frames = stream.until("result", T).await.unwrap();
    let completes: Vec<Value> = frames
        .iter()
        .filter(|f| f.event == "message_complete")
        .map(|f| f.json())
        .collect();
    assert_eq!(completes.len(), 1, "one message_complete per message");
    assert_eq!(
        completes[0]["message"]["content"].as_array().unwrap().len(),
        n
    );
    frames.iter().map(|f| f.raw.len()).sum()
}

/// A message the CLI writes as many frames under one id (one per block) reaches clients as one
/// `message_complete` carrying every block: SSE output linear in the message's size. Emitting
/// the blocks so far at every frame was quadratic (1,500 blocks: ~140 MB).
#[tokio::test]
async fn a_message_of_many_frames_costs_linear_output() {
    let f = start(&[]).await;
    let (id, mut stream) = f.session().await;
    let small = many_blocks_turn(&f, &id, &mut stream, 150).await;
    let large = many_blocks_turn(&f, &id, &mut stream, 1500).await;
    // Ten times the blocks: about ten times the bytes (quadratic would be a hundred times).
    assert!(
        large < small * 15,
        "150 blocks: {small} B of SSE, 1500 blocks: {large} B"
    );
    eprintln!("SSE bytes per turn: 150 blocks {small}, 1500 blocks {large}");
}
