//! Failover across processes with the **real** Claude Code CLI (offline, against the mock
//! Messages API): two server binaries (one axum, one actix) share a real PostgreSQL
//! (`--database-url`) and nothing else — each host has its own `CLAUDE_CONFIG_DIR`/`HOME`, so
//! the transcript B resumes from can only come from Postgres. Host A is SIGKILLed (with its
//! CLI); the client reconnects to B with its `Last-Event-ID`, gets exactly the events it missed,
//! and B's CLI (`--resume`) sends the earlier conversation to the model with the next turn.
//! Needs the real CLI and `AGENT_WEBKIT_PG_DSN` (both provided by `cargo xtask test`); skips
//! loudly otherwise, and fails in CI when xtask did not report why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::{require_real_cli, Client, ServerProcess, SseFrame, SseStream};
use common::{dsn_or_skip, fresh_database, seqs};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
/// Generous: the CLI cold-starts in ~0.5 s, but CI machines are slow and busy.
const T: Duration = Duration::from_secs(30);

struct Host {
    server: ServerProcess,
    client: Client,
    _home: TempDir,
}

async fn host(
    cli: &Path,
    mock: &MockAnthropicApi,
    framework: &str,
    db: &str,
    work: &Path,
    name: &str,
) -> Host {
    // Its own HOME / CLAUDE_CONFIG_DIR / TMPDIR: nothing shared with the other host on disk.
    let home = TempDir::new(&format!("failover-{name}")).unwrap();
    let env = offline_env(mock, home.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = ServerProcess::spawn_with_env(
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
            "--database-url",
            db,
            "--host-id",
            name,
            "--lease",
            "1",
        ],
        &env,
    )
    .await
    .unwrap();
    let client = server.client(None);
    Host {
        server,
        client,
        _home: home,
    }
}

async fn say(client: &Client, id: &str, text: &str) {
    let r = client
        .input(id, &json!({"type": "user_message", "content": text}))
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 204, "{}", r.text().await.unwrap());
}

/// Reads to the next `result` and asserts it is a success.
async fn turn(stream: &mut SseStream) -> Vec<SseFrame> {
    let frames = stream.until("result", T).await.unwrap();
    let result = frames.last().unwrap().json();
    assert_eq!(
        result["subtype"],
        "success",
        "{result}; {:?}",
        frames.iter().map(|f| f.event.as_str()).collect::<Vec<_>>()
    );
    frames
}

fn reply_text(frames: &[SseFrame]) -> String {
    frames
        .iter()
        .filter(|f| f.event == "message_complete")
        .flat_map(|f| {
            f.json()["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|block| block["text"].as_str().map(str::to_owned))
        .collect()
}

/// Every text of the user messages of one mock request (string content or text blocks).
fn user_texts(request: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for message in request["messages"].as_array().unwrap() {
        if message["role"] != "user" {
            continue;
        }
        match &message["content"] {
            Value::String(s) => out.push(s.clone()),
            Value::Array(blocks) => out.extend(
                blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str().map(str::to_owned)),
            ),
            _ => {}
        }
    }
    out
}

/// Live (non-zombie) children of `pid` (the CLI processes of a server).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&pid.to_string().as_str())
            && !matches!(fields.first(), Some(&"Z") | Some(&"X"))
        {
            out.push(child);
        }
    }
    out
}

async fn kill9(pid: u32) -> bool {
    tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .unwrap()
        .success()
}

