//! The bridge through the core (registry → session → event log) against the fake `claude`
//! executable: a real subprocess speaking the CLI's stream-json protocol as recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_claude::{ClaudeAgentFactory, ClaudeOptions, HookSpec, Timeouts};
use agent_webkit_core::agent::AgentError;
use agent_webkit_core::agent::SessionConfig;
use agent_webkit_core::models::UserContent;
use agent_webkit_core::permission::PermissionDecision;
use agent_webkit_core::registry::{RegistryConfig, SessionRegistry};
use agent_webkit_core::session::{Session, SessionError, SessionSubscriber};
use agent_webkit_core::store::InMemorySessionStore;
use agent_webkit_core::store::{SessionKey, SessionStore};
use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::process_alive as alive;
use agent_webkit_testkit::real_cli::TempDir;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

struct Harness {
    registry: SessionRegistry,
    factory: ClaudeAgentFactory,
    store: Arc<InMemorySessionStore>,
    dir: TempDir,
}

impl Harness {
    fn new(tweak: impl FnOnce(&mut ClaudeOptions)) -> Self {
        let dir = TempDir::new("bridge").unwrap();
        std::fs::create_dir_all(dir.path().join("records")).unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let mut options = ClaudeOptions {
            cli_path: Some(fake_claude_path()),
            cwd: Some(dir.path().join("work")),
            env: vec![
                (
                    "FAKE_CLAUDE_RECORD_DIR".into(),
                    dir.path().join("records").display().to_string(),
                ),
                (
                    "CLAUDE_CONFIG_DIR".into(),
                    dir.path().join("config").display().to_string(),
                ),
            ],
            ..ClaudeOptions::default()
        };
        tweak(&mut options);
        let factory = ClaudeAgentFactory::new(options);
        let store = Arc::new(InMemorySessionStore::new());
        let registry = SessionRegistry::with_config(
            Arc::new(factory.clone()),
            Some(store.clone() as Arc<dyn SessionStore>),
            RegistryConfig::default(),
        );
        Self {
            registry,
            factory,
            store,
            dir,
        }
    }

    async fn session(&self, model: Option<&str>) -> (Arc<Session>, Reader) {
        let session = self
            .registry
            .create(SessionConfig {
                model: model.map(str::to_owned),
                ..SessionConfig::default()
            })
            .await
            .unwrap();
        let reader = Reader::new(&session);
        (session, reader)
    }

    /// The fake's record (`argv`, `env`, `pid`) for every process started so far.
    fn records(&self) -> Vec<Value> {
        std::fs::read_dir(self.dir.path().join("records"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect()
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }
}

struct Reader {
    sub: SessionSubscriber,
}

impl Reader {
    fn new(session: &Arc<Session>) -> Self {
        Self {
            sub: session.subscribe(None).unwrap(),
        }
    }

    async fn next(&mut self) -> Option<(String, Value)> {
        let batch = tokio::time::timeout(T, self.sub.next_batch(1))
            .await
            .expect("timed out waiting for an event")
            .unwrap()?;
        let ev = &batch[0];
        Some((ev.kind().as_str().to_owned(), ev.data()))
    }

    /// Events up to and including the first `until`.
    async fn until(&mut self, until: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        loop {
            let Some(ev) = self.next().await else {
                panic!("log ended before {until}; got {:?}", names(&out))
            };
            let done = ev.0 == until;
            out.push(ev);
            if done {
                return out;
            }
        }
    }
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn text(s: &str) -> UserContent {
    UserContent::Text(s.into())
}

fn allow() -> PermissionDecision {
    PermissionDecision::Allow {
        updated_input: None,
        updated_permissions: None,
    }
}

#[tokio::test]
async fn plain_turn_streams_token_deltas_then_the_whole_message_and_result() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    assert_eq!(r.next().await.unwrap().0, "session_ready");
    session.submit_user_message(text("hello there")).unwrap();
    let events = r.until("result").await;
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "message_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(deltas, "echo: hello there");
    let complete = events
        .iter()
        .find(|(n, _)| n == "message_complete")
        .unwrap();
    assert_eq!(
        complete.1["message"]["content"],
        json!([{"type": "text", "text": "echo: hello there"}])
    );
    let delta_ids: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "message_delta")
        .map(|(_, d)| &d["message_id"])
        .collect();
    assert!(delta_ids.iter().all(|id| **id == complete.1["message_id"]));
    let (_, result) = events.last().unwrap();
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["session_id"], session.id());
    for field in [
        "is_error",
        "duration_ms",
        "num_turns",
        "total_cost_usd",
        "usage",
    ] {
        assert!(
            result.get(field).is_some(),
            "result lacks {field}: {result}"
        );
    }

