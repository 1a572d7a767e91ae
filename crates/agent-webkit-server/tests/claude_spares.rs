//! `--warm-spares` on the server binary over the fake `claude`: spares start with the server,
//! serve `POST /sessions` (model from the create request applied), and die with it — on
//! SIGTERM and on SIGKILL. The pool itself is tested in `agent-webkit-claude/tests/spares.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::process_alive as alive;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(15);

struct Fixture {
    dir: TempDir,
    server: ServerProcess,
    client: Client,
}

/// The server with `--warm-spares 2`; sessions without `cwd` run in the server's directory,
/// as its spares do.
async fn start() -> Fixture {
    let dir = TempDir::new("claude-spares").unwrap();
    start_in(dir, fake_claude_path()).await
}

async fn start_in(dir: TempDir, fake: std::path::PathBuf) -> Fixture {
    for sub in ["records", "config"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let record = format!(
        "FAKE_CLAUDE_RECORD_DIR={}",
        dir.path().join("records").display()
    );
    let config = format!("CLAUDE_CONFIG_DIR={}", dir.path().join("config").display());
    let args = [
        "--no-auth",
        "--agent",
        "claude",
        "--claude-path",
        fake.to_str().unwrap(),
        "--claude-env",
        &record,
        "--claude-env",
        &config,
        "--warm-spares",
        "2",
    ];
    let server = ServerProcess::spawn(BIN, &args).await.unwrap();
    let client = server.client(None);
    Fixture {
        dir,
        server,
        client,
    }
}

impl Fixture {
    fn records(&self) -> Vec<Value> {
        std::fs::read_dir(self.dir.path().join("records"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    fn pids(&self) -> Vec<u64> {
        self.records()
            .iter()
            .filter_map(|r| r["pid"].as_u64())
            .collect()
    }

    /// Waits (bounded) until `n` CLIs were started: nothing on the wire announces a spare.
    async fn started(&self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + T;
        loop {
            let pids = self.pids();
            if pids.len() >= n {
                return pids;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} CLIs started",
                pids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits (bounded) for processes that are not our children to exit: no event exists for that.
async fn wait_gone(pids: &[u64]) {
    let deadline = Instant::now() + T;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes still alive: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn spares_serve_creates_and_end_with_a_terminated_server() {
    let mut f = start().await;
    let spares = f.started(2).await;
    assert_eq!(spares.len(), 2, "started before any session");
    let id = f.client.create(&json!({"model": "m-http"})).await.unwrap();
    let mut stream = f.client.stream(&id, None).await.unwrap();
    let r = f
        .client
        .input(&id, &json!({"type": "user_message", "content": "hi"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let frames = stream.until("result", T).await.unwrap();
    let complete = frames
        .iter()
        .find(|fr| fr.event == "message_complete")
        .unwrap()
        .json();
    assert_eq!(complete["message"]["model"], "m-http");
    let result = frames.last().unwrap().json();
    assert_eq!(result["result"], "echo: hi");
    // One spare taken, one replenished: 3 CLIs, never more than 2 idle.
    let pids = f.started(3).await;
    let status = f.server.terminate(T).await.unwrap().expect("exited");
    assert!(status.success(), "{status:?}");
    wait_gone(&pids).await;
}

/// Each spare leaves a `sleep` in its process group that outlives stdin EOF (as tools of a busy
/// CLI would): only the server's watchdog can end it once the server is SIGKILLed.
#[tokio::test]
async fn a_killed_server_leaves_no_spare_nor_anything_it_started() {
    let dir = TempDir::new("claude-spares").unwrap();
    let sleepers = dir.path().join("sleepers");
    std::fs::create_dir_all(&sleepers).unwrap();
    let script = dir.path().join("claude");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 600 </dev/null >/dev/null 2>&1 &\necho $! > '{}/'$$\nexec '{}' \"$@\"\n",
            sleepers.display(),
            fake_claude_path().display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let f = start_in(dir, script).await;
    let mut pids = f.started(2).await;
    for entry in std::fs::read_dir(&sleepers).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        pids.push(text.trim().parse().unwrap());
    }
    assert!(pids.len() >= 4, "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    let server_pid = f.server.pid().unwrap();
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &server_pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    wait_gone(&pids).await;
}
