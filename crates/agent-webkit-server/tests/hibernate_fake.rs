//! Hibernation and the live-agent bound through the server binary over the fake `claude`:
//! hibernate → wake keeps the conversation and the stream, runtime settings survive, the least
//! recently active session makes room, 503 `at_capacity`, a queued wake-up under pressure, and
//! no process or resume directory left behind by many cycles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::process_alive as alive;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess, SseFrame, SseStream};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(20);

struct Fixture {
    dir: TempDir,
    server: ServerProcess,
    client: Client,
}

async fn start(extra: &[&str]) -> Fixture {
    let dir = TempDir::new("hibernate-fake").unwrap();
    for sub in ["records", "config", "work", "tmp"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let fake = fake_claude_path();
    let record = format!(
        "FAKE_CLAUDE_RECORD_DIR={}",
        dir.path().join("records").display()
    );
    let config = format!("CLAUDE_CONFIG_DIR={}", dir.path().join("config").display());
    let work = dir.path().join("work").display().to_string();
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
        "--allowed-root",
        &work,
    ];
    args.extend_from_slice(extra);
    // A private temp dir: the resume directories of this server land there.
    let tmp = dir.path().join("tmp").display().to_string();
    let server = ServerProcess::spawn_with_env(BIN, &args, &[("TMPDIR", tmp.as_str())])
        .await
        .unwrap();
    let client = server.client(None);
    Fixture {
        dir,
        server,
        client,
    }
}

impl Fixture {
    async fn session(&self) -> (String, SseStream) {
        let work = self.dir.path().join("work").display().to_string();
        let id = self.client.create(&json!({"cwd": work})).await.unwrap();
        let stream = self.client.stream(&id, None).await.unwrap();
        (id, stream)
    }

    async fn send(&self, id: &str, body: Value) {
        let r = self.client.input(id, &body).await.unwrap();
        assert_eq!(r.status(), 204, "{body}: {}", r.text().await.unwrap());
    }

    async fn say(&self, id: &str, text: &str) {
        self.send(id, json!({"type": "user_message", "content": text}))
            .await;
    }

    /// Every CLI process's record (`pid`, `argv`, ...), oldest first.
    fn records(&self) -> Vec<Value> {
        let mut records: Vec<(std::time::SystemTime, Value)> =
            std::fs::read_dir(self.dir.path().join("records"))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .map(|e| {
                    let modified = e.metadata().unwrap().modified().unwrap();
                    let value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                    (modified, value)
                })
                .collect();
        records.sort_by_key(|(t, _)| *t);
        records.into_iter().map(|(_, v)| v).collect()
    }

    fn pids(&self) -> Vec<u64> {
        self.records()
            .iter()
            .map(|r| r["pid"].as_u64().unwrap())
            .collect()
    }

    /// The pid of the CLI whose argv names session `id` (the newest one).
    fn pid_of(&self, id: &str) -> u64 {
        self.records()
            .iter()
            .rev()
            .find(|r| r["argv"].to_string().contains(id))
            .and_then(|r| r["pid"].as_u64())
            .expect("no CLI for the session")
    }

    fn live_pids(&self) -> Vec<u64> {
        self.pids().into_iter().filter(|p| alive(*p)).collect()
    }

    fn resume_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("claude-resume-"))
            })
            .collect()
    }
}