    // The launch matches the SDK's: flags, equals form, environment.
    let records = h.records();
    assert_eq!(records.len(), 1);
    let argv: Vec<&str> = records[0]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for flag in [
        "--verbose",
        "--permission-prompt-tool=stdio",
        "--include-partial-messages",
        "--session-mirror",
    ] {
        assert!(argv.contains(&flag), "{flag} missing from {argv:?}");
    }
    assert!(argv.contains(&format!("--session-id={}", session.id()).as_str()));
    let env = &records[0]["env"];
    assert_eq!(env["CLAUDE_CODE_ENTRYPOINT"], "sdk-py");
    assert_eq!(env["CLAUDE_AGENT_SDK_VERSION"], "0.2.187");
    assert_eq!(env["CLAUDE_CODE_SDK_READS_SESSION_STATE"], "1");
    assert!(env["CLAUDE_AGENT_SDK_CLIENT_APP"]
        .as_str()
        .unwrap()
        .starts_with("agent-webkit/"));

    session.close().await;
    assert_eq!(h.factory.live_processes(), 0);
    assert!(!alive(records[0]["pid"].as_u64().unwrap()));
}

#[tokio::test]
async fn bash_permission_allow_with_updated_input() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session
        .submit_user_message(text("[[bash: rm -rf /]]"))
        .unwrap();
    let events = r.until("permission_request").await;
    let seen = names(&events);
    // The message once, with both its blocks (the CLI sent one frame per block), then the
    // tool_use, then the prompt — never the other way.
    let completes: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "message_complete")
        .map(|(_, d)| &d["message"]["content"])
        .collect();
    assert_eq!(completes.len(), 1, "{seen:?}");
    assert_eq!(completes[0].as_array().unwrap().len(), 2);
    assert_eq!(completes[0][1]["type"], "tool_use");
    let tool_use = events.iter().find(|(n, _)| n == "tool_use").unwrap();
    let (_, prompt) = events.last().unwrap();
    assert_eq!(prompt["correlation_id"], tool_use.1["tool_use_id"]);
    assert_eq!(prompt["tool_name"], "Bash");
    assert_eq!(prompt["input"]["command"], "rm -rf /");
    assert_eq!(prompt["context"]["tool_use_id"], tool_use.1["tool_use_id"]);
    let seen_tool_deltas = events.iter().any(|(n, d)| {
        n == "message_delta"
            && d["delta"]["type"] == "input_json_delta"
            && d["delta"]["tool_use_id"] == tool_use.1["tool_use_id"]
    });
    let _ = seen_tool_deltas; // the fake may or may not stream tool input

    session
        .resolve_permission(
            prompt["correlation_id"].as_str().unwrap(),
            PermissionDecision::Allow {
                updated_input: Some(json!({"command": "echo safe"}).as_object().unwrap().clone()),
                updated_permissions: None,
            },
        )
        .unwrap();
    let events = r.until("result").await;
    let (_, tool_result) = events.iter().find(|(n, _)| n == "tool_result").unwrap();
    assert_eq!(tool_result["output"], "ran: echo safe");
    assert_eq!(tool_result["is_error"], false);
    assert_eq!(events.last().unwrap().1["subtype"], "success");
    // A second answer is a conflict.
    assert!(matches!(
        session.resolve_permission(prompt["correlation_id"].as_str().unwrap(), allow()),
        Err(SessionError::Conflict(_))
    ));
    session.close().await;
}

