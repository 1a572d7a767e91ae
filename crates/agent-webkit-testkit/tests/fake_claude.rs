//! Black-box tests of the `fake-claude` executable: spawn it, speak stream-json, check frames.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_fake-claude");
const WAIT: Duration = Duration::from_secs(15);
const SID: &str = "5f0c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f";
const BASE: &[&str] = &[
    "--output-format",
    "stream-json",
    "--verbose",
    "--system-prompt",
    "",
    "--permission-prompt-tool",
    "stdio",
    "--input-format",
    "stream-json",
];

struct Fake {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

impl Fake {
    async fn spawn(extra: &[&str]) -> Self {
        Self::spawn_with(extra, &[], None).await
    }

    async fn spawn_with(extra: &[&str], env: &[(&str, &str)], cwd: Option<&PathBuf>) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(BASE)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        Self::from_command(cmd)
    }

    fn from_command(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn fake-claude");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let buf = Arc::new(Mutex::new(String::new()));
        let sink = buf.clone();
        let stderr_task = tokio::spawn(async move {
            let mut chunk = vec![0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines: BufReader::new(stdout).lines(),
            stderr: buf,
            stderr_task: Some(stderr_task),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.send_raw(&frame.to_string()).await;
    }

    async fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn user(&mut self, text: &str) {
        self.send(
            json!({"type":"user","message":{"role":"user","content":text},
                         "parent_tool_use_id":null,"session_id":"default"}),
        )
        .await;
    }

    async fn user_with_uuid(&mut self, text: &str, uuid: &str) {
        self.send(json!({"type":"user","message":{"role":"user","content":text},"uuid":uuid}))
            .await;
    }

    /// The next stdout line (a non-JSON line comes back as a JSON string); None at EOF.
    async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("timed out waiting for a stdout line")
            .unwrap();
        line.map(|l| serde_json::from_str(&l).unwrap_or(Value::String(l)))
    }

    /// Reads until a frame matches; returns every frame read (the match last).
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(frame) => {
                    let hit = pred(&frame);
                    seen.push(frame);
                    if hit {
                        return seen;
                    }
                }
                None => panic!(
                    "EOF before {what}; frames: {seen:#?}\nstderr: {}",
                    self.stderr()
                ),
            }
        }
    }

    async fn until_type(&mut self, t: &str) -> Vec<Value> {
        self.until(t, |f| ty(f) == t).await
    }

    async fn initialize(&mut self, hooks: Value) -> Value {
        self.send(json!({"type":"control_request","request_id":"req_init",
                         "request":{"subtype":"initialize","hooks":hooks}}))
            .await;
        let first = self.next().await.expect("initialize response");
        assert_eq!(ty(&first), "control_response", "first frame: {first}");
        assert_eq!(first["response"]["request_id"], "req_init");
        first
    }

    async fn control(&mut self, id: &str, request: Value) -> Value {
        self.send(json!({"type":"control_request","request_id":id,"request":request}))
            .await;
        let frames = self
            .until("control_response", |f| {
                ty(f) == "control_response" && f["response"]["request_id"] == id
            })
            .await;
        frames.last().unwrap().clone()
    }

    async fn answer(&mut self, request_id: &Value, response: Value) {
        self.send(
            json!({"type":"control_response","response":{"subtype":"success",
            "request_id":request_id,"response":response}}),
        )
        .await;
    }

    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Closes stdin, reads stdout to EOF and returns (frames, exit code).
    async fn finish(mut self) -> (Vec<Value>, i32, String) {
        self.close_stdin();
        let mut rest = Vec::new();
        while let Some(frame) = self.next().await {
            rest.push(frame);
        }
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exit")
            .unwrap();
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
        let stderr = self.stderr();
        (rest, status.code().unwrap_or(-1), stderr)
    }

    async fn exit_code(mut self) -> (i32, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exit")
            .unwrap();
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
        (status.code().unwrap_or(-1), self.stderr())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

fn ty(f: &Value) -> String {
    let t = f["type"].as_str().unwrap_or("");
    match t {
        "system" => format!("system/{}", f["subtype"].as_str().unwrap_or("")),
        "stream_event" => format!("stream_event/{}", f["event"]["type"].as_str().unwrap_or("")),
        "control_request" => format!(
            "control_request/{}",
            f["request"]["subtype"].as_str().unwrap_or("")
        ),
        _ => t.to_owned(),
    }
}

fn state(f: &Value) -> Option<&str> {
    (ty(f) == "system/session_state_changed")
        .then(|| f["state"].as_str())
        .flatten()
}

fn result_of(frames: &[Value]) -> &Value {
    frames
        .iter()
        .rev()
        .find(|f| ty(f) == "result")
        .expect("a result frame")
}

fn tool_result(frames: &[Value]) -> &Value {
    frames
        .iter()
        .find(|f| ty(f) == "user" && f["message"]["content"][0]["type"] == "tool_result")
        .map(|f| &f["message"]["content"][0])
        .expect("a tool_result")
}

fn tempdir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("fake-claude-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ------------------------------------------------------------------------ startup / args

#[tokio::test]
async fn stream_json_without_verbose_fails_like_the_cli() {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--output-format",
        "stream-json",
        "--input-format",
        "stream-json",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let fake = Fake::from_command(cmd);
    let (code, stderr) = fake.exit_code().await;
    assert_eq!(code, 1);
    assert!(
        stderr
            .contains("Error: When using --print, --output-format=stream-json requires --verbose"),
        "{stderr}"
    );
}

#[tokio::test]
async fn initialize_is_the_first_frame_and_real_shaped() {
    let mut fake = Fake::spawn(&[
        "--permission-mode",
        "plan",
        "--unknown-flag",
        "x",
        "--weird",
    ])
    .await;
    let resp = fake.initialize(Value::Null).await;
    let payload = &resp["response"]["response"];
    assert_eq!(resp["response"]["subtype"], "success");
    assert_eq!(payload["claude_code_version"], "2.1.330");
    assert_eq!(payload["current_permission_mode"], "plan");
    assert_eq!(payload["commands"], json!([]));
    assert_eq!(payload["models"][0]["value"], "default");
    assert_eq!(payload["account"]["apiKeySource"], "ANTHROPIC_API_KEY");
    assert!(payload["pid"].as_u64().is_some());
    assert!(payload.get("hooks_applied").is_none());
    assert!(payload.get("session_id").is_none());
    // keep_alive is ignored; a second initialize still answers.
    fake.send(json!({"type":"keep_alive"})).await;
    let again = fake.initialize(json!({"PreToolUse": []})).await;
    assert_eq!(again["response"]["response"]["hooks_applied"], true);
    let (rest, code, _) = fake.finish().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(code, 0);
}

#[tokio::test]
async fn invalid_stdin_line_exits_1() {
    let mut fake = Fake::spawn(&[]).await;
    fake.send_raw("{not json").await;
    let (rest, code, stderr) = fake.finish().await;
    assert!(rest.is_empty());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Error parsing streaming input line ("),
        "{stderr}"
    );
    assert!(stderr.contains("SyntaxError"), "{stderr}");
}

#[tokio::test]
async fn record_dir_captures_argv_env_and_cwd() {
    let dir = tempdir("record");
    let cwd = tempdir("record-cwd");
    let dir_s = dir.to_string_lossy().into_owned();
    let mut fake = Fake::spawn_with(
        &["--model=m-1", "--session-id", SID],
        &[
            ("FAKE_CLAUDE_RECORD_DIR", &dir_s),
            ("CLAUDE_CODE_ENTRYPOINT", "sdk-py"),
            ("ANTHROPIC_API_KEY", "k"),
            ("PWD", "/some/where"),
            ("UNRELATED_VAR", "x"),
        ],
        Some(&cwd),
    )
    .await;
    let pid = fake.child.id().unwrap();
    fake.initialize(Value::Null).await;
    let (_, code, _) = fake.finish().await;
    assert_eq!(code, 0);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{pid}.json"))).unwrap())
            .unwrap();
    assert_eq!(record["pid"], pid);
    let argv: Vec<&str> = record["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        argv.contains(&"--model=m-1") && argv.contains(&"--verbose"),
        "{argv:?}"
    );
    assert_eq!(record["env"]["CLAUDE_CODE_ENTRYPOINT"], "sdk-py");
    assert_eq!(record["env"]["ANTHROPIC_API_KEY"], "k");
    assert_eq!(record["env"]["PWD"], "/some/where");
    // The whole environment: bridge tests check what was kept out of it.
    assert!(record["env"].get("UNRELATED_VAR").is_some());
    assert_eq!(
        PathBuf::from(record["cwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        cwd.canonicalize().unwrap()
    );
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "process still there"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(cwd);
}

#[test]
fn fake_claude_path_finds_the_binary() {
    let path = agent_webkit_testkit::fake_claude_path();
    assert!(path.is_file(), "{}", path.display());
    assert_eq!(path.file_name().unwrap(), "fake-claude");
}

// ------------------------------------------------------------------------ plain turns

#[tokio::test]
async fn echo_turn_with_partial_messages_has_recorded_frame_order() {
    let mut fake = Fake::spawn(&["--include-partial-messages", "--session-id", SID]).await;
    fake.initialize(Value::Null).await;
    fake.user("hello there").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let kinds: Vec<String> = frames.iter().map(ty).collect();
    assert_eq!(
        kinds,
        [
            "system/session_state_changed",
            "system/init",
            "system/status",
            "stream_event/message_start",
            "stream_event/content_block_start",
            "stream_event/content_block_delta",
            "stream_event/content_block_delta",
            "stream_event/content_block_delta",
            "assistant",
            "stream_event/content_block_stop",
            "stream_event/message_delta",
            "stream_event/message_stop",
            "result",
            "system/session_state_changed",
        ]
    );
    assert_eq!(frames[0]["state"], "running");
    assert_eq!(frames[0]["sdk_host_only"], true);
    for f in &frames {
        assert_eq!(f["session_id"], SID, "{f}");
    }
    let init = &frames[1];
    for key in [
        "cwd",
        "tools",
        "mcp_servers",
        "model",
        "permissionMode",
        "uuid",
        "apiKeySource",
    ] {
        assert!(init.get(key).is_some(), "init lacks {key}");
    }
    assert_eq!(init["claude_code_version"], "2.1.330");
    let deltas: String = frames
        .iter()
        .filter(|f| ty(f) == "stream_event/content_block_delta")
        .map(|f| f["event"]["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "echo: hello there");
    let assistant = &frames[8];
    assert_eq!(
        assistant["message"]["content"][0]["text"],
        "echo: hello there"
    );
    assert_eq!(assistant["message"]["stop_reason"], Value::Null);
    assert_eq!(frames[3]["api_message_id"], assistant["message"]["id"]);
    let result = &frames[12];
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "echo: hello there");
    for key in [
        "duration_ms",
        "num_turns",
        "total_cost_usd",
        "usage",
        "uuid",
        "modelUsage",
    ] {
        assert!(result.get(key).is_some(), "result lacks {key}");
    }
    let (rest, code, _) = fake.finish().await;
    assert!(
        rest.is_empty(),
        "no mirror without --session-mirror: {rest:?}"
    );
    assert_eq!(code, 0);
}

#[tokio::test]
async fn without_partial_messages_no_stream_events_and_list_content() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.send(json!({"type":"user","message":{"role":"user","content":[
        {"type":"text","text":"part one, "},
        {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},
        {"type":"text","text":"part two"}]}}))
        .await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    assert!(!frames.iter().any(|f| ty(f).starts_with("stream_event")));
    assert_eq!(result_of(&frames)["result"], "echo: part one, part two");
    // a generated session id is a UUID
    let sid = frames[0]["session_id"].as_str().unwrap();
    assert_eq!(sid.len(), 36);
    assert_eq!(fake.finish().await.1, 0);
}

#[tokio::test]
async fn user_uuid_gets_lifecycle_and_correlation() {
    let mut fake = Fake::spawn(&["--include-partial-messages"]).await;
    fake.initialize(Value::Null).await;
    fake.user_with_uuid("hi", "uuid-one").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let lifecycle: Vec<&str> = frames
        .iter()
        .filter(|f| ty(f) == "command_lifecycle")
        .map(|f| f["state"].as_str().unwrap())
        .collect();
    assert_eq!(lifecycle, ["queued", "started", "completed"]);
    let init = frames.iter().find(|f| ty(f) == "system/init").unwrap();
    assert_eq!(init["user_message_uuids"], json!(["uuid-one"]));
    let start = frames
        .iter()
        .find(|f| ty(f) == "stream_event/message_start")
        .unwrap();
    assert_eq!(start["user_message_uuid"], "uuid-one");
    let assistant = frames.iter().find(|f| ty(f) == "assistant").unwrap();
    assert_eq!(assistant["user_message_uuids"], json!(["uuid-one"]));
    assert_eq!(result_of(&frames)["user_message_uuid"], "uuid-one");
    // result precedes completed, which precedes idle
    let pos = |p: &dyn Fn(&Value) -> bool| frames.iter().position(p).unwrap();
    assert!(
        pos(&|f| ty(f) == "result")
            < pos(&|f| ty(f) == "command_lifecycle" && f["state"] == "completed")
    );
    fake.finish().await;
}

#[tokio::test]
async fn two_queued_messages_make_two_turns_without_idle_between() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[slow: 3]]").await;
    fake.user("second").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let results: Vec<&Value> = frames.iter().filter(|f| ty(f) == "result").collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["result"], "word1 word2 word3 ");
    assert_eq!(results[1]["result"], "echo: second");
    let states: Vec<&str> = frames.iter().filter_map(state).collect();
    assert_eq!(states, ["running", "idle"]);
    assert_eq!(frames.iter().filter(|f| ty(f) == "system/init").count(), 2);
    fake.finish().await;
}

// ------------------------------------------------------------------------ control requests

#[tokio::test]
async fn host_control_requests() {
    let mut fake = Fake::spawn(&["--model", "claude-start"]).await;
    fake.initialize(Value::Null).await;
    let r = fake
        .control(
            "m1",
            json!({"subtype":"set_model","model":"claude-haiku-4-5"}),
        )
        .await;
    assert_eq!(
        r["response"]["response"],
        json!({"model":"claude-haiku-4-5"})
    );
    let r = fake
        .control("m2", json!({"subtype":"set_model","model":"bad-model"}))
        .await;
    assert_eq!(
        r["response"],
        json!({"subtype":"error","request_id":"m2","error":"Model 'bad-model' not found","error_code":"not_found"})
    );
    let r = fake
        .control(
            "p1",
            json!({"subtype":"set_permission_mode","mode":"acceptEdits"}),
        )
        .await;
    assert_eq!(r["response"]["response"], json!({"mode":"acceptEdits"}));
    let r = fake
        .control(
            "p2",
            json!({"subtype":"set_permission_mode","mode":"bogus"}),
        )
        .await;
    assert_eq!(r["response"]["subtype"], "error");
    let r = fake
        .control("s1", json!({"subtype":"stop_task","task_id":"nope"}))
        .await;
    assert_eq!(r["response"]["response"], json!({}));
    let r = fake.control("x1", json!({"subtype":"rewind_files"})).await;
    assert_eq!(
        r["response"]["error"],
        "Unsupported control request subtype: rewind_files"
    );
    assert_eq!(r["response"]["error_code"], "unsupported_request");
    let r = fake.control("i1", json!({"subtype":"interrupt"})).await;
    assert_eq!(r["response"]["response"], json!({"still_queued":[]}));

    fake.user("after changes").await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    let init = frames.iter().find(|f| ty(f) == "system/init").unwrap();
    assert_eq!(init["model"], "claude-haiku-4-5");
    assert_eq!(init["permissionMode"], "acceptEdits");
    let assistant = frames.iter().find(|f| ty(f) == "assistant").unwrap();
    assert_eq!(assistant["message"]["model"], "claude-haiku-4-5");
    // null goes back to the session default
    let r = fake
        .control("m3", json!({"subtype":"set_model","model":null}))
        .await;
    assert_eq!(r["response"]["response"], json!({"model":"claude-start"}));
    assert_eq!(fake.finish().await.1, 0);
}

#[tokio::test]
async fn mcp_config_servers_appear_in_init() {
    let config =
        r#"{"mcpServers":{"calc":{"type":"sdk","name":"calc"},"failing":{"command":"nope"}}}"#;
    let mut fake = Fake::spawn(&["--mcp-config", config, "--strict-mcp-config"]).await;
    fake.initialize(Value::Null).await;
    fake.user("x").await;
    let frames = fake.until_type("system/init").await;
    assert_eq!(
        frames.last().unwrap()["mcp_servers"],
        json!([{"name":"calc","status":"connected"},{"name":"failing","status":"failed"}])
    );
    fake.finish().await;
}

// ------------------------------------------------------------------------ tools

async fn bash_until_permission(fake: &mut Fake, text: &str) -> (Vec<Value>, Value) {
    fake.user(text).await;
    let frames = fake.until_type("control_request/can_use_tool").await;
    let request = frames.last().unwrap().clone();
    (frames, request)
}

#[tokio::test]
async fn bash_allow_with_updated_input() {
    let mut fake = Fake::spawn(&["--include-partial-messages"]).await;
    fake.initialize(Value::Null).await;
    let (frames, req) = bash_until_permission(&mut fake, "please [[bash: ls -la]]").await;
    let assistants: Vec<&Value> = frames.iter().filter(|f| ty(f) == "assistant").collect();
    assert_eq!(assistants.len(), 2);
    assert_eq!(
        assistants[0]["message"]["id"],
        assistants[1]["message"]["id"]
    );
    assert_eq!(
        assistants[0]["message"]["content"][0]["text"],
        "I'll run that."
    );
    let tool_use = &assistants[1]["message"]["content"][0];
    assert_eq!(tool_use["name"], "Bash");
    assert_eq!(
        tool_use["input"],
        json!({"command":"ls -la","description":"Run ls -la"})
    );
    assert!(tool_use["id"].as_str().unwrap().starts_with("toolu_fake_"));
    // the tool_use assistant frame precedes its content_block_stop
    let pos_tool = frames.iter().position(|f| f == assistants[1]).unwrap();
    assert_eq!(ty(&frames[pos_tool + 1]), "stream_event/content_block_stop");
    assert_eq!(state(&frames[frames.len() - 2]), Some("requires_action"));
    let r = &req["request"];
    assert_eq!(r["tool_name"], "Bash");
    assert_eq!(r["display_name"], "Bash");
    assert_eq!(r["tool_use_id"], tool_use["id"]);
    assert_eq!(r["description"], "Run ls -la");
    assert!(r["permission_suggestions"].is_array());
    assert_eq!(req["request_id"].as_str().unwrap().len(), 36);

    fake.answer(
        &req["request_id"],
        json!({"behavior":"allow",
        "updatedInput":{"command":"ls -l /tmp","description":"changed"}}),
    )
    .await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    assert_eq!(state(&frames[0]), Some("running"));
    let tr = tool_result(&frames);
    assert_eq!(tr["content"], "ran: ls -l /tmp");
    assert_eq!(tr["is_error"], false);
    assert_eq!(tr["tool_use_id"], tool_use["id"]);
    let user = frames.iter().find(|f| ty(f) == "user").unwrap();
    assert_eq!(user["tool_use_result"]["stdout"], "ran: ls -l /tmp");
    let result = result_of(&frames);
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["result"], "done with bash");
    assert_eq!(result["num_turns"], 2);
    assert_eq!(result["permission_denials"], json!([]));
    assert_eq!(fake.finish().await.1, 0);
}

