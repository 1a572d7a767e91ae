//! Context usage and cumulative cost with the **real** Claude CLI (offline, against the mock
//! Messages API), on axum and actix, in a session whose id the caller chose (not a UUID):
//! create, stream, input, `GET /sessions/{id}/context`, the `usage` event after each `result`,
//! the detail's `cost`, then a SIGKILL and a restart on the same `--data-dir` (the default
//! SQLite store) with a fresh `HOME`: the totals survive, the resumed CLI (whose own counters
//! start again from zero) adds only its new turn, and the CLI runs under a UUID of its own.
//! Skips loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{claude_children, require_real_cli, Client, SseStream};
use serde_json::{json, Value};

mod claude_on_data_dir;
use claude_on_data_dir::server;
const T: Duration = Duration::from_secs(30);
/// The caller's id: not a UUID, so the CLI must run under one of its own.
const ID: &str = "invoice-2026.07~a_b";
/// The CLI's default model (2.1.330) and its list price, as its `initialize` answer states
/// ("Opus 5.5 · $4/$20 per Mtok"); checked against the `costUSD` it reports for one turn.
const MODEL: &str = "claude-opus-5-5";
const INPUT_USD_PER_TOKEN: f64 = 4.0e-6;
const OUTPUT_USD_PER_TOKEN: f64 = 20.0e-6;

/// The mock's reply usage summed: (input, output) tokens.
fn mock_sums(mock: &MockAnthropicApi) -> (u64, u64) {
    mock.reply_usage().iter().fold((0, 0), |(i, o), u| {
        assert_eq!(u["model"], MODEL, "{u}");
        (
            i + u["input_tokens"].as_u64().unwrap(),
            o + u["output_tokens"].as_u64().unwrap(),
        )
    })
}