#[tokio::test]
async fn deny_continues_the_turn_and_deny_with_interrupt_ends_it() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("[[bash: ls]]")).unwrap();
    let (_, prompt) = r.until("permission_request").await.pop().unwrap();
    session
        .resolve_permission(
            prompt["correlation_id"].as_str().unwrap(),
            PermissionDecision::Deny {
                message: "not today".into(),
                interrupt: false,
            },
        )
        .unwrap();
    let events = r.until("result").await;
    let (_, tr) = events.iter().find(|(n, _)| n == "tool_result").unwrap();
    assert_eq!(tr["is_error"], true);
    assert!(tr["output"].to_string().contains("not today"));
    assert_eq!(events.last().unwrap().1["is_error"], false);

    session.submit_user_message(text("[[bash: ls]]")).unwrap();
    let (_, prompt) = r.until("permission_request").await.pop().unwrap();
    session
        .resolve_permission(
            prompt["correlation_id"].as_str().unwrap(),
            PermissionDecision::Deny {
                message: "stop".into(),
                interrupt: true,
            },
        )
        .unwrap();
    let (_, result) = r.until("result").await.pop().unwrap();
    assert_eq!(result["is_error"], true);
    assert_eq!(result["subtype"], "error_during_execution");
    // The session still takes turns.
    session.submit_user_message(text("again")).unwrap();
    let (_, result) = r.until("result").await.pop().unwrap();
    assert_eq!(result["subtype"], "success");
    session.close().await;
}

#[tokio::test]
async fn ask_user_question_answers_reach_the_cli() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session
        .submit_user_message(text("[[ask: Which color? | Red | Blue]]"))
        .unwrap();
    let (name, ask) = r.until("ask_user_question").await.pop().unwrap();
    assert_eq!(name, "ask_user_question");
    assert_eq!(ask["questions"]["questions"][0]["question"], "Which color?");
    session
        .resolve_question(
            ask["correlation_id"].as_str().unwrap(),
            json!({"Which color?": "Blue"}),
        )
        .unwrap();
    let events = r.until("result").await;
    let (_, tr) = events.iter().find(|(n, _)| n == "tool_result").unwrap();
    assert!(
        tr["output"]
            .to_string()
            .contains("\\\"Which color?\\\"=\\\"Blue\\\""),
        "{tr}"
    );
    session.close().await;
}

#[tokio::test]
async fn interrupt_mid_stream_ends_the_turn_and_the_next_turn_works() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("[[slow: 200]]")).unwrap();
    r.until("message_delta").await;
    session.interrupt().await.unwrap();
    let events = r.until("result").await;
    let (_, result) = events.last().unwrap();
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(result["terminal_reason"], "aborted_streaming");
    let deltas = events.iter().filter(|(n, _)| n == "message_delta").count();
    assert!(deltas < 200, "the stream stopped early ({deltas} deltas)");
    session.submit_user_message(text("still there?")).unwrap();
    let (_, result) = r.until("result").await.pop().unwrap();
    assert_eq!(result["subtype"], "success");
    // Interrupting an idle session is fine.
    session.interrupt().await.unwrap();
    session.close().await;
}

#[tokio::test]
async fn a_prompt_withdrawn_by_the_cli_is_resolved_on_the_wire() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("[[cancel]]")).unwrap();
    let (_, prompt) = r.until("permission_request").await.pop().unwrap();
    let id = prompt["correlation_id"].as_str().unwrap().to_owned();
    let events = r.until("error").await;
    let (_, err) = events.last().unwrap();
    assert_eq!(err["code"], "permission_cancelled");
    assert_eq!(err["correlation_id"], id.as_str());
    assert!(matches!(
        session.resolve_permission(&id, allow()),
        Err(SessionError::Conflict(_))
    ));
    r.until("result").await;
    session.close().await;
}

#[tokio::test]
async fn turns_the_cli_starts_itself_do_not_confuse_the_turn_gate() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session
        .submit_user_message(text("first [[self_turn]]"))
        .unwrap();
    session.submit_user_message(text("second")).unwrap();
    session.submit_user_message(text("third")).unwrap();
    let mut results = Vec::new();
    let mut texts = Vec::new();
    while results.len() < 4 {
        let (name, data) = r.next().await.unwrap();
        match name.as_str() {
            "result" => results.push(data),
            "message_complete" => texts.push(data["message"]["content"][0]["text"].clone()),
            _ => {}
        }
    }
    assert!(results
        .iter()
        .any(|r| r["origin"]["kind"] == "task-notification"));
    assert!(texts.contains(&json!("echo: second")), "{texts:?}");
    assert!(texts.contains(&json!("echo: third")), "{texts:?}");
    assert!(
        texts.contains(&json!("background task finished")),
        "{texts:?}"
    );
    session.close().await;
}