#[tokio::test]
async fn bash_deny_is_listed_in_permission_denials() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    let (_, req) = bash_until_permission(&mut fake, "[[bash: rm -rf /]]").await;
    fake.answer(
        &req["request_id"],
        json!({"behavior":"deny","message":"no way"}),
    )
    .await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let tr = tool_result(&frames);
    assert_eq!(tr["content"], "no way");
    assert_eq!(tr["is_error"], true);
    let result = result_of(&frames);
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "done with bash");
    assert_eq!(result["permission_denials"][0]["tool_name"], "Bash");
    assert_eq!(
        result["permission_denials"][0]["tool_input"]["command"],
        "rm -rf /"
    );
    assert_eq!(fake.finish().await.1, 0);
}

#[tokio::test]
async fn deny_with_interrupt_ends_the_turn_and_exit_is_1() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    let (_, req) = bash_until_permission(&mut fake, "[[bash: rm -rf /]]").await;
    fake.answer(
        &req["request_id"],
        json!({"behavior":"deny","message":"stop","interrupt":true}),
    )
    .await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let tr = tool_result(&frames);
    assert_eq!(tr["is_error"], true);
    assert!(tr["content"]
        .as_str()
        .unwrap()
        .contains("doesn't want to proceed"));
    assert!(frames.iter().any(|f| ty(f) == "user"
        && f["message"]["content"][0]["text"] == "[Request interrupted by user]"));
    let result = result_of(&frames);
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(result["is_error"], true);
    assert_eq!(result["terminal_reason"], "aborted_tools");
    assert!(result.get("result").is_none());
    assert!(!frames
        .iter()
        .any(|f| ty(f) == "assistant" && f["message"]["content"][0]["text"] == "done with bash"));
    assert_eq!(fake.finish().await.1, 1);
}

