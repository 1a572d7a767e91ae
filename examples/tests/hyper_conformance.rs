//! The hyper example (`examples/hyper_server.rs`) through the shared conformance suite
//! (`agent_webkit_testkit::conformance`), with both agents, like axum and actix in
//! `crates/agent-webkit-server/tests/conformance.rs`; and the same scripted exchange as axum,
//! byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use agent_webkit_testkit::conformance::{self, Agent, Target};

const HYPER: &str = env!("CARGO_BIN_EXE_hyper_server");

agent_webkit_testkit::conformance_tests!(hyper_replay, Target::new(HYPER, "hyper", Agent::Replay));
agent_webkit_testkit::conformance_tests!(
    hyper_fake_claude,
    Target::new(HYPER, "hyper", Agent::FakeClaude)
);

/// The `agent-webkit-server` binary next to this test's (built by `cargo test --workspace`;
/// built here when absent, e.g. under `cargo test -p agent-webkit-examples`).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join(format!(
        "agent-webkit-server{}",
        std::env::consts::EXE_SUFFIX
    ));
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "-p",
                "agent-webkit-server",
                "--bin",
                "agent-webkit-server",
            ])
            .arg("--target-dir")
            .arg(dir.parent().unwrap())
            .status()
            .unwrap();
        assert!(
            status.success() && bin.is_file(),
            "cannot build {}",
            bin.display()
        );
    }
    bin
}

/// The same scripted exchange against hyper and axum gives identical transcripts (status codes,
/// the headers that matter, body bytes, SSE frame bytes; session ids normalised).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_and_axum_answer_identically() {
    let hyper = Target::new(HYPER, "hyper", Agent::Replay);
    let axum = Target::new(server_binary(), "axum", Agent::Replay);
    let (a, b) = tokio::join!(
        conformance::transcript(&hyper),
        conformance::transcript(&axum)
    );
    let (a, b) = (a.expect("hyper transcript"), b.expect("axum transcript"));
    let differences: Vec<String> = (0..a.len().max(b.len()))
        .filter_map(|i| {
            let (x, y) = (a.get(i), b.get(i));
            (x != y).then(|| format!("line {i}:\n  hyper: {x:?}\n   axum: {y:?}"))
        })
        .collect();
    assert!(
        differences.is_empty(),
        "{} differing lines (of {} / {}):\n{}",
        differences.len(),
        a.len(),
        b.len(),
        differences.join("\n")
    );
    assert!(
        a.len() > 100,
        "the transcript covers the script ({} lines)",
        a.len()
    );
}

/// Contract step 6, which the suite leaves to `crates/agent-webkit-server/tests/http_contract.rs`
/// for axum and actix: SIGTERM ends every open stream with `done`, then the server exits 0.
/// With the in-memory store: the durable default hands sessions off instead (streams end
/// without `done`, `crates/agent-webkit-server/tests/restart.rs`).
#[tokio::test]
async fn sigterm_ends_streams_with_done_and_exits_cleanly() {
    let args = [
        "--agent",
        "replay",
        "--no-auth",
        "--framework",
        "hyper",
        "--store",
        "memory",
    ];
    let mut server = agent_webkit_testkit::ServerProcess::spawn(HYPER, &args)
        .await
        .unwrap();
    let client = server.client(None);
    let id = client.create(&serde_json::json!({})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    stream.next_event_within(conformance::T).await.unwrap();
    let status = server.terminate(conformance::T).await.unwrap();
    let rest = stream.collect_to_end(conformance::T).await.unwrap();
    let names: Vec<&str> = rest.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(names, ["done"]);
    assert!(status.expect("exited in time").success(), "{status:?}");
}
