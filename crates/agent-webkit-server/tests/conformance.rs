//! The wire-protocol conformance suite (`agent_webkit_testkit::conformance`) against the server
//! binary: every check once per adapter (`--framework axum|actix`) and agent (replay, fake
//! `claude`), generated from one list; plus a byte-level comparison of the two adapters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_webkit_testkit::conformance::{self, Agent, Target};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");

/// An error with its sources (reqwest hides the interesting part, e.g. a reset connection).
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

/// Expands to one `#[tokio::test]` per conformance check, in a module named `$module`, each
/// starting its servers from `$target`.
macro_rules! conformance_suite {
    ($module:ident, $target:expr) => {
        mod $module {
            use super::*;

            fn target() -> Target {
                $target
            }

            agent_webkit_testkit::with_conformance_checks!(conformance_suite!(@tests));
        }
    };
    (@tests $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let target = target();
                if let Err(err) = conformance::$check(&target).await {
                    panic!("{} on {}: {}", stringify!($check), target.label(), chain(&err));
                }
            }
        )*
    };
}

conformance_suite!(axum_replay, Target::new(BIN, "axum", Agent::Replay));
conformance_suite!(actix_replay, Target::new(BIN, "actix", Agent::Replay));
conformance_suite!(
    axum_fake_claude,
    Target::new(BIN, "axum", Agent::FakeClaude)
);
conformance_suite!(
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
