//! `--warm-spares` on the server binary over the fake `claude`: spares start with the server,
//! serve `POST /sessions` (model from the create request applied), share the
//! `--max-live-agents` bound with sessions' agents (live CLI processes never exceed it; counts
//! in `/healthz`), and die with the server — on SIGTERM and on SIGKILL. The pool itself is
//! tested in `agent-webkit-claude/tests/spares.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::process_alive as alive;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{claude_children, Client, ServerProcess};
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
    start_in(dir, fake_claude_path(), &[]).await
}

async fn start_in(dir: TempDir, fake: std::path::PathBuf, extra: &[&str]) -> Fixture {
    for sub in ["records", "config"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let record = format!(
        "FAKE_CLAUDE_RECORD_DIR={}",
        dir.path().join("records").display()
    );
    let config = format!("CLAUDE_CONFIG_DIR={}", dir.path().join("config").display());
    let mut args = vec![
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
    args.extend_from_slice(extra);
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

impl Fixture {
    /// The `agents` object of `/healthz`.
    async fn agents(&self) -> Value {
        let url = format!("{}/healthz", self.client.base_url);
        let health: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        health["agents"].clone()
    }

    /// Waits (bounded) until `/healthz` reports `live` sessions' agents and `spares` idle
    /// spares: nothing on the wire announces a spare.
    async fn settled(&self, live: u64, spares: u64) -> Value {
        let deadline = Instant::now() + T;
        loop {
            let agents = self.agents().await;
            if agents["live"] == live && agents["warm_spares"] == spares {
                return agents;
            }
            assert!(Instant::now() < deadline, "{agents}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Samples the server's live CLI children until dropped; `most()` is the largest count seen.
struct Sampler {
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(server_pid: u32) -> Self {
        let (most, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (m, s) = (Arc::clone(&most), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(claude_children(server_pid).len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self { most, stop }
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
    let f = start_in(dir, script, &[]).await;
    let mut pids = f.started(2).await;
    for entry in std::fs::read_dir(&sleepers).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        pids.push(text.trim().parse().unwrap());
    }
    assert!(pids.len() >= 4, "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    let server_pid = f.server.pid().unwrap();
    agent_webkit_testkit::kill_and_wait(server_pid, T)
        .await
        .unwrap();
    wait_gone(&pids).await;
}

/// Spares hold live-agent slots: after two sessions take the two spares of a bound of 3, the
/// pool refills only one (2 + 1 = 3), a third session makes the spare go (not a session), and
/// a fourth hibernates the least recently active session. Live CLI processes never exceed 3.
#[tokio::test]
async fn spares_refill_only_within_the_live_agent_bound() {
    let dir = TempDir::new("claude-spares").unwrap();
    let f = start_in(
        dir,
        fake_claude_path(),
        &["--max-live-agents", "3", "--hibernate-after", "0"],
    )
    .await;
    let sampler = Sampler::start(f.server.pid().unwrap());
    let agents = f.settled(0, 2).await;
    assert_eq!(agents["max_live"], 3, "{agents}");
    assert_eq!(agents["hibernated"], 0, "{agents}");
    // Sessions in the server's directory, as its spares are; created at once.
    let here = json!({});
    let (a, b) = tokio::join!(f.client.create(&here), f.client.create(&here));
    let (a, b) = (a.unwrap(), b.unwrap());
    for id in [&a, &b] {
        let mut stream = f.client.stream(id, None).await.unwrap();
        let r = f
            .client
            .input(id, &json!({"type": "user_message", "content": "hi"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        stream.until("result", T).await.unwrap();
    }
    f.settled(2, 1).await;
    assert_eq!(
        f.pids().len(),
        3,
        "both sessions came from spares, one refill"
    );

    let _c = f.client.create(&here).await.unwrap();
    let agents = f.settled(3, 0).await;
    assert_eq!(
        agents["hibernated"], 0,
        "a session went before the spare: {agents}"
    );
    let _d = f.client.create(&here).await.unwrap();
    let agents = f.settled(3, 0).await;
    assert_eq!(agents["hibernated"], 1, "{agents}");
    assert!(
        sampler.most() <= 3,
        "{} live CLI processes under --max-live-agents 3",
        sampler.most()
    );
}
