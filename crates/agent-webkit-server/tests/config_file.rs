//! `--config FILE` and `--print-config` on the real binary: precedence (flag > env > file >
//! default), unknown keys, bad values, redaction, and that the printed configuration is a
//! config file the server accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");

/// A fresh folder under the target dir for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aw-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary with `args` and exactly the `AGENT_WEBKIT_*` variables in `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AGENT_WEBKIT_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().unwrap()
}

/// `--print-config` output parsed as TOML.
fn printed(args: &[&str], env: &[(&str, &str)]) -> (toml::Table, String) {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let out = run(&all, env);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    (text.parse().expect("--print-config prints TOML"), text)
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn precedence_is_flag_env_file_default() {
    let dir = scratch("precedence");
    let file = write(
        &dir,
        "server.toml",
        r#"
port = 9001
idle_timeout = 42.5
ring_size = 77
allowed_models = ["sonnet", "opus"]
no_auth = true
framework = "actix"
claude_hooks = ["PreToolUse:Bash"]
"#,
    );
    let (config, _) = printed(
        &["--config", &file, "--port", "9002"],
        &[
            ("AGENT_WEBKIT_IDLE_TIMEOUT", "7"),
            ("AGENT_WEBKIT_FRAMEWORK", "axum"),
        ],
    );
    // flag over file
    assert_eq!(config["port"].as_integer(), Some(9002));
    // env over file
    assert_eq!(config["idle_timeout"].as_float(), Some(7.0));
    assert_eq!(config["framework"].as_str(), Some("axum"));
    // file over default
    assert_eq!(config["ring_size"].as_integer(), Some(77));
    assert_eq!(config["no_auth"].as_bool(), Some(true));
    let models: Vec<&str> = config["allowed_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(models, ["sonnet", "opus"]);
    assert_eq!(
        config["claude_hooks"].as_array().unwrap()[0].as_str(),
        Some("PreToolUse:Bash")
    );
    // default
    assert_eq!(config["keepalive"].as_float(), Some(15.0));
    assert_eq!(config["host"].as_str(), Some("127.0.0.1"));

    // The config file can also come from the environment.
    let (config, _) = printed(&[], &[("AGENT_WEBKIT_CONFIG", &file)]);
    assert_eq!(config["port"].as_integer(), Some(9001));
    assert_eq!(config["idle_timeout"].as_float(), Some(42.5));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_the_key() {
    let dir = scratch("errors");
    for (text, expected) in [
        ("bogus = 1\n", "unknown key `bogus`"),
        (
            "idle-timeout = 3\n",
            "unknown key `idle-timeout` (did you mean `idle_timeout`?)",
        ),
        ("port = \"eighty\"\n", "`port`"),
        ("port = [1, 2]\n", "`port`: expected one value"),
        ("no_auth = \"yes\"\n", "`no_auth`: expected true or false"),
        ("framework = \"rocket\"\n", "`framework`"),
        ("port = 80\n[extra]\nx = 1\n", "unknown key `extra`"),
        ("port = \n", "config file"),
    ] {
        let file = write(&dir, "bad.toml", text);
        let out = run(&["--config", &file, "--print-config"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
        assert!(stderr.contains("bad.toml"), "{text:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{text:?}");
    }
    let out = run(
        &["--config", "/definitely/not/here.toml", "--print-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/definitely/not/here.toml"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn print_config_redacts_secrets() {
    let dir = scratch("redact");
    let file = write(
        &dir,
        "secrets.toml",
        "database_url = \"postgres://aw:file-pw-123@db.internal:5432/aw\"\n",
    );
    let (config, text) = printed(
        &[
            "--config",
            &file,
            "--token",
            "tok-very-secret",
            "--claude-env",
            "ANTHROPIC_API_KEY=sk-ant-secret",
            "--claude-env",
            "LANG=C.UTF-8",
        ],
        &[],
    );
    for secret in ["tok-very-secret", "file-pw-123", "sk-ant-secret"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert_eq!(config["token"].as_str(), Some("<redacted>"));
    assert_eq!(
        config["database_url"].as_str(),
        Some("postgres://aw:<redacted>@db.internal:5432/aw")
    );
    let env: Vec<&str> = config["claude_env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(env, ["ANTHROPIC_API_KEY=<redacted>", "LANG=C.UTF-8"]);
    // From the environment too.
    let (config, text) = printed(&[], &[("AGENT_WEBKIT_AUTH_TOKEN", "env-tok-secret")]);
    assert!(!text.contains("env-tok-secret"));
    assert_eq!(config["token"].as_str(), Some("<redacted>"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// What `--print-config` prints is a config file giving the same configuration.
#[test]
fn printed_configuration_round_trips() {
    let dir = scratch("roundtrip");
    let (first, text) = printed(
        &[
            "--port",
            "9100",
            "--allow-model",
            "sonnet",
            "--claude-extra-arg",
            "verbose",
            "--lease",
            "3.5",
            "--agent",
            "replay",
        ],
        &[],
    );
    let file = write(&dir, "printed.toml", &text);
    let (second, _) = printed(&["--config", &file], &[]);
    assert_eq!(first, second);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The example config file shipped in deploy/ is accepted.
#[test]
fn shipped_example_is_valid() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/server.toml");
    let (config, _) = printed(&["--config", file], &[]);
    assert_eq!(config["port"].as_integer(), Some(8001));
    assert_eq!(config["max_connections"].as_integer(), Some(4096));
}
