//! The suite's one list of checks, for every runner to expand: the server's conformance tests
//! (each adapter × agent), the OpenAPI recording, the hyper example's suite; and
//! `conformance_tests!`, which turns it into one `#[tokio::test]` per check.

/// Expands `$callback!($($prefix)* check_a, check_b, …)` with the name of every check of the
/// suite, in order — e.g. `with_conformance_checks!(my_tests!(@tests))` (the callback may be a
/// path). A new check is added here once and runs everywhere (a test below fails when a
/// `pub async fn check_…` is missing).
#[macro_export]
macro_rules! with_conformance_checks {
    ($first:tt $(:: $rest:ident)* ! ( $($prefix:tt)* )) => {
        $first $(:: $rest)* ! { $($prefix)*
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
            check_interrupt_right_after_the_message_ends_its_turn,
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
        }
    };
}

/// One `#[tokio::test]` per check of the suite, in a module `$module`, each against `$target`
/// (an expression evaluated in that module, which sees its parent's items):
///
/// ```ignore
/// agent_webkit_testkit::conformance_tests!(mine_replay, Target::new(BIN, "mine", Agent::Replay));
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $target:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            fn target() -> $crate::conformance::Target {
                $target
            }

            $crate::with_conformance_checks!($crate::conformance_tests!(@each));
        }
    };
    (@each $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let target = target();
                if let Err(err) = $crate::conformance::$check(&target).await {
                    panic!(
                        "{} on {}: {}",
                        stringify!($check),
                        target.label(),
                        $crate::conformance::error_chain(&err)
                    );
                }
            }
        )*
    };
}

/// An error with its sources (reqwest hides the interesting part, e.g. a reset connection).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    /// Every check the suite defines is in the list.
    #[test]
    fn every_check_is_listed() {
        macro_rules! names {
            ($($check:ident),* $(,)?) => {
                [$(stringify!($check)),*]
            };
        }
        let listed = with_conformance_checks!(names!());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/conformance");
        let mut defined = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let source = std::fs::read_to_string(entry.path()).unwrap();
            for line in source.lines() {
                if let Some(rest) = line.trim_start().strip_prefix("pub async fn check_") {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    defined.push(format!("check_{name}"));
                }
            }
        }
        defined.sort();
        let mut sorted: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
        sorted.sort();
        assert_eq!(
            sorted, defined,
            "with_conformance_checks! lists every check once"
        );
    }
}