#[tokio::test]
async fn permission_error_response_becomes_failed_tool_result() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    let (_, req) = bash_until_permission(&mut fake, "[[bash: date]]").await;
    fake.send(
        json!({"type":"control_response","response":{"subtype":"error",
        "request_id":req["request_id"],"error":"canUseTool callback is not provided"}}),
    )
    .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    let tr = tool_result(&frames);
    assert_eq!(
        tr["content"],
        "Tool permission request failed: Error: canUseTool callback is not provided"
    );
    assert_eq!(tr["is_error"], true);
    assert_eq!(
        result_of(&frames)["permission_denials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    fake.finish().await;
}

#[tokio::test]
async fn read_returns_real_file_content_or_an_error() {
    let dir = tempdir("read");
    std::fs::write(dir.join("notes.txt"), "hello from notes\nline two\n").unwrap();
    let mut fake = Fake::spawn_with(&[], &[], Some(&dir)).await;
    fake.initialize(Value::Null).await;
    let (_, req) = bash_until_permission(&mut fake, "[[read: notes.txt]]").await;
    assert_eq!(req["request"]["tool_name"], "Read");
    assert_eq!(req["request"]["input"], json!({"file_path":"notes.txt"}));
    fake.answer(
        &req["request_id"],
        json!({"behavior":"allow","updatedInput":{"file_path":"notes.txt"}}),
    )
    .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert_eq!(
        tool_result(&frames)["content"],
        "hello from notes\nline two\n"
    );

    let (_, req) = bash_until_permission(&mut fake, "[[read: /definitely/missing.txt]]").await;
    fake.answer(&req["request_id"], json!({"behavior":"allow"}))
        .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert_eq!(tool_result(&frames)["is_error"], true);
    fake.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn ask_user_question_answered_unanswered_and_denied() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    let (_, req) = bash_until_permission(&mut fake, "[[ask: Which color? | Red | Blue]]").await;
    let r = &req["request"];
    assert_eq!(r["tool_name"], "AskUserQuestion");
    assert_eq!(r["requires_user_interaction"], true);
    let questions = r["input"]["questions"].clone();
    assert_eq!(
        questions,
        json!([{"question":"Which color?","header":"Question","options":[
            {"label":"Red","description":""},{"label":"Blue","description":""}],"multiSelect":false}])
    );
    fake.answer(
        &req["request_id"],
        json!({"behavior":"allow","updatedInput":{
        "questions":questions,"answers":{"Which color?":"Blue"}}}),
    )
    .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    let tr = tool_result(&frames);
    assert!(
        tr["content"].as_str().unwrap().starts_with(
            r#"Your questions have been answered: "Which color?"="Blue". You can now continue"#
        ),
        "{tr}"
    );
    let user = frames.iter().find(|f| ty(f) == "user").unwrap();
    assert_eq!(
        user["tool_use_result"]["answers"],
        json!({"Which color?":"Blue"})
    );
    assert_eq!(user["tool_use_result"]["questions"], questions);

    let (_, req) = bash_until_permission(&mut fake, "[[ask: Q2 | A | B]]").await;
    fake.answer(
        &req["request_id"],
        json!({"behavior":"allow","updatedInput":req["request"]["input"]}),
    )
    .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert_eq!(
        tool_result(&frames)["content"],
        "The user did not answer the questions."
    );

    let (_, req) = bash_until_permission(&mut fake, "[[ask: Q3 | A | B]]").await;
    fake.answer(
        &req["request_id"],
        json!({"behavior":"deny","message":"dismissed"}),
    )
    .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    let tr = tool_result(&frames);
    assert_eq!(tr["content"], "dismissed");
    assert_eq!(tr["is_error"], true);
    fake.finish().await;
}

#[tokio::test]
async fn pre_tool_use_hooks_decide_before_can_use_tool() {
    let mut fake = Fake::spawn(&[]).await;
    let resp = fake
        .initialize(json!({"PreToolUse":[{"matcher":"Bash|Write","hookCallbackIds":["hook_0"],"timeout":30}]}))
        .await;
    assert_eq!(resp["response"]["response"]["hooks_applied"], true);

    // deny: no can_use_tool, tool_result carries the reason
    fake.user("[[bash: rm x]]").await;
    let frames = fake.until_type("control_request/hook_callback").await;
    let hook = frames.last().unwrap().clone();
    let r = &hook["request"];
    assert_eq!(r["callback_id"], "hook_0");
    assert_eq!(r["input"]["hook_event_name"], "PreToolUse");
    assert_eq!(r["input"]["tool_name"], "Bash");
    assert_eq!(r["input"]["tool_input"]["command"], "rm x");
    assert_eq!(r["tool_use_id"], r["input"]["tool_use_id"]);
    for key in ["session_id", "transcript_path", "cwd", "permission_mode"] {
        assert!(r["input"].get(key).is_some(), "hook input lacks {key}");
    }
    fake.answer(
        &hook["request_id"],
        json!({"hookSpecificOutput":{"hookEventName":"PreToolUse",
        "permissionDecision":"deny","permissionDecisionReason":"blocked by policy"}}),
    )
    .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert!(!frames
        .iter()
        .any(|f| ty(f) == "control_request/can_use_tool"));
    let tr = tool_result(&frames);
    assert_eq!(tr["content"], "blocked by policy");
    assert_eq!(tr["is_error"], true);

    // allow: runs without can_use_tool
    fake.user("[[bash: echo ok]]").await;
    let frames = fake.until_type("control_request/hook_callback").await;
    let hook = frames.last().unwrap().clone();
    fake.answer(
        &hook["request_id"],
        json!({"hookSpecificOutput":{"hookEventName":"PreToolUse",
        "permissionDecision":"allow"}}),
    )
    .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert!(!frames
        .iter()
        .any(|f| ty(f) == "control_request/can_use_tool"));
    assert_eq!(tool_result(&frames)["content"], "ran: echo ok");

    // no opinion: falls through to can_use_tool
    fake.user("[[bash: echo maybe]]").await;
    let frames = fake.until_type("control_request/hook_callback").await;
    let hook = frames.last().unwrap().clone();
    fake.answer(&hook["request_id"], json!({})).await;
    let frames = fake.until_type("control_request/can_use_tool").await;
    let req = frames.last().unwrap().clone();
    fake.answer(&req["request_id"], json!({"behavior":"allow"}))
        .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert_eq!(tool_result(&frames)["content"], "ran: echo maybe");

    // a Read does not match the Bash matcher
    fake.user("[[read: /nonexistent]]").await;
    let frames = fake.until_type("control_request/can_use_tool").await;
    assert!(!frames
        .iter()
        .any(|f| ty(f) == "control_request/hook_callback"));
    fake.finish().await;
}

// ------------------------------------------------------------------------ interrupts

/// Recorded from CLI 2.1.330: an interrupt that arrives while the message is still queued (its
/// turn not started) is answered with the message in `still_queued`, and the turn is aborted as
/// it starts; an interrupt while idle is forgotten.
#[tokio::test]
async fn interrupt_before_the_turn_starts_aborts_it_as_it_starts() {
    // The message and the interrupt go in one write, so the interrupt is usually read before the
    // turn starts; whether it was shows in `still_queued`. Either way the turn must be aborted;
    // the queued case must have been seen at least once.
    for _attempt in 0..20 {
        let mut fake = Fake::spawn(&["--include-partial-messages"]).await;
        fake.initialize(Value::Null).await;
        // Idle: answered, and forgotten.
        let idle = fake
            .control("req_idle", json!({"subtype":"interrupt"}))
            .await;
        assert_eq!(idle["response"]["response"], json!({"still_queued":[]}));
        let user =
            json!({"type":"user","message":{"role":"user","content":"[[slow: 400]]"},"uuid":"u-q"});
        let interrupt = json!({"type":"control_request","request_id":"req_int",
                               "request":{"subtype":"interrupt"}});
        fake.send_raw(&format!("{user}\n{interrupt}")).await;
        let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
        let response = frames.iter().find(|f| ty(f) == "control_response").unwrap();
        let result = frames.iter().find(|f| ty(f) == "result").unwrap();
        assert_eq!(result["subtype"], "error_during_execution", "{result}");
        assert_eq!(result["user_message_uuids"], json!(["u-q"]), "{result}");
        let deltas = frames
            .iter()
            .filter(|f| ty(f) == "stream_event/content_block_delta")
            .count();
        assert!(deltas < 10, "the turn was aborted early ({deltas} deltas)");
        // The interrupt was for this turn only: the next one runs.
        fake.user_with_uuid("after", "u-next").await;
        let frames = fake.until("result", |f| ty(f) == "result").await;
        assert_eq!(frames.last().unwrap()["subtype"], "success");
        if response["response"]["response"] == json!({"still_queued": ["u-q"]}) {
            return;
        }
    }
    panic!("the interrupt never arrived while the message was queued");
}

#[tokio::test]
async fn interrupt_during_slow_stream_mirrors_e_interrupt() {
    let mut fake = Fake::spawn(&["--include-partial-messages"]).await;
    fake.initialize(Value::Null).await;
    fake.user_with_uuid("[[slow: 400]]", "u-slow").await;
    fake.until("first delta", |f| {
        ty(f) == "stream_event/content_block_delta"
    })
    .await;
    fake.send(
        json!({"type":"control_request","request_id":"req_int","request":{"subtype":"interrupt"}}),
    )
    .await;
    let frames = fake
        .until("control_response", |f| ty(f) == "control_response")
        .await;
    assert_eq!(
        frames.last().unwrap()["response"]["response"],
        json!({"still_queued":[]})
    );
    assert!(
        !frames.iter().any(|f| ty(f) == "assistant"),
        "aborted frames after the response"
    );
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let kinds: Vec<String> = frames
        .iter()
        .map(ty)
        .filter(|k| k != "stream_event/content_block_delta")
        .collect();
    assert_eq!(
        kinds,
        [
            "assistant",
            "user",
            "stream_event/content_block_stop",
            "stream_event/message_delta",
            "stream_event/message_stop",
            "result",
            "command_lifecycle",
            "system/session_state_changed",
        ]
    );
    let aborted = frames.iter().find(|f| ty(f) == "assistant").unwrap();
    assert_eq!(aborted["aborted"], true);
    assert!(aborted["message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("word1 "));
    let user = frames.iter().find(|f| ty(f) == "user").unwrap();
    assert_eq!(
        user["message"]["content"][0]["text"],
        "[Request interrupted by user]"
    );
    let result = result_of(&frames);
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(result["is_error"], true);
    assert_eq!(result["terminal_reason"], "aborted_streaming");
    assert!(result.get("result").is_none());
    let lifecycle = frames
        .iter()
        .find(|f| ty(f) == "command_lifecycle")
        .unwrap();
    assert_eq!(lifecycle["state"], "cancelled");
    // the session goes on
    fake.user("still there?").await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert_eq!(result_of(&frames)["result"], "echo: still there?");
    assert_eq!(fake.finish().await.1, 0);
}

#[tokio::test]
async fn interrupt_withdraws_pending_permission_before_responding() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    let (_, req) = bash_until_permission(&mut fake, "[[bash: sleep 100]]").await;
    fake.send(
        json!({"type":"control_request","request_id":"req_int","request":{"subtype":"interrupt"}}),
    )
    .await;
    let first = fake.next().await.unwrap();
    assert_eq!(
        first,
        json!({"type":"control_cancel_request","request_id":req["request_id"]})
    );
    let second = fake.next().await.unwrap();
    assert_eq!(second["response"]["request_id"], "req_int");
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let result = result_of(&frames);
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(result["terminal_reason"], "aborted_tools");
    // a late answer is ignored
    fake.answer(&req["request_id"], json!({"behavior":"allow"}))
        .await;
    let (rest, code, _) = fake.finish().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(code, 1);
}

#[tokio::test]
async fn cancel_directive_withdraws_the_request_itself() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    let (_, req) = bash_until_permission(&mut fake, "[[cancel]]").await;
    let frames = fake
        .until("cancel", |f| ty(f) == "control_cancel_request")
        .await;
    assert_eq!(frames.last().unwrap()["request_id"], req["request_id"]);
    fake.answer(&req["request_id"], json!({"behavior":"allow"}))
        .await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let tr = tool_result(&frames);
    assert_eq!(tr["content"], "Tool permission request was cancelled");
    assert_eq!(tr["is_error"], true);
    assert_eq!(result_of(&frames)["subtype"], "success");
    assert_eq!(result_of(&frames)["is_error"], false);
    assert_eq!(fake.finish().await.1, 0);
}

// ------------------------------------------------------------------------ other directives

#[tokio::test]
async fn self_turn_runs_a_second_turn_before_idle() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[self_turn]] go").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    let results: Vec<&Value> = frames.iter().filter(|f| ty(f) == "result").collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].get("origin").is_none());
    assert_eq!(results[1]["origin"], json!({"kind":"task-notification"}));
    assert_eq!(results[1]["result"], "background task finished");
    assert_eq!(frames.iter().filter(|f| ty(f) == "system/init").count(), 2);
    assert_eq!(
        frames.iter().filter_map(state).collect::<Vec<_>>(),
        ["running", "idle"]
    );
    fake.finish().await;
}

