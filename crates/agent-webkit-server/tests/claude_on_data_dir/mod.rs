//! The server a real-CLI restart test starts: no auth, the Claude agent on the mock API, one
//! allowed root, and a `--data-dir` (the SQLite default store) that outlives each process.

use std::path::Path;

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::offline_env;
use agent_webkit_testkit::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");

/// Starts the server (see the module docs) with `home` as the CLI's HOME.
pub async fn server(
    cli: &Path,
    mock: &MockAnthropicApi,
    framework: &str,
    data: &Path,
    work: &Path,
    home: &Path,
) -> ServerProcess {
    let env = offline_env(mock, home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ServerProcess::spawn_with_env(
        BIN,
        &[
            "--no-auth",
            "--framework",
            framework,
            "--agent",
            "claude",
            "--claude-path",
            cli.to_str().unwrap(),
            "--claude-setting-sources=",
            "--allowed-root",
            work.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &env,
    )
    .await
    .unwrap()
}
