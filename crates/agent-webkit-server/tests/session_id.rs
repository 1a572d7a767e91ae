//! Caller-chosen session ids through the server binary over the fake `claude`: a non-UUID id
//! hibernates, wakes and survives a restart on the default SQLite store (the CLI always runs
//! under a UUID of its own, the same one across its processes), stays taken while stored
//! (409 `session_exists`) and is free after DELETE; with PostgreSQL it is unique across hosts
//! (a create on another host is refused, concurrent creates on two hosts: exactly one wins) and
//! fails over. (Validation and single-host races: `conformance/session_id.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::process_alive as alive;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess, SseFrame, SseStream};
use common::{dsn_or_skip, fresh_database, seqs};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(20);
const ID: &str = "shop_9.order-77~x";

async fn server(framework: &str, dir: &Path, storage: &[&str]) -> ServerProcess {
    let fake = fake_claude_path();
    let record = format!("FAKE_CLAUDE_RECORD_DIR={}", dir.join("records").display());
    let config = format!("CLAUDE_CONFIG_DIR={}", dir.join("config").display());
    let work = dir.join("work").display().to_string();
    let mut args = vec![
        "--no-auth",
        "--framework",
        framework,
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
    args.extend_from_slice(storage);
    ServerProcess::spawn(BIN, &args).await.unwrap()
}

fn prepare(dir: &TempDir) {
    for sub in ["records", "config", "work", "data"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
}

/// Every CLI process's argv, oldest first.
fn argvs(dir: &Path) -> Vec<(u64, Vec<String>)> {
    let mut records: Vec<(std::time::SystemTime, Value)> = std::fs::read_dir(dir.join("records"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let modified = e.metadata().unwrap().modified().unwrap();
            (
                modified,
                serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap(),
            )
        })
        .collect();
    records.sort_by_key(|(t, _)| *t);
    records
        .into_iter()
        .map(|(_, r)| {
            let argv = r["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            (r["pid"].as_u64().unwrap(), argv)
        })
        .collect()
}

/// The value of `--flag value` or `--flag=value`.
fn flag(argv: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    argv.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .or_else(|| {
            argv.iter()
                .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
        })
}

async fn create(client: &Client, dir: &Path) -> reqwest::Response {
    let work = dir.join("work").display().to_string();
    client
        .create_raw(&json!({"cwd": work, "session_id": ID}))
        .await
        .unwrap()
}

async fn expect_taken(client: &Client, dir: &Path) {
    let r = create(client, dir).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "session_exists");
}

async fn say(client: &Client, text: &str) {
    let r = client
        .input(ID, &json!({"type": "user_message", "content": text}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
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

/// Waits (bounded) for a process that is not our child to exit: nothing to await.
async fn wait_dead(pid: u64) {
    let deadline = Instant::now() + T;
    while alive(pid) {
        assert!(Instant::now() < deadline, "CLI {pid} still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_chosen_id_hibernates_wakes_and_survives_a_restart() {
    let dir = TempDir::new("session-id").unwrap();
    prepare(&dir);
    let data = dir.path().join("data").display().to_string();
    let storage = ["--data-dir", data.as_str(), "--hibernate-after", "0.2"];
    let mut a = server("axum", dir.path(), &storage).await;
    let client = a.client(None);
    let r = create(&client, dir.path()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["session_id"], ID);
    let mut stream = client.stream(ID, None).await.unwrap();
    say(&client, "first").await;
    stream.until("result", T).await.unwrap();

    // The CLI runs under a UUID of its own.
    let runs = argvs(dir.path());
    assert_eq!(runs.len(), 1);
    let agent_id = flag(&runs[0].1, "--session-id").expect("--session-id");
    assert!(uuid::Uuid::parse_str(&agent_id).is_ok(), "{agent_id}");
    // (Only the attachment directory, named after the server's id, may carry it.)
    assert!(
        !runs[0]
            .1
            .iter()
            .any(|a| a.contains(ID) && !a.starts_with("--add-dir=")),
        "{:?}",
        runs[0].1
    );

    // Hibernated: still taken; a context request wakes it under the same agent id (the fake
    // CLI has no context usage: 501 from the woken agent), and so does the next message.
    wait_dead(runs[0].0).await;
    expect_taken(&client, dir.path()).await;
    let r = client
        .request(reqwest::Method::GET, &format!("/sessions/{ID}/context"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    let runs = argvs(dir.path());
    assert_eq!(runs.len(), 2, "woken for the context request");
    assert_eq!(flag(&runs[1].1, "--resume"), Some(agent_id.clone()));
    say(&client, "second").await;
    let frames = stream.until("result", T).await.unwrap();
    assert!(
        text_of(&frames).contains("echo: second (resumed: "),
        "{frames:?}"
    );
    let runs = argvs(dir.path());
    assert_eq!(
        flag(&runs.last().unwrap().1, "--resume"),
        Some(agent_id.clone())
    );
    let last = *seqs(&frames).last().unwrap();
    drop(stream);

    // A restart on the same data dir (another adapter): stored, so taken; the stream and the
    // conversation continue under the same agent id.
    a.terminate(T).await.unwrap();
    let b = server("actix", dir.path(), &storage).await;
    let client = b.client(None);
    expect_taken(&client, dir.path()).await;
    let mut stream = client.stream(ID, Some(&last.to_string())).await.unwrap();
    say(&client, "third").await;
    let frames = stream.until("result", T).await.unwrap();
    assert_eq!(frames[0].id, Some(last + 1));
    assert!(
        text_of(&frames).contains("echo: third (resumed: "),
        "{frames:?}"
    );
    let runs = argvs(dir.path());
    assert_eq!(flag(&runs.last().unwrap().1, "--resume"), Some(agent_id));

    // Deleted: free again.
    assert_eq!(client.delete(ID).await.unwrap(), 204);
    let r = create(&client, dir.path()).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn with_postgres_a_chosen_id_is_unique_across_hosts_and_fails_over() {
    let Some(admin) = dsn_or_skip("session_id") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let dir = TempDir::new("session-id-pg").unwrap();
    prepare(&dir);
    let storage = ["--database-url", db.as_str(), "--lease", "1"];
    let a = server("axum", dir.path(), &storage).await;
    let b = server("actix", dir.path(), &storage).await;
    let (ca, cb) = (a.client(None), b.client(None));
    assert_eq!(create(&ca, dir.path()).await.status(), 200);
    // Held by host A: host B refuses it.
    expect_taken(&cb, dir.path()).await;

    // Concurrent creates of one id on both hosts: exactly one wins.
    let work = dir.path().join("work").display().to_string();
    let body = json!({"cwd": work, "session_id": "race"});
    let (ra, rb) = tokio::join!(ca.create_raw(&body), cb.create_raw(&body));
    let statuses = [ra.unwrap().status().as_u16(), rb.unwrap().status().as_u16()];
    let mut sorted = statuses;
    sorted.sort_unstable();
    assert_eq!(sorted, [200, 409], "{statuses:?}");

    // Fails over with its id: A dies, B takes it over and resumes the conversation.
    let mut stream = ca.stream(ID, None).await.unwrap();
    say(&ca, "remember kiwi").await;
    let seen = stream.until("result", T).await.unwrap();
    let last = *seqs(&seen).last().unwrap();
    drop(stream);
    agent_webkit_testkit::kill_and_wait(a.pid().unwrap(), T)
        .await
        .unwrap();
    let started = Instant::now();
    let mut resumed = loop {
        let r = cb.stream_raw(ID, Some(&last.to_string())).await.unwrap();
        match r.status().as_u16() {
            200 => break SseStream::new(r),
            503 => {
                assert!(started.elapsed() < T, "B never took over");
                // Bounded poll: lease expiry is not an event we can await.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    };
    say(&cb, "and now?").await;
    let frames = resumed.until("result", T).await.unwrap();
    assert!(
        text_of(&frames).contains("echo: and now? (resumed: "),
        "{frames:?}"
    );
    assert_eq!(cb.delete(ID).await.unwrap(), 204);
    assert_eq!(create(&cb, dir.path()).await.status(), 200);
}
