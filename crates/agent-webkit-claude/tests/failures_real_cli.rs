//! Failures the **real** Claude CLI reports, driven against the mock Messages API: each becomes
//! an `error` event with its stable code before the turn's `result` (kept as is), retries are
//! visible as `api_retry` events, and a rejected key is reported within a second of the first
//! failed call (the turn is then interrupted instead of retried for minutes). Skips loudly
//! (fails in CI) when the CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_claude::{ClaudeAgentFactory, ClaudeOptions};
use agent_webkit_core::agent::SessionConfig;
use agent_webkit_core::models::UserContent;
use agent_webkit_core::registry::{RegistryConfig, SessionRegistry};
use agent_webkit_core::session::{Session, SessionSubscriber};
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::require_real_cli;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

struct Rig {
    mock: MockAnthropicApi,
    _home: TempDir,
    work: TempDir,
    registry: SessionRegistry,
}

async fn rig(cli: std::path::PathBuf, tweak: impl FnOnce(&mut ClaudeOptions)) -> Rig {
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("failures-real-home").unwrap();
    let work = TempDir::new("failures-real-work").unwrap();
    let mut options = ClaudeOptions {
        cli_path: Some(cli),
        cwd: Some(work.path().to_path_buf()),
        setting_sources: Some(vec![]),
        env: offline_env(&mock, home.path()),
        disable_mirror: true,
        ..ClaudeOptions::default()
    };
    tweak(&mut options);
    let factory = ClaudeAgentFactory::new(options);
    let registry = SessionRegistry::with_config(Arc::new(factory), None, RegistryConfig::default());
    Rig {
        mock,
        _home: home,
        work,
        registry,
    }
}

/// No retries: the failure is final at the first failed call.
fn no_retries(o: &mut ClaudeOptions) {
    o.env
        .push(("CLAUDE_CODE_MAX_RETRIES".to_owned(), "0".to_owned()));
}

async fn next(sub: &mut SessionSubscriber) -> (String, Value) {
    let batch = tokio::time::timeout(T, sub.next_batch(1))
        .await
        .expect("timed out waiting for an event")
        .unwrap()
        .expect("log ended");
    (batch[0].kind().as_str().to_owned(), batch[0].data())
}

/// Sends `text` and returns the turn's events up to its `result`.
async fn turn(rig: &Rig, text: &str) -> (Arc<Session>, Vec<(String, Value)>) {
    let session = rig.registry.create(SessionConfig::default()).await.unwrap();
    let mut sub = session.subscribe(None).unwrap();
    session
        .submit_user_message(UserContent::Text(text.into()))
        .unwrap();
    let mut out = Vec::new();
    loop {
        let ev = next(&mut sub).await;
        let done = ev.0 == "result";
        out.push(ev);
        if done {
            return (session, out);
        }
    }
}

/// The code of the `error` right before the `result`, and its message.
fn error_before_result(events: &[(String, Value)]) -> (String, String) {
    let n = events.len();
    assert!(n >= 2, "{events:?}");
    let (kind, data) = &events[n - 2];
    assert_eq!(kind, "error", "{events:?}");
    (
        data["code"].as_str().unwrap().to_owned(),
        data["message"].as_str().unwrap().to_owned(),
    )
}

async fn expect_code(
    cli: std::path::PathBuf,
    test: &str,
    text: &str,
    tweak: impl FnOnce(&mut ClaudeOptions),
) -> (String, Vec<(String, Value)>) {
    let rig = rig(cli, tweak).await;
    let (session, events) = turn(&rig, text).await;
    let (code, message) = error_before_result(&events);
    eprintln!("{test}: error {code}: {message}");
    let result = &events.last().unwrap().1;
    assert_eq!(
        result["is_error"], true,
        "the result is kept as is: {result}"
    );
    session.close().await;
    (code, events)
}

#[tokio::test]
async fn rate_limit_is_rate_limited() {
    let cli = require_real_cli!("rate_limit_is_rate_limited");
    let (code, events) = expect_code(
        cli,
        "rate_limit_is_rate_limited",
        "[[error: 429]]",
        no_retries,
    )
    .await;
    assert_eq!(code, "rate_limited");
    assert_eq!(events.last().unwrap().1["api_error_status"], 429);
}

#[tokio::test]
async fn overload_is_overloaded() {
    let cli = require_real_cli!("overload_is_overloaded");
    let (code, _) = expect_code(cli, "overload_is_overloaded", "[[error: 529]]", no_retries).await;
    assert_eq!(code, "overloaded");
}

