//! What the **real** Claude Code CLI's tools can see: the server binary drives the real CLI
//! against the mock Messages API, the model runs `env` through an allowed Bash tool, and the
//! tool's output (sent back to the mock as a `tool_result`) must hold none of the server's
//! variables or secrets. Skips loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::{require_real_cli, ServerProcess};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "tok-7d2e91b0-not-for-the-agent";

/// The environment `env` printed inside the real CLI's Bash tool, for a server started with
/// `extra` flags and, besides the offline setup, a bearer token, a copy of it under another
/// name, another `AGENT_WEBKIT_*` variable and a plain variable.
async fn env_seen_by_bash(cli: &Path, extra: &[&str]) -> BTreeMap<String, String> {
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("env-home").unwrap();
    let work = TempDir::new("env-work").unwrap();
    let copy = format!("Bearer {TOKEN}");
    let mut env = offline_env(&mock, home.path());
    env.extend(
        [
            ("AGENT_WEBKIT_AUTH_TOKEN", TOKEN),
            ("AGENT_WEBKIT_SOMETHING_ELSE", "server-only"),
            ("COPY_OF_THE_TOKEN", copy.as_str()),
            ("PLAIN_VAR", "visible"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut args = vec![
        "--no-auth",
        "--agent",
        "claude",
        "--claude-path",
        cli.to_str().unwrap(),
        "--claude-setting-sources=",
        "--claude-allowed-tools",
        "Bash",
        "--allowed-root",
        work.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = ServerProcess::spawn_with_env(BIN, &args, &env)
        .await
        .unwrap();
    let client = server.client(None);
    let id = client
        .create(&json!({"cwd": work.path().to_str().unwrap()}))
        .await
        .unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let r = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "[[bash: env]]"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let frames = stream.until("result", T).await.unwrap();
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    assert!(
        !frames.iter().any(|f| f.event == "permission_request"),
        "Bash is allowed without asking"
    );
    // The tool's whole output went back to the model: read it from the mock.
    let output = mock
        .messages()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array().cloned())
        .flatten()
        .find(|b| b["type"] == "tool_result")
        .map(|b| text_of(&b["content"]))
        .expect("the Bash tool ran and its result reached the model");
    let vars: BTreeMap<String, String> = output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(vars.contains_key("PATH"), "not an `env` listing: {output}");
    assert!(!output.contains(TOKEN), "the token reached Bash: {output}");
    for name in vars.keys() {
        assert!(!name.starts_with("AGENT_WEBKIT_"), "{name} reached Bash");
    }
    vars
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[tokio::test]
async fn bash_sees_the_environment_minus_the_servers_variables_and_secrets() {
    let cli =
        require_real_cli!("bash_sees_the_environment_minus_the_servers_variables_and_secrets");
    let vars = env_seen_by_bash(&cli, &[]).await;
    assert_eq!(vars.get("PLAIN_VAR").map(String::as_str), Some("visible"));
    assert!(!vars.contains_key("COPY_OF_THE_TOKEN"));
}

#[tokio::test]
async fn bash_sees_only_what_a_clean_environment_passes() {
    let cli = require_real_cli!("bash_sees_only_what_a_clean_environment_passes");
    let pass = "ANTHROPIC_API_KEY,ANTHROPIC_BASE_URL,CLAUDE_CONFIG_DIR,TMPDIR,\
                CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,DISABLE_AUTOUPDATER,DISABLE_TELEMETRY,\
                DISABLE_ERROR_REPORTING";
    let vars = env_seen_by_bash(&cli, &["--claude-clean-env", "--claude-pass-env", pass]).await;
    assert!(!vars.contains_key("PLAIN_VAR"), "not passed: {vars:?}");
    assert!(vars.contains_key("ANTHROPIC_BASE_URL"), "passed: {vars:?}");
}
