//! Failures the CLI reports inside its frames → `error` events with stable codes
//! (docs/protocol-extensions.md, "Agent failures and retries").
//!
//! The CLI ends a failed turn with an ordinary-looking `result` (`subtype: "success"` with
//! `is_error: true` for API errors, an `error_*` subtype for limits). These helpers read the
//! code out of that frame; the `result` itself is forwarded unchanged.

use agent_webkit_core::models::ApiRetryData;
use serde_json::Value;

/// The API refused the credentials, or the CLI has none ("Not logged in").
pub const AUTHENTICATION_FAILED: &str = "authentication_failed";
/// The API answered 429.
pub const RATE_LIMITED: &str = "rate_limited";
/// The API answered 529 (overloaded).
pub const OVERLOADED: &str = "overloaded";
/// Any other API error; the message names the HTTP status.
pub const API_ERROR: &str = "api_error";
/// The turn reached `--max-turns`.
pub const MAX_TURNS: &str = "max_turns";
/// The session reached `--max-budget-usd`.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

/// The message of an `authentication_failed` error.
pub const AUTHENTICATION_MESSAGE: &str =
    "The model API rejected the agent's credentials (or it has none); retrying cannot fix this";

/// Whether a retry is for a failure retrying cannot fix (authentication).
pub fn retry_is_unfixable(retry: &ApiRetryData) -> bool {
    retry.error.as_deref() == Some("authentication_failed") || retry.error_status == Some(401)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The `error` code and message a `result` frame calls for, if the turn failed in a way the
/// CLI reports. `resets_at` is the latest rate-limit reset time the CLI gave, if any.
pub fn of_result(frame: &Value, resets_at: Option<&Value>) -> Option<(&'static str, String)> {
    let detail = || {
        frame
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|joined| !joined.is_empty())
            .or_else(|| str_field(frame, "result").map(|r| r.trim().to_owned()))
            .unwrap_or_default()
    };
    match str_field(frame, "subtype") {
        Some("error_max_turns") => {
            return Some((
                MAX_TURNS,
                format!("The turn reached its turn limit. {}", detail()),
            ))
        }
        Some("error_max_budget_usd") => {
            return Some((
                BUDGET_EXCEEDED,
                format!("The session reached its budget. {}", detail()),
            ))
        }
        _ => {}
    }
    if frame.get("is_error").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let status = frame.get("api_error_status").and_then(Value::as_u64);
    let kind = str_field(frame, "api_error_type");
    let text = str_field(frame, "result").unwrap_or_default();
    if status == Some(401)
        || kind == Some("authentication_error")
        || text.starts_with("Not logged in")
    {
        return Some((
            AUTHENTICATION_FAILED,
            format!("{AUTHENTICATION_MESSAGE}: {}", detail()),
        ));
    }
    if status == Some(429) || kind == Some("rate_limit_error") {
        let reset = match resets_at {
            Some(Value::Number(n)) => format!(" (resets at {n}, Unix time)"),
            Some(Value::String(s)) => format!(" (resets at {s})"),
            _ => String::new(),
        };
        return Some((
            RATE_LIMITED,
            format!("The model API is rate limited{reset}: {}", detail()),
        ));
    }
    if status == Some(529) || kind == Some("overloaded_error") {
        return Some((
            OVERLOADED,
            format!("The model API is overloaded: {}", detail()),
        ));
    }
    let status = status?;
    Some((
        API_ERROR,
        format!("The model API failed (HTTP {status}): {}", detail()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// A failed-API-call `result` as the CLI 2.1.330 writes it (trimmed).
    fn api_failure(status: u64, kind: &str, text: &str) -> Value {
        json!({"type":"result","subtype":"success","is_error":true,"terminal_reason":"api_error",
               "api_error_status":status,"api_error_type":kind,"result":text})
    }

    #[test]
    fn api_failures_get_stable_codes() {
        let code = |f: Value| of_result(&f, None).map(|(c, _)| c);
        assert_eq!(
            code(api_failure(
                401,
                "authentication_error",
                "Failed to authenticate."
            )),
            Some(AUTHENTICATION_FAILED)
        );
        assert_eq!(
            code(api_failure(429, "rate_limit_error", "x")),
            Some(RATE_LIMITED)
        );
        assert_eq!(
            code(api_failure(529, "overloaded_error", "x")),
            Some(OVERLOADED)
        );
        let (c, message) =
            of_result(&api_failure(400, "invalid_request_error", "bad"), None).unwrap();
        assert_eq!(c, API_ERROR);
        assert!(message.contains("HTTP 400"), "{message}");
        let not_logged_in = json!({"type":"result","subtype":"success","is_error":true,
            "api_error_status":null,"result":"Not logged in · Please run /login"});
        assert_eq!(code(not_logged_in), Some(AUTHENTICATION_FAILED));
        let budget = json!({"type":"result","subtype":"error_max_budget_usd","is_error":true,
            "errors":["Reached maximum budget ($0.000001)"]});
        let (c, message) = of_result(&budget, None).unwrap();
        assert_eq!(c, BUDGET_EXCEEDED);
        assert!(message.contains("Reached maximum budget"), "{message}");
        assert_eq!(
            code(json!({"type":"result","subtype":"error_max_turns","is_error":true})),
            Some(MAX_TURNS)
        );
        assert_eq!(
            code(
                json!({"type":"result","subtype":"success","is_error":false,"result":"Not logged in"})
            ),
            None
        );
        // An interrupted turn is not a failure to report.
        assert_eq!(
            code(json!({"type":"result","subtype":"error_during_execution","is_error":true})),
            None
        );
    }

    #[test]
    fn rate_limit_carries_its_reset_time() {
        let (_, message) = of_result(
            &api_failure(429, "rate_limit_error", "x"),
            Some(&json!(1900000000)),
        )
        .unwrap();
        assert!(message.contains("resets at 1900000000"), "{message}");
    }
}