#[tokio::test]
async fn unknown_request_relays_the_host_answer() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[unknown_request]]").await;
    let frames = fake.until_type("control_request/elicitation").await;
    let req = frames.last().unwrap().clone();
    fake.send(json!({"type":"control_response","response":{"subtype":"error",
        "request_id":req["request_id"],"error":"Unsupported control request subtype: elicitation"}}))
        .await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert_eq!(
        result_of(&frames)["result"],
        "host answered elicitation with: Unsupported control request subtype: elicitation"
    );
    fake.finish().await;
}

#[tokio::test]
async fn crash_exits_3_mid_turn() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[crash]]").await;
    let mut frames = Vec::new();
    while let Some(f) = fake.next().await {
        frames.push(f);
    }
    assert!(!frames.iter().any(|f| ty(f) == "result"));
    let (code, stderr) = fake.exit_code().await;
    assert_eq!(code, 3);
    assert!(stderr.contains("fatal: simulated crash"), "{stderr}");
}

#[tokio::test]
async fn garbage_line_then_normal_turn() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[garbage]]").await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert!(frames.contains(&Value::String("{this is not json".into())));
    assert_eq!(result_of(&frames)["subtype"], "success");
    fake.finish().await;
}

#[tokio::test]
async fn huge_reply_is_one_block_of_n_bytes() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[huge: 2000000]]").await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    let assistant = frames.iter().find(|f| ty(f) == "assistant").unwrap();
    let text = assistant["message"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.len(), 2_000_000);
    assert!(text.bytes().all(|b| b == b'x'));
    fake.finish().await;
}