#[tokio::test]
async fn unknown_cli_requests_are_refused_not_ignored() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session
        .submit_user_message(text("[[unknown_request]]"))
        .unwrap();
    let events = r.until("result").await;
    let said: Vec<String> = events
        .iter()
        .filter(|(n, _)| n == "message_complete")
        .map(|(_, d)| d["message"]["content"].to_string())
        .collect();
    assert!(
        said.iter()
            .any(|t| t.contains("Unsupported control request subtype: elicitation")),
        "{said:?}"
    );
    session.close().await;
}

#[tokio::test]
async fn hooks_are_forwarded_and_answered() {
    let h = Harness::new(|o| o.hooks = vec![HookSpec::parse("PreToolUse:Bash").unwrap()]);
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("[[bash: ls]]")).unwrap();
    let (name, req) = r.until("hook_decision_request").await.pop().unwrap();
    assert_eq!(name, "hook_decision_request");
    assert_eq!(req["hook_event"], "PreToolUse");
    assert_eq!(req["hook_input"]["tool_name"], "Bash");
    let decision = json!({"hookSpecificOutput": {"hookEventName": "PreToolUse",
        "permissionDecision": "deny", "permissionDecisionReason": "hooks say no"}});
    session
        .resolve_hook(
            req["correlation_id"].as_str().unwrap(),
            decision.as_object().unwrap().clone(),
        )
        .unwrap();
    let events = r.until("result").await;
    assert!(
        !names(&events).contains(&"permission_request"),
        "a hook deny skips the prompt: {:?}",
        names(&events)
    );
    let (_, tr) = events.iter().find(|(n, _)| n == "tool_result").unwrap();
    assert_eq!(tr["is_error"], true);
    assert!(tr["output"].to_string().contains("hooks say no"));
    session.close().await;
}

#[tokio::test]
async fn controls_reach_the_cli_and_its_errors_map_to_clear_errors() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.set_model(Some("claude-other")).await.unwrap();
    session.set_model(None).await.unwrap();
    assert!(matches!(
        session.set_model(Some("bad-model")).await,
        Err(SessionError::Agent(AgentError::InvalidConfig(m))) if m.contains("bad-model")
    ));
    session.set_permission_mode("plan").await.unwrap();
    assert!(matches!(
        session.set_permission_mode("yolo").await,
        Err(SessionError::Agent(AgentError::InvalidConfig(_)))
    ));
    session.stop_task("task-1").await.unwrap();
    session.submit_user_message(text("hi")).unwrap();
    r.until("result").await;
    session.close().await;
}

#[tokio::test]
async fn crash_mid_turn_reports_stderr_then_done_and_leaves_no_process() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("[[crash]]")).unwrap();
    let events = r.until("done").await;
    let (_, err) = events.iter().find(|(n, _)| n == "error").unwrap();
    assert_eq!(err["code"], "agent_exited");
    let message = err["message"].as_str().unwrap();
    // What happened, not what the CLI printed (that stays in the log).
    assert!(!message.contains("simulated crash"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(r.next().await.is_none(), "the log ends after done");
    let pid = h.records()[0]["pid"].as_u64().unwrap();
    assert!(!alive(pid));
    assert_eq!(h.factory.live_processes(), 0);
    assert!(
        h.registry.get(session.id()).is_some_and(|s| s.has_ended()),
        "the session is kept readable, marked ended"
    );
}

#[tokio::test]
async fn unreadable_output_ends_the_session_cleanly() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("[[garbage]]")).unwrap();
    let events = r.until("done").await;
    let (_, err) = events.iter().find(|(n, _)| n == "error").unwrap();
    assert_eq!(err["code"], "agent_exited");
    assert!(err["message"].as_str().unwrap().contains("not valid JSON"));
    assert_eq!(h.factory.live_processes(), 0);
    assert!(!alive(h.records()[0]["pid"].as_u64().unwrap()));
    drop(session);
}