/// Sends `text`, waits for its `result` and the `usage` event right after it; checks the
/// event against the result and the mock's numbers; returns (result, usage, usage's seq).
async fn turn(
    client: &Client,
    stream: &mut SseStream,
    mock: &MockAnthropicApi,
    text: &str,
) -> (Value, Value, u64) {
    let r = client
        .input(ID, &json!({"type": "user_message", "content": text}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let frames = stream.until("result", T).await.unwrap();
    // No `agent_restarted` either: a stored log ending with `usage` is a finished turn.
    assert!(frames.iter().all(|f| f.event != "error"), "{frames:?}");
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    let next = stream.next_event_within(T).await.unwrap().unwrap();
    assert_eq!(next.event, "usage", "a usage event follows the result");
    assert_eq!(next.id, Some(frames.last().unwrap().id.unwrap() + 1));
    let usage = next.json();
    assert_eq!(usage["turn"], result["usage"], "turn = the result's usage");
    let (input, output) = mock_sums(mock);
    let model = &usage["cost"]["by_model"][MODEL];
    assert_eq!(model["input_tokens"], input, "{usage}");
    assert_eq!(model["output_tokens"], output, "{usage}");
    assert_eq!(model["cache_read_input_tokens"], 0, "{usage}");
    assert_eq!(model["cache_creation_input_tokens"], 0, "{usage}");
    let price = input as f64 * INPUT_USD_PER_TOKEN + output as f64 * OUTPUT_USD_PER_TOKEN;
    let cost = model["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - price).abs() < 1e-12,
        "cost {cost} vs {price}: {usage}"
    );
    let total = usage["cost"]["total_cost_usd"].as_f64().unwrap();
    assert!((total - price).abs() < 1e-12, "total {total} vs {price}");
    (result, usage, next.id.unwrap())
}

async fn detail(client: &Client) -> Value {
    let r = client
        .request(reqwest::Method::GET, &format!("/sessions/{ID}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn context_and_cost(framework: &str) {
    let cli = require_real_cli!("context_cost_real_cli");
    let mock = MockAnthropicApi::start().await.unwrap();
    let dir = TempDir::new("ctx-cost").unwrap();
    let (data, work) = (dir.path().join("data"), dir.path().join("work"));
    for sub in [&work, &dir.path().join("h1"), &dir.path().join("h2")] {
        std::fs::create_dir_all(sub).unwrap();
    }
    let a = server(&cli, &mock, framework, &data, &work, &dir.path().join("h1")).await;
    let client = a.client(None);
    let id = client
        .create(&json!({"cwd": work.to_str().unwrap(), "session_id": ID}))
        .await
        .unwrap();
    assert_eq!(id, ID);
    let dup = client
        .create_raw(&json!({"cwd": work.to_str().unwrap(), "session_id": ID}))
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    assert_eq!(dup.json::<Value>().await.unwrap()["code"], "session_exists");
    let mut stream = client.stream(ID, None).await.unwrap();

    // Before any turn: no cost yet; the context holds the system prompt and tools.
    assert_eq!(
        detail(&client).await["cost"],
        json!({"total_cost_usd": 0.0, "by_model": {}})
    );
    let (first, _, _) = turn(&client, &mut stream, &mock, "Hello").await;
    // The CLI's own price for the mock's model, from its report of one turn.
    let reported = &first["modelUsage"][MODEL];
    let expected = reported["inputTokens"].as_f64().unwrap() * INPUT_USD_PER_TOKEN
        + reported["outputTokens"].as_f64().unwrap() * OUTPUT_USD_PER_TOKEN;
    assert!((reported["costUSD"].as_f64().unwrap() - expected).abs() < 1e-12);
    turn(
        &client,
        &mut stream,
        &mock,
        "A longer message this time, please",
    )
    .await;
    let (result, usage, last) = turn(&client, &mut stream, &mock, "Third").await;
    assert_eq!(mock.reply_usage().len(), 3);
    // The CLI's modelUsage is cumulative per process; ours equals it within one process.
    assert_eq!(
        usage["cost"]["by_model"][MODEL]["input_tokens"],
        result["modelUsage"][MODEL]["inputTokens"]
    );
    assert_eq!(detail(&client).await["cost"], usage["cost"]);

    // Context: the CLI's estimate, consistent with itself and with the mock's last reply.
    let started = Instant::now();
    let r = client
        .request(reqwest::Method::GET, &format!("/sessions/{ID}/context"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let context: Value = r.json().await.unwrap();
    eprintln!(
        "CONTEXT ({framework}) in {:?}: {context}",
        started.elapsed()
    );
    assert_eq!(context["session_id"], ID);
    assert_eq!(context["estimated"], true);
    assert_eq!(context["model"], MODEL);
    let categories = context["categories"].as_array().unwrap();
    assert!(!categories.is_empty(), "{context}");
    let sum: u64 = categories
        .iter()
        .map(|c| c["tokens"].as_u64().unwrap())
        .sum();
    let total = context["total_tokens"].as_u64().unwrap();
    assert_eq!(sum, total, "the categories add up: {context}");
    let max = context["max_tokens"].as_u64().unwrap();
    assert_eq!(
        max, result["modelUsage"][MODEL]["contextWindow"],
        "{context}"
    );
    let percentage = context["percentage"].as_f64().unwrap();
    assert!(
        (percentage - (total as f64 * 100.0 / max as f64)).abs() <= 1.0,
        "{context}"
    );
    let reply = mock.reply_usage().last().cloned().unwrap();
    assert_eq!(
        context["last_api_usage"]["input_tokens"],
        reply["input_tokens"]
    );
    assert_eq!(
        context["last_api_usage"]["output_tokens"],
        reply["output_tokens"]
    );

    // SIGKILL and restart on the same data dir with a fresh HOME.
    let cost_before = detail(&client).await["cost"].clone();
    let pid = a.pid().unwrap();
    let children = claude_children(pid);
    assert!(
        children
            .iter()
            .all(|(_, cmd)| !cmd.contains(&format!("--session-id={ID}"))
                && !cmd.contains(&format!("--resume={ID}"))
                && cmd.contains("--session-id=")),
        "the CLI runs under its own UUID: {children:?}"
    );
    agent_webkit_testkit::kill_and_wait(pid, T).await.unwrap();
    drop(stream);
    let b = server(&cli, &mock, framework, &data, &work, &dir.path().join("h2")).await;
    let client = b.client(None);
    assert_eq!(detail(&client).await["cost"], cost_before, "persisted");
    let mut stream = client.stream(ID, Some(&last.to_string())).await.unwrap();
    let (_, usage, _) = turn(&client, &mut stream, &mock, "After the restart").await;
    assert_eq!(mock.reply_usage().len(), 4);
    let live = claude_children(b.pid().unwrap());
    assert!(
        live.iter()
            .any(|(_, cmd)| cmd.contains("--resume=") && !cmd.contains(&format!("--resume={ID}"))),
        "resumed under the CLI's own UUID: {live:?}"
    );
    assert_eq!(detail(&client).await["cost"], usage["cost"]);
    let history = mock.streaming_requests().last().unwrap()["messages"].to_string();
    assert!(
        history.contains("Third"),
        "the conversation resumed: {history}"
    );
}

#[tokio::test]
async fn context_and_cost_axum() {
    context_and_cost("axum").await;
}

#[tokio::test]
async fn context_and_cost_actix() {
    context_and_cost("actix").await;
}
