//! A tiny stdio MCP server (the `fake-mcp` binary), so the real Claude CLI connects to a real
//! process in the MCP tests.
//!
//! It reads newline-delimited JSON-RPC 2.0 from stdin and answers on stdout:
//! `initialize` (tools capability, server info `fake-mcp`), `ping`, `tools/list` (one tool),
//! `tools/call` (the tool's answer, see [`answer`]); notifications get no answer; any other
//! request gets a JSON-RPC `-32601` error. Arguments: `--tool NAME` (default [`DEFAULT_TOOL`]),
//! `--reply TEXT` (default [`DEFAULT_REPLY`]) and `--starts-file PATH` (a line is appended to
//! it at each start, so a test can count (re)connections). The variable [`GREETING_ENV`], when set, is
//! appended to the answer, so a test can see the environment a client gave the server.

use std::io::{BufRead, Write};

use serde_json::{json, Value};

/// The tool's name unless `--tool` says otherwise.
pub const DEFAULT_TOOL: &str = "echo";

/// The start of every answer unless `--reply` says otherwise.
pub const DEFAULT_REPLY: &str = "fake-mcp says";

/// Appended to the tool's answer (` / <value>`) when set in the server's environment.
pub const GREETING_ENV: &str = "FAKE_MCP_GREETING";

/// What the server was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMcpConfig {
    /// The one tool's name.
    pub tool: String,
    /// The start of the tool's answer.
    pub reply: String,
    /// Where each start appends a line.
    pub starts_file: Option<std::path::PathBuf>,
}

impl FakeMcpConfig {
    /// Reads `--tool NAME` / `--reply TEXT` (anything else is ignored).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Self {
        let mut config = Self {
            tool: DEFAULT_TOOL.to_owned(),
            reply: DEFAULT_REPLY.to_owned(),
            starts_file: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--tool" => config.tool = args.next().unwrap_or(config.tool),
                "--reply" => config.reply = args.next().unwrap_or(config.reply),
                "--starts-file" => config.starts_file = args.next().map(Into::into),
                _ => {}
            }
        }
        config
    }
}

/// The text `tools/call` answers: `<reply>: <arguments as JSON>` (+ ` / <greeting>`).
pub fn answer(config: &FakeMcpConfig, arguments: &Value, greeting: Option<&str>) -> String {
    let mut text = format!("{}: {}", config.reply, arguments);
    if let Some(greeting) = greeting {
        text.push_str(" / ");
        text.push_str(greeting);
    }
    text
}

/// The answer to one JSON-RPC message; `None` for notifications (no `id`) and non-objects.
pub fn respond(config: &FakeMcpConfig, message: &Value, greeting: Option<&str>) -> Option<Value> {
    let id = message.get("id")?.clone();
    let method = message["method"].as_str().unwrap_or_default();
    let result = match method {
        "initialize" => json!({
            "protocolVersion": message["params"]["protocolVersion"]
                .as_str()
                .unwrap_or("2025-06-18"),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "fake-mcp", "version": "1.0.0"},
        }),
        "ping" => json!({}),
        "tools/list" => json!({"tools": [{
            "name": config.tool,
            "description": "Echoes its arguments (agent-webkit test server).",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
            },
        }]}),
        "tools/call" if message["params"]["name"] == config.tool.as_str() => {
            let text = answer(config, &message["params"]["arguments"], greeting);
            json!({"content": [{"type": "text", "text": text}], "isError": false})
        }
        _ => {
            return Some(json!({
                "jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("fake-mcp: no method {method}")},
            }))
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// The `fake-mcp` binary beside the running test executable (`target/<profile>/`), built with
/// cargo first if it is not there yet.
pub fn fake_mcp_path() -> crate::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| crate::TestkitError::Unexpected("test executable has no parent".into()))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let bin = dir.join(format!("fake-mcp{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        return Ok(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", "agent-webkit-testkit", "--bin", "fake-mcp"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Some(target_dir) = dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let status = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).status()?;
    if status.success() && bin.is_file() {
        Ok(bin)
    } else {
        Err(crate::TestkitError::Unexpected(format!(
            "building fake-mcp failed ({status})"
        )))
    }
}

/// The binary's main loop: serves stdin until EOF. Returns the exit code.
pub fn run() -> i32 {
    let config = FakeMcpConfig::from_args(std::env::args().skip(1));
    let greeting = std::env::var(GREETING_ENV).ok();
    if let Some(path) = &config.starts_file {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "start {}", std::process::id()));
        if appended.is_err() {
            return 2;
        }
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return 1 };
        let Ok(message) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        if let Some(reply) = respond(&config, &message, greeting.as_deref()) {
            if writeln!(stdout, "{reply}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_three_methods_and_ignores_notifications() {
        let config = FakeMcpConfig::from_args(["--tool".to_owned(), "hello".to_owned()]);
        let init = respond(&config, &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}), None).unwrap_or_default();
        assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
        assert_eq!(
            respond(
                &config,
                &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
                None
            ),
            None
        );
        let list = respond(
            &config,
            &json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
            None,
        )
        .unwrap_or_default();
        assert_eq!(list["result"]["tools"][0]["name"], "hello");
        let call = respond(
            &config,
            &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"hello","arguments":{"text":"hi"}}}),
            Some("g"),
        )
        .unwrap_or_default();
        assert_eq!(
            call["result"]["content"][0]["text"],
            "fake-mcp says: {\"text\":\"hi\"} / g"
        );
        let other = respond(
            &config,
            &json!({"jsonrpc":"2.0","id":4,"method":"resources/list"}),
            None,
        )
        .unwrap_or_default();
        assert_eq!(other["error"]["code"], -32601);
    }
}