#[tokio::test]
async fn stderr_flood_must_be_drained() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[stderr: 256]] hi").await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert_eq!(result_of(&frames)["result"], "echo: [[stderr: 256]] hi");
    let (_, code, stderr) = fake.finish().await;
    assert_eq!(code, 0);
    assert!(stderr.len() >= 256 * 1024, "{}", stderr.len());
}

#[tokio::test]
async fn api_error_result_and_exit_1() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[api_error]]").await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    let result = result_of(&frames);
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], true);
    assert_eq!(result["api_error_status"], 400);
    assert!(result["result"]
        .as_str()
        .unwrap()
        .starts_with("API Error: 400"));
    assert_eq!(fake.finish().await.1, 1);
}

// ------------------------------------------------------------------------ teardown

fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_exits_promptly() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    kill("-TERM", fake.child.id().unwrap());
    let (code, _) = fake.exit_code().await;
    assert_eq!(code, 143);
}

#[tokio::test]
async fn hang_ignores_sigterm_and_eof_until_sigkill() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[hang]]").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    assert_eq!(result_of(&frames)["result"], "echo: [[hang]]");
    fake.close_stdin();
    kill("-TERM", fake.child.id().unwrap());
    // Asserting an absence needs a bounded wait: the process must still be alive after it.
    let waited = tokio::time::timeout(Duration::from_millis(500), fake.child.wait()).await;
    assert!(
        waited.is_err(),
        "fake-claude exited despite [[hang]]: {waited:?}"
    );
    fake.child.start_kill().unwrap();
    let status = tokio::time::timeout(WAIT, fake.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
}

