//! The bridge in-process with the **real** Claude Code CLI against the mock Messages API:
//! what the HTTP e2e suite (`agent-webkit-server/tests/claude_e2e.rs`) cannot see from outside —
//! the transcript mirrored into the store, hooks, MCP status. Skips loudly (fails in CI) when the
//! CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agent_webkit_claude::{ClaudeAgentFactory, ClaudeOptions, HookSpec};
use agent_webkit_core::agent::SessionConfig;
use agent_webkit_core::models::UserContent;
use agent_webkit_core::registry::{RegistryConfig, SessionRegistry};
use agent_webkit_core::session::{Session, SessionSubscriber};
use agent_webkit_core::store::InMemorySessionStore;
use agent_webkit_core::store::{SessionKey, SessionStore};
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::require_real_cli;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

struct Rig {
    _mock: MockAnthropicApi,
    _home: TempDir,
    work: TempDir,
    registry: SessionRegistry,
    factory: ClaudeAgentFactory,
    store: Arc<InMemorySessionStore>,
}

async fn rig(cli: std::path::PathBuf, tweak: impl FnOnce(&mut ClaudeOptions)) -> Rig {
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("bridge-real-home").unwrap();
    let work = TempDir::new("bridge-real-work").unwrap();
    let mut options = ClaudeOptions {
        cli_path: Some(cli),
        cwd: Some(work.path().to_path_buf()),
        setting_sources: Some(vec![]),
        env: offline_env(&mock, home.path()),
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
    Rig {
        _mock: mock,
        _home: home,
        work,
        registry,
        factory,
        store,
    }
}

async fn next(sub: &mut SessionSubscriber) -> (String, Value) {
    let batch = tokio::time::timeout(T, sub.next_batch(1))
        .await
        .expect("timed out waiting for an event")
        .unwrap()
        .expect("log ended");
    (batch[0].kind().as_str().to_owned(), batch[0].data())
}

async fn until(sub: &mut SessionSubscriber, event: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    loop {
        let ev = next(sub).await;
        let done = ev.0 == event;
        out.push(ev);
        if done {
            return out;
        }
    }
}

async fn start(rig: &Rig) -> (Arc<Session>, SessionSubscriber) {
    let session = rig.registry.create(SessionConfig::default()).await.unwrap();
    let sub = session.subscribe(None).unwrap();
    (session, sub)
}

/// The CLI's project key: every UTF-16 unit that is not ASCII alphanumeric becomes `-`.
fn project_key(path: &std::path::Path) -> String {
    path.to_str()
        .unwrap()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[tokio::test]
async fn transcript_is_mirrored_into_the_store() {
    let cli = require_real_cli!("transcript_is_mirrored_into_the_store");
    let rig = rig(cli, |_| {}).await;
    let (session, mut sub) = start(&rig).await;
    session
        .submit_user_message(UserContent::Text("Mirror this turn please".into()))
        .unwrap();
    until(&mut sub, "result").await;
    let key = SessionKey::main(project_key(rig.work.path()), session.id());
    // The bridge flushes before delivering `result`: the turn is already in the store.
    let entries = rig.store.load(&key).await.unwrap().expect("mirrored");
    let user = entries
        .iter()
        .find(|e| e["type"] == "user" && e.to_string().contains("Mirror this turn please"))
        .expect("the user entry");
    assert_eq!(user["sessionId"], session.id());
    assert!(entries.iter().any(
        |e| e["type"] == "assistant" && e.to_string().contains("Echo: Mirror this turn please")
    ));
    let summaries = rig
        .store
        .list_session_summaries(&key.project_key)
        .await
        .unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].data["first_prompt"], "Mirror this turn please");
    let before = entries.len();
    session.close().await;
    // Entries the CLI writes after stdin EOF are read to the end and mirrored too.
    let after = rig.store.load(&key).await.unwrap().unwrap();
    assert!(after.len() >= before);
    assert_eq!(rig.factory.live_processes(), 0);
}

#[tokio::test]
async fn pre_tool_use_hook_is_decided_by_the_client() {
    let cli = require_real_cli!("pre_tool_use_hook_is_decided_by_the_client");
    let rig = rig(cli, |o| {
        o.hooks = vec![HookSpec::parse("PreToolUse:Bash").unwrap()];
        o.permission_mode = Some("default".into());
    })
    .await;
    let (session, mut sub) = start(&rig).await;
    session
        .submit_user_message(UserContent::Text("[[bash: touch hooked]]".into()))
        .unwrap();
    let events = until(&mut sub, "hook_decision_request").await;
    let (_, req) = events.last().unwrap();
    assert_eq!(req["hook_event"], "PreToolUse");
    assert_eq!(req["hook_input"]["tool_name"], "Bash");
    assert_eq!(req["hook_input"]["tool_input"]["command"], "touch hooked");
    let decision = json!({"hookSpecificOutput": {"hookEventName": "PreToolUse",
        "permissionDecision": "deny", "permissionDecisionReason": "blocked by the web client"}});
    session
        .resolve_hook(
            req["correlation_id"].as_str().unwrap(),
            decision.as_object().unwrap().clone(),
        )
        .unwrap();
    let events = until(&mut sub, "result").await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"permission_request"), "{names:?}");
    let (_, tr) = events.iter().find(|(n, _)| n == "tool_result").unwrap();
    assert_eq!(tr["is_error"], true, "{tr}");
    assert!(
        tr["output"]
            .to_string()
            .contains("blocked by the web client"),
        "{tr}"
    );
    assert!(!rig.work.path().join("hooked").exists());
    session.close().await;
}

