//! A single server survives its own restart with the default store (SQLite in `--data-dir`):
//! on both adapters, after SIGTERM and after SIGKILL, every open session is still there — its
//! stream replays with the same seqs, `Last-Event-ID` continues exactly, the next
//! `user_message` resumes the conversation (the fake `claude` says it was `--resume`d from the
//! stored transcript), and a turn the restart interrupted ends with `error {agent_restarted}`.
//! Also: SIGKILL during heavy appends loses no event a client received, and a data directory
//! that cannot be used stops the server at startup with an error naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess, SseFrame, SseStream};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Term,
    Kill,
}

fn wire(frames: &[SseFrame]) -> Vec<(Option<u64>, String, String)> {
    frames
        .iter()
        .map(|f| (f.id, f.event.clone(), f.data.clone()))
        .collect()
}

fn seqs(frames: &[SseFrame]) -> Vec<u64> {
    frames.iter().filter_map(|f| f.id).collect()
}

fn reply(frames: &[SseFrame]) -> String {
    frames
        .iter()
        .filter(|f| f.event == "message_complete")
        .map(|f| f.json()["message"]["content"][0]["text"].to_string())
        .collect()
}

/// A server on `data` with the fake `claude`; `config` is its CLI config dir (a new one after
/// the restart, so a resumed CLI can only have its transcript from the database).
async fn fake_claude_server(
    framework: &str,
    data: &Path,
    work: &Path,
    config: &Path,
) -> ServerProcess {
    let fake = fake_claude_path();
    let env = format!("CLAUDE_CONFIG_DIR={}", config.display());
    ServerProcess::spawn(
        BIN,
        &[
            "--no-auth",
            "--framework",
            framework,
            "--agent",
            "claude",
            "--claude-path",
            fake.to_str().unwrap(),
            "--claude-env",
            &env,
            "--allowed-root",
            work.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
    )
    .await
    .unwrap()
}

/// Stops the server the way `how` says and waits until the process is gone.
async fn stop(server: &mut ServerProcess, how: Stop) {
    let pid = server.pid().unwrap();
    match how {
        Stop::Term => {
            let status = server.terminate(T).await.unwrap();
            assert!(status.is_some(), "still running after SIGTERM");
        }
        Stop::Kill => {
            agent_webkit_testkit::kill_and_wait(pid, T).await.unwrap();
        }
    }
}

async fn say(client: &Client, id: &str, text: &str) {
    let r = client
        .input(id, &json!({"type": "user_message", "content": text}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
}

struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new(label: &str) -> Self {
        let root = TempDir::new(label).unwrap();
        for sub in ["work", "config-1", "config-2"] {
            std::fs::create_dir_all(root.path().join(sub)).unwrap();
        }
        Self { root }
    }
    fn get(&self, sub: &str) -> PathBuf {
        self.root.path().join(sub)
    }
}

async fn survives_restart(framework: &str, how: Stop) {
    let dirs = Dirs::new(&format!("restart-{framework}"));
    let (data, work) = (dirs.get("data"), dirs.get("work"));
    let mut a = fake_claude_server(framework, &data, &work, &dirs.get("config-1")).await;
    let ca = a.client(None);
    let cwd = json!({"cwd": work.to_str().unwrap()});

    // An idle session with one finished turn …
    let idle = ca.create(&cwd).await.unwrap();
    let mut idle_stream = ca.stream(&idle, None).await.unwrap();
    say(&ca, &idle, "remember the word kiwi").await;
    let before = idle_stream.until("result", T).await.unwrap();
    let last = *seqs(&before).last().unwrap();
    assert_eq!(seqs(&before), (1..=last).collect::<Vec<_>>());
    // … and one in the middle of a long turn.
    let busy = ca.create(&cwd).await.unwrap();
    let mut busy_stream = ca.stream(&busy, None).await.unwrap();
    say(&ca, &busy, "[[slow: 1000]]").await;
    let mut busy_seen = busy_stream.until("message_delta", T).await.unwrap();
    busy_seen.push(busy_stream.next_event_within(T).await.unwrap().unwrap());
    let busy_last = *seqs(&busy_seen).last().unwrap();

    stop(&mut a, how).await;
    if how == Stop::Term {
        // A clean stop empties the WAL into the database file: the next start reads none.
        let wal = std::fs::metadata(data.join("sessions.db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the WAL after a clean stop");
    }
    let rest = idle_stream.collect_to_end(T).await.unwrap_or_default();
    assert!(
        rest.iter().all(|f| f.event != "done"),
        "a restart does not end sessions: {rest:?}"
    );

    let b = fake_claude_server(framework, &data, &work, &dirs.get("config-2")).await;
    let cb = b.client(None);
    // The same host id (kept in the data dir): served at once, no wait for the old lease.
    let r = cb.stream_raw(&idle, Some(&last.to_string())).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut resumed = SseStream::new(r);
    // The whole log replays with the same seqs and bytes.
    let mut replay = cb.stream(&idle, None).await.unwrap();
    let replayed = replay.take(before.len(), T).await.unwrap();
    assert_eq!(
        wire(&replayed),
        wire(&before),
        "the same events after the restart"
    );
    // A cursor in the middle continues exactly.
    let mid = last / 2;
    let mut tail = cb.stream(&idle, Some(&mid.to_string())).await.unwrap();
    let first = tail.next_event_within(T).await.unwrap().unwrap();
    assert_eq!(first.id, Some(mid + 1));

    // The next user message resumes the conversation from the stored transcript.
    say(&cb, &idle, "what was the word?").await;
    let after = resumed.until("result", T).await.unwrap();
    assert_eq!(after[0].id, Some(last + 1), "{}", after[0].raw);
    let s = seqs(&after);
    assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "dense: {s:?}");
    let text = reply(&after);
    assert!(text.contains("what was the word?"), "{text}");
    assert!(
        text.contains("(resumed: "),
        "the CLI was started with --resume from the stored transcript: {text}"
    );
    assert!(!text.contains("(resumed: 0 "), "{text}");

    // The interrupted turn is reported as failover reports it.
    let mut busy_resumed = cb
        .stream(&busy, Some(&busy_last.to_string()))
        .await
        .unwrap();
    let end = busy_resumed.until("error", T).await.unwrap();
    let error = end.last().unwrap().json();
    assert_eq!(error["code"], "agent_restarted", "{error}");
    let ids = seqs(&end);
    assert_eq!(ids.first(), Some(&(busy_last + 1)), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    // And that session takes a new turn.
    say(&cb, &busy, "still there?").await;
    let next = busy_resumed.until("result", T).await.unwrap();
    assert!(reply(&next).contains("still there?"), "{}", reply(&next));

    // DELETE still ends it for good.
    assert_eq!(cb.delete(&idle).await.unwrap(), 204);
    assert_eq!(cb.stream_raw(&idle, None).await.unwrap().status(), 404);
}

#[tokio::test]
async fn axum_sessions_survive_sigterm() {
    survives_restart("axum", Stop::Term).await;
}

#[tokio::test]
async fn axum_sessions_survive_sigkill() {
    survives_restart("axum", Stop::Kill).await;
}

#[tokio::test]
async fn actix_sessions_survive_sigterm() {
    survives_restart("actix", Stop::Term).await;
}

#[tokio::test]
async fn actix_sessions_survive_sigkill() {
    survives_restart("actix", Stop::Kill).await;
}

/// A ring longer than what a take-over renders (its tail): after SIGKILL the whole ring still
/// replays byte for byte (the older part read back from the database on demand), a cursor
/// anywhere in it continues exactly, and a user message from the part left in the database is
/// still known to the session (a fork from it is accepted).
#[tokio::test]
async fn a_long_ring_replays_whole_after_a_restart() {
    let dirs = Dirs::new("restart-long");
    let (data, work) = (dirs.get("data"), dirs.get("work"));
    let mut a = fake_claude_server("axum", &data, &work, &dirs.get("config-1")).await;
    let ca = a.client(None);
    let id = ca
        .create(&json!({"cwd": work.to_str().unwrap()}))
        .await
        .unwrap();
    let mut stream = ca.stream(&id, None).await.unwrap();
    say(&ca, &id, "first ALPHA").await;
    let mut before = stream.until("result", T).await.unwrap();
    let first_message = before
        .iter()
        .find(|f| f.event == "user_message")
        .map(|f| f.json()["uuid"].as_str().unwrap().to_owned())
        .expect("the user message is anchored");
    say(&ca, &id, "[[blocks: 400]]").await;
    before.extend(stream.until("result", T).await.unwrap());
    let last = *seqs(&before).last().unwrap();
    assert_eq!(seqs(&before), (1..=last).collect::<Vec<_>>());
    assert!(last > 300, "a ring of {last} events");
    stop(&mut a, Stop::Kill).await;

    let b = fake_claude_server("axum", &data, &work, &dirs.get("config-2")).await;
    let cb = b.client(None);
    // What a reconnecting client asks for: the last few events.
    let mut tail = cb.stream(&id, Some(&(last - 3).to_string())).await.unwrap();
    let got = tail.take(3, T).await.unwrap();
    assert_eq!(wire(&got), wire(&before[before.len() - 3..]));
    // The whole ring, from the start.
    let mut replay = cb.stream(&id, None).await.unwrap();
    let replayed = replay.take(before.len(), T).await.unwrap();
    assert_eq!(
        wire(&replayed),
        wire(&before),
        "the same events after the restart"
    );
    // A cursor deep in the older part continues exactly.
    let mut mid = cb.stream(&id, Some("10")).await.unwrap();
    let from_mid = mid.take(100, T).await.unwrap();
    assert_eq!(wire(&from_mid), wire(&before[10..110]));
    // The first user message is older than the rendered tail, and still one of the session's
    // (the fake `claude` keeps no message uuids in its transcript, so the fork itself is then
    // refused by the bridge: `fork_real_cli` runs forks with the real CLI).
    let code = |body: serde_json::Value| body["code"].as_str().unwrap_or_default().to_owned();
    let fork = |uuid: String| {
        let cb = cb.clone();
        let id = id.clone();
        async move {
            let r = cb
                .create_raw(&json!({"fork": {"session_id": id, "message_uuid": uuid}}))
                .await
                .unwrap();
            r.json::<serde_json::Value>().await.unwrap_or_default()
        }
    };
    let unknown = fork("00000000-0000-4000-8000-000000000000".into()).await;
    assert_eq!(code(unknown), "unknown_message");
    let known = fork(first_message).await;
    assert_ne!(code(known.clone()), "unknown_message", "{known}");
}

/// Eight sessions stream as fast as the replay agent can while the server is SIGKILLed: every
/// event any client received is in the log after the restart, at its seq, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_heavy_appends_loses_no_received_event() {
    let dirs = Dirs::new("restart-heavy");
    let data = dirs.get("data");
    let args = |data: &Path| {
        vec![
            "--no-auth".to_owned(),
            "--agent".into(),
            "replay".into(),
            "--ring-size".into(),
            "100000".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ]
    };
    let spawn = |data: PathBuf| async move {
        let args = args(&data);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ServerProcess::spawn(BIN, &refs).await.unwrap()
    };
    let mut a = spawn(data.clone()).await;
    let ca = a.client(None);
    let mut readers = Vec::new();
    let (going, mut warm) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..8 {
        let id = ca
            .create(&json!({"model": "stream:100000:0"}))
            .await
            .unwrap();
        let mut stream = ca.stream(&id, None).await.unwrap();
        say(&ca, &id, "go").await;
        let going = going.clone();
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Read until the connection dies with the server.
            while let Ok(Some(frame)) = stream.next_event_within(T).await {
                got.push(frame);
                if got.len() == 300 {
                    let _ = going.send(());
                }
            }
            (id, got)
        }));
    }
    // Kill once every client has received a good share of events.
    for _ in 0..8 {
        tokio::time::timeout(T, warm.recv()).await.unwrap().unwrap();
    }
    stop(&mut a, Stop::Kill).await;
    let mut received = Vec::new();
    for reader in readers {
        received.push(reader.await.unwrap());
    }
    let total: usize = received.iter().map(|(_, got)| got.len()).sum();
    assert!(
        total > 1000,
        "the clients received {total} events before the kill"
    );

    let b = spawn(data).await;
    let cb = b.client(None);
    for (id, got) in &received {
        let last = got.last().and_then(|f| f.id).unwrap();
        let mut replay = cb.stream(id, None).await.unwrap();
        let stored = replay.take(got.len(), T).await.unwrap();
        assert_eq!(
            wire(&stored),
            wire(got),
            "session {id}: every received event (1..={last}) survived"
        );
    }
    eprintln!("RESTART: {total} events received by 8 clients before SIGKILL; all in the log after the restart");
}