#[tokio::test]
async fn an_oversize_line_is_a_clear_error() {
    let h = Harness::new(|o| o.max_line_bytes = 64 * 1024);
    let (session, mut r) = h.session(None).await;
    session
        .submit_user_message(text("[[huge: 20000]]"))
        .unwrap();
    r.until("result").await; // 20 kB fits
    session
        .submit_user_message(text("[[huge: 200000]]"))
        .unwrap();
    let events = r.until("done").await;
    let (_, err) = events.iter().find(|(n, _)| n == "error").unwrap();
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("exceeded the limit of 65536 bytes"));
    assert_eq!(h.factory.live_processes(), 0);
}

#[tokio::test]
async fn a_stderr_flood_is_drained() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    // 512 KiB is far beyond a pipe buffer: an undrained stderr would block the CLI.
    session
        .submit_user_message(text("[[stderr: 512]] hi"))
        .unwrap();
    let (_, result) = r.until("result").await.pop().unwrap();
    assert_eq!(result["subtype"], "success");
    session.close().await;
}

#[tokio::test]
async fn a_cli_that_ignores_eof_and_sigterm_is_killed() {
    let h = Harness::new(|o| {
        o.timeouts = Timeouts {
            graceful_exit: Duration::from_millis(300),
            terminate: Duration::from_millis(300),
            ..Timeouts::default()
        }
    });
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("[[hang]]")).unwrap();
    r.until("result").await;
    let pid = h.records()[0]["pid"].as_u64().unwrap();
    assert!(alive(pid));
    session.close().await;
    assert!(!alive(pid), "SIGKILL ends it");
    assert_eq!(h.factory.live_processes(), 0);
}

#[tokio::test]
async fn transcript_is_mirrored_into_the_store_including_the_tail() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("remember me")).unwrap();
    r.until("result").await;
    // Flushed before the result was delivered: the turn is in the store now.
    let project = h
        .dir
        .path()
        .join("work")
        .display()
        .to_string()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let key = SessionKey::main(project.clone(), session.id());
    let entries = h.store.load(&key).await.unwrap().expect("mirrored");
    assert!(
        entries
            .iter()
            .any(|e| e["type"] == "user" && e.to_string().contains("remember me")),
        "{entries:?}"
    );
    assert!(entries.iter().any(|e| e["type"] == "assistant"));
    let id = session.id().to_owned();
    session.close().await;
    // Entries written after stdin EOF (cost-state) are read to the end and mirrored too.
    let entries = h
        .store
        .load(&SessionKey::main(project, id))
        .await
        .unwrap()
        .unwrap();
    assert!(
        entries.iter().any(|e| e["type"] == "cost-state"),
        "{entries:?}"
    );
    assert!(h.config_dir().exists());
}

