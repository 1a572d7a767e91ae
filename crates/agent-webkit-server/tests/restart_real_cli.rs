//! A restart with the **real** Claude CLI (offline, against the mock Messages API) and the
//! default store: the server is SIGKILLed (its CLI with it, by the watchdog) and started again
//! on the same `--data-dir` with a fresh `HOME`/`CLAUDE_CONFIG_DIR`, so the transcript the new
//! CLI resumes from can only come from the SQLite file. The client's `Last-Event-ID` continues
//! at once, and the model's next request carries the turns from before the restart. Skips
//! loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{claude_children, require_real_cli, SseFrame, SseStream};
use serde_json::json;

mod anchors;
mod claude_on_data_dir;
use claude_on_data_dir::server;
/// Generous: the CLI cold-starts in ~0.5 s, but CI machines are slow and busy.
const T: Duration = Duration::from_secs(30);

async fn turn(stream: &mut SseStream) -> Vec<SseFrame> {
    let frames = stream.until("result", T).await.unwrap();
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    frames
}

/// SIGKILLs the server and waits until its process is gone.
/// A temporary directory with `work`, `home-1` and `home-2` made (one CLI home per server) and
/// `data` to be made by the server; returns it with the data and work paths.
fn layout(prefix: &str) -> (TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = TempDir::new(prefix).unwrap();
    let (data, work) = (dir.path().join("data"), dir.path().join("work"));
    for sub in [
        &work,
        &dir.path().join("home-1"),
        &dir.path().join("home-2"),
    ] {
        std::fs::create_dir_all(sub).unwrap();
    }
    (dir, data, work)
}

async fn kill(server: &agent_webkit_testkit::ServerProcess) {
    agent_webkit_testkit::kill_and_wait(server.pid().unwrap(), T)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restarted_server_resumes_the_real_cli_from_its_data_dir() {
    let cli = require_real_cli!("restart_real_cli");
    let mock = MockAnthropicApi::start().await.unwrap();
    let (dir, data, work) = layout("restart-real");
    let a = server(
        &cli,
        &mock,
        "axum",
        &data,
        &work,
        &dir.path().join("home-1"),
    )
    .await;
    let client = a.client(None);
    let id = client
        .create(&json!({"cwd": work.to_str().unwrap()}))
        .await
        .unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let r = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "Remember the word PELICAN"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let before = turn(&mut stream).await;
    let last = before.last().unwrap().id.unwrap();
    assert_eq!(mock.streaming_requests().len(), 1);

    // SIGKILL: no hand-off, no flush; the watchdog takes the CLI down with the server.
    assert_eq!(claude_children(a.pid().unwrap()).len(), 1);
    kill(&a).await;
    drop(stream);

    let restarted = Instant::now();
    let b = server(
        &cli,
        &mock,
        "actix",
        &data,
        &work,
        &dir.path().join("home-2"),
    )
    .await;
    let client = b.client(None);
    let r = client
        .stream_raw(&id, Some(&last.to_string()))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "served at once: {}",
        r.text().await.unwrap()
    );
    let mut resumed = SseStream::new(r);
    eprintln!(
        "RESTART (real CLI): start → stream served {:?}",
        restarted.elapsed()
    );
    let r = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "Which word was it?"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let after = turn(&mut resumed).await;
    assert_eq!(after[0].id, Some(last + 1), "{}", after[0].raw);
    assert!(after.iter().all(|f| f.event != "error"), "{after:?}");
    let live = claude_children(b.pid().unwrap());
    assert!(
        live.iter()
            .any(|(_, cmd)| cmd.contains(&format!("--resume={id}"))),
        "{live:?}"
    );
    let requests = mock.streaming_requests();
    assert_eq!(requests.len(), 2, "one model request per turn");
    let history = requests.last().unwrap()["messages"].to_string();
    assert!(
        history.contains("Remember the word PELICAN")
            && history.contains("Echo: Remember the word PELICAN")
            && history.contains("Which word was it?"),
        "the model's request after the restart carries the earlier turn: {history}"
    );
}

/// After a restart a session holds only the tail of its ring in memory (the rest stays in the
/// database): its first user message, long out of that tail, is still a fork point, and the
/// fork's next model request carries exactly the conversation up to it.
#[tokio::test]
async fn a_fork_after_a_restart_starts_at_a_message_older_than_the_restored_tail() {
    let cli = require_real_cli!("restart_real_cli");
    let mock = MockAnthropicApi::start().await.unwrap();
    let (dir, data, work) = layout("restart-real-fork");
    let home = |n: &str| dir.path().join(n);
    let a = server(&cli, &mock, "axum", &data, &work, &home("home-1")).await;
    let client = a.client(None);
    let id = client
        .create(&json!({"cwd": work.to_str().unwrap()}))
        .await
        .unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let (first, frames) = anchors::turn(&client, &id, &mut stream, "first ALPHA").await;
    let first_seq = frames
        .iter()
        .find(|f| f.event == "user_message")
        .and_then(|f| f.id)
        .unwrap();
    // More turns, until the first message is far older than the tail a restart renders (64).
    let mut last = frames.last().unwrap().id.unwrap();
    let mut n = 1;
    while last < first_seq + 100 {
        n += 1;
        let (_, frames) = anchors::turn(&client, &id, &mut stream, &format!("turn {n}")).await;
        last = frames.last().unwrap().id.unwrap();
        assert!(n < 60, "turns too short to fill the ring");
    }
    kill(&a).await;
    drop(stream);

    let b = server(&cli, &mock, "actix", &data, &work, &home("home-2")).await;
    let client = b.client(None);
    let r = client
        .create_raw(&json!({"fork": {"session_id": id, "message_uuid": first}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let fork: serde_json::Value = r.json().await.unwrap();
    let fork = fork["session_id"].as_str().unwrap().to_owned();
    let mut f = client.stream(&fork, None).await.unwrap();
    anchors::turn(&client, &fork, &mut f, "fork ZULU").await;
    assert_eq!(
        anchors::last_user_texts(&mock),
        ["first ALPHA", "fork ZULU"],
        "the fork's history after {n} turns of the source"
    );
}