/// Waits (bounded) until `done` holds: a process exiting (not our child) and a directory being
/// removed signal nothing we could await.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text_of(frames: &[SseFrame]) -> String {
    frames
        .iter()
        .filter(|f| f.event == "message_complete")
        .filter_map(|f| {
            f.json()["message"]["content"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn argv(record: &Value) -> Vec<String> {
    record["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Whether `argv` holds `--flag value` or `--flag=value`.
fn has_flag(argv: &[String], flag: &str, value: &str) -> bool {
    argv.windows(2).any(|w| w[0] == flag && w[1] == value)
        || argv.iter().any(|a| *a == format!("{flag}={value}"))
}

#[tokio::test]
async fn hibernate_then_wake_keeps_the_conversation_the_stream_and_the_settings() {
    let f = start(&["--hibernate-after", "0.2"]).await;
    let (id, mut stream) = f.session().await;
    f.say(&id, "first").await;
    let mut frames = stream.until("result", T).await.unwrap();
    f.send(&id, json!({"type": "set_model", "model": "claude-x"}))
        .await;
    let first = f.pid_of(&id);
    wait_for("the quiet CLI to be stopped", || !alive(first)).await;

    // Hibernated: controls are recorded or no-ops, and start nothing.
    f.send(&id, json!({"type": "set_permission_mode", "mode": "plan"}))
        .await;
    f.send(&id, json!({"type": "interrupt"})).await;
    assert_eq!(f.records().len(), 1, "a control started the CLI");

    let asked = Instant::now();
    f.say(&id, "second").await;
    let more = stream.until("result", T).await.unwrap();
    let first_delta = more.iter().position(|f| f.event == "message_delta");
    eprintln!("wake: user_message → result in {:?}", asked.elapsed());
    assert!(first_delta.is_some());
    let reply = text_of(&more);
    assert!(
        reply.contains("echo: second (resumed: "),
        "the conversation did not carry over: {reply}"
    );
    let records = f.records();
    assert_eq!(records.len(), 2);
    let woken = argv(&records[1]);
    assert!(has_flag(&woken, "--resume", &id), "{woken:?}");
    assert!(has_flag(&woken, "--model", "claude-x"), "{woken:?}");
    assert!(has_flag(&woken, "--permission-mode", "plan"), "{woken:?}");
    let model = more
        .iter()
        .find(|f| f.event == "message_complete")
        .map(|f| f.json()["message"]["model"].clone());
    assert_eq!(model, Some(json!("claude-x")));

    // One subscriber across the hibernation: every event once, seqs continuous, no `done`.
    frames.extend(more);
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f.id).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(frames
        .iter()
        .all(|f| f.event != "done" && f.event != "error"));
}

#[tokio::test]
async fn capacity_makes_room_least_recently_active_first_then_503_then_queues_a_wake_up() {
    let f = start(&["--max-live-agents", "2", "--hibernate-after", "0"]).await;
    let (a, mut sa) = f.session().await;
    let (b, mut sb) = f.session().await;
    let (pa, pb) = (f.pid_of(&a), f.pid_of(&b));
    // `a` was created first but is the most recently active.
    f.say(&a, "recent").await;
    sa.until("result", T).await.unwrap();
    let (c, mut sc) = f.session().await;
    wait_for("b's CLI to be stopped", || !alive(pb)).await;
    assert!(alive(pa), "the most recently active session lost its agent");
    assert_eq!(f.live_pids().len(), 2);

    // Both live agents busy: nothing can make room.
    f.say(&a, "[[slow: 1000]]").await;
    f.say(&c, "[[slow: 1000]]").await;
    sa.until("message_delta", T).await.unwrap();
    sc.until("message_delta", T).await.unwrap();
    let r = f.client.create_raw(&json!({})).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "at_capacity", "{body}");

    // `b`'s message waits for a slot; `a`'s turn ending frees one.
    f.say(&b, "queued").await;
    f.send(&a, json!({"type": "interrupt"})).await;
    let woken = sb.until("result", T).await.unwrap();
    assert!(
        text_of(&woken).contains("echo: queued (resumed: "),
        "{:?}",
        text_of(&woken)
    );
    wait_for("a's CLI to be stopped", || !alive(pa)).await;
    assert_eq!(f.live_pids().len(), 2);
}

#[tokio::test]
async fn a_queued_wake_up_that_finds_no_slot_says_the_message_was_not_sent() {
    let f = start(&[
        "--max-live-agents",
        "1",
        "--hibernate-after",
        "0",
        "--capacity-wait",
        "0.2",
    ])
    .await;
    let (a, mut sa) = f.session().await;
    let pa = f.pid_of(&a);
    let (b, mut sb) = f.session().await;
    wait_for("a's CLI to be stopped", || !alive(pa)).await;
    f.say(&b, "[[slow: 1000]]").await;
    sb.until("message_delta", T).await.unwrap();
    f.say(&a, "hello there").await;
    let frames = sa.until("error", T).await.unwrap();
    let error = frames.last().unwrap().json();
    assert_eq!(error["code"], "at_capacity");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("hello there") && message.contains("not sent"),
        "{message}"
    );
    assert_eq!(f.records().len(), 2, "no CLI was started for a");
}

#[tokio::test]
async fn hibernate_wake_cycles_leave_no_process_or_directory_behind() {
    // 40 in every run; `AGENT_WEBKIT_HIBERNATE_CYCLES=1000` for the long soak.
    let cycles: usize = std::env::var("AGENT_WEBKIT_HIBERNATE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let f = start(&["--hibernate-after", "0.05"]).await;
    let server_pid = f.server.pid().unwrap();
    let fds = || {
        std::fs::read_dir(format!("/proc/{server_pid}/fd"))
            .unwrap()
            .count()
    };
    let (id, mut stream) = f.session().await;
    let mut fds_after_first = 0;
    for n in 0..cycles {
        f.say(&id, &format!("turn {n}")).await;
        let frames = stream.until("result", T).await.unwrap();
        if n > 0 {
            assert!(text_of(&frames).contains("(resumed: "), "cycle {n}");
        }
        let pid = f.pid_of(&id);
        wait_for("the CLI to be stopped", || !alive(pid)).await;
        assert!(f.live_pids().is_empty(), "cycle {n}: {:?}", f.live_pids());
        if n == 0 {
            fds_after_first = fds();
        }
    }
    assert_eq!(f.records().len(), cycles);
    wait_for("the resume directories to be removed", || {
        f.resume_dirs().is_empty()
    })
    .await;
    // No descriptor left per cycle (a little slack for the runtime's own).
    let fds_at_end = fds();
    assert!(
        fds_at_end <= fds_after_first + 4,
        "file descriptors grew from {fds_after_first} to {fds_at_end} over {cycles} cycles"
    );
    assert_eq!(f.client.delete(&id).await.unwrap(), 204);
    let rest = stream.collect_to_end(T).await.unwrap();
    assert_eq!(rest.last().map(|f| f.event.as_str()), Some("done"));
    assert!(f.live_pids().is_empty());
}

#[tokio::test]
async fn a_cli_still_running_a_background_task_is_not_hibernated_until_it_ends() {
    let f = start(&["--hibernate-after", "0.2"]).await;
    let (busy, mut busy_stream) = f.session().await;
    f.say(&busy, "start it [[background: shell_1]]").await;
    busy_stream.until("result", T).await.unwrap();
    let busy_pid = f.pid_of(&busy);
    // A session that went quiet *after* the busy one: once the reaper has stopped its CLI, it
    // has looked at the busy one too (quiet for longer), and left it running.
    let (idle, mut idle_stream) = f.session().await;
    f.say(&idle, "nothing in the background").await;
    idle_stream.until("result", T).await.unwrap();
    let idle_pid = f.pid_of(&idle);
    wait_for("the idle CLI to be stopped", || !alive(idle_pid)).await;
    assert!(
        alive(busy_pid),
        "a CLI running a background task was hibernated"
    );
    // The task ends (reported by the CLI in a later turn): now the session may hibernate.
    f.say(&busy, "[[background_done: shell_1]]").await;
    busy_stream.until("result", T).await.unwrap();
    wait_for("the CLI to be stopped once its task ended", || {
        !alive(busy_pid)
    })
    .await;
}
