//! The hyper example (`examples/hyper_server.rs`) through the shared conformance suite
//! (`agent_webkit_testkit::conformance`), with both agents, like axum and actix in
//! `crates/agent-webkit-server/tests/conformance.rs`; and the same scripted exchange as axum,
//! byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use agent_webkit_testkit::conformance::{self, Agent, Target};

const HYPER: &str = env!("CARGO_BIN_EXE_hyper_server");

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

/// One `#[tokio::test]` per check, in module `$module`. The list is the server's
/// (`every_check_of_the_server_suite_runs_here` keeps them equal).
macro_rules! conformance_suite {
    ($module:ident, $target:expr) => {
        mod $module {
            use super::*;

            fn target() -> Target {
                $target
            }

            conformance_suite!(@tests
                check_create_with_and_without_body,
                check_create_rejects_bad_bodies,
                check_create_unknown_scenario,
                check_session_cap,
                check_auth_variants,
                check_unknown_sessions_and_routes,
                check_stream_headers,
                check_stream_framing,
                check_keepalive,
                check_resume_last_event_id,
                check_resume_rejects_bad_cursors,
                check_resume_evicted_cursor,
                check_two_subscribers_identical,
                check_fifty_subscribers_identical,
                check_burst_beyond_ring_reaches_live_readers,
                check_stalled_reader_cut_past_lag_budget,
                check_stream_over_http10,
                check_user_message_string_and_blocks,
                check_controls_accepted,
                check_controls_reach_agent,
                check_permission_allow,
                check_permission_deny,
                check_question_round_trip,
                check_hook_decision_response,
                check_input_validation_errors,
                check_first_reply_wins,
                check_permission_withdrawn_on_interrupt,
                check_interrupt_ends_long_turn,
                check_one_turn_at_a_time,
                check_body_limit,
                check_backpressure,
                check_delete_ends_every_stream,
                check_delete_during_turn,
                check_idle_eviction_without_subscriber,
                check_idle_eviction_waits_for_subscriber,
                check_crash_ends_session,
                check_crash_then_subscribe,
                check_list_and_detail,
                check_list_pagination_under_concurrent_creates,
                check_ended_retention,
                check_permission_mode_policy,
                check_model_policy,
                check_permission_rules_policy,
                check_uniform_invalid_cwd,
                check_cors,
                check_subscriber_caps,
                check_inbound_bytes_limit,
                check_body_read_timeout,
                check_slow_headers_closed,
                check_connection_cap,
                check_shutdown_drain,
                check_jwt_sessions_are_private,
                check_jwt_refusals,
                check_jwks_rotation,
                check_session_quota,
                check_claim_restrictions,
                check_caller_chosen_session_id,
                check_concurrent_creates_of_one_id,
                check_context_unsupported_and_usage_event,
            );
        }
    };
    (@tests $($check:ident),* $(,)?) => {
        /// The checks this suite runs.
        #[allow(dead_code)]
        pub const CHECKS: &[&str] = &[$(stringify!($check)),*];
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

conformance_suite!(hyper_replay, Target::new(HYPER, "hyper", Agent::Replay));
conformance_suite!(
    hyper_fake_claude,
    Target::new(HYPER, "hyper", Agent::FakeClaude)
);

/// A check added to the server's suite must run here too.
#[test]
fn every_check_of_the_server_suite_runs_here() {
    let server = include_str!("../../crates/agent-webkit-server/tests/conformance.rs");
    let listed: Vec<&str> = server
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("check_"))
        .collect();
    assert!(listed.len() > 40, "found the server's list: {listed:?}");
    let missing: Vec<_> = listed
        .iter()
        .filter(|check| !hyper_replay::CHECKS.contains(check))
        .collect();
    assert!(missing.is_empty(), "add to this suite: {missing:?}");
}

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