#[tokio::test]
async fn a_missing_cli_is_a_clear_unavailable_error() {
    let h = Harness::new(|o| o.cli_path = Some(PathBuf::from("/nonexistent/claude")));
    let err = h
        .registry
        .create(SessionConfig::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("npm install -g @anthropic-ai/claude-code"),
        "{text}"
    );
    assert!(matches!(
        err,
        agent_webkit_core::registry::CreateError::Agent(AgentError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_cli_that_dies_before_initialize_fails_the_create() {
    let h = Harness::new(|o| o.cli_path = Some(Path::new("/bin/false").to_path_buf()));
    let err = h
        .registry
        .create(SessionConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("startup"), "{err}");
    assert!(matches!(
        err,
        agent_webkit_core::registry::CreateError::Agent(AgentError::StartFailed(_))
    ));
    assert_eq!(h.factory.live_processes(), 0);
}

/// Ground truth: the recorded frames of the real CLI, replayed by the fake, through the bridge.
#[tokio::test]
async fn recorded_read_allow_translates_exactly() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(Some("recording:b_read_allow")).await;
    session
        .submit_user_message(text("What does notes.txt say?"))
        .unwrap();
    let events = r.until("permission_request").await;
    assert_eq!(
        names(&events),
        [
            "session_ready",
            "user_message",
            "message_complete",
            "tool_use",
            "permission_request"
        ]
    );
    // The session's anchor for the message (the bridge sends it as the frame's uuid).
    assert_eq!(events[1].1["content"], "What does notes.txt say?");
    // The recording's two frames of one message, coalesced.
    assert_eq!(
        events[2].1["message"]["content"].as_array().unwrap().len(),
        2
    );
    let (_, prompt) = events.last().unwrap();
    assert_eq!(prompt["correlation_id"], "toolu_mock0001_dd17a92a");
    assert_eq!(
        prompt["input"],
        json!({"file_path": "/srv/agent/b_read_allow/work/notes.txt"})
    );
    session
        .resolve_permission("toolu_mock0001_dd17a92a", allow())
        .unwrap();
    let events = r.until("result").await;
    assert_eq!(
        names(&events),
        ["tool_result", "message_complete", "result"]
    );
    assert_eq!(
        events[0].1["output"],
        "1\thello from notes.txt\n2\tsecond line\n3\t"
    );
    assert_eq!(events[2].1["total_cost_usd"], 0.022352);
    session.close().await;
}

#[tokio::test]
async fn recorded_plain_text_streams_every_delta() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(Some("recording:a_plain_text")).await;
    session.submit_user_message(text("Say hello.")).unwrap();
    let events = r.until("result").await;
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "message_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        streamed,
        "Hello from the mock Anthropic API. This answer is streamed in small text deltas."
    );
    session.close().await;
}

#[tokio::test]
async fn control_responses_are_matched_by_id_not_order() {
    // A minimal CLI stand-in: answers initialize, then reads two requests and answers the
    // second first — with an error — and the first after it, with success.
    let h = Harness::new(|_| {});
    let script = h.dir.path().join("reverse-cli.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
id_of() { printf '%s' "$1" | sed -n 's/.*"request_id":"\([^"]*\)".*/\1/p'; }
read -r init
printf '{"type":"control_response","response":{"subtype":"success","request_id":"%s","response":{}}}\n' "$(id_of "$init")"
read -r a
read -r b
printf '{"type":"control_response","response":{"subtype":"error","request_id":"%s","error":"second refused"}}\n' "$(id_of "$b")"
printf '{"type":"control_response","response":{"subtype":"success","request_id":"%s","response":{"model":"m"}}}\n' "$(id_of "$a")"
cat > /dev/null
"#,
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let h2 = Harness::new(|o| o.cli_path = Some(script.clone()));
    let session = h2.registry.create(SessionConfig::default()).await.unwrap();
    let first = session.set_model(Some("m"));
    let second = async {
        // Make sure the first request is written first.
        tokio::task::yield_now().await;
        session.stop_task("t").await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first.is_ok(), "{first:?}");
    assert!(
        matches!(&second, Err(SessionError::Agent(AgentError::Rejected(m))) if m == "second refused"),
        "{second:?}"
    );
    session.close().await;
    assert_eq!(h2.factory.live_processes(), 0);
}

#[tokio::test]
async fn a_cli_killed_while_a_prompt_is_pending_fails_the_wait() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("[[bash: ls]]")).unwrap();
    let (_, prompt) = r.until("permission_request").await.pop().unwrap();
    let id = prompt["correlation_id"].as_str().unwrap().to_owned();
    assert!(session.router().has_pending(&id));
    let pid = h.records()[0]["pid"].as_u64().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let events = r.until("done").await;
    let (_, err) = events.iter().find(|(n, _)| n == "error").unwrap();
    assert_eq!(err["code"], "agent_exited");
    assert!(
        err["message"].as_str().unwrap().contains("signal: 9"),
        "{err}"
    );
    assert!(!session.router().has_pending(&id), "the wait is not leaked");
    assert!(matches!(
        session.resolve_permission(&id, allow()),
        Err(SessionError::Conflict(_))
    ));
    assert_eq!(h.factory.live_processes(), 0);
}

// ------------------------------------------------- resume (docs/claude-cli-protocol.md §5.5)

use agent_webkit_claude::AgentClientFactory;

/// A context for calling the factory directly, as the core does for a resumed session.
fn resume_ctx(
    store: Arc<dyn SessionStore>,
    resume: &str,
) -> agent_webkit_core::agent::AgentContext {
    agent_webkit_core::agent::AgentContext {
        session_id: uuid_v4(),
        config: SessionConfig::default(),
        permissions: agent_webkit_core::permission::PermissionHandle::detached(
            Arc::new(agent_webkit_core::event_log::EventLog::new(1000)),
            Arc::new(agent_webkit_core::permission::PermissionRouter::new()),
        ),
        store: Some(store),
        resume: Some(resume.to_owned()),
    }
}

