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
            );
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