/// Runs the server binary until it exits (killed after [`T`] if it does not); returns
/// (success, stderr).
async fn start_and_fail(args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new(BIN)
        .args(["--no-auth", "--agent", "replay", "--port", "0"])
        .args(args)
        .env_remove("AGENT_WEBKIT_DATA_DIR")
        .env_remove("AGENT_WEBKIT_STORE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(T, run)
        .await
        .expect("the server started instead of refusing the data directory")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_unusable_data_dir_is_a_clear_startup_error() {
    let dirs = Dirs::new("restart-unusable");
    // Below a regular file: the directory cannot be created.
    let file = dirs.get("a-file");
    std::fs::write(&file, "x").unwrap();
    let below = file.join("data");
    let (ok, stderr) = start_and_fail(&["--data-dir", below.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        stderr.contains(&format!("data directory {}", below.display())),
        "{stderr}"
    );
    // In a read-only file system.
    let (ok, stderr) = start_and_fail(&["--data-dir", "/proc/agent-webkit-data"]).await;
    assert!(!ok);
    assert!(stderr.contains("/proc/agent-webkit-data"), "{stderr}");
}

#[tokio::test]
async fn two_servers_cannot_share_a_data_dir() {
    let dirs = Dirs::new("restart-lock");
    let data = dirs.get("data");
    let _first = ServerProcess::spawn(
        BIN,
        &[
            "--no-auth",
            "--agent",
            "replay",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let (ok, stderr) = start_and_fail(&["--data-dir", data.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        stderr.contains("in use by another agent-webkit-server"),
        "{stderr}"
    );
    assert!(stderr.contains(&data.display().to_string()), "{stderr}");
}

/// A full disk (a 256 KiB tmpfs, mounted when the test runs as root) stops the server at
/// startup with an error naming the directory; skipped loudly where mounting is not allowed.
#[tokio::test]
async fn a_full_disk_is_a_clear_startup_error() {
    let dirs = Dirs::new("restart-full");
    let mnt = dirs.get("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "\n*** a_full_disk_is_a_clear_startup_error: SKIPPED (cannot mount a tmpfs here) ***\n"
        );
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    // Fill it up, leaving no room for the database.
    let _ = std::fs::write(mnt.join("filler"), vec![0_u8; 256 * 1024]);
    let data = mnt.join("data");
    let (ok, stderr) = start_and_fail(&["--data-dir", data.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(stderr.contains(&data.display().to_string()), "{stderr}");
    assert!(stderr.contains("full"), "{stderr}");
}

/// A session this server is deleting is not taken back by a request that arrives meanwhile:
/// its lease is still this host's, so only the registry's gate keeps the request from
/// resurrecting it.
#[tokio::test]
async fn a_session_being_deleted_is_never_taken_back() {
    let dirs = Dirs::new("restart-delete-race");
    let (data, work) = (dirs.get("data"), dirs.get("work"));
    let server = fake_claude_server("axum", &data, &work, &dirs.get("config-1")).await;
    let client = server.client(None);
    for _ in 0..3 {
        let id = client
            .create(&json!({"cwd": work.to_str().unwrap()}))
            .await
            .unwrap();
        let mut stream = client.stream(&id, None).await.unwrap();
        say(&client, &id, "hello").await;
        stream.until("result", T).await.unwrap();
        let deleting = {
            let (client, id) = (client.clone(), id.clone());
            tokio::spawn(async move { client.delete(&id).await.unwrap() })
        };
        // Requests racing the delete (the CLI takes a while to stop).
        let started = Instant::now();
        while !deleting.is_finished() && started.elapsed() < T {
            let r = client.stream_raw(&id, Some("1")).await.unwrap();
            drop(r);
        }
        // A session taken back mid-delete would also leave the DELETE waiting on its writer.
        let status = tokio::time::timeout(T, deleting)
            .await
            .expect("the DELETE never finished")
            .unwrap();
        assert_eq!(status, 204);
        let r = client.stream_raw(&id, None).await.unwrap();
        assert_eq!(r.status(), 404, "the deleted session came back");
    }
}