fn uuid_v4() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let hex = format!("{:032x}", n ^ (u128::from(std::process::id()) << 96));
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Sends one prompt on a directly created connection and returns the assistant text of its
/// turn (the result's `result` field).
async fn turn(conn: &mut agent_webkit_core::agent::AgentConnection, prompt: &str) -> String {
    use agent_webkit_core::agent::AgentMessage;
    use futures_util::StreamExt;
    conn.client.query(text(prompt)).await.unwrap();
    loop {
        let msg = tokio::time::timeout(T, conn.messages.next())
            .await
            .expect("timed out waiting for the result")
            .expect("stream ended")
            .unwrap();
        if let AgentMessage::Result(result) = msg {
            assert_eq!(result.subtype, "success", "{result:?}");
            return result.extra["result"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }
}

/// The fake's record of the process whose argv contains `arg`.
fn record_with(h: &Harness, arg: &str) -> Value {
    h.records()
        .into_iter()
        .find(|r| r["argv"].as_array().unwrap().iter().any(|a| a == arg))
        .unwrap_or_else(|| panic!("no process was started with {arg}"))
}

#[tokio::test]
async fn a_session_resumes_from_the_store_in_a_fresh_config_dir() {
    let h = Harness::new(|_| {});
    let (session, mut r) = h.session(None).await;
    session.submit_user_message(text("one")).unwrap();
    r.until("result").await;
    session.submit_user_message(text("two")).unwrap();
    r.until("result").await;
    let first_id = session.id().to_owned();
    session.close().await;
    let work = h.dir.path().join("work");
    let key = SessionKey::main(
        agent_webkit_claude::project_key::project_key_for_directory(&work).unwrap(),
        first_id.clone(),
    );
    let before = h.store.load(&key).await.unwrap().expect("mirrored");

    let store: Arc<dyn SessionStore> = h.store.clone();
    let started = std::time::Instant::now();
    let mut conn = h
        .factory
        .create(resume_ctx(store, &first_id))
        .await
        .expect("resumed");
    let ready = started.elapsed();
    let reply = turn(&mut conn, "three").await;
    assert_eq!(reply, "echo: three (resumed: 4 earlier messages)");

    let record = record_with(&h, &format!("--resume={first_id}"));
    let argv: Vec<&str> = record["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        !argv.iter().any(|a| a.starts_with("--session-id")),
        "{argv:?}"
    );
    assert!(argv.contains(&"--session-mirror"));
    let tmp = PathBuf::from(record["env"]["CLAUDE_CONFIG_DIR"].as_str().unwrap());
    assert_ne!(tmp, h.config_dir());
    assert!(tmp
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("claude-resume-"));
    assert_eq!(
        tmp.parent().unwrap(),
        std::env::temp_dir().canonicalize().unwrap()
    );
    assert!(tmp.exists(), "kept while the CLI runs");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    conn.client.disconnect().await.unwrap();
    assert!(!tmp.exists(), "deleted once the CLI has exited");
    assert_eq!(h.factory.live_processes(), 0);

    // The resumed run appended to the same key: the history is untouched, new entries follow.
    let after = h.store.load(&key).await.unwrap().unwrap();
    assert!(after.len() > before.len());
    assert_eq!(after[..before.len()], before[..]);
    let new_users: Vec<String> = after[before.len()..]
        .iter()
        .filter(|e| e["type"] == "user")
        .map(|e| e["message"]["content"].to_string())
        .collect();
    assert_eq!(new_users, vec!["\"three\"".to_owned()]);
    assert!(after[before.len()..]
        .iter()
        .filter(|e| e.get("sessionId").is_some())
        .all(|e| e["sessionId"] == first_id.as_str()));
    eprintln!("resumed CLI (fake) ready after {ready:?}");
}

#[tokio::test]
async fn resuming_an_id_the_store_does_not_have_starts_fresh_under_it() {
    let h = Harness::new(|_| {});
    let unknown = uuid_v4();
    let store: Arc<dyn SessionStore> = h.store.clone();
    let mut conn = h
        .factory
        .create(resume_ctx(store, &unknown))
        .await
        .expect("fresh start");
    assert_eq!(turn(&mut conn, "hi").await, "echo: hi");
    let record = record_with(&h, &format!("--session-id={unknown}"));
    let argv = record["argv"].to_string();
    assert!(!argv.contains("--resume"), "{argv}");
    assert_eq!(
        record["env"]["CLAUDE_CONFIG_DIR"],
        h.config_dir().display().to_string()
    );
    conn.client.disconnect().await.unwrap();
    // Mirrored under the requested id.
    let key = SessionKey::main(
        agent_webkit_claude::project_key::project_key_for_directory(&h.dir.path().join("work"))
            .unwrap(),
        unknown,
    );
    assert!(h.store.load(&key).await.unwrap().is_some());
}

struct DownStore;

#[async_trait::async_trait]
impl SessionStore for DownStore {
    async fn append(
        &self,
        _: &SessionKey,
        _: Vec<Value>,
    ) -> Result<(), agent_webkit_core::store::StoreError> {
        Ok(())
    }
    async fn load(
        &self,
        _: &SessionKey,
    ) -> Result<Option<Vec<Value>>, agent_webkit_core::store::StoreError> {
        Err(agent_webkit_core::store::StoreError::Backend(
            "connection refused".into(),
        ))
    }
}

#[tokio::test]
async fn a_store_that_cannot_load_fails_the_resume_clearly() {
    let h = Harness::new(|_| {});
    let err = h
        .factory
        .create(resume_ctx(Arc::new(DownStore), &uuid_v4()))
        .await
        .expect_err("must fail");
    let AgentError::StartFailed(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("connection refused"), "{message}");
    assert!(message.contains("resume"), "{message}");
    assert!(h.records().is_empty(), "nothing was spawned");
}

#[tokio::test]
async fn the_resume_dir_is_deleted_when_initialize_fails() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new(|_| {});
    let seen = h.dir.path().join("seen-config-dir");
    let script = h.dir.path().join("dies-before-initialize");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf %s \"$CLAUDE_CONFIG_DIR\" > '{}'\nexit 1\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let factory = ClaudeAgentFactory::new(ClaudeOptions {
        cli_path: Some(script),
        ..h.factory.options().clone()
    });
    let id = uuid_v4();
    let key = SessionKey::main(
        agent_webkit_claude::project_key::project_key_for_directory(&h.dir.path().join("work"))
            .unwrap(),
        id.clone(),
    );
    h.store
        .append(&key, vec![json!({"type": "user", "uuid": "u1"})])
        .await
        .unwrap();
    let store: Arc<dyn SessionStore> = h.store.clone();
    let err = factory
        .create(resume_ctx(store, &id))
        .await
        .expect_err("initialize fails");
    assert!(err.to_string().contains("startup"), "{err}");
    let tmp = std::fs::read_to_string(&seen).unwrap();
    assert!(tmp.contains("claude-resume-"), "{tmp}");
    assert!(!Path::new(&tmp).exists(), "{tmp} left behind");
    assert_eq!(factory.live_processes(), 0);
}

/// A CLI that prints to stderr and dies before `initialize`: clients get a generic
/// `agent_start_failed`, never what it printed (the log gets it, redacted).
#[tokio::test]
async fn a_failed_start_does_not_leak_the_clis_output() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new(|_| {});
    let script = h.dir.path().join("prints-and-dies");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"fatal: token=s3cret-value HOME=$HOME\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let registry = SessionRegistry::with_config(
        Arc::new(ClaudeAgentFactory::new(ClaudeOptions {
            cli_path: Some(script),
            secrets: agent_webkit_claude::Secrets::new(["s3cret-value"]),
            ..h.factory.options().clone()
        })),
        None,
        RegistryConfig::default(),
    );
    let err = registry
        .create(SessionConfig::default())
        .await
        .expect_err("the CLI dies");
    let message = err.to_string();
    assert!(message.contains("failed during startup"), "{message}");
    for leaked in ["fatal", "s3cret-value", "HOME="] {
        assert!(!message.contains(leaked), "{message}");
    }
}
