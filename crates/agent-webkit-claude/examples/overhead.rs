//! Measures what the bridge adds on top of the real Claude Code CLI, against the mock Anthropic
//! API on loopback: spawn → ready (initialize answered) and user message → first text delta,
//! for the CLI driven directly over stdio vs through the bridge and a core session.
//!
//! `AGENT_WEBKIT_CLAUDE_CLI=/path/to/claude cargo run --release -p agent-webkit-claude --example overhead [runs]`
//! (`cargo xtask test` installs the CLI and prints its path).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_claude::{ClaudeAgentFactory, ClaudeOptions};
use agent_webkit_core::agent::SessionConfig;
use agent_webkit_core::models::UserContent;
use agent_webkit_core::registry::{RegistryConfig, SessionRegistry};
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, real_cli_path, CliProcess, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let cli = real_cli_path().expect("set AGENT_WEBKIT_CLAUDE_CLI to a claude executable");
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("overhead").unwrap();
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let env = offline_env(&mock, home.path());

    let (mut alone_ready, mut alone_delta) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let mut p = CliProcess::spawn(&cli, &[], &env, &work).unwrap();
        let id = p
            .control(json!({"subtype": "initialize", "hooks": null}))
            .await
            .unwrap();
        p.until(T, "initialize", |f: &Value| {
            f["response"]["request_id"] == id.as_str()
        })
        .await
        .unwrap();
        alone_ready.push(started.elapsed().as_secs_f64() * 1e3);
        let sent = Instant::now();
        p.user("hello").await.unwrap();
        p.until(T, "first delta", |f: &Value| {
            f["type"] == "stream_event" && f["event"]["delta"]["type"] == "text_delta"
        })
        .await
        .unwrap();
        alone_delta.push(sent.elapsed().as_secs_f64() * 1e3);
        p.close_stdin();
        p.wait(T).await.unwrap();
    }

    let factory = ClaudeAgentFactory::new(ClaudeOptions {
        cli_path: Some(cli.clone()),
        cwd: Some(work.clone()),
        setting_sources: Some(vec![]),
        env: env.clone(),
        ..ClaudeOptions::default()
    });
    let registry =
        SessionRegistry::with_config(Arc::new(factory.clone()), None, RegistryConfig::default());
    let (mut bridge_ready, mut bridge_delta) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let session = registry.create(SessionConfig::default()).await.unwrap();
        bridge_ready.push(started.elapsed().as_secs_f64() * 1e3);
        let mut sub = session.subscribe(None).unwrap();
        let sent = Instant::now();
        session
            .submit_user_message(UserContent::Text("hello".into()))
            .unwrap();
        'outer: loop {
            let batch = tokio::time::timeout(T, sub.next_batch(64))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            for ev in batch {
                if ev.kind().as_str() == "message_delta" {
                    bridge_delta.push(sent.elapsed().as_secs_f64() * 1e3);
                    break 'outer;
                }
            }
        }
        drop(sub);
        registry.remove(session.id()).await;
    }
    assert_eq!(factory.live_processes(), 0);

    println!("runs: {runs} (median ms)");
    println!("| path | spawn → ready | user message → first delta |");
    println!("|---|---|---|");
    println!(
        "| CLI alone (stdio) | {:.1} | {:.1} |",
        median(alone_ready),
        median(alone_delta)
    );
    println!(
        "| bridge + session | {:.1} | {:.1} |",
        median(bridge_ready),
        median(bridge_delta)
    );
}
