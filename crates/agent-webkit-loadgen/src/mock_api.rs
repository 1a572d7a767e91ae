//! `agent-webkit-loadgen mock-api`: the testkit's mock Anthropic Messages API as a process, so
//! `cargo xtask bench` can run the real Claude CLI offline.

use std::path::Path;
use std::process::ExitCode;

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::offline_env;
use serde_json::{json, Map, Value};

/// Serves until the process is killed; prints `{"base_url", "env"}` once listening.
pub async fn serve(home: &Path) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(home) {
        eprintln!("mock-api: {}: {e}", home.display());
        return ExitCode::FAILURE;
    }
    let mock = match MockAnthropicApi::start().await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("mock-api: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env: Map<String, Value> = offline_env(&mock, home)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    println!("{}", json!({"base_url": mock.base_url(), "env": env}));
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