#[tokio::test]
async fn eof_finishes_the_running_turn_first() {
    let mut fake = Fake::spawn(&[]).await;
    fake.initialize(Value::Null).await;
    fake.user("[[slow: 4]]").await;
    let (rest, code, _) = fake.finish().await;
    assert_eq!(result_of(&rest)["result"], "word1 word2 word3 word4 ");
    assert_eq!(code, 0);
}

#[tokio::test]
async fn session_mirror_frames() {
    let config_dir = tempdir("mirror");
    let cwd = tempdir("mirror-cwd");
    let config_s = config_dir.to_string_lossy().into_owned();
    let mut fake = Fake::spawn_with(
        &["--session-mirror", "--session-id", SID],
        &[("CLAUDE_CONFIG_DIR", &config_s)],
        Some(&cwd),
    )
    .await;
    fake.initialize(Value::Null).await;
    fake.user("[[bash: true]]").await;
    let frames = fake.until_type("control_request/can_use_tool").await;
    let req = frames.last().unwrap().clone();
    fake.answer(&req["request_id"], json!({"behavior":"allow"}))
        .await;
    let mut frames = frames;
    frames.extend(fake.until("idle", |f| state(f) == Some("idle")).await);
    let real_cwd = cwd.canonicalize().unwrap().to_string_lossy().into_owned();
    let key: String = real_cwd
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let expected_path = format!("{config_s}/projects/{key}/{SID}.jsonl");
    let mirrors: Vec<&Value> = frames
        .iter()
        .filter(|f| ty(f) == "transcript_mirror")
        .collect();
    assert!(mirrors.len() >= 4, "{mirrors:#?}");
    let entries: Vec<&Value> = mirrors
        .iter()
        .flat_map(|m| {
            assert_eq!(m["filePath"], expected_path.as_str());
            m["entries"].as_array().unwrap()
        })
        .collect();
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"user") && types.contains(&"assistant"),
        "{types:?}"
    );
    for e in entries
        .iter()
        .filter(|e| e["type"] == "assistant" || e["type"] == "user")
    {
        for key in [
            "uuid",
            "parentUuid",
            "timestamp",
            "sessionId",
            "cwd",
            "message",
        ] {
            assert!(e.get(key).is_some(), "entry lacks {key}: {e}");
        }
        assert_eq!(e["sessionId"], SID);
    }
    // the tool result is mirrored
    assert!(entries
        .iter()
        .any(|e| e["type"] == "user" && e["message"]["content"][0]["type"] == "tool_result"));
    // last-prompt comes after the result
    let result_pos = frames.iter().position(|f| ty(f) == "result").unwrap();
    let last_prompt_pos = frames
        .iter()
        .position(|f| ty(f) == "transcript_mirror" && f["entries"][0]["type"] == "last-prompt")
        .unwrap();
    assert!(last_prompt_pos > result_pos);
    assert!(frames[last_prompt_pos]["entries"][0].get("uuid").is_none());
    let (rest, code, _) = fake.finish().await;
    assert_eq!(code, 0);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["entries"][0]["type"], "cost-state");
    assert!(rest[0]["entries"][0].get("uuid").is_none());
    let _ = std::fs::remove_dir_all(config_dir);
    let _ = std::fs::remove_dir_all(cwd);
}