#[tokio::test]
async fn mcp_server_status_is_reported() {
    let cli = require_real_cli!("mcp_server_status_is_reported");
    let config = json!({"mcpServers": {"broken": {"type": "stdio", "command": "/nonexistent/mcp-server", "args": []}}});
    let rig = rig(cli, |o| o.mcp_config = Some(config.to_string())).await;
    let (session, mut sub) = start(&rig).await;
    session
        .submit_user_message(UserContent::Text("hello".into()))
        .unwrap();
    let events = until(&mut sub, "result").await;
    let status: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "mcp_status_change")
        .map(|(_, d)| d)
        .collect();
    assert!(
        !status.is_empty(),
        "{:?}",
        events.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert_eq!(status[0]["server_name"], "broken");
    assert_eq!(status[0]["status"], "failed");
    // Reported once per change, not on every turn's system/init.
    session
        .submit_user_message(UserContent::Text("again".into()))
        .unwrap();
    let events = until(&mut sub, "result").await;
    assert!(!events.iter().any(|(n, _)| n == "mcp_status_change"));
    session.close().await;
}

/// Session 1 runs in one CLI process; after it is closed, a second process resumes it from the
/// store only (materialized into a fresh config dir) and the model sees the earlier turn.
#[tokio::test]
async fn a_session_resumes_from_the_store_in_a_new_process() {
    use agent_webkit_claude::AgentClientFactory;
    use agent_webkit_core::agent::{AgentContext, AgentMessage};
    use agent_webkit_core::event_log::EventLog;
    use agent_webkit_core::permission::PermissionHandle;
    use futures_util::StreamExt;

    let cli = require_real_cli!("a_session_resumes_from_the_store_in_a_new_process");
    let rig = rig(cli, |_| {}).await;
    let text_a = "Please remember the word PELICAN for later";
    let started = std::time::Instant::now();
    let (session, mut sub) = start(&rig).await;
    let fresh_ready = started.elapsed();
    session
        .submit_user_message(UserContent::Text(text_a.into()))
        .unwrap();
    until(&mut sub, "result").await;
    let id = session.id().to_owned();
    session.close().await;
    let key = SessionKey::main(project_key(rig.work.path()), id.clone());
    let before = rig.store.load(&key).await.unwrap().expect("mirrored");
    let requests_before = rig._mock.streaming_requests().len();

    let ctx = AgentContext {
        session_id: id.clone(),
        config: SessionConfig::default(),
        permissions: PermissionHandle::detached(
            Arc::new(EventLog::new(1000)),
            Arc::new(agent_webkit_core::permission::PermissionRouter::new()),
        ),
        store: Some(rig.store.clone() as Arc<dyn SessionStore>),
        resume: Some(id.clone()),
    };
    let started = std::time::Instant::now();
    let mut conn = rig.factory.create(ctx).await.expect("resumed");
    let resumed_ready = started.elapsed();
    conn.client
        .query(UserContent::Text("Which word was it?".into()))
        .await
        .unwrap();
    let result = loop {
        let msg = tokio::time::timeout(T, conn.messages.next())
            .await
            .expect("timed out")
            .expect("stream ended")
            .unwrap();
        if let AgentMessage::Result(result) = msg {
            break result;
        }
    };
    assert_eq!(result.subtype, "success", "{result:?}");
    assert_eq!(result.session_id, id, "the CLI continued the same session");

    // The model request for B carries A.
    let requests = rig._mock.streaming_requests();
    let b = requests[requests_before..]
        .iter()
        .find(|r| r["messages"].to_string().contains("Which word was it?"))
        .expect("a model request for B");
    let messages = b["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m["role"] == "user" && m.to_string().contains(text_a)),
        "{messages:#?}"
    );
    assert!(messages
        .iter()
        .any(|m| m["role"] == "assistant" && m.to_string().contains("Echo: ")));

    conn.client.disconnect().await.unwrap();
    assert_eq!(rig.factory.live_processes(), 0);
    let after = rig.store.load(&key).await.unwrap().unwrap();
    assert_eq!(after[..before.len()], before[..], "history untouched");
    let new: Vec<&Value> = after[before.len()..].iter().collect();
    assert!(
        new.iter()
            .any(|e| e["type"] == "user" && e.to_string().contains("Which word was it?")),
        "{new:#?}"
    );
    assert!(
        !new.iter()
            .any(|e| e["type"] == "user" && e.to_string().contains(text_a)),
        "only new entries are mirrored on resume"
    );
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("claude-resume-")
        })
        .filter(|e| {
            std::fs::read_dir(e.path())
                .map(|mut d| d.any(|_| true))
                .unwrap_or(false)
                && e.path()
                    .join("projects")
                    .join(&key.project_key)
                    .join(format!("{id}.jsonl"))
                    .exists()
        })
        .collect();
    assert!(leftovers.is_empty(), "resume dir left behind");
    eprintln!(
        "real CLI: fresh session ready after {fresh_ready:?}, resumed after {resumed_ready:?}; \
         {} entries before, {} new after resume: {:?}",
        before.len(),
        new.len(),
        new.iter()
            .map(|e| e["type"].as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
    );
}