#[tokio::test]
async fn refused_request_is_api_error_with_its_status() {
    let cli = require_real_cli!("refused_request_is_api_error_with_its_status");
    let (code, events) = expect_code(
        cli,
        "refused_request_is_api_error_with_its_status",
        "[[error: 400]]",
        no_retries,
    )
    .await;
    assert_eq!(code, "api_error");
    let message = events[events.len() - 2].1["message"].as_str().unwrap();
    assert!(message.contains("HTTP 400"), "{message}");
}

#[tokio::test]
async fn missing_credentials_are_authentication_failed() {
    let cli = require_real_cli!("missing_credentials_are_authentication_failed");
    let (code, events) = expect_code(
        cli,
        "missing_credentials_are_authentication_failed",
        "hello",
        |o| {
            o.clean_env = true;
            o.env.retain(|(k, _)| k != "ANTHROPIC_API_KEY");
        },
    )
    .await;
    assert_eq!(code, "authentication_failed");
    // The CLI's own words are still the result, unchanged.
    let result = &events.last().unwrap().1;
    assert!(result["result"]
        .as_str()
        .unwrap()
        .starts_with("Not logged in"));
}

#[tokio::test]
async fn budget_exhaustion_is_budget_exceeded() {
    let cli = require_real_cli!("budget_exhaustion_is_budget_exceeded");
    let (code, events) = expect_code(cli, "budget_exhaustion_is_budget_exceeded", "hello", |o| {
        o.extra_args
            .push(("--max-budget-usd".into(), Some("0.000001".into())));
    })
    .await;
    assert_eq!(code, "budget_exceeded");
    assert_eq!(events.last().unwrap().1["subtype"], "error_max_budget_usd");
}

#[tokio::test]
async fn turn_limit_is_max_turns() {
    let cli = require_real_cli!("turn_limit_is_max_turns");
    // A tool call (a read inside the working folder: no permission prompt) needs a second turn.
    let rig = rig(cli, |o| {
        o.extra_args.push(("--max-turns".into(), Some("1".into())));
    })
    .await;
    let file = rig.work.path().join("note.txt");
    std::fs::write(&file, "hello").unwrap();
    let (session, events) = turn(&rig, &format!("[[read: {}]]", file.display())).await;
    let (code, message) = error_before_result(&events);
    eprintln!("turn_limit_is_max_turns: error {code}: {message}");
    assert_eq!(code, "max_turns");
    assert_eq!(events.last().unwrap().1["subtype"], "error_max_turns");
    session.close().await;
}

#[tokio::test]
async fn rejected_key_is_reported_within_a_second_and_not_retried_for_minutes() {
    let cli =
        require_real_cli!("rejected_key_is_reported_within_a_second_and_not_retried_for_minutes");
    let rig = rig(cli, |_| {}).await;
    let session = rig.registry.create(SessionConfig::default()).await.unwrap();
    let mut sub = session.subscribe(None).unwrap();
    let sent = Instant::now();
    session
        .submit_user_message(UserContent::Text("[[error: 401]]".into()))
        .unwrap();
    rig.mock.wait_for_streaming_requests(1, T).await.unwrap();
    let first_call = Instant::now();
    let mut seen = Vec::new();
    let error_at = loop {
        let ev = next(&mut sub).await;
        let is_error = ev.0 == "error";
        seen.push(ev);
        if is_error {
            break Instant::now();
        }
    };
    let latency = error_at.duration_since(first_call);
    eprintln!(
        "401: error {:?} after the first failed call ({:?} after sending)",
        latency,
        error_at.duration_since(sent)
    );
    let retry = seen
        .iter()
        .find(|(k, _)| k == "api_retry")
        .unwrap_or_else(|| panic!("no api_retry before the error: {seen:?}"));
    assert_eq!(retry.1["attempt"], 1);
    assert_eq!(retry.1["error_status"], 401);
    assert_eq!(retry.1["error"], "authentication_failed");
    assert_eq!(seen.last().unwrap().1["code"], "authentication_failed");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    // The turn is interrupted: its result comes in seconds, not after ten retries (minutes).
    loop {
        let ev = next(&mut sub).await;
        assert_ne!(ev.0, "error", "reported twice: {ev:?}");
        if ev.0 == "result" {
            break;
        }
    }
    let turn = sent.elapsed();
    let calls = rig.mock.streaming_requests().len();
    eprintln!("401: turn ended after {turn:?} and {calls} calls");
    assert!(turn < Duration::from_secs(15), "{turn:?}");
    assert!(calls <= 3, "{calls} calls");
    session.close().await;
}