/// The CLI's project key (ASCII-only test paths: one char per UTF-16 unit, ≤ 200).
fn key_of(dir: &std::path::Path) -> String {
    dir.canonicalize()
        .unwrap()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[tokio::test]
async fn resume_reads_the_transcript_and_mirrors_only_new_entries() {
    const RID: &str = "e05fd4cb-ab94-4211-9303-a439a8d1bbb8";
    let config_dir = tempdir("resume");
    let cwd = tempdir("resume-cwd");
    let config_s = config_dir.to_string_lossy().into_owned();
    let env = [("CLAUDE_CONFIG_DIR", config_s.as_str())];

    // First run: a session whose transcript the test writes to disk from the mirror frames.
    let mut fake = Fake::spawn_with(
        &["--session-mirror", &format!("--session-id={RID}")],
        &env,
        Some(&cwd),
    )
    .await;
    fake.initialize(Value::Null).await;
    fake.user("first").await;
    let mut frames = fake.until("result", |f| ty(f) == "result").await;
    let (rest, code, _) = fake.finish().await;
    assert_eq!(code, 0);
    frames.extend(rest);
    let path = format!("{config_s}/projects/{}/{RID}.jsonl", key_of(&cwd));
    let mut lines = String::new();
    for m in frames.iter().filter(|f| ty(f) == "transcript_mirror") {
        assert_eq!(m["filePath"], path.as_str());
        for e in m["entries"].as_array().unwrap() {
            lines.push_str(&format!("{e}\n"));
        }
    }
    std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
    std::fs::write(&path, &lines).unwrap();
    let last_uuid = lines
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|e| e["uuid"].as_str().map(str::to_owned))
        .unwrap();

    // Resumed: same id, the earlier messages are counted, only new entries are mirrored.
    let mut fake = Fake::spawn_with(
        &["--session-mirror", &format!("--resume={RID}")],
        &env,
        Some(&cwd),
    )
    .await;
    fake.initialize(Value::Null).await;
    fake.user("again").await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    assert_eq!(frames[0]["session_id"], RID);
    assert_eq!(
        result_of(&frames)["result"],
        "echo: again (resumed: 2 earlier messages)"
    );
    let mirrored: Vec<&Value> = frames
        .iter()
        .filter(|f| ty(f) == "transcript_mirror")
        .inspect(|m| assert_eq!(m["filePath"], path.as_str()))
        .flat_map(|m| m["entries"].as_array().unwrap())
        .collect();
    let texts: Vec<String> = mirrored
        .iter()
        .filter(|e| e["type"] == "user")
        .map(|e| e["message"]["content"].to_string())
        .collect();
    assert_eq!(texts, vec!["\"again\"".to_owned()], "only the new turn");
    let first_user = mirrored.iter().find(|e| e["type"] == "user").unwrap();
    assert_eq!(
        first_user["parentUuid"],
        last_uuid.as_str(),
        "chained to the history"
    );
    fake.finish().await;

    // A fork writes the whole history under its own id first.
    let fork_id = "0c0c0c0c-1111-4222-8333-444444444444";
    let mut fake = Fake::spawn_with(
        &[
            "--session-mirror",
            &format!("--resume={RID}"),
            "--fork-session",
            &format!("--session-id={fork_id}"),
        ],
        &env,
        Some(&cwd),
    )
    .await;
    fake.initialize(Value::Null).await;
    fake.user("forked").await;
    let frames = fake.until("result", |f| ty(f) == "result").await;
    let first_mirror = frames
        .iter()
        .find(|f| ty(f) == "transcript_mirror")
        .unwrap();
    assert!(first_mirror["filePath"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{fork_id}.jsonl")));
    let entries = first_mirror["entries"].as_array().unwrap();
    assert!(entries.len() > 3, "{entries:?}");
    assert!(entries
        .iter()
        .filter(|e| e.get("sessionId").is_some())
        .all(|e| e["sessionId"] == fork_id));
    fake.finish().await;

    let _ = std::fs::remove_dir_all(config_dir);
    let _ = std::fs::remove_dir_all(cwd);
}

#[tokio::test]
async fn resume_of_an_unknown_session_is_refused_like_the_cli() {
    const RID: &str = "9d3c7b1a-0000-4000-8000-123456789abc";
    let config_dir = tempdir("refused");
    let config_s = config_dir.to_string_lossy().into_owned();
    let mut fake = Fake::spawn_with(
        &[&format!("--resume={RID}")],
        &[("CLAUDE_CONFIG_DIR", &config_s)],
        None,
    )
    .await;
    fake.send(json!({"type":"control_request","request_id":"req_init",
                     "request":{"subtype":"initialize","hooks":null}}))
        .await;
    let first = fake
        .next()
        .await
        .expect("a frame instead of the initialize response");
    assert_eq!(ty(&first), "result");
    assert_eq!(first["subtype"], "error_during_execution");
    assert_eq!(first["is_error"], true);
    assert_eq!(first["num_turns"], 0);
    assert_eq!(first["session_id"], RID);
    assert_eq!(
        first["errors"],
        json!([format!("No conversation found with session ID: {RID}")])
    );
    let (rest, code, stderr) = fake.finish().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(code, 1);
    assert!(stderr.contains("No conversation found"), "{stderr}");

    let fake = Fake::spawn(&["--resume=abc", "--session-id", SID]).await;
    let (code, stderr) = fake.exit_code().await;
    assert_eq!(code, 1);
    assert!(stderr.contains("--fork-session"), "{stderr}");
    let _ = std::fs::remove_dir_all(config_dir);
}

// ------------------------------------------------------------------------ recordings

#[tokio::test]
async fn recording_replays_with_ids_substituted() {
    let mut fake = Fake::spawn(&["--model", "recording:b3_bash_allow", "--session-id", SID]).await;
    fake.send(
        json!({"type":"control_request","request_id":"req_1_mine0001",
        "request":{"subtype":"initialize","hooks":null}}),
    )
    .await;
    let resp = fake.next().await.unwrap();
    assert_eq!(resp["response"]["request_id"], "req_1_mine0001");
    assert_eq!(
        resp["response"]["response"]["claude_code_version"],
        "2.1.330"
    );
    fake.user("Run a command.").await;
    let frames = fake.until_type("control_request/can_use_tool").await;
    for f in frames.iter().filter(|f| f.get("session_id").is_some()) {
        assert_eq!(f["session_id"], SID, "{f}");
    }
    assert!(frames.len() > 20, "every recorded frame is replayed");
    let init = frames.iter().find(|f| ty(f) == "system/init").unwrap();
    assert_eq!(init["claude_code_version"], "2.1.330");
    assert_eq!(init["session_id"], SID);
    let req = frames.last().unwrap().clone();
    fake.answer(
        &req["request_id"],
        json!({"behavior":"allow","updatedInput":req["request"]["input"]}),
    )
    .await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    assert_eq!(result_of(&frames)["result"], "The command ran.");
    assert_eq!(result_of(&frames)["session_id"], SID);
    let (rest, code, _) = fake.finish().await;
    assert!(rest.is_empty());
    assert_eq!(code, 0);
}

#[tokio::test]
async fn recording_post_eof_frames_and_exit_code() {
    let mut fake = Fake::spawn(&["--model=recording:g_session_mirror", "--session-id", SID]).await;
    fake.initialize(Value::Null).await;
    fake.user("Read my notes.").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    assert!(frames
        .iter()
        .filter(|f| ty(f) == "transcript_mirror")
        .all(|f| f["filePath"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{SID}.jsonl"))));
    let (rest, code, _) = fake.finish().await;
    assert_eq!(code, 0);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["entries"][0]["type"], "cost-state");
    assert_eq!(rest[0]["entries"][0]["sessionId"], SID);

    let mut fake = Fake::spawn(&["--model", "recording:i_api_error"]).await;
    fake.initialize(Value::Null).await;
    fake.user("hi").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    assert_eq!(result_of(&frames)["is_error"], true);
    assert_eq!(fake.finish().await.1, 1);
}

#[tokio::test]
async fn recording_multi_turn_emits_idle_before_waiting() {
    let mut fake = Fake::spawn(&["--model", "recording:h_multi_turn"]).await;
    fake.initialize(Value::Null).await;
    fake.user("Remember a word for me.").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    assert!(result_of(&frames)["result"]
        .as_str()
        .unwrap()
        .contains("PELICAN"));
    fake.user("Which word was it?").await;
    let frames = fake.until("idle", |f| state(f) == Some("idle")).await;
    assert_eq!(result_of(&frames)["result_index"], 1);
    assert_eq!(fake.finish().await.1, 0);
}

#[tokio::test]
async fn recording_mismatch_exits_2() {
    let mut fake = Fake::spawn(&["--model", "recording:a_plain_text"]).await;
    fake.user("no initialize first").await;
    let (rest, code, stderr) = fake.finish().await;
    assert!(rest.is_empty());
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "fake-claude: recording a_plain_text expected control_request/initialize got user"
        ),
        "{stderr}"
    );
}
