//! The wire-protocol conformance suite (`agent_webkit_testkit::conformance`) against the server
//! binary: every check once per adapter (`--framework axum|actix`) and agent (replay, fake
//! `claude`), generated from one list; plus a byte-level comparison of the two adapters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_webkit_testkit::conformance::{self, Agent, Target};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");

agent_webkit_testkit::conformance_tests!(axum_replay, Target::new(BIN, "axum", Agent::Replay));
agent_webkit_testkit::conformance_tests!(actix_replay, Target::new(BIN, "actix", Agent::Replay));
agent_webkit_testkit::conformance_tests!(
    axum_fake_claude,
    Target::new(BIN, "axum", Agent::FakeClaude)
);
agent_webkit_testkit::conformance_tests!(
    actix_fake_claude,
    Target::new(BIN, "actix", Agent::FakeClaude)
);

/// The same scripted exchange against both adapters gives identical transcripts (status codes,
/// the headers that matter, body bytes, SSE frame bytes; session ids normalised).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_and_actix_answer_identically() {
    let axum = Target::new(BIN, "axum", Agent::Replay);
    let actix = Target::new(BIN, "actix", Agent::Replay);
    let (a, b) = tokio::join!(
        conformance::transcript(&axum),
        conformance::transcript(&actix)
    );
    let (a, b) = (a.expect("axum transcript"), b.expect("actix transcript"));
    let differences: Vec<String> = (0..a.len().max(b.len()))
        .filter_map(|i| {
            let (x, y) = (a.get(i), b.get(i));
            (x != y).then(|| format!("line {i}:\n   axum: {x:?}\n  actix: {y:?}"))
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