#[tokio::test]
async fn a_killed_host_fails_over_to_a_resumed_real_cli() {
    let cli = require_real_cli!("failover_real_cli");
    let Some(admin) = dsn_or_skip("failover_real_cli") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let mock = MockAnthropicApi::start().await.unwrap();
    let work = TempDir::new("failover-work").unwrap();
    let a = host(&cli, &mock, "axum", &db, work.path(), "host-a").await;
    let b = host(&cli, &mock, "actix", &db, work.path(), "host-b").await;

    let id = a
        .client
        .create(&json!({"cwd": work.path().to_str().unwrap()}))
        .await
        .unwrap();
    let mut stream = a.client.stream(&id, None).await.unwrap();
    say(&a.client, &id, "remember the word kiwi").await;
    let seen = turn(&mut stream).await;
    assert_eq!(seen[0].event, "session_ready", "{}", seen[0].raw);
    assert!(
        reply_text(&seen).contains("remember the word kiwi"),
        "{}",
        reply_text(&seen)
    );
    let last = *seqs(&seen).last().unwrap();
    drop(stream);

    // A turn this client never saw, then host A dies with its CLI (SIGKILL: no hand-off, no
    // lease release, no flush).
    say(&a.client, &id, "what was the word?").await;
    let mut watcher = a.client.stream(&id, Some(&last.to_string())).await.unwrap();
    let unseen = turn(&mut watcher).await;
    assert_eq!(unseen[0].id, Some(last + 1));
    let a_pid = a.server.pid().unwrap();
    let a_clis = children(a_pid);
    assert!(!a_clis.is_empty(), "host A runs a CLI");
    assert!(kill9(a_pid).await);
    for pid in a_clis {
        kill9(pid).await;
    }
    drop(watcher);
    let requests_before = mock.streaming_requests().len();
    assert_eq!(requests_before, 2, "one model request per turn on A");

    // Reconnect to B with the cursor: 503 + Retry-After until A's lease (1 s) expires.
    let reconnect = Instant::now();
    let mut refusals = 0;
    let mut resumed = loop {
        let r = b
            .client
            .stream_raw(&id, Some(&last.to_string()))
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => break SseStream::new(r),
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                assert!(reconnect.elapsed() < T, "B never took over");
                refusals += 1;
                // Bounded poll: lease expiry is not an event we can await.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    };
    let accepted = reconnect.elapsed();
    let first = resumed.next_event_within(T).await.unwrap().unwrap();
    let failover = reconnect.elapsed();
    let mut replay = vec![first];
    while replay.len() < unseen.len() {
        replay.push(resumed.next_event_within(T).await.unwrap().unwrap());
    }
    eprintln!(
        "FAILOVER (real CLI, two processes, lease 1 s): reconnect → 200 {accepted:?} \
         ({refusals} × 503), → first replayed event {failover:?}"
    );
    let wire = |frames: &[SseFrame]| {
        frames
            .iter()
            .map(|f| (f.id, f.event.clone(), f.data.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        wire(&replay),
        wire(&unseen),
        "exactly the missed events, no duplicates"
    );

    // The conversation continues on B: its CLI was resumed from the transcript in Postgres,
    // so the model's next request carries the turns run on A.
    say(&b.client, &id, "and now?").await;
    let after = turn(&mut resumed).await;
    let unseen_last = unseen.last().unwrap().id.unwrap();
    assert_eq!(
        after[0].id,
        Some(unseen_last + 1),
        "B continues the seqs: {}",
        after[0].raw
    );
    let s = seqs(&after);
    assert!(
        s.windows(2).all(|w| w[1] == w[0] + 1),
        "dense seqs on B: {s:?}"
    );
    assert!(
        after.iter().all(|f| f.event != "error"),
        "no error on B: {:?}",
        after.iter().map(|f| &f.raw).collect::<Vec<_>>()
    );
    assert!(
        reply_text(&after).contains("and now?"),
        "{}",
        reply_text(&after)
    );
    let requests = mock.streaming_requests();
    assert_eq!(
        requests.len(),
        requests_before + 1,
        "one model request on B"
    );
    let texts = user_texts(requests.last().unwrap());
    for earlier in ["remember the word kiwi", "what was the word?", "and now?"] {
        assert!(
            texts.iter().any(|t| t.contains(earlier)),
            "B's model request carries {earlier:?}: {texts:?}"
        );
    }
    let assistant = requests.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .count();
    assert!(
        assistant >= 2,
        "the two earlier replies too: {}",
        requests.last().unwrap()["messages"]
    );

    // DELETE on B: gone everywhere.
    assert_eq!(b.client.delete(&id).await.unwrap(), 204);
    let end = resumed.collect_to_end(T).await.unwrap();
    assert_eq!(end.last().unwrap().event, "done");
    assert_eq!(b.client.stream_raw(&id, None).await.unwrap().status(), 404);
}
